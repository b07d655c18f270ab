"""SO3LR for a fixed NNP region: the pretrained weights of the ``so3krates-torch`` wheel as a TorchScript module.

SO3LR (Kabylda et al., 2024) is a So3krates message-passing network (short-range cutoff 4.5 Å, three
Euclidean-transformer layers, total charge and spin embedded per atom) plus three physical terms: ZBL nuclear
repulsion, electrostatics of learned partial charges that sum to the total charge (erf-damped 1/r, smoothly
switched off between 5.4 and 12 Å) and Tkatchenko-Scheffler-like dispersion from learned Hirshfeld ratios
(12 Å, damping width 2 Å). Elements: H C N O F P S Cl.

The package evaluates the model on a graph that a neighbour-list library builds on every call (about 0.25 s per
energy+forces call for a 30-atom ligand on 2 cores, almost all of it outside the network). An NNP region has a
fixed list of atoms, so here the graph is fixed once: every ordered pair of region atoms is an edge of both the
short- and the long-range graph. Pairs beyond a cutoff contribute exactly zero (the cutoff and switching
functions vanish there), so the energy equals the package's, which uses only pairs inside the cutoffs. The
package's network, evaluated on that fixed graph, is recorded with torch.jit.trace (no Python control flow
depends on positions, box, charge or spin; tests/test_so3lr.py checks the module against the package's own
calculator at positions, boxes and charges other than the traced ones) and wrapped in a scripted module that
converts units and applies periodic boundary conditions.

Units: positions and box in nm are multiplied by 10 to get Å; the energy in eV is multiplied by
96.48533212331002 (kJ/mol per eV, CODATA 2018).

Periodic boxes: every pair of region atoms is taken at its minimum image (NNPForce hands over the region made
whole). In boxes wider than 24 Å in every direction that equals the package's periodic sum; in smaller boxes
the package would add the interactions of region atoms with periodic images of the region within 12 Å. In
NNP/MM with mechanical embedding those image interactions belong to the MM force field (PME keeps them), so the
module leaves them out and describes the region as one molecule.
"""

from typing import Optional, Tuple

import torch
from torch import Tensor

from openmm_nnp.models.pairs import all_pairs, minimum_image_vectors

from openmm_nnp.models.registry import SO3LR_ELEMENTS  # noqa: E402
SO3LR_ATOMIC_NUMBERS = (1, 6, 7, 8, 9, 15, 16, 17)
SO3LR_DESCRIPTION = ('SO3LR: So3krates message passing (4.5 Å) with learned-charge electrostatics, dispersion '
                     'and ZBL repulsion (12 Å) for organic molecules and biomolecules, charged or neutral '
                     '(H C N O F P S Cl); weights from the so3krates-torch wheel')
# The long-range settings of the SO3LR reference implementation: the checkpoint in the wheel does not store them.
LONG_RANGE_CUTOFF = 12.0  # Å
DISPERSION_DAMPING = 2.0  # Å
EV_TO_KJ_PER_MOL = 96.48533212331002


def _requirePackage():
    try:
        import so3krates_torch  # noqa: F401
    except ImportError:
        raise ImportError("SO3LR needs the package so3krates-torch: pip install so3krates-torch==0.2.1 "
                          '(its wheel contains the SO3LR weights).') from None


def weightsPath():
    """The path of the SO3LR checkpoint inside the installed so3krates-torch package."""
    _requirePackage()
    import importlib.resources
    return str(importlib.resources.files('so3krates_torch') / 'pretrained' / 'so3lr' / 'so3lr.model')


def loadPackageModel(dtype=torch.float64, path=None):
    """The package's SO3LR module (eager, from the pickled checkpoint), with the long-range settings set."""
    _requirePackage()
    with _defaultDtype(dtype):  # the package creates some tensors with the default dtype
        model = torch.load(path or weightsPath(), map_location='cpu', weights_only=False)
        model.r_max_lr = LONG_RANGE_CUTOFF
        model.dispersion_energy_cutoff_lr_damping = DISPERSION_DAMPING
        model = model.to(dtype).eval()
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    return model


