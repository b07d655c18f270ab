"""SO3LR for a fixed NNP region: the pretrained weights of the ``so3krates-torch`` wheel in a dense TorchScript module.

SO3LR (Kabylda et al., 2024) is a So3krates message-passing network (short-range cutoff 4.5 Å, three
Euclidean-transformer layers, total charge and spin embedded per atom) plus three physical terms: ZBL nuclear
repulsion, electrostatics of learned partial charges that sum to the total charge (erf-damped 1/r, smoothly
switched off between 5.4 and 12 Å) and Tkatchenko-Scheffler-like dispersion from learned Hirshfeld ratios
(12 Å, damping width 2 Å). Elements: H C N O F P S Cl.

The package evaluates the model on a graph that a neighbour-list library builds on every call, with scatter and
gather over edge lists. An NNP region has a fixed list of atoms (20-100), so this module is our own implementation
of the same network for one region, on dense n x n pair tensors: the weights are read from the wheel's checkpoint,
everything that depends only on the region's elements, charge and spin is computed once in the constructor
(element, charge and spin embeddings, per-atom energy scales and shifts, reference polarisabilities and C6
coefficients, ZBL charge products), and a call does a few batched matrix products per layer; the filter networks,
symmetric in the pair, run once per unordered pair within the short-range cutoff. On the CPU compiled operators
(plugin_cpp/torch_ops/SO3LRAttention.cpp, SO3LRPhysical.cpp, SO3LRFilters.cpp, SO3LRUpdate.cpp,
SO3LRGeometry.cpp and SO3LRHeads.cpp, loaded with openmm-nnp's operator library; the NNPForce kernels link it)
compute the pair distances, the cutoff function, the list of pairs within the cutoff and those pairs' spherical
harmonics and radial basis (one operator from the positions), each layer's queries, keys and values and its
attention coefficients on those pairs directly, each layer's update of the atoms' features after them
(messages, layer norms, residual MLP, interaction), the output heads, the ZBL, electrostatic and dispersion terms
with analytic gradients, and the filter networks (the radial parts of all layers in one operator, or in float32
modules read from a table of polynomials fitted in the constructor, FILTER_TABLE_INTERVALS; each layer's
ev-invariant parts in another), all with hand-written backward passes. With the table (float32 modules by default)
one operator, so3lr_network (SO3LRNetwork.cpp), runs all of those steps and their backward passes in one call and
returns the energy with its gradient, without the TorchScript interpreter and autograd between the steps
(fusedNetwork=False keeps the separate operators). On other devices, or with compiledOperators=False, the module
computes the same with PyTorch operations (on n x n pair tensors; the same numbers to rounding). Cost:
docs/models.md (benchmarks/bench_so3lr.py).
Every ordered pair of distinct atoms is a pair; the short-range cutoff function is zero at and beyond 4.5 Å (and on
the diagonal), the long-range switching functions are zero at and beyond 12 Å, so the pairs the package's neighbour
lists leave out add exactly zero, and the energy is the package's (tests/test_so3lr.py compares energies and forces
with the package's own calculator in float64).

Units: positions and box in nm are multiplied by 10 to get Å; the energy in eV is multiplied by
96.48533212331002 (kJ/mol per eV, CODATA 2018).

Periodic boxes: every pair of region atoms is taken at its minimum image (NNPForce hands over the region made
whole). In boxes wider than 24 Å in every direction that equals the package's periodic sum; in smaller boxes
the package would add the interactions of region atoms with periodic images of the region within 12 Å. In
NNP/MM with mechanical embedding those image interactions belong to the MM force field (PME keeps them), so the
module leaves them out and describes the region as one molecule.
"""

import math
from typing import Final, List, Optional, Tuple

import torch
from torch import Tensor

from openmm_nnp.models.pairs import minimum_image_shifts

from openmm_nnp.models.registry import SO3LR_ELEMENTS  # noqa: E402
SO3LR_ATOMIC_NUMBERS = (1, 6, 7, 8, 9, 15, 16, 17)
SO3LR_DESCRIPTION = ('SO3LR: So3krates message passing (4.5 Å) with learned-charge electrostatics, dispersion '
                     'and ZBL repulsion (12 Å) for organic molecules and biomolecules, charged or neutral '
                     '(H C N O F P S Cl); weights from the so3krates-torch wheel')
# The long-range settings of the SO3LR reference implementation: the checkpoint in the wheel does not store them.
LONG_RANGE_CUTOFF = 12.0  # Å
DISPERSION_DAMPING = 2.0  # Å
EV_TO_KJ_PER_MOL = 96.48533212331002
# Electrostatics: switched from the shifted-force potential to the plain one below this fraction of the cutoff.
ELECTROSTATIC_CUTON_FRACTION = 0.45
# Cubic fit of the QDO length parameter against the vdW radius (vdW-QDO dispersion, Khabibrakhmanov et al.).
QDO_SIGMA_FIT = (-0.00433008, 0.24428889, 0.04125273, -0.00078893)
QDO_DAMPING_FACTOR = 2.54
ZBL_SWITCH_OFF = 1.5  # Å: ZBL repulsion switched off between 0 and this distance
SWITCH_EPSILON = 1e-12  # the package's regulariser in the switching function's denominator
LAYER_NORM_EPSILON = 1e-6
# The radial filters as a table (float32 modules, SO3LR(tabulatedFilters=...)): polynomials of this degree in
# sqrt(distance) on this many equal intervals of [0, sqrt(4.5 Å)]. Measured against the networks in float64 (the
# SO3LR weights of so3krates-torch 0.2.1), the largest error relative to each output's largest value is 6.7e-9
# beyond 0.1 Å and 2.3e-6 below (where atoms overlap); evaluating the networks in float32 errs by 3.0e-6
# (tests/test_so3lr.py::test_filter_table_accuracy).
FILTER_TABLE_INTERVALS = 16
FILTER_TABLE_DEGREE = 11


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
    """The package's SO3LR module (eager, from the pickled checkpoint), with the long-range settings set.

    Our module reads its weights from it; the tests use it, in the package's calculator, as the reference."""
    _requirePackage()
    with _defaultDtype(dtype):  # the package creates some tensors with the default dtype
        model = torch.load(path or weightsPath(), map_location='cpu', weights_only=False)
        model.r_max_lr = LONG_RANGE_CUTOFF
        model.dispersion_energy_cutoff_lr_damping = DISPERSION_DAMPING
        model = model.to(dtype).eval()
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    return model


def _loadOperators():
    """Load openmm-nnp's TorchScript operators (plugin_cpp/torch_ops); False where the library is missing."""
    try:
        from openmm_nnp import _plugin
        _plugin.loadTorchOperators()
    except (ImportError, OSError, RuntimeError):
        return False
    return hasattr(torch.ops.openmm_nnp, 'so3lr_attention')


def checkAtomicNumbers(atomicNumbers):
    unsupported = sorted({int(z) for z in atomicNumbers} - set(SO3LR_ATOMIC_NUMBERS))
    if unsupported:
        raise ValueError(f'SO3LR does not support atomic number(s) {unsupported}; it supports '
                         f"{', '.join(SO3LR_ELEMENTS)}.")
    if len(atomicNumbers) < 2:
        raise ValueError('An SO3LR region needs at least 2 atoms.')


# Real spherical harmonics (the orthonormal real basis, m = -l..l, no Condon-Shortley phase) of a unit vector as
# homogeneous polynomials of degree l in x, y, z. A polynomial is a dict {(a, b, c): coefficient of x^a y^b z^c}.

def _polynomial(*terms):
    result = {}
    for coefficient, powers in terms:
        result[powers] = result.get(powers, 0.0) + coefficient
    return result


def _multiply(p, q):
    result = {}
    for (a1, b1, c1), s in p.items():
        for (a2, b2, c2), t in q.items():
            key = (a1 + a2, b1 + b2, c1 + c2)
            result[key] = result.get(key, 0.0) + s * t
    return result


def _scale(factor, p):
    return {powers: factor * coefficient for powers, coefficient in p.items()}


