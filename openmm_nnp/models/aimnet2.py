"""AIMNet2 models (files of the ``aimnet`` package) for a fixed NNP region, as TorchScript modules for NNPForce.

AIMNet2 files come in two formats, both read with the aimnet package's own loader: v2 ``.pt`` files (a
configuration and a state dict; ``aimnet.models.base.load_model``) and legacy TorchScript ``.jpt`` files. The
network takes a dictionary with the coordinates (Å), the atomic numbers and the total charge. A molecule given
as a [1, n, 3] batch is evaluated in aimnet's dense mode: every pair of atoms, each cut off inside the network,
no neighbour list. That suits a fixed region, so the module here records the network in that mode with
torch.jit.trace, with the region's atomic numbers fixed and the positions and the total charge as inputs, and
wraps it in a scripted module that converts units. tests/test_aimnet2.py checks it against aimnet's own
calculator (which uses neighbour matrices instead) at positions and charges other than the traced ones.

Long-range terms: aimnet's v2 export strips the long-range modules out of the network and records them in the
file's metadata for its calculator to add back. ``needs_coulomb``: the network keeps an SRCoulomb term that
subtracts the short-range Coulomb energy of its own charges (``coulomb_mode == 'sr_embedded'``), and the
calculator adds the full Coulomb energy of those charges over all pairs (method ``simple``, the calculator's
choice for molecules). ``needs_dispersion``: the calculator adds DFT-D3(BJ) with the file's ``d3_params`` and
its default 15 Å cutoff smoothed over the last 20 %. The module here adds the same terms with aimnet's own
LRCoulomb and DFTD3 modules, built from the metadata as the calculator builds them and recorded in the same
trace (DFTD3's differentiable PyTorch path; its default path calls non-traceable Warp kernels). Without these
terms the energy of a published v2 file would silently lack the Coulomb and dispersion energy of the region.

Periodic boxes: dense mode has no periodic images, so the module takes positions only (forward(positions)); in
an NNP/MM System the region is evaluated as an isolated molecule (OpenMM keeps molecules whole internally).

Units: positions in nm are multiplied by 10 to get Å; the energy in eV is multiplied by 96.48533212331002.
"""

import os
import warnings

import torch
from torch import Tensor

EV_TO_KJ_PER_MOL = 96.48533212331002
# The elements of the published AIMNet2 (wB97M-D3 / B97-3c) models.
from openmm_nnp.models.registry import AIMNET2_ELEMENTS  # noqa: E402
AIMNET2_DESCRIPTION = ('AIMNet2: atoms-in-molecules network with learned charges and embedded long-range Coulomb '
                       'for neutral and charged molecules (aimnet .pt/.jpt model files)')


def _requirePackage():
    try:
        import aimnet  # noqa: F401
    except ImportError:
        raise ImportError('AIMNet2 models need the package aimnet: pip install aimnet==0.2.6') from None


def loadModelFile(path):
    """The network in an aimnet model file and its metadata (an empty dict for legacy .jpt files)."""
    _requirePackage()
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ValueError(f"AIMNet2 model file '{path}' does not exist; pass modelPath= the path of an aimnet .pt "
                         'or .jpt file.')
    from aimnet.models.base import load_model
    try:
        model, metadata = load_model(path, device='cpu')
    except Exception as e:
        raise ValueError(f"'{path}' could not be read as an aimnet model file ({e}). Pass an AIMNet2 .pt (v2) or "
                         '.jpt file.') from None
    return model, dict(metadata or {})


# The DFT-D3 cutoff and smoothing fraction aimnet's calculator uses unless told otherwise (Å, fraction).
DFTD3_CUTOFF = 15.0
DFTD3_SMOOTHING_FRACTION = 0.2


def externalLongRangeTerms(metadata):
    """aimnet's long-range modules that its calculator adds outside the network of a v2 file, built from the
    file's metadata as the calculator builds them for a molecule: ``(coulomb or None, dispersion or None)``."""
    from aimnet.modules import DFTD3, LRCoulomb
    coulomb = dispersion = None
    if metadata.get('needs_coulomb'):
        rc = metadata.get('coulomb_sr_rc')
        envelope = metadata.get('coulomb_sr_envelope')
        # With the short-range part subtracted inside the network ('sr_embedded') the full Coulomb energy is
        # added; otherwise only the long-range part, so that nothing counts twice.
        coulomb = LRCoulomb(key_in='charges', key_out='energy', method='simple', rc=4.6 if rc is None else rc,
                            envelope='exp' if envelope is None else envelope,
                            subtract_sr=metadata.get('coulomb_mode') != 'sr_embedded')
    if metadata.get('needs_dispersion'):
        parameters = metadata.get('d3_params')
        if not parameters or not {'s8', 'a1', 'a2'} <= set(parameters):
            raise ValueError('This AIMNet2 model file asks for DFT-D3 dispersion (needs_dispersion) but its metadata '
                             'has no complete d3_params (s8, a1, a2); re-export it with aimnet.')
        dispersion = DFTD3(s8=parameters['s8'], a1=parameters['a1'], a2=parameters['a2'],
                           s6=parameters.get('s6', 1.0), cutoff=DFTD3_CUTOFF,
                           smoothing_fraction=DFTD3_SMOOTHING_FRACTION)
    return coulomb, dispersion