def checkAtomicNumbers(atomicNumbers):
    unsupported = sorted({int(z) for z in atomicNumbers} - set(SO3LR_ATOMIC_NUMBERS))
    if unsupported:
        raise ValueError(f'SO3LR does not support atomic number(s) {unsupported}; it supports '
                         f"{', '.join(SO3LR_ELEMENTS)}.")
    if len(atomicNumbers) < 2:
        raise ValueError('An SO3LR region needs at least 2 atoms.')


class _FixedGraphSO3LR(torch.nn.Module):
    """The package's model evaluated on the all-pairs graph of one region (eager; only used to be traced)."""

    def __init__(self, model, atomicNumbers, dtype):
        super().__init__()
        self.model = model
        n = len(atomicNumbers)
        numbers = torch.tensor(atomicNumbers, dtype=torch.long)
        self.register_buffer('atomic_numbers', numbers)
        self.register_buffer('node_attrs', torch.nn.functional.one_hot(numbers - 1, 118).to(dtype))
        self.register_buffer('batch', torch.zeros(n, dtype=torch.long))
        self.register_buffer('ptr', torch.tensor([0, n], dtype=torch.long))
        self.register_buffer('head', torch.zeros(1, dtype=torch.long))
        self.register_buffer('cell', torch.zeros(3, 3, dtype=dtype))

    def forward(self, positions: Tensor, edge_index: Tensor, shifts: Tensor, edge_index_lr: Tensor,
                shifts_lr: Tensor, total_charge: Tensor, total_spin: Tensor) -> Tensor:
        data = {
            'positions': positions, 'atomic_numbers': self.atomic_numbers, 'node_attrs': self.node_attrs,
            'batch': self.batch, 'ptr': self.ptr, 'head': self.head, 'cell': self.cell,
            'edge_index': edge_index, 'edge_index_lr': edge_index_lr, 'shifts': shifts, 'shifts_lr': shifts_lr,
            'unit_shifts': torch.zeros_like(shifts), 'unit_shifts_lr': torch.zeros_like(shifts_lr),
            'total_charge': total_charge, 'total_spin': total_spin,
        }
        return self.model(data, compute_force=False)['energy'].sum()