def _add(*ps):
    result = {}
    for p in ps:
        for powers, coefficient in p.items():
            result[powers] = result.get(powers, 0.0) + coefficient
    return result


def _sphericalHarmonicPolynomials(degree):
    """The 2 l + 1 real spherical harmonics of one degree (1 to 4), m = -l..l."""
    x, y, z = _polynomial((1.0, (1, 0, 0))), _polynomial((1.0, (0, 1, 0))), _polynomial((1.0, (0, 0, 1)))
    r2 = _add(_multiply(x, x), _multiply(y, y), _multiply(z, z))
    xx, yy, zz = _multiply(x, x), _multiply(y, y), _multiply(z, z)
    xy, yz, xz = _multiply(x, y), _multiply(y, z), _multiply(x, z)
    x2_minus_y2 = _add(xx, _scale(-1.0, yy))
    pi = math.pi
    if degree == 1:
        c = math.sqrt(3 / (4 * pi))
        return [_scale(c, y), _scale(c, z), _scale(c, x)]
    if degree == 2:
        a, b, c = 0.5 * math.sqrt(15 / pi), 0.25 * math.sqrt(5 / pi), 0.25 * math.sqrt(15 / pi)
        return [_scale(a, xy), _scale(a, yz), _scale(b, _add(_scale(3.0, zz), _scale(-1.0, r2))), _scale(a, xz),
                _scale(c, x2_minus_y2)]
    if degree == 3:
        a, b = 0.25 * math.sqrt(35 / (2 * pi)), 0.5 * math.sqrt(105 / pi)
        c, d, e = 0.25 * math.sqrt(21 / (2 * pi)), 0.25 * math.sqrt(7 / pi), 0.25 * math.sqrt(105 / pi)
        five_z2_minus_r2 = _add(_scale(5.0, zz), _scale(-1.0, r2))
        return [_scale(a, _multiply(y, _add(_scale(3.0, xx), _scale(-1.0, yy)))),
                _scale(b, _multiply(xy, z)),
                _scale(c, _multiply(y, five_z2_minus_r2)),
                _scale(d, _multiply(z, _add(_scale(5.0, zz), _scale(-3.0, r2)))),
                _scale(c, _multiply(x, five_z2_minus_r2)),
                _scale(e, _multiply(x2_minus_y2, z)),
                _scale(a, _multiply(x, _add(xx, _scale(-3.0, yy))))]
    if degree == 4:
        a, b = 0.75 * math.sqrt(35 / pi), 0.75 * math.sqrt(35 / (2 * pi))
        c, d = 0.75 * math.sqrt(5 / pi), 0.75 * math.sqrt(5 / (2 * pi))
        e, f, g = 0.1875 * math.sqrt(1 / pi), 0.375 * math.sqrt(5 / pi), 0.1875 * math.sqrt(35 / pi)
        seven_z2_minus_r2 = _add(_scale(7.0, zz), _scale(-1.0, r2))
        seven_z2_minus_3r2 = _add(_scale(7.0, zz), _scale(-3.0, r2))
        three_x2_minus_y2 = _add(_scale(3.0, xx), _scale(-1.0, yy))
        x2_minus_3y2 = _add(xx, _scale(-3.0, yy))
        r4 = _multiply(r2, r2)
        return [_scale(a, _multiply(xy, x2_minus_y2)),
                _scale(b, _multiply(yz, three_x2_minus_y2)),
                _scale(c, _multiply(xy, seven_z2_minus_r2)),
                _scale(d, _multiply(yz, seven_z2_minus_3r2)),
                _scale(e, _add(_scale(35.0, _multiply(zz, zz)), _scale(-30.0, _multiply(zz, r2)),
                               _scale(3.0, r4))),
                _scale(d, _multiply(xz, seven_z2_minus_3r2)),
                _scale(f, _multiply(x2_minus_y2, seven_z2_minus_r2)),
                _scale(b, _multiply(xz, x2_minus_3y2)),
                _scale(g, _add(_multiply(xx, x2_minus_3y2), _scale(-1.0, _multiply(yy, three_x2_minus_y2))))]
    raise ValueError(f'spherical harmonics of degree {degree} are not implemented (1 to 4 are)')


def sphericalHarmonicsMatrix(degrees):
    """[3 + 9 + 27 + 81, sum(2 l + 1)] coefficients: the real spherical harmonics of the given degrees of a unit
    vector u are ``cat(u, u⊗u, u⊗u⊗u, u⊗u⊗u⊗u) @ matrix`` (tensor powers flattened in row-major order)."""
    offsets = {1: 0, 2: 3, 3: 12, 4: 39}
    columns = []
    for degree in degrees:
        for harmonic in _sphericalHarmonicPolynomials(degree):
            column = torch.zeros(120, dtype=torch.float64)
            for (a, b, c), coefficient in harmonic.items():
                if a + b + c != degree:
                    raise AssertionError('spherical harmonic polynomials must be homogeneous')
                axes = [0] * a + [1] * b + [2] * c
                index = 0
                for axis in axes:
                    index = 3 * index + axis
                column[offsets[degree] + index] += coefficient
            columns.append(column)
    return torch.stack(columns, dim=1)


def _linear(state, name):
    """The weight (transposed to [in, out]) and bias (or None) of a torch.nn.Linear in a state dict."""
    weight = state[name + '.weight'].t()
    bias = state.get(name + '.bias')
    return weight, bias


def _checkConfiguration(model):
    """Refuse checkpoints with settings this implementation does not cover (the wheel's SO3LR has these)."""
    expected = {
        'degrees': [1, 2, 3, 4], 'radial_basis_fn': 'bernstein', 'cutoff_fn_name': 'phys',
        'message_normalization': 'avg_num_neighbors', 'qk_non_linearity': 'identity', 'activation_fn_name': 'silu',
        'energy_activation_fn_name': 'silu', 'layer_normalization_1': True, 'layer_normalization_2': True,
        'residual_mlp_1': True, 'residual_mlp_2': False, 'use_charge_embed': True, 'use_spin_embed': True,
        'initialize_ev_to_zeros': True, 'final_mlp_layers': 2, 'zbl_repulsion_bool': True,
        'electrostatic_energy_bool': True, 'dispersion_energy_bool': True, 'neighborlist_format_lr': 'sparse',
    }
    different = {key: getattr(model, key, None) for key, value in expected.items()
                 if getattr(model, key, None) != value}
    if getattr(model, 'use_pme', False):
        different['use_pme'] = True
    if different:
        raise ValueError(f'This SO3LR checkpoint has settings openmm_nnp.models.so3lr does not implement: {different}')


def _chargeSpinEmbedding(state, prefix, numbers, psi):
    """The package's charge (or spin) embedding for one molecule: attention of the elements' queries on a key
    chosen by the sign of psi spreads psi over the atoms; a value vector, plus a two-layer residual MLP of it."""
    query = state[prefix + '.Wq.weight'].t()[numbers - 1]  # [n, F]
    row = 0 if psi >= 0 else 1
    key, value = state[prefix + '.Wk'][row], state[prefix + '.Wv'][row]
    weights = torch.nn.functional.softplus(query @ key / math.sqrt(key.shape[0]))
    attention = psi * weights / (weights.sum() + 1e-6)
    embedded = attention[:, None] * value[None, :]
    hidden = torch.nn.functional.silu(embedded) @ state[prefix + '.mlp.1.weight'].t()
    return embedded + torch.nn.functional.silu(hidden) @ state[prefix + '.mlp.3.weight'].t()


def _switches(x: Tensor, x_on: Tensor, inverse_width: Tensor, epsilon: float) -> Tensor:
    """Smooth steps from 1 (x <= x_on) to 0 (x >= x_on + width), one per entry of x_on and inverse_width ([S]):
    [S, *x.shape]. Built from exp(-1/t), which is exactly 0 for t <= 0 (t clamped to 1e-12 there, as the
    package does, which also gives zero gradients); epsilon: the package's regulariser of the denominator."""
    shape = [-1] + [1] * x.dim()
    c = (x[None] - x_on.reshape(shape)) * inverse_width.reshape(shape)
    rising = torch.exp(-1.0 / (1.0 - c).clamp_min(1e-12))
    falling = torch.exp(-1.0 / c.clamp_min(1e-12))
    return rising / (rising + falling + epsilon)


