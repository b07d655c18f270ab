"""MACE models (``mace-torch`` model files) for a fixed NNP region, as TorchScript modules for NNPForce.

A MACE model file is the pickled torch.nn.Module that mace-torch trains and publishes (MACE-OFF23/24 for organic
molecules, MACE-OMol with total charge and spin, or the user's own). The module here compiles it the way
mace-torch does for TorchScript (``e3nn.util.jit.compile``) and feeds it the region as a graph: every ordered
pair of region atoms closer than the model's cutoff is an edge, chosen again on every call, so the result equals
mace-torch's own calculator (tests/test_mace.py checks energies and forces against it).

Units: positions and box in nm are multiplied by 10 to get Å; the energy in eV is multiplied by
96.48533212331002 (kJ/mol per eV). Periodic boxes use the minimum image convention, exact when every box width
exceeds twice the cutoff (forward() raises otherwise).

Loading a model file unpickles it (torch.load with weights_only=False): load only files you trust.
"""

import os
from typing import Dict, Optional

import torch
from torch import Tensor

from openmm_nnp.models.pairs import all_pairs, check_box_widths, minimum_image_vectors

EV_TO_KJ_PER_MOL = 96.48533212331002
from openmm_nnp.models.registry import MACE_OFF_ELEMENTS  # noqa: E402
# Registry name -> the name mace-torch's mace_off() downloads (its own list of URLs, mace_off_urls).
MACE_OFF_MODELS = {'mace-off23-small': 'small', 'mace-off23-medium': 'medium', 'mace-off23-large': 'large'}
MACE_DESCRIPTION = ('MACE: equivariant message passing (mace-torch model files: MACE-OFF23 small/medium/large for '
                    'neutral organic molecules, MACE-OMol with charge and spin, or your own)')


def _importMACE():
    """Import mace-torch. Its e3nn 0.4 loads a constants file that torch >= 2.6 refuses by default for a
    ``slice`` object in it; allow exactly that class."""
    torch.serialization.add_safe_globals([slice])
    try:
        import mace  # noqa: F401
        from e3nn.util import jit  # noqa: F401
    except ImportError:
        raise ImportError('MACE models need the package mace-torch: pip install mace-torch==0.3.16') from None


def resolveModelFile(name=None, modelPath=None):
    """The path of a MACE model file: ``modelPath`` if given, else mace-torch's cached download of ``name``
    ('mace-off23-small', ...), downloading it with mace-torch where the network allows."""
    if modelPath is not None:
        path = os.fspath(modelPath)
        if not os.path.isfile(path):
            raise ValueError(f"MACE model file '{path}' does not exist; pass modelPath= the path of a mace-torch "
                             '.model file.')
        return path
    if name not in MACE_OFF_MODELS:
        raise ValueError(f"Unknown MACE model '{name}': use one of {', '.join(MACE_OFF_MODELS)} or pass modelPath= "
                         'the path of a mace-torch .model file.')
    _importMACE()
    from mace.calculators.foundations_models import mace_off, mace_off_urls
    from mace.tools.utils import get_cache_dir
    url = mace_off_urls[MACE_OFF_MODELS[name]]
    cached = os.path.join(get_cache_dir(), os.path.basename(url).split('?')[0])
    if not os.path.isfile(cached):
        try:
            mace_off(model=MACE_OFF_MODELS[name], device='cpu', return_raw_model=True)
        except Exception:
            pass  # the download may have worked even if mace-torch's own loading did not
    if not os.path.isfile(cached):
        raise ValueError(f"The {name} weights are not on this machine and could not be downloaded from {url}. "
                         f"Download the file to {cached}, or pass modelPath= its path.")
    return cached


def loadModelFile(path, dtype=torch.float64):
    """The mace-torch module stored in a model file, in ``dtype``, without gradients on its parameters."""
    _importMACE()
    model = torch.load(os.fspath(path), map_location='cpu', weights_only=False)
    if not isinstance(model, torch.nn.Module) or not hasattr(model, 'atomic_numbers') or not hasattr(model, 'r_max'):
        raise ValueError(f"'{path}' does not hold a mace-torch model (a pickled torch.nn.Module with atomic_numbers "
                         'and r_max); pass the .model file that mace-torch wrote.')
    model = model.to(dtype).eval()
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    return model