class SO3LR(torch.nn.Module):
    """SO3LR for one region: ``forward(positions[n, 3] nm, boxVectors[3, 3] nm or None) -> energy (kJ/mol)``.

    The total charge (e) and total spin (the package's ``total_spin``: 0 for closed shells, 0.5 for a doublet)
    are the buffers ``total_charge`` and ``total_spin``, set by the constructor.

    Each call keeps the pairs closer than the short-range cutoff as the message-passing graph (the network's
    cost grows with their number) and every pair as the long-range graph.
    """

    def __init__(self, atomicNumbers, charge=0, spin=0.0, dtype=torch.float32, packageModel=None):
        super().__init__()
        atomicNumbers = [int(z) for z in atomicNumbers]
        checkAtomicNumbers(atomicNumbers)
        n = len(atomicNumbers)
        model = packageModel if packageModel is not None else loadPackageModel(dtype)
        graph = _FixedGraphSO3LR(model, atomicNumbers, dtype)
        self.register_buffer('pair_index', all_pairs(n))
        self.register_buffer('total_charge', torch.tensor([float(charge)], dtype=dtype))
        self.register_buffer('total_spin', torch.tensor([float(spin)], dtype=dtype))
        self.nm_to_angstrom = 10.0
        self.ev_to_kj_per_mol = EV_TO_KJ_PER_MOL
        self.cutoff = float(model.r_max)
        # Trace on a chain ~3.3 Å apart: neighbours are short-range edges, the rest long-range only.
        example = torch.linspace(0.0, 0.7 * self.cutoff * (n - 1), n, dtype=dtype)[:, None] * torch.tensor(
            [1.0, 0.3, 0.1], dtype=dtype)
        example = example + 0.1 * torch.randn(n, 3, dtype=dtype, generator=torch.Generator().manual_seed(0))
        inputs = self._graph_inputs(example, None)
        # The package creates some constants in forward() with the default dtype: trace them in the model's.
        with _defaultDtype(dtype), _quiet(), _floatAtomCounts(graph.batch, dtype):
            self.network = torch.jit.trace(graph, (example,) + inputs + (self.total_charge, self.total_spin),
                                           check_trace=False)

    def _graph_inputs(self, positions: Tensor, boxVectors: Optional[Tensor]) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
        """Short-range edges and shifts, long-range edges and shifts (Å) for positions in Å."""
        box: Optional[Tensor] = None
        if boxVectors is not None:
            box = boxVectors.to(positions.dtype) * self.nm_to_angstrom
        vectors, shifts = minimum_image_vectors(positions, self.pair_index, box)
        short = torch.linalg.vector_norm(vectors, dim=1) < self.cutoff
        return self.pair_index[:, short], shifts[short], self.pair_index, shifts

    def forward(self, positions: Tensor, boxVectors: Optional[Tensor] = None) -> Tensor:
        positions_angstrom = positions.to(self.total_charge.dtype) * self.nm_to_angstrom
        edge_index, shifts, edge_index_lr, shifts_lr = self._graph_inputs(positions_angstrom, boxVectors)
        energy = self.network(positions_angstrom, edge_index, shifts, edge_index_lr, shifts_lr, self.total_charge,
                              self.total_spin)
        return (energy * self.ev_to_kj_per_mol).to(positions.dtype)


class _defaultDtype:
    """Set torch's default dtype inside the block and restore it after (the package's code also changes it)."""

    def __init__(self, dtype):
        self.dtype = dtype

    def __enter__(self):
        self.previous = torch.get_default_dtype()
        torch.set_default_dtype(self.dtype)

    def __exit__(self, *exc):
        torch.set_default_dtype(self.previous)


class _floatAtomCounts:
    """While tracing, make ``torch.ones_like(batch)`` floating point.

    The package counts the atoms of a molecule as ``scatter_sum(torch.ones_like(batch))`` (integers) and spreads
    the missing charge with ``1 / count``. Traced, that division yields torch's default dtype at run time, which is
    float32 inside NNPForce: the partial charges of a float64 model would be off by ~1e-8. With floating-point
    ones the count, and the division, have the model's dtype.
    """

    def __init__(self, batch, dtype):
        self.batch, self.dtype = batch, dtype

    def __enter__(self):
        self.original = torch.ones_like
        original, batch, dtype = self.original, self.batch, self.dtype

        def ones_like(tensor, *args, **kwargs):
            if tensor is batch and not args and not kwargs:
                return original(tensor, dtype=dtype)
            return original(tensor, *args, **kwargs)
        torch.ones_like = ones_like

    def __exit__(self, *exc):
        torch.ones_like = self.original


class _quiet:
    """Silence the tracer's warnings about Python values it records as constants (the graph is fixed on purpose)."""

    def __enter__(self):
        import warnings
        self._context = warnings.catch_warnings()
        self._context.__enter__()
        warnings.simplefilter('ignore', torch.jit.TracerWarning)
        warnings.simplefilter('ignore', UserWarning)

    def __exit__(self, *exc):
        return self._context.__exit__(*exc)


def createSO3LRModel(atomicNumbers, charge=0, dtype=torch.float32, spin=0.0):
    """The TorchScript SO3LR module for a region (atomic numbers in the region's order, net charge in e)."""
    return torch.jit.script(SO3LR(atomicNumbers, charge=charge, spin=spin, dtype=dtype))