def _bernstein_basis(r: Tensor, log_binomial: Tensor, k: Tensor, k_reverse: Tensor, gamma: float, epsilon: float,
                     smallest: float) -> Tensor:
    """The radial basis of distances r [P] (Å): Bernstein polynomials of exp(-gamma r) in log space, with a constant 1
    appended (it carries the first filter layers' biases into their matrix), [P, R + 1]."""
    e = torch.exp(-gamma * r).clamp(epsilon, 1.0 - epsilon)
    rbf = torch.exp(log_binomial + k * torch.log(e)[:, None] + k_reverse * torch.log(1.0 - e)[:, None])
    # Flush subnormal values to zero (high-order basis functions at short range underflow in float32; a
    # subnormal operand makes the matrix products after it several times slower). Relative effect < 1e-30.
    rbf = torch.where(rbf >= smallest, rbf, torch.zeros_like(rbf))
    return torch.cat([rbf, torch.ones_like(rbf[:, :1])], dim=1)


def _radial_filter_networks(rbf: Tensor, first: Tensor, second: Tensor, bias: Tensor) -> Tensor:
    """The radial parts of all filters of all layers plus their biases, [2 L, P, F] (index 2 layer + kind), from the
    basis [P, R + 1]: silu(rbf @ first) read as [P, 2 L, F], times the second layers [2 L, F, F]."""
    # The product is a tensordot, which TorchScript's autodiff leaves to autograd, so the SiLU after it is
    # differentiated by autograd's fused kernel (one pass) instead of TorchScript's six-pass symbolic formula.
    hidden = torch.nn.functional.silu(torch.tensordot(rbf, first, dims=1))
    hidden = hidden.reshape(rbf.shape[0], second.shape[0], second.shape[1]).transpose(0, 1)
    return torch.baddbmm(bias[:, None, :], hidden, second)


def _filter_table(filters, cutoff, intervals=FILTER_TABLE_INTERVALS, degree=FILTER_TABLE_DEGREE):
    """The table of so3lr_tabulated_filters (plugin_cpp/torch_ops/SO3LRFilters.cpp): on each of `intervals` equal
    intervals of u = sqrt(r) in [0, sqrt(cutoff)] the polynomials of `degree` in t in [-1, 1] that interpolate
    filters(r) [P] -> [S, P, F] (float64) at the Chebyshev nodes, as coefficients [intervals, degree + 1, S, F] of
    t^d; and the intervals' length in u."""
    powers = torch.arange(degree + 1, dtype=torch.float64)
    nodes = torch.cos(math.pi * (2.0 * powers + 1.0) / (2.0 * degree + 2.0))
    spacing = math.sqrt(cutoff) / intervals
    u = (torch.arange(intervals, dtype=torch.float64)[:, None] + (nodes[None, :] + 1.0) / 2.0) * spacing
    values = filters(u.reshape(-1) ** 2)  # [S, intervals (degree + 1), F]
    S, F = values.shape[0], values.shape[2]
    values = values.transpose(0, 1).reshape(intervals, degree + 1, S * F)
    coefficients = torch.linalg.solve(nodes[:, None] ** powers[None, :], values)
    return coefficients.reshape(intervals, degree + 1, S, F), spacing