class _DenseAIMNet2(torch.nn.Module):
    """The aimnet network for one region in dense mode (eager; only used to be traced)."""

    def __init__(self, model, atomicNumbers, coulomb=None, dispersion=None):
        super().__init__()
        self.model = model
        self.coulomb = coulomb
        self.dispersion = dispersion
        self.register_buffer('numbers', torch.tensor([atomicNumbers], dtype=torch.long))

    def forward(self, coord: Tensor, charge: Tensor) -> Tensor:
        data = self.model({'coord': coord.unsqueeze(0), 'numbers': self.numbers, 'charge': charge})
        # hessian=True selects the modules' differentiable PyTorch paths (the energy stays in the autograd graph).
        if self.coulomb is not None:
            data = self.coulomb(data, hessian=True)
        if self.dispersion is not None:
            data = self.dispersion(data, hessian=True)
        return data['energy'].sum()


def _castInputsTo(model, dtype):
    """Make the network cast its floating-point inputs to ``dtype``.

    aimnet's networks cast the coordinates and the charge to the default dtype torch had when aimnet was imported
    (float32 unless changed), whatever the dtype of their weights: a float64 module would see float32
    coordinates. The cast list is a class attribute that the network reads from itself; an instance attribute
    replaces it for this network. (Legacy TorchScript files keep their compiled cast.)
    """
    if isinstance(model, torch.jit.ScriptModule) or not hasattr(model, '_required_keys_dtype'):
        return
    model._required_keys_dtype = [dtype if d.is_floating_point else d for d in model._required_keys_dtype]


class AIMNet2(torch.nn.Module):
    """An aimnet network for one region: ``forward(positions[n, 3] nm) -> energy (kJ/mol)``; the region's total
    charge (e) is the buffer ``total_charge``."""

    def __init__(self, model, atomicNumbers, charge=0, dtype=torch.float32, metadata=None):
        super().__init__()
        atomicNumbers = [int(z) for z in atomicNumbers]
        if len(atomicNumbers) < 2:
            raise ValueError('An AIMNet2 region needs at least 2 atoms.')
        model = model.to(dtype).eval()
        for parameter in model.parameters():
            parameter.requires_grad_(False)
        _castInputsTo(model, dtype)
        coulomb, dispersion = externalLongRangeTerms(metadata or {})
        coulomb, dispersion = (None if term is None else term.to(dtype).eval() for term in (coulomb, dispersion))
        self.register_buffer('total_charge', torch.tensor([float(charge)], dtype=dtype))
        self.nm_to_angstrom = 10.0
        self.ev_to_kj_per_mol = EV_TO_KJ_PER_MOL
        # An example geometry: atoms on a loose helix, no two closer than 1 Å.
        t = torch.arange(len(atomicNumbers), dtype=dtype)
        example = torch.stack([1.5 * torch.cos(t), 1.5 * torch.sin(t), 1.1 * t], dim=1)
        with warnings.catch_warnings():
            warnings.simplefilter('ignore')
            self.network = torch.jit.trace(_DenseAIMNet2(model, atomicNumbers, coulomb, dispersion), (example, self.total_charge),
                                           check_trace=False)

    def forward(self, positions: Tensor) -> Tensor:
        coord = positions.to(self.total_charge.dtype) * self.nm_to_angstrom
        energy = self.network(coord, self.total_charge)
        return (energy * self.ev_to_kj_per_mol).to(positions.dtype)


def createAIMNet2Model(atomicNumbers, charge=0, dtype=torch.float32, modelPath=None, model=None):
    """The TorchScript module for a region from an aimnet model file (``modelPath``, with the long-range terms its
    metadata asks for) or a complete network (``model``)."""
    if (modelPath is None) == (model is None):
        raise ValueError('AIMNet2: pass modelPath= the path of an aimnet .pt or .jpt model file (its weights cannot '
                         'be downloaded by openmm-nnp).')
    metadata = {}
    if modelPath is not None:
        model, metadata = loadModelFile(modelPath)
    species = metadata.get('implemented_species') or []
    unsupported = sorted(set(int(z) for z in atomicNumbers) - set(int(z) for z in species)) if species else []
    if unsupported:
        raise ValueError(f'This AIMNet2 model does not support atomic number(s) {unsupported}; it supports '
                         f'{sorted(int(z) for z in species)}.')
    if charge != 0 and metadata.get('supports_charged_systems') is False:
        raise ValueError(f'This AIMNet2 model does not support charged systems, but the region has a net charge of '
                         f'{charge:+d} e.')
    return torch.jit.script(AIMNet2(model, atomicNumbers, charge=charge, dtype=dtype, metadata=metadata))