def supportsCharge(model):
    """Whether a mace-torch model takes the total charge as an input (e.g. MACE-OMol's joint embedding)."""
    return 'total_charge' in dict(getattr(model, 'embedding_specs', None) or {})


def modelElements(model):
    """The atomic numbers a mace-torch model was trained for."""
    return [int(z) for z in model.atomic_numbers]


class MACE(torch.nn.Module):
    """A mace-torch model for one region: ``forward(positions[n, 3] nm, boxVectors[3, 3] nm or None)`` -> kJ/mol.

    The region's total charge and spin (used by models that embed them, ignored by the others) are the buffers
    ``total_charge`` and ``total_spin``.
    """

    def __init__(self, model, atomicNumbers, charge=0, spin=0.0, dtype=torch.float32):
        super().__init__()
        _importMACE()
        from e3nn.util import jit
        atomicNumbers = [int(z) for z in atomicNumbers]
        elements = modelElements(model)
        unsupported = sorted(set(atomicNumbers) - set(elements))
        if unsupported:
            raise ValueError(f'This MACE model does not support atomic number(s) {unsupported}; it was trained for '
                             f'{elements}.')
        if charge != 0 and not supportsCharge(model):
            raise ValueError(f'This MACE model was trained on neutral molecules only (it takes no total charge), but '
                             f'the region has a net charge of {charge:+d} e.')
        n = len(atomicNumbers)
        index = torch.tensor([elements.index(z) for z in atomicNumbers])
        self.register_buffer('node_attrs', torch.nn.functional.one_hot(index, len(elements)).to(dtype))
        self.register_buffer('pair_index', all_pairs(n))
        self.register_buffer('batch', torch.zeros(n, dtype=torch.long))
        self.register_buffer('ptr', torch.tensor([0, n]))
        self.register_buffer('head', torch.zeros(1, dtype=torch.long))
        self.register_buffer('cell', torch.zeros(3, 3, dtype=dtype))
        self.register_buffer('total_charge', torch.tensor([float(charge)], dtype=dtype))
        self.register_buffer('total_spin', torch.tensor([float(spin)], dtype=dtype))
        self.cutoff = float(model.r_max)
        self.nm_to_angstrom = 10.0
        self.ev_to_kj_per_mol = EV_TO_KJ_PER_MOL
        self.model = jit.compile(model.to(dtype))

    def forward(self, positions: Tensor, boxVectors: Optional[Tensor] = None) -> Tensor:
        positions_angstrom = positions.to(self.cell.dtype) * self.nm_to_angstrom
        box: Optional[Tensor] = None
        if boxVectors is not None:
            box = boxVectors.to(self.cell.dtype) * self.nm_to_angstrom
        check_box_widths(box, 2.0 * self.cutoff, 'MACE: every periodic box width must exceed twice the model '
                         'cutoff for the minimum image convention to be exact; enlarge the box.')
        vectors, shifts = minimum_image_vectors(positions_angstrom, self.pair_index, box)
        close = torch.linalg.vector_norm(vectors, dim=1) < self.cutoff
        edge_index = self.pair_index[:, close]
        shifts = shifts[close]
        data: Dict[str, Tensor] = {
            'positions': positions_angstrom, 'node_attrs': self.node_attrs, 'edge_index': edge_index,
            'shifts': shifts, 'unit_shifts': torch.zeros_like(shifts), 'batch': self.batch, 'ptr': self.ptr,
            'head': self.head, 'cell': self.cell, 'total_charge': self.total_charge, 'total_spin': self.total_spin,
        }
        energy = self.model(data, compute_force=False)['energy']
        assert energy is not None
        return (energy.sum() * self.ev_to_kj_per_mol).to(positions.dtype)


def createMACEModel(atomicNumbers, charge=0, dtype=torch.float32, name=None, modelPath=None, spin=0.0):
    """The TorchScript module for a region: a MACE-OFF23 model by registry ``name`` or any mace-torch model file
    by ``modelPath``."""
    model = loadModelFile(resolveModelFile(name, modelPath), dtype)
    return torch.jit.script(MACE(model, atomicNumbers, charge=charge, spin=spin, dtype=dtype))