class SO3LR(torch.nn.Module):
    """SO3LR for one region: ``forward(positions[n, 3] nm, boxVectors[3, 3] nm or None) -> energy (kJ/mol)``.

    The total charge (e) and total spin (the package's ``total_spin``: 0 for closed shells, 0.5 for a doublet)
    are fixed by the constructor: their embeddings are computed there, and the buffers ``total_charge`` and
    ``total_spin`` record them. Pair tensors are n x n (receiver i, sender j); the pair vector is
    ``positions[i] - positions[j]`` at its minimum image (the package's direction for the spherical harmonics).
    compiledOperators: use the compiled operators on the CPU (None: when openmm-nnp's operator library loads); a
    module that uses them needs that library loaded in the process that loads or runs it.
    tabulatedFilters: read the radial filters, functions of the distance alone, from a table of piecewise
    polynomials fitted once here (FILTER_TABLE_INTERVALS, FILTER_TABLE_DEGREE; errors far below float32 rounding)
    instead of evaluating their networks on every call (two layers per pair, the largest part of a call; such a
    module computes no radial basis, its rbf_* constants are empty). None: for modules below float64 precision;
    float64 modules evaluate the networks (reference values).
    fusedNetwork: on the CPU, compute the whole network and its gradient in one operator call (so3lr_network)
    instead of one call per step. None: wherever the compiled operators and the table are; it gives first
    derivatives (energy and forces) only.
    """

    compiled_attention: Final[bool]
    compiled_physical: Final[bool]
    compiled_filters: Final[bool]
    compiled_ev_filters: Final[bool]
    compiled_update: Final[bool]
    compiled_geometry: Final[bool]
    compiled_heads: Final[bool]
    compiled_front: Final[bool]
    compiled_projections: Final[bool]
    tabulated_filters: Final[bool]
    fused_network: Final[bool]

    def __init__(self, atomicNumbers, charge=0, spin=0.0, dtype=torch.float32, packageModel=None,
                 compiledOperators=None, tabulatedFilters=None, fusedNetwork=None):
        super().__init__()
        atomicNumbers = [int(z) for z in atomicNumbers]
        checkAtomicNumbers(atomicNumbers)
        from so3krates_torch.blocks import physical_potentials
        model = packageModel if packageModel is not None else loadPackageModel(torch.float64)
        _checkConfiguration(model)
        state = {name: tensor.detach().to(torch.float64) if tensor.is_floating_point() else tensor.detach()
                 for name, tensor in model.state_dict().items()}
        n = len(atomicNumbers)
        numbers = torch.tensor(atomicNumbers, dtype=torch.long)
        self.num_atoms = n
        # The compiled attention operator (CPU), when openmm-nnp's operator library can be loaded (or as asked).
        self.compiled_attention = _loadOperators() if compiledOperators is None else bool(compiledOperators)
        # The compiled ZBL, electrostatics and dispersion operator (CPU), under the same condition.
        self.compiled_physical = self.compiled_attention and hasattr(torch.ops.openmm_nnp, 'so3lr_physical')
        self.compiled_filters = self.compiled_attention and hasattr(torch.ops.openmm_nnp,
                                                                    'so3lr_radial_filters_grouped')
        self.compiled_ev_filters = self.compiled_attention and hasattr(torch.ops.openmm_nnp, 'so3lr_ev_filters')
        self.compiled_update = self.compiled_attention and hasattr(torch.ops.openmm_nnp, 'so3lr_layer_update')
        self.compiled_geometry = self.compiled_attention and hasattr(torch.ops.openmm_nnp, 'so3lr_pair_geometry')
        self.compiled_heads = self.compiled_attention and hasattr(torch.ops.openmm_nnp, 'so3lr_heads')
        # The front (pair vectors to distances, cutoff, pair listing and geometry) in one operator; it leaves out the
        # index tensors only the PyTorch attention path reads, so it goes with the compiled attention.
        self.compiled_front = self.compiled_attention and hasattr(torch.ops.openmm_nnp, 'so3lr_front')
        self.compiled_projections = self.compiled_attention and hasattr(torch.ops.openmm_nnp, 'so3lr_projections')
        self.num_layers = int(model.num_layers)
        self.num_features = int(model.num_features)
        self.num_heads = int(model.num_heads)
        self.head_dim = self.num_features // self.num_heads
        degrees = list(model.degrees)
        if len(degrees) != self.num_heads:
            raise ValueError('this implementation needs as many attention heads as spherical-harmonic degrees')
        self.nm_to_angstrom = 10.0
        self.ev_to_kj_per_mol = EV_TO_KJ_PER_MOL
        self.layer_norm_epsilon = LAYER_NORM_EPSILON
        self.switch_epsilon = SWITCH_EPSILON
        self.qdo_sigma_fit: Tuple[float, float, float, float] = QDO_SIGMA_FIT
        self.qdo_damping_factor = QDO_DAMPING_FACTOR
        self.cutoff = float(model.r_max)
        self.long_range_cutoff = float(model.r_max_lr)
        self.dispersion_damping = float(model.dispersion_energy_cutoff_lr_damping)
        L = self.num_layers

        def buffer(name, tensor):
            self.register_buffer(name, tensor.to(dtype).contiguous())

        buffer('total_charge', torch.tensor([float(charge)], dtype=torch.float64))
        buffer('total_spin', torch.tensor([float(spin)], dtype=torch.float64))
        eye = torch.eye(n, dtype=torch.float64)
        buffer('identity', eye)
        buffer('off_diagonal', 1.0 - eye)
        # Unordered pairs a < b: the filters are symmetric in the pair, so they are computed once per pair. Flat
        # indices of (a, b) in an n x n tensor, and for each (i, j) its unordered pair (the diagonal: pair 0).
        first, second = torch.triu_indices(n, n, offset=1)
        self.register_buffer('pair_first', first.contiguous())
        self.register_buffer('pair_second', second.contiguous())
        self.register_buffer('pair_flat', (first * n + second).contiguous())
        pair_of = torch.zeros(n, n, dtype=torch.long)
        pair_of[first, second] = torch.arange(len(first))
        pair_of[second, first] = torch.arange(len(first))
        self.register_buffer('pair_of', pair_of.reshape(-1))
        self.num_pairs = int(len(first))

        # Embeddings: element, charge and spin (constants of the region), scaled by 1/sqrt(3) as the package does.
        embedding = state['inv_feature_embedding.embedding.weight'].t()[numbers - 1]
        embedding = embedding + _chargeSpinEmbedding(state, 'charge_embedding', numbers, float(charge))
        embedding = embedding + _chargeSpinEmbedding(state, 'spin_embedding', numbers, 2.0 * float(spin))
        buffer('initial_features', embedding / math.sqrt(3.0))

        # Radial basis (Bernstein polynomials of exp(-gamma r)), the spherical harmonics, the degree contractions.
        # With the filter table (below) a call needs no basis: its constants are then empty (R = 0), so the front
        # computes only the constant column. The table is fitted from the full basis in float64.
        self.tabulated_filters = dtype != torch.float64 if tabulatedFilters is None else bool(tabulatedFilters)
        prefix = 'radial_embedding.radial_basis_fn.'
        self.rbf_gamma = float(state[prefix + 'gamma'])
        self.rbf_epsilon = float(model.radial_embedding.radial_basis_fn.eps)
        self.smallest_normal = float(torch.finfo(dtype).tiny)
        basis_float64 = [state[prefix + 'b'], state[prefix + 'k'].to(torch.float64),
                         state[prefix + 'k_rev'].to(torch.float64), self.rbf_gamma, self.rbf_epsilon,
                         float(torch.finfo(torch.float64).tiny)]  # _bernstein_basis's arguments (the filter table)
        basis_size = 0 if self.tabulated_filters else len(basis_float64[0])
        buffer('rbf_log_binomial', basis_float64[0][:basis_size])
        buffer('rbf_k', basis_float64[1][:basis_size])
        buffer('rbf_k_reverse', basis_float64[2][:basis_size])
        buffer('harmonics_matrix', sphericalHarmonicsMatrix(degrees))
        repeats = torch.tensor([2 * degree + 1 for degree in degrees])
        segments = torch.repeat_interleave(torch.arange(len(degrees)), repeats)
        expand = torch.nn.functional.one_hot(segments, len(degrees)).to(torch.float64)  # [24, 4]
        buffer('degree_expand', expand.t().contiguous())  # [4, 24]: per degree -> per component
        contraction = state['euclidean_transformers.0.euclidean_attention_block.so3_conv_invariants.cg_rep']
        buffer('degree_contract', contraction[:, None] * expand)  # [24, 4]: squared components -> invariants
        heads = torch.arange(self.num_features) // self.head_dim  # heads (invariant) or degrees (ev) of features
        buffer('head_onehot', torch.nn.functional.one_hot(heads, self.num_heads).to(torch.float64))  # [F, 4]
        parity = 1.0 - 2.0 * (torch.repeat_interleave(torch.tensor(degrees), repeats) % 2).to(torch.float64)
        buffer('harmonics_parity', parity)  # [24]: (-1)^l, the harmonics of the reversed vector
        self.register_buffer('lower_triangle', torch.tril(torch.ones(n, n, dtype=torch.long), -1).reshape(-1))

        # Filter networks. First layers of the radial parts, all layers and both filters at once: [R, 2 L F].
        rbf_first, rbf_first_bias, rbf_second, rbf_second_bias = [], [], [], []
        ev_first, ev_first_bias, ev_second, ev_second_bias = [], [], [], []
        query, key, value, query_ev, key_ev = [], [], [], [], []
        interaction, interaction_bias, norms, mlp = [], [], [], []
        att_norm = float(model.euclidean_transformers[0].euclidean_attention_block.att_norm_inv)
        for layer in range(L):
            p = f'euclidean_transformers.{layer}.'
            for net in ('filter_net_inv', 'filter_net_ev'):
                w, b = _linear(state, p + net + '.mlp_rbf.0')
                rbf_first.append(w), rbf_first_bias.append(b)
                w, b = _linear(state, p + net + '.mlp_rbf.mlp_rbf_layer_1.0')
                rbf_second.append(w), rbf_second_bias.append(b)
                w, b = _linear(state, p + net + '.mlp_ev.0')
                ev_first.append(w), ev_first_bias.append(b)
                w, b = _linear(state, p + net + '.mlp_ev.mlp_ev_layer_1.0')
                ev_second.append(w), ev_second_bias.append(b)
            a = p + 'euclidean_attention_block.'
            query.append(state[a + 'W_q_inv'] / att_norm)  # [H, D, D], per head
            key.append(state[a + 'W_k_inv'])
            value.append(state[a + 'W_v_inv'])
            query_ev.append(state[a + 'W_q_ev'] / att_norm)
            key_ev.append(state[a + 'W_k_ev'])
            w, b = _linear(state, p + 'interaction_block.linear_layer')
            interaction.append(w), interaction_bias.append(b)
            norms.append(torch.stack([state[p + 'layer_norm_inv_1.weight'], state[p + 'layer_norm_inv_1.bias'],
                                      state[p + 'layer_norm_inv_2.weight'], state[p + 'layer_norm_inv_2.bias']]))
            w1, b1 = _linear(state, p + 'mlp_1.1')
            w2, b2 = _linear(state, p + 'mlp_1.3')
            mlp.append((w1, b1, w2, b2))
        # Filter networks (Fig. 3e of the So3krates paper): filter = MLP(radial basis) + MLP(ev-difference
        # invariants). The radial first layers of all layers and both filters (inv, ev) in one [R, 2 L F] matrix.
        radial_networks = [torch.cat([torch.cat(rbf_first, dim=1), torch.cat(rbf_first_bias)[None, :]]),
                           torch.stack(rbf_second)]  # [R + 1, 2 L F], [2 L, F, F] (index 2 layer + (0 inv, 1 ev))
        buffer('rbf_first', radial_networks[0])
        buffer('filter_rbf_second', radial_networks[1])
        # [L, 4 + 1, 2 H]: ev-invariant first layers of both filters, their biases in the last row.
        buffer('filter_ev_first', torch.stack([torch.cat([torch.cat(ev_first[2 * l:2 * l + 2], dim=1),
                                                          torch.cat(ev_first_bias[2 * l:2 * l + 2])[None, :]])
                                               for l in range(L)]))
        buffer('filter_ev_second', torch.stack(ev_second))  # [2 L, H, F]
        # The first layer's ev features are zero, so its filters' ev parts are constants, added to the bias.
        first_layer = [torch.nn.functional.silu(ev_first_bias[k]) @ ev_second[k] for k in range(2)]
        biases = [rbf_second_bias[k] + ev_second_bias[k] for k in range(2 * L)]
        radial_networks.append(torch.stack([biases[k] + first_layer[k] if k < 2 else biases[k]
                                            for k in range(2 * L)]))
        buffer('filter_bias', radial_networks[2])
        # The radial filters as a table (see the class docstring), fitted in float64; an empty one when not used.
        self.filter_table_spacing = 1.0
        table = torch.zeros([0, FILTER_TABLE_DEGREE + 1, 2 * L, self.num_features], dtype=torch.float64)
        if self.tabulated_filters:
            table, self.filter_table_spacing = _filter_table(
                lambda r: _radial_filter_networks(_bernstein_basis(r, *basis_float64), *radial_networks),
                self.cutoff)
        buffer('filter_table', table)  # [intervals, degree + 1, 2 L, F]
        self.ev_hidden = int(ev_first[0].shape[1])
        # Queries, keys, values: each head's (ev: each degree's) D features projected by its own D x D matrices, per
        # layer and head the five side by side (invariant and ev queries, invariant and ev keys, values): [L, H, D, 5 D].
        buffer('qkv', torch.stack([torch.cat([query[l], query_ev[l], key[l], key_ev[l], value[l]], dim=2)
                                   for l in range(L)]))
        buffer('interaction', torch.stack(interaction))
        buffer('interaction_bias', torch.stack(interaction_bias))
        buffer('layer_norms', torch.stack(norms))  # [L, 4, F]
        buffer('mlp_first', torch.stack([m[0] for m in mlp]))
        buffer('mlp_first_bias', torch.stack([m[1] for m in mlp]))
        buffer('mlp_second', torch.stack([m[2] for m in mlp]))
        buffer('mlp_second_bias', torch.stack([m[3] for m in mlp]))

        # Heads on the final features: atomic energy, partial charge, Hirshfeld ratio. First layers side by side.
        we1, be1 = _linear(state, 'atomic_energy_output_block.layers.0')
        we2, be2 = _linear(state, 'atomic_energy_output_block.final_layer')
        wq1, bq1 = _linear(state, 'partial_charges_output_block.transform_inv_features.0')
        wq2, bq2 = _linear(state, 'partial_charges_output_block.transform_inv_features.2')
        wh1, bh1 = _linear(state, 'hirshfeld_output_block.transform_features.0')
        wh2, bh2 = _linear(state, 'hirshfeld_output_block.transform_features.2')
        buffer('head_first', torch.cat([we1, wq1, wh1], dim=1))
        buffer('head_first_bias', torch.cat([be1, bq1, bh1]))
        # Second layers as per-atom weights [n, He + Hq + Hh] and a [.., 3] segment sum: the energy scale of each
        # atom's element and the Hirshfeld head's element query are folded into the weights.
        scale = state['atomic_energy_output_block.energy_scales.weight'][0][numbers - 1]
        shift = state['atomic_energy_output_block.energy_shifts'][numbers - 1]
        element_query = state['hirshfeld_output_block.q_embedding.weight'][numbers]  # [n, Hh]
        hirshfeld_scale = 1.0 / math.sqrt(element_query.shape[1])
        hirshfeld_weights = element_query @ wh2.t() * hirshfeld_scale  # [n, Hh]
        weights = torch.cat([scale[:, None] * we2[:, 0][None, :], wq2[:, 0][None, :].expand(n, -1),
                             hirshfeld_weights], dim=1)
        buffer('head_second', weights)
        sizes = [we2.shape[0], wq2.shape[0], wh2.shape[0]]
        segment = torch.repeat_interleave(torch.arange(3), torch.tensor(sizes))
        buffer('head_segments', torch.nn.functional.one_hot(segment, 3).to(torch.float64))
        offsets = torch.stack([scale * be2[0] + shift,
                               bq2[0] + state['partial_charges_output_block.atomic_embedding.weight'][numbers, 0],
                               state['hirshfeld_output_block.v_shift_embedding.weight'][numbers, 0]
                               + element_query @ bh2 * hirshfeld_scale], dim=1)
        buffer('head_offsets', offsets)

        # ZBL repulsion: positive parameters, the pairs' charge products and screening lengths.
        z = numbers.to(torch.float64)
        softplus = {name: float(torch.nn.functional.softplus(state[f'zbl_repulsion.{name}_raw'])[0])
                    for name in ('a1', 'a2', 'a3', 'a4', 'c1', 'c2', 'c3', 'c4', 'p', 'd')}
        c_sum = softplus['c1'] + softplus['c2'] + softplus['c3'] + softplus['c4']
        buffer('zbl_coefficients',
               torch.tensor([softplus[f'c{k}'] / c_sum for k in range(1, 5)], dtype=torch.float64))
        buffer('zbl_exponents', torch.tensor([-softplus[f'a{k}'] for k in range(1, 5)], dtype=torch.float64))
        coulomb = float(model.zbl_repulsion.ke)
        buffer('zbl_charge_products', coulomb * z[:, None] * z[None, :] * (1.0 - eye))
        zp = z ** softplus['p']
        buffer('zbl_inverse_lengths', (zp[:, None] + zp[None, :]) * softplus['d'])

        # Electrostatics: erf(r / sigma) / r, shifted-force beyond the cut-on; 1/2 for the double-counted pairs.
        self.electrostatic_sigma = float(model.electrostatic_energy_scale)
        self.coulomb_constant = float(model.electrostatic_potential.ke)
        rc, sigma = self.long_range_cutoff, self.electrostatic_sigma
        self.electrostatic_cuton = ELECTROSTATIC_CUTON_FRACTION * rc
        self.coulomb_shift = math.erf(rc / sigma) / rc
        self.coulomb_force_shift = (2 * rc * math.exp(-(rc / sigma) ** 2) / (math.sqrt(math.pi) * sigma)
                                    - math.erf(rc / sigma)) / rc ** 2
        switch_on = [0.0, self.electrostatic_cuton, self.long_range_cutoff - self.dispersion_damping]
        switch_off = [ZBL_SWITCH_OFF, self.long_range_cutoff, self.long_range_cutoff]
        buffer('switch_on', torch.tensor(switch_on, dtype=torch.float64))
        buffer('switch_inverse_width', 1.0 / (torch.tensor(switch_off, dtype=torch.float64)
                                              - torch.tensor(switch_on, dtype=torch.float64)))

        # Dispersion: free-atom polarisabilities and C6 coefficients of the elements (the package's tables).
        buffer('free_polarizabilities', physical_potentials.ALPHAS.to(torch.float64)[numbers - 1])
        buffer('free_c6', physical_potentials.C6_COEF.to(torch.float64)[numbers - 1])
        self.dispersion_scale = float(model.dispersion_energy_scale)
        self.bohr = float(physical_potentials.BOHR)
        self.hartree = float(physical_potentials.HARTREE)
        self.vdw_radius_factor = float(torch.tensor(physical_potentials.FINE_STRUCTURE, dtype=torch.float64)
                                       ** (-4.0 / 21))
        # The same constants for the compiled operator (plugin_cpp/torch_ops/SO3LRPhysical.cpp), in the module's dtype.
        self.physical_zbl: List[float] = torch.cat([self.zbl_coefficients, self.zbl_exponents]).tolist()
        self.physical_switches: List[float] = torch.cat([self.switch_on, self.switch_inverse_width]).tolist() \
            + [self.switch_epsilon]
        self.physical_constants: List[float] = [
            self.electrostatic_sigma, self.coulomb_shift, self.coulomb_force_shift, self.long_range_cutoff,
            self.coulomb_constant, self.vdw_radius_factor, *QDO_SIGMA_FIT,
            self.dispersion_scale * 2.0 * self.qdo_damping_factor, self.bohr, self.hartree]

        # The whole network and its gradient in one operator call on the CPU (so3lr_network, SO3LRNetwork.cpp): the
        # same operators' steps without the interpreter and autograd between them. It reads the filter table.
        fused_possible = (self.compiled_front and self.compiled_filters and self.compiled_ev_filters
                          and self.compiled_projections and self.compiled_update and self.compiled_heads
                          and self.compiled_physical and self.tabulated_filters
                          and hasattr(torch.ops.openmm_nnp, 'so3lr_network'))
        if fusedNetwork and not fused_possible:
            raise ValueError('SO3LR(fusedNetwork=True) needs the compiled operators and the filter table '
                             '(tabulatedFilters=True)')
        self.fused_network = fused_possible if fusedNetwork is None else bool(fusedNetwork)
        # so3lr_network's constants (its enum Constant).
        self.network_constants: List[float] = [
            self.nm_to_angstrom, self.ev_to_kj_per_mol, self.cutoff, self.rbf_gamma, self.rbf_epsilon,
            self.smallest_normal, self.filter_table_spacing, self.layer_norm_epsilon]

    def forward(self, positions: Tensor, boxVectors: Optional[Tensor] = None) -> Tensor:
        dtype = self.identity.dtype
        if self.fused_network:  # a constant, as compiled_attention
            if positions.device.type == 'cpu':
                return self._fused(positions.to(dtype), boxVectors).to(positions.dtype)
        x = positions.to(dtype) * self.nm_to_angstrom
        energy = self._network(x, boxVectors)
        return (energy * self.ev_to_kj_per_mol).to(positions.dtype)

    def _fused(self, positions: Tensor, boxVectors: Optional[Tensor]) -> Tensor:
        """The energy in kJ/mol from positions in nm through the single operator so3lr_network (its parameters in the
        order of its enum Parameter)."""
        shifts: Optional[Tensor] = None
        if boxVectors is not None:
            x = positions.detach() * self.nm_to_angstrom
            shifts = minimum_image_shifts(x[:, None, :] - x[None, :, :],
                                          boxVectors.to(positions.dtype) * self.nm_to_angstrom)
        parameters = [self.pair_first, self.pair_second, self.harmonics_matrix, self.harmonics_parity,
                      self.rbf_log_binomial, self.rbf_k, self.rbf_k_reverse, self.filter_table, self.initial_features,
                      self.degree_expand, self.degree_contract, self.filter_ev_first, self.filter_ev_second, self.qkv,
                      self.layer_norms, self.mlp_first, self.mlp_first_bias, self.mlp_second, self.mlp_second_bias,
                      self.interaction, self.interaction_bias, self.head_first, self.head_first_bias,
                      self.head_second, self.head_segments, self.head_offsets, self.total_charge,
                      self.zbl_charge_products, self.zbl_inverse_lengths, self.free_polarizabilities, self.free_c6]
        return torch.ops.openmm_nnp.so3lr_network(positions, shifts, parameters, self.network_constants,
                                                  self.physical_zbl, self.physical_switches,
                                                  self.physical_constants, self.num_heads)

    def _front(self, x: Tensor, boxVectors: Optional[Tensor]) -> Tuple[Tensor, Tensor, int, Tensor, Tensor, Tensor,
                                                                          Tensor, Tensor, Tensor]:
        """Positions (Å) to what the network reads of the geometry: distances r [n, n] (1 on the diagonal), the
        cutoff function [n, n], the listed pairs (_listed_pairs: K, first, second, active_flat, dense_slot), the
        harmonics and the radial basis (_pair_geometry). On the CPU the compiled operator so3lr_front
        (plugin_cpp/torch_ops/SO3LRGeometry.cpp) does it all with a hand-written backward pass; it returns empty
        active_flat and dense_slot (only the PyTorch attention and geometry paths read them)."""
        dtype = x.dtype
        if self.compiled_front:  # a constant, as compiled_attention
            if x.device.type == 'cpu':
                shifts: Optional[Tensor] = None
                if boxVectors is not None:
                    vectors = x[:, None, :] - x[None, :, :]
                    shifts = minimum_image_shifts(vectors, boxVectors.to(dtype) * self.nm_to_angstrom)
                r, cutoff, first, second, harmonics, rbf = torch.ops.openmm_nnp.so3lr_front(
                    x, shifts, self.pair_first, self.pair_second, self.cutoff, self.harmonics_matrix,
                    self.harmonics_parity, self.rbf_log_binomial, self.rbf_k, self.rbf_k_reverse, self.rbf_gamma,
                    self.rbf_epsilon, self.smallest_normal)
                empty = torch.empty([0], dtype=torch.long, device=x.device)
                return r, cutoff, first.shape[0] - 1, first, second, empty, empty, harmonics, rbf
        vectors = x[:, None, :] - x[None, :, :]  # [i, j] = x_i - x_j
        if boxVectors is not None:
            vectors = vectors + minimum_image_shifts(vectors, boxVectors.to(dtype) * self.nm_to_angstrom)
        # Distances with 1 on the diagonal (finite gradients there; the diagonal is masked everywhere).
        r = torch.sqrt((vectors * vectors).sum(-1) + self.identity)
        # Short-range pairs: PhysNet cutoff polynomial (zero beyond r_max and on the diagonal).
        s = r / self.cutoff
        cutoff = torch.where(r < self.cutoff, 1.0 - 6.0 * s ** 5 + 15.0 * s ** 4 - 10.0 * s ** 3,
                             torch.zeros_like(r)) * self.off_diagonal
        count, first, second, active_flat, dense_slot = self._listed_pairs(r)
        harmonics, rbf = self._pair_geometry(vectors, r, active_flat, dense_slot, first, second, count)
        return r, cutoff, count, first, second, active_flat, dense_slot, harmonics, rbf

    def _network(self, x: Tensor, boxVectors: Optional[Tensor]) -> Tensor:
        n = self.num_atoms
        r, cutoff, count, first, second, active_flat, dense_slot, harmonics, rbf = self._front(x, boxVectors)
        first_pairs, second_pairs = first[:count], second[:count]  # without the copy of pair 0
        if self.tabulated_filters:  # a constant
            radial = self._tabulated_filters(r, first, second)  # per layer [2, K + 1, F]
        else:
            radial = self._radial_filters(rbf)

        features = self.initial_features
        ev = torch.zeros([n, self.harmonics_matrix.shape[1]], dtype=features.dtype, device=features.device)
        for layer in range(self.num_layers):
            # Filters of this layer, [2, K + 1, F] (0: invariant attention, 1: ev attention): the radial parts of
            # both in one batched product on the layer's hidden radial features, read as [2, K + 1, F].
            filters = radial[layer]
            if layer > 0:
                filters = self._ev_filters(filters, ev, first, second, layer)
            queries, keys, v = self._projections(features, layer)
            # a_ijh = sum_(d in h) q_id k_jd f_ijd for both kinds (4 invariant heads, 4 degrees), [2, n, n, 4]
            # (the cutoff multiplies them in _update). On the CPU the compiled operator
            # (plugin_cpp/torch_ops/SO3LRAttention.cpp) does it on the K pairs, both directions at once; elsewhere
            # per kind and receiver i an [n, F] @ [F, 4] product.
            attention = self._attention(queries, keys, filters, dense_slot, first_pairs, second_pairs)
            features, ev = self._update(features, ev, attention, cutoff, harmonics, v, layer)

        atomic_energy, charges, hirshfeld = self._heads(features)
        return atomic_energy + self._physical_terms(r, cutoff, charges, hirshfeld)

    def _heads(self, features: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
        """The output heads on the final features: the sum of the atomic energies, the partial charges (summing to the
        total charge) and the Hirshfeld ratios [n]. On the CPU the compiled operator
        (plugin_cpp/torch_ops/SO3LRHeads.cpp) does it with a hand-written backward pass."""
        if self.compiled_heads:  # a constant, as compiled_attention
            if features.device.type == 'cpu':
                return torch.ops.openmm_nnp.so3lr_heads(features, self.head_first, self.head_first_bias,
                                                        self.head_second, self.head_segments, self.head_offsets,
                                                        self.total_charge)
        heads = torch.nn.functional.silu(torch.addmm(self.head_first_bias, features, self.head_first))
        heads = (heads * self.head_second) @ self.head_segments + self.head_offsets  # [n, 3]
        atomic_energy = heads[:, 0].sum()
        raw_charges = heads[:, 1]
        charges = raw_charges + (self.total_charge - raw_charges.sum()) / self.num_atoms
        hirshfeld = torch.abs(heads[:, 2])
        return atomic_energy, charges, hirshfeld

    def _listed_pairs(self, r: Tensor) -> Tuple[int, Tensor, Tensor, Tensor, Tensor]:
        """The K unordered pairs within the short-range cutoff and a copy of pair 0: K, first and second atoms [K + 1],
        their flat indices in n x n [K + 1], and for each (i, j) its row among them (dense_slot, [n n])."""
        # The filters are evaluated on the unordered pairs within the cutoff (K of them, chosen per call) plus one
        # more row, a copy of pair 0, that every other (i, j) (farther pairs, the diagonal) reads: its attention
        # is multiplied by a zero cutoff. (Index tensors only: no torch.no_grad() block, which TorchScript's
        # autodiff mishandles here: the forces came out wrong.)
        distances = r.detach().reshape(-1).index_select(0, self.pair_flat)
        active = torch.nonzero(distances < self.cutoff).reshape(-1)
        count = active.shape[0]
        active = torch.cat([active, torch.zeros(1, dtype=active.dtype, device=active.device)])
        slot = torch.full([self.num_pairs], count, dtype=torch.long, device=active.device)
        slot.index_copy_(0, active[:count], torch.arange(count, device=active.device))
        dense_slot = slot.index_select(0, self.pair_of)
        first = self.pair_first.index_select(0, active)
        second = self.pair_second.index_select(0, active)
        active_flat = self.pair_flat.index_select(0, active)
        return count, first, second, active_flat, dense_slot

    def _pair_geometry(self, vectors: Tensor, r: Tensor, active_flat: Tensor, dense_slot: Tensor, first: Tensor,
                       second: Tensor, count: int) -> Tuple[Tensor, Tensor]:
        """The spherical harmonics of the pairs within the cutoff, dense [n, n, 24], and the radial basis of the K + 1
        listed pairs (first, second; the last a copy of pair 0) with a constant 1 appended, [K + 1, 33]. On the CPU
        the compiled operator (plugin_cpp/torch_ops/SO3LRGeometry.cpp), which leaves zeros where this path has the
        copy of pair 0's harmonics (both are multiplied by a zero cutoff)."""
        if self.compiled_geometry:  # a constant, as compiled_attention
            if vectors.device.type == 'cpu':
                return torch.ops.openmm_nnp.so3lr_pair_geometry(
                    vectors, first, second, count, self.harmonics_matrix, self.harmonics_parity,
                    self.rbf_log_binomial, self.rbf_k, self.rbf_k_reverse, self.rbf_gamma, self.rbf_epsilon,
                    self.smallest_normal)
        n = self.num_atoms
        pairs = n * n
        r_active = r.reshape(-1).index_select(0, active_flat)
        # Spherical harmonics of the unit vectors of these pairs (x_a - x_b for a < b), from their tensor powers;
        # the reversed pair's are (-1)^l times these. Dense [n, n, 24]: the pair a < b reads row slot, b > a row
        # K + 1 + slot of [Y, parity Y] (every other (i, j) reads a row of the copy of pair 0, times a zero cutoff).
        u = vectors.reshape(pairs, 3).index_select(0, active_flat) / r_active[:, None]
        u2 = (u[:, :, None] * u[:, None, :]).reshape(-1, 9)
        u3 = (u2[:, :, None] * u[:, None, :]).reshape(-1, 27)
        u4 = (u3[:, :, None] * u[:, None, :]).reshape(-1, 81)
        harmonics = torch.cat([u, u2, u3, u4], dim=1) @ self.harmonics_matrix
        harmonics = torch.cat([harmonics, harmonics * self.harmonics_parity]).index_select(
            0, dense_slot + (count + 1) * self.lower_triangle).reshape(n, n, -1)
        return harmonics, _bernstein_basis(r_active, self.rbf_log_binomial, self.rbf_k, self.rbf_k_reverse,
                                           self.rbf_gamma, self.rbf_epsilon, self.smallest_normal)

    def _update(self, features: Tensor, ev: Tensor, attention: Tensor, cutoff: Tensor, harmonics: Tensor,
                v: Tensor, layer: int) -> Tuple[Tensor, Tensor]:
        """One layer's update of the features and ev features after the attention coefficients [2, n, n, H] (without
        the cutoff): messages, layer norm, residual MLP, interaction, layer norm. On the CPU the compiled operator
        (plugin_cpp/torch_ops/SO3LRUpdate.cpp) does it with a hand-written backward pass."""
        update_ev = layer + 1 < self.num_layers  # the last layer's ev features are not used
        if self.compiled_update:  # a constant, as compiled_attention
            if features.device.type == 'cpu':
                return torch.ops.openmm_nnp.so3lr_layer_update(
                    features, ev, attention, cutoff, harmonics, v, self.layer_norms[layer], self.mlp_first[layer],
                    self.mlp_first_bias[layer], self.mlp_second[layer], self.mlp_second_bias[layer],
                    self.interaction[layer], self.interaction_bias[layer], self.degree_expand, self.degree_contract,
                    self.layer_norm_epsilon, update_ev)
        n, F, H = self.num_atoms, self.num_features, self.num_heads
        attention = attention * cutoff[:, :, None]
        # Invariant messages: sum_j a_ijh v_jh; ev messages: sum_j a_ij,l(m) Y_m(ij).
        messages = torch.bmm(attention[0].permute(2, 0, 1), v.reshape(n, H, self.head_dim).transpose(0, 1))
        features = features + messages.transpose(0, 1).reshape(n, F)
        ev = ev + ((attention[1] @ self.degree_expand) * harmonics).sum(1)
        norms = self.layer_norms[layer]
        features = torch.nn.functional.layer_norm(features, [F], norms[0], norms[1], self.layer_norm_epsilon)
        hidden_mlp = torch.addmm(self.mlp_first_bias[layer], torch.nn.functional.silu(features),
                                 self.mlp_first[layer])
        features = features + torch.addmm(self.mlp_second_bias[layer], torch.nn.functional.silu(hidden_mlp),
                                          self.mlp_second[layer])
        # Interaction: invariant and per-degree ev updates from [features, ev invariants].
        mixed = torch.addmm(self.interaction_bias[layer],
                            torch.cat([features, (ev * ev) @ self.degree_contract], dim=1),
                            self.interaction[layer])
        features = features + mixed[:, :F]
        if update_ev:
            ev = ev + (mixed[:, F:] @ self.degree_expand) * ev
        features = torch.nn.functional.layer_norm(features, [F], norms[2], norms[3], self.layer_norm_epsilon)
        return features, ev

    def _radial_filters(self, rbf: Tensor) -> List[Tensor]:
        """The radial parts of all filters of all layers plus their biases, per layer [2, K + 1, F] (index kind):
        silu(rbf @ rbf_first), read as [K + 1, 2 L, F], times the second layers. On the CPU the compiled operator
        (plugin_cpp/torch_ops/SO3LRFilters.cpp) does it with a hand-written backward pass, one output tensor per
        layer (a split of one output would make autograd join the layers' gradients in a copy)."""
        if self.compiled_filters:  # a constant, as compiled_attention
            if rbf.device.type == 'cpu':
                return torch.ops.openmm_nnp.so3lr_radial_filters_grouped(rbf, self.rbf_first,
                                                                         self.filter_rbf_second, self.filter_bias, 2)
        return list(_radial_filter_networks(rbf, self.rbf_first, self.filter_rbf_second, self.filter_bias).split(2))

    def _tabulated_filters(self, r: Tensor, first: Tensor, second: Tensor) -> List[Tensor]:
        """The radial filters of the listed pairs (first, second) read from the table at their distances (r [n, n]),
        per layer [2, K + 1, F], as _radial_filters computes them (to the table's error). On the CPU the compiled
        operator so3lr_tabulated_filters (SO3LRFilters.cpp); elsewhere the same polynomials with PyTorch operations."""
        if self.compiled_filters:  # a constant, as compiled_attention
            if r.device.type == 'cpu':
                return torch.ops.openmm_nnp.so3lr_tabulated_filters(r, first, second, self.filter_table,
                                                                    self.filter_table_spacing, 2)
        intervals, terms = self.filter_table.shape[0], self.filter_table.shape[1]
        x = torch.sqrt(r[first, second]) / self.filter_table_spacing
        inside = x < intervals  # beyond the table (the copy of pair 0 only): its last value, zero derivative
        interval = torch.where(inside, x.detach().floor(), torch.full_like(x, intervals - 1)).long()
        t = torch.where(inside, 2.0 * (x - interval) - 1.0, torch.ones_like(x))[:, None, None]
        coefficients = self.filter_table.index_select(0, interval)  # [K + 1, terms, 2 L, F]
        filters = coefficients[:, terms - 1]
        for d in range(terms - 2, -1, -1):
            filters = filters * t + coefficients[:, d]
        return list(filters.transpose(0, 1).split(2))

    def _ev_filters(self, radial: Tensor, ev: Tensor, first: Tensor, second: Tensor, layer: int) -> Tensor:
        """One layer's filters [2, K + 1, F]: the radial parts plus an MLP of the invariants of the ev-feature
        differences of the pairs (first, second). On the CPU the compiled operator (SO3LRFilters.cpp)."""
        if self.compiled_ev_filters:  # a constant, as compiled_attention
            if ev.device.type == 'cpu':
                return torch.ops.openmm_nnp.so3lr_ev_filters(
                    radial, ev, first, second, self.degree_contract, self.filter_ev_first[layer],
                    self.filter_ev_second[2 * layer:2 * layer + 2])
        difference = ev.index_select(0, second) - ev.index_select(0, first)
        invariants = (difference * difference) @ self.degree_contract
        invariants = torch.cat([invariants, torch.ones_like(invariants[:, :1])], dim=1)  # the biases' row
        ev_hidden = torch.nn.functional.silu(torch.tensordot(invariants, self.filter_ev_first[layer], dims=1))
        return torch.baddbmm(radial, ev_hidden.reshape(-1, 2, self.ev_hidden).transpose(0, 1),
                             self.filter_ev_second[2 * layer:2 * layer + 2])

    def _projections(self, features: Tensor, layer: int) -> Tuple[Tensor, Tensor, Tensor]:
        """A layer's queries and keys [2, n, F] (0: invariant, 1: ev) and values [n, F] from the features. On the CPU
        the compiled operator (plugin_cpp/torch_ops/SO3LRAttention.cpp), contiguous, with one backward step."""
        if self.compiled_projections:  # a constant, as compiled_attention
            if features.device.type == 'cpu':
                return torch.ops.openmm_nnp.so3lr_projections(features, self.qkv[layer])
        n, F, H, D = self.num_atoms, self.num_features, self.num_heads, self.head_dim
        projected = torch.bmm(features.reshape(n, H, D).transpose(0, 1), self.qkv[layer])  # [H, n, 5 D]
        # [5, n, F]: invariant and ev queries, invariant and ev keys, values, each head's D features side by side.
        parts = projected.reshape(H, n, 5, D).permute(2, 1, 0, 3).reshape(5, n, F)
        return parts[:2], parts[2:4], parts[4]

    def _attention(self, queries: Tensor, keys: Tensor, filters: Tensor, dense_slot: Tensor, first: Tensor,
                   second: Tensor) -> Tensor:
        """[2, n, n, H] attention coefficients of both kinds without the cutoff (module docstring): queries and keys
        [2, n, F], filters [2, K + 1, F] of the pairs (first, second) within the cutoff."""
        if self.compiled_attention:  # a constant: without the operator library TorchScript compiles no call to it
            if queries.device.type == 'cpu':
                return torch.ops.openmm_nnp.so3lr_attention(queries, keys, filters, first, second, self.num_heads)
        n, F, H = self.num_atoms, self.num_features, self.num_heads
        dense = filters.index_select(1, dense_slot).reshape(2, n, n, F) * keys[:, None, :, :]
        return torch.bmm(dense.reshape(2 * n, n, F),
                         (queries[:, :, :, None] * self.head_onehot).reshape(2 * n, F, H)).reshape(2, n, n, H)

    def _physical_terms(self, r: Tensor, cutoff: Tensor, charges: Tensor, hirshfeld: Tensor) -> Tensor:
        """ZBL repulsion, electrostatics and dispersion of all pairs (each ordered pair once, times 1/2)."""
        if self.compiled_physical:  # a constant, as compiled_attention
            if r.device.type == 'cpu':
                return torch.ops.openmm_nnp.so3lr_physical(
                    r, cutoff, charges, hirshfeld, self.zbl_charge_products, self.zbl_inverse_lengths,
                    self.free_polarizabilities, self.free_c6, self.physical_zbl, self.physical_switches,
                    self.physical_constants)
        # The three switching functions at once: ZBL (0 to 1.5 Å), electrostatics (5.4 to 12 Å), dispersion
        # (10 to 12 Å). The long-range ones vanish at and beyond 12 Å, like the package's neighbour list.
        switches = _switches(r, self.switch_on, self.switch_inverse_width, self.switch_epsilon)
        # ZBL: screened nuclear repulsion, times the short-range cutoff function.
        screening = (self.zbl_coefficients[:, None, None]
                     * torch.exp(self.zbl_exponents[:, None, None] * (r * self.zbl_inverse_lengths)[None])).sum(0)
        repulsion = (cutoff * self.zbl_charge_products / r.clamp_min(1e-6) * screening * switches[0]).sum()
        # Electrostatics: erf(r / sigma) / r shifted to zero at the cutoff, blended into its shifted-force form
        # beyond the cut-on: plain - (1 - switch) * force_shift * (r - cutoff).
        inside = (r < self.long_range_cutoff).to(r.dtype) * self.off_diagonal
        potential = (torch.erf(r / self.electrostatic_sigma) / r - self.coulomb_shift
                     - (1.0 - switches[1]) * self.coulomb_force_shift * (r - self.long_range_cutoff)) * inside
        electrostatics = self.coulomb_constant * (charges @ (potential @ charges))
        # Dispersion (vdW-QDO): polarisabilities and C6 from the Hirshfeld ratios, combined per pair.
        polarizability = self.free_polarizabilities * hirshfeld
        c6 = self.free_c6 * hirshfeld * hirshfeld
        product = c6 * polarizability
        cross = (polarizability * polarizability)[:, None] * c6[None, :]
        c6_pair = 2.0 * product[:, None] * product[None, :] / (cross + cross.t())
        alpha_root = (0.5 * (polarizability[:, None] + polarizability[None, :])) ** (1.0 / 7.0)
        radius = self.vdw_radius_factor * alpha_root
        b0, b1, b2, b3 = self.qdo_sigma_fit
        sigma = ((b3 * radius + b2) * radius + b1) * radius + b0
        sigma2 = sigma * sigma  # gamma = 1 / (2 sigma^2): C8 = 5 / gamma C6, C10 = 245 / (8 gamma^2) C6
        p2 = (self.dispersion_scale * 2.0 * self.qdo_damping_factor * alpha_root) ** 2
        p6 = p2 * p2 * p2
        d2 = (r / self.bohr) ** 2
        d6 = d2 * d2 * d2
        potential = c6_pair * (1.0 / (d6 + p6) + 10.0 * sigma2 / (d6 * d2 + p6 * p2)
                               + 122.5 * sigma2 * sigma2 / (d6 * d2 * d2 + p6 * p2 * p2))
        dispersion = -self.hartree * (potential * switches[2] * self.off_diagonal).sum()
        return 0.5 * (repulsion + electrostatics + dispersion)


class _defaultDtype:
    """Set torch's default dtype inside the block and restore it after (the package's code also changes it)."""

    def __init__(self, dtype):
        self.dtype = dtype

    def __enter__(self):
        self.previous = torch.get_default_dtype()
        torch.set_default_dtype(self.dtype)

    def __exit__(self, *exc):
        torch.set_default_dtype(self.previous)


def createSO3LRModel(atomicNumbers, charge=0, dtype=torch.float32, spin=0.0):
    """The TorchScript SO3LR module for a region (atomic numbers in the region's order, net charge in e)."""
    return torch.jit.script(SO3LR(atomicNumbers, charge=charge, spin=spin, dtype=dtype))
