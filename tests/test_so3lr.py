"""openmm_nnp.models.so3lr (our dense fixed-region implementation) against the so3krates-torch package's own
ASE calculator, which evaluates the package's network on its neighbour-list graph.

Both evaluate the same float64 weights with the same formulas; they differ in the order of floating-point operations
(dense pair tensors, per-pair filters computed once for both directions, folded constants), so energies and forces
agree to rounding (measured: within ~2e-15 relative). We ask for 1e-10 relative: the energy (~1e5 kJ/mol) within
1e-10 of itself and every force component within 1e-10 of the largest one (~1e4 kJ/mol/nm for the distorted
geometries used here). That is loose enough for summation order and tight enough to catch a float32 step (1e-8), a
wrong unit, sign, charge, cutoff or periodic image. Geometries are distorted at random so that the set of pairs
within the 4.5 Å cutoff (chosen per call) changes; one region holds two molecules so that pairs lie beyond the
short-range cutoff and beyond the 12 Å long-range cutoff.
"""

import re
import numpy as np
import pytest
import torch

so3krates_torch = pytest.importorskip('so3krates_torch', reason='so3krates-torch (SO3LR weights) is not installed')

from openmm_nnp.models import so3lr  # noqa: E402
from model_reference import assertSame, evaluateInNNPForce, evaluateModule, wrapIntoBox  # noqa: E402

EV = so3lr.EV_TO_KJ_PER_MOL
RTOL = 1e-10  # energy relative; forces relative to the largest component
# float32 module against the float64 package: measured up to 1.3e-7 (energy) and 1.5e-6 (forces); ~8x margin.
RTOL32_ENERGY = 1e-6
RTOL32_FORCES = 1e-5


def _molecule(name, charge):
    """Atomic numbers and positions (Å) of small molecules, charged ones made by adding or removing a proton."""
    from ase.build import molecule
    if name == 'acetate':
        atoms = molecule('CH3COOH')
        acidic = [i for i, a in enumerate(atoms) if a.symbol == 'H' and
                  min(atoms.get_distance(i, j) for j, b in enumerate(atoms) if b.symbol == 'O') < 1.2]
        del atoms[acidic[0]]
    elif name == 'methylammonium':
        atoms = molecule('H3CNH2')
        nitrogen = [i for i, a in enumerate(atoms) if a.symbol == 'N'][0]
        carbon = [i for i, a in enumerate(atoms) if a.symbol == 'C'][0]
        direction = atoms.positions[nitrogen] - atoms.positions[carbon]
        atoms.append('H')
        atoms.positions[-1] = atoms.positions[nitrogen] + 1.03 * direction / np.linalg.norm(direction)
    else:
        atoms = molecule(name)
    rng = np.random.default_rng(len(name) + 7 * charge)
    positions = atoms.positions + rng.normal(scale=0.05, size=atoms.positions.shape)  # off the symmetric geometry
    return atoms.get_atomic_numbers().tolist(), positions


@pytest.fixture(scope='module')
def package():
    """The package's calculator (float64). It sets torch's default dtype globally, so that is restored after."""
    from so3krates_torch.calculator.so3 import TorchkratesCalculator
    default = torch.get_default_dtype()
    calculator = TorchkratesCalculator(models=[so3lr.loadPackageModel(torch.float64)], default_dtype='float64',
                                       r_max_lr=so3lr.LONG_RANGE_CUTOFF,
                                       dispersion_energy_cutoff_lr_damping=so3lr.DISPERSION_DAMPING)
    torch.set_default_dtype(default)

    def evaluate(numbers, positions, charge, box=None, spin=0.0):
        """Energy (kJ/mol) and forces (kJ/mol/nm); positions and box in Å."""
        import ase
        atoms = ase.Atoms(numbers=numbers, positions=positions)
        if box is not None:
            atoms.set_cell(box)
            atoms.set_pbc(True)
        atoms.info['charge'] = charge
        atoms.info['total_spin'] = spin
        previous = torch.get_default_dtype()
        torch.set_default_dtype(torch.float64)
        try:
            calculator.reset()
            atoms.calc = calculator
            return atoms.get_potential_energy() * EV, atoms.get_forces() * EV * 10.0
        finally:
            torch.set_default_dtype(previous)
    return evaluate


@pytest.mark.parametrize('name, charge', [('CH3CH2OH', 0), ('acetate', -1), ('methylammonium', 1),
                                          ('CH3SCH3', 0)])
def test_matches_package_isolated(package, name, charge):
    numbers, positions = _molecule(name, charge)
    module = so3lr.createSO3LRModel(numbers, charge=charge, dtype=torch.float64)
    rng = np.random.default_rng(1)
    for _ in range(2):  # positions other than the traced example, and a changing short-range edge count
        moved = positions + rng.normal(scale=0.15, size=positions.shape)
        assertSame(evaluateModule(module, moved), package(numbers, moved, charge), RTOL)


def test_two_molecules_pairs_beyond_cutoffs(package):
    """Ethanol and acetate as one region (-1 e), 9 Å apart: pairs beyond 4.5 Å and beyond 12 Å."""
    numbers_a, positions_a = _molecule('CH3CH2OH', 0)
    numbers_b, positions_b = _molecule('acetate', -1)
    numbers = numbers_a + numbers_b
    positions = np.concatenate([positions_a, positions_b + np.array([9.0, 1.0, -0.5])])
    distances = np.linalg.norm(positions[:, None] - positions[None], axis=-1)
    assert (distances > 12.0).any() and ((distances > 4.5) & (distances < 12.0)).any()
    module = so3lr.createSO3LRModel(numbers, charge=-1, dtype=torch.float64)
    assertSame(evaluateModule(module, positions), package(numbers, positions, -1), RTOL)


@pytest.mark.parametrize('numbers, positions, charge', [
    ([8, 1], [[0.0, 0.0, 0.0], [0.97, 0.1, 0.0]], -1),  # hydroxide: the smallest region, one pair
    ([6, 8], [[0.0, 0.0, 0.0], [6.0, 0.5, 0.0]], 0),  # no pair within 4.5 Å: no message passing at all
])
def test_smallest_regions(package, numbers, positions, charge):
    module = so3lr.createSO3LRModel(numbers, charge=charge, dtype=torch.float64)
    positions = np.array(positions)
    assertSame(evaluateModule(module, positions), package(numbers, positions, charge), RTOL)


def test_spin_matches_package(package):
    """A doublet (total_spin 0.5, the package's convention): the spin embedding."""
    numbers, positions = _molecule('methylammonium', 1)
    numbers, positions = numbers[:-1], positions[:-1]  # the CH3NH2 radical cation: 17 electrons
    module = so3lr.createSO3LRModel(numbers, charge=1, spin=0.5, dtype=torch.float64)
    singlet = so3lr.createSO3LRModel(numbers, charge=1, dtype=torch.float64)
    ours = evaluateModule(module, positions)
    assertSame(ours, package(numbers, positions, 1, spin=0.5), RTOL)
    assert abs(ours[0] - evaluateModule(singlet, positions)[0]) > 1.0


@pytest.mark.parametrize('name, charge', [('acetate', -1), ('CH3SCH3', 0)])
def test_float32(package, name, charge):
    """The float32 module (the default) against the float64 package, at float32 rounding level."""
    numbers, positions = _molecule(name, charge)
    module = so3lr.createSO3LRModel(numbers, charge=charge, dtype=torch.float32)
    moved = positions + np.random.default_rng(2).normal(scale=0.15, size=positions.shape)
    x = torch.tensor(moved / 10.0, dtype=torch.float32, requires_grad=True)
    energy = module(x)
    energy.backward()
    assert energy.dtype == torch.float32
    reference_energy, reference_forces = package(numbers, moved, charge)
    assert energy.item() == pytest.approx(reference_energy, rel=RTOL32_ENERGY)
    np.testing.assert_allclose(-x.grad.double().numpy(), reference_forces, rtol=0,
                               atol=RTOL32_FORCES * np.abs(reference_forces).max())


def test_spherical_harmonics_match_package():
    """Our polynomial matrix of the real spherical harmonics (degrees 1-4) against the package's functions."""
    from so3krates_torch.modules.spherical_harmonics import RealSphericalHarmonics
    vectors = torch.randn(200, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    u = vectors / torch.linalg.vector_norm(vectors, dim=1, keepdim=True)
    powers = [u, u[:, :, None] * u[:, None, :]]
    powers.append(powers[1][:, :, :, None] * u[:, None, None, :])
    powers.append(powers[2][:, :, :, :, None] * u[:, None, None, None, :])
    ours = torch.cat([p.reshape(200, -1) for p in powers], dim=1) @ so3lr.sphericalHarmonicsMatrix([1, 2, 3, 4])
    theirs = RealSphericalHarmonics([1, 2, 3, 4])(u)
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-13)


def test_charge_changes_energy_as_package(package):
    """The same atoms with another total charge: the charge reaches the network (buffer total_charge)."""
    numbers, positions = _molecule('acetate', -1)
    module = so3lr.createSO3LRModel(numbers, charge=-1, dtype=torch.float64)
    neutral = so3lr.createSO3LRModel(numbers, charge=0, dtype=torch.float64)
    charged, uncharged = evaluateModule(module, positions), evaluateModule(neutral, positions)
    assertSame(uncharged, package(numbers, positions, 0), RTOL)
    assert abs(charged[0] - uncharged[0]) > 1.0


def test_matches_package_periodic(package):
    """Triclinic box in OpenMM's reduced form, the molecule split across its faces."""
    numbers, positions = _molecule('acetate', -1)
    module = so3lr.createSO3LRModel(numbers, charge=-1, dtype=torch.float64)
    box = np.array([[25.0, 0.0, 0.0], [3.0, 26.0, 0.0], [-4.0, 5.0, 27.0]])
    shifted, wrapped = wrapIntoBox(positions, box)
    ours = evaluateModule(module, wrapped, box)
    assertSame(ours, package(numbers, wrapped, -1, box), RTOL)
    isolated = evaluateModule(module, shifted)
    # Only images more than 12 Å away are left out, so the periodic result equals the isolated molecule's.
    assert ours[0] == pytest.approx(isolated[0], rel=RTOL)


def test_small_box_is_minimum_image():
    """In a box narrower than 24 Å the region is still one molecule: pairs at their minimum image."""
    numbers, positions = _molecule('CH3CH2OH', 0)
    module = so3lr.createSO3LRModel(numbers, dtype=torch.float64)
    box = np.eye(3) * 15.0
    centred, wrapped = wrapIntoBox(positions, box)
    assertSame(evaluateModule(module, wrapped, box), evaluateModule(module, centred), RTOL)


def test_unsupported_element():
    with pytest.raises(ValueError, match='SO3LR does not support atomic number.*35.*Cl'):
        so3lr.createSO3LRModel([6, 35, 1])


def test_in_nnpforce(package):
    """The module in an NNPForce of an OpenMM System (Reference platform, float64) matches the package."""
    numbers, positions = _molecule('methylammonium', 1)
    module = so3lr.createSO3LRModel(numbers, charge=1, dtype=torch.float64)
    energy, forces = evaluateInNNPForce(module, positions)
    assertSame((energy, forces), package(numbers, positions, 1), RTOL)


@pytest.fixture(scope='module')
def acetate_modules():
    """Acetate's atomic numbers and its float64 module with the compiled operators and without them."""
    numbers, _ = _molecule('acetate', -1)
    return (numbers, so3lr.SO3LR(numbers, charge=-1, dtype=torch.float64),
            so3lr.SO3LR(numbers, charge=-1, dtype=torch.float64, compiledOperators=False))


def test_compiled_attention_matches_pytorch_path(tmp_path):
    """The compiled attention operator (CPU) against the module's PyTorch path, float64, on a region with pairs
    within and beyond the short-range cutoff; the operator's gradients against finite differences; and the module
    saved and loaded by TorchScript."""
    numbers_a, positions_a = _molecule('CH3CH2OH', 0)
    numbers_b, positions_b = _molecule('acetate', -1)
    numbers = numbers_a + numbers_b
    positions = np.concatenate([positions_a, positions_b + np.array([6.0, 1.0, -0.5])])
    compiled = so3lr.SO3LR(numbers, charge=-1, dtype=torch.float64)
    assert compiled.compiled_attention
    compiled = torch.jit.script(compiled)
    plain = torch.jit.script(so3lr.SO3LR(numbers, charge=-1, dtype=torch.float64, compiledOperators=False))
    rng = np.random.default_rng(5)
    for _ in range(2):
        moved = positions + rng.normal(scale=0.15, size=positions.shape)
        assertSame(evaluateModule(compiled, moved), evaluateModule(plain, moved), 1e-12)
    path = str(tmp_path / 'so3lr.pt')
    torch.jit.save(compiled, path)
    assertSame(evaluateModule(torch.jit.load(path), positions), evaluateModule(plain, positions), 1e-12)

    # The operator alone: gradients of queries, keys and filters (one pair listed twice is not allowed: the
    # module lists each pair within the cutoff once).
    generator = torch.Generator().manual_seed(4)
    n, F, heads, pairs = 5, 8, 2, 6
    queries, keys = (torch.randn(2, n, F, dtype=torch.float64, generator=generator, requires_grad=True)
                     for _ in range(2))
    filters = torch.randn(2, pairs + 1, F, dtype=torch.float64, generator=generator, requires_grad=True)
    first, second = torch.triu_indices(n, n, offset=1)
    first, second = first[:pairs].contiguous(), second[:pairs].contiguous()
    attention = torch.ops.openmm_nnp.so3lr_attention(queries, keys, filters, first, second, heads)
    expected = torch.zeros(2, n, n, heads, dtype=torch.float64)
    for c in range(2):
        for p in range(pairs):
            a, b = int(first[p]), int(second[p])
            products = (queries[c, a] * keys[c, b] * filters[c, p], queries[c, b] * keys[c, a] * filters[c, p])
            expected[c, a, b] = products[0].reshape(heads, -1).sum(1)
            expected[c, b, a] = products[1].reshape(heads, -1).sum(1)
    torch.testing.assert_close(attention, expected, rtol=1e-14, atol=1e-14)
    assert torch.autograd.gradcheck(
        lambda q, k, f: torch.ops.openmm_nnp.so3lr_attention(q, k, f, first, second, heads),
        (queries, keys, filters))


def test_compiled_physical_terms_match_pytorch_path(acetate_modules):
    """The compiled ZBL, electrostatics and dispersion operator against the module's PyTorch formulas and
    gradcheck, float64, on pair distances across every switching region (0-1.5, 5.4-12, 10-12 Å) and beyond 12 Å;
    tensors of two dtypes are refused."""
    numbers, module, plain = acetate_modules
    assert module.compiled_physical and not plain.compiled_physical
    n = len(numbers)
    generator = torch.Generator().manual_seed(6)
    upper = torch.rand(n, n, dtype=torch.float64, generator=generator) * 13.0 + 0.3
    r = torch.triu(upper, 1) + torch.triu(upper, 1).t() + torch.eye(n, dtype=torch.float64)
    cutoff = torch.rand(n, n, dtype=torch.float64, generator=generator)
    cutoff = (cutoff + cutoff.t()) * (1.0 - torch.eye(n, dtype=torch.float64))
    charges = torch.randn(n, dtype=torch.float64, generator=generator) * 0.3
    hirshfeld = torch.rand(n, dtype=torch.float64, generator=generator) + 0.5
    inputs = [t.clone().requires_grad_() for t in (r, cutoff, charges, hirshfeld)]
    expected = plain._physical_terms(*inputs)
    expected_gradients = torch.autograd.grad(expected, inputs)
    inputs = [t.detach().clone().requires_grad_() for t in inputs]
    energy = module._physical_terms(*inputs)
    gradients = torch.autograd.grad(energy, inputs)
    assert energy.item() == pytest.approx(expected.item(), rel=1e-12)
    for ours, theirs in zip(gradients, expected_gradients):
        torch.testing.assert_close(ours, theirs, rtol=1e-10, atol=1e-12 * theirs.abs().max().item())
    assert torch.autograd.gradcheck(module._physical_terms, tuple(inputs))
    # The operator reads its tensors in their dtype (computing in double): one dtype for all, or a refusal.
    with pytest.raises(RuntimeError, match=r'^so3lr_physical: CPU tensors of one dtype expected'):
        module._physical_terms(r, cutoff.float(), charges, hirshfeld)


def test_compiled_radial_filters_match_pytorch_path(acetate_modules):
    """The compiled radial filter operator (all layers, both kinds) against the module's PyTorch path, float64:
    values to 1e-12 relative, the gradient of the basis (a random cotangent) to 1e-10 relative (of its largest
    entry); gradcheck of the operator on a small random network; and the weights may not require gradients."""
    numbers, module, plain = acetate_modules
    assert module.compiled_filters and not plain.compiled_filters
    generator = torch.Generator().manual_seed(7)
    pairs, basis_size = 11, module.rbf_first.shape[0]
    basis = torch.rand(pairs, basis_size, dtype=torch.float64, generator=generator)
    basis[:, -1] = 1.0  # the module's constant column (the first layers' biases)
    basis.requires_grad_()
    expected = torch.cat(plain._radial_filters(basis))
    layers = module._radial_filters(basis)  # the operator with one output per layer
    assert len(layers) == module.num_layers
    filters = torch.cat(layers)
    assert filters.shape == (2 * module.num_layers, pairs, module.num_features)
    torch.testing.assert_close(filters, expected, rtol=1e-12, atol=1e-12 * expected.abs().max().item())
    cotangent = torch.randn(expected.shape, dtype=torch.float64, generator=generator)
    expected_gradient, = torch.autograd.grad(expected, basis, cotangent, retain_graph=True)
    gradient, = torch.autograd.grad(filters, basis, cotangent)
    torch.testing.assert_close(gradient, expected_gradient, rtol=1e-10,
                               atol=1e-10 * expected_gradient.abs().max().item())
    # Only some layers' outputs used (the others' gradients undefined); the single-output operator agrees.
    gradient, = torch.autograd.grad(module._radial_filters(basis)[1], basis, cotangent[2:4])
    expected_gradient, = torch.autograd.grad(expected[2:4], basis, cotangent[2:4])
    torch.testing.assert_close(gradient, expected_gradient, rtol=1e-10,
                               atol=1e-10 * expected_gradient.abs().max().item())
    single = torch.ops.openmm_nnp.so3lr_radial_filters(basis, module.rbf_first, module.filter_rbf_second,
                                                       module.filter_bias)
    torch.testing.assert_close(single, expected, rtol=1e-12, atol=1e-12 * expected.abs().max().item())

    networks, features, basis_size = 4, 3, 5
    first = torch.randn(basis_size, networks * features, dtype=torch.float64, generator=generator)
    second = torch.randn(networks, features, features, dtype=torch.float64, generator=generator)
    bias = torch.randn(networks, features, dtype=torch.float64, generator=generator)
    small = torch.randn(6, basis_size, dtype=torch.float64, generator=generator, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda x: torch.ops.openmm_nnp.so3lr_radial_filters(x, first, second, bias), (small,))
    assert torch.autograd.gradcheck(
        lambda x: tuple(torch.ops.openmm_nnp.so3lr_radial_filters_grouped(x, first, second, bias, 2)), (small,))
    with pytest.raises(RuntimeError, match='must not require gradients'):
        torch.ops.openmm_nnp.so3lr_radial_filters(small, first.requires_grad_(), second, bias)


def _exact_radial_filters(module, r):
    """The radial filter networks of a float64 module at distances r [P] (Å), [2 L, P, F]."""
    rbf = so3lr._bernstein_basis(r, module.rbf_log_binomial, module.rbf_k, module.rbf_k_reverse, module.rbf_gamma,
                                 module.rbf_epsilon, module.smallest_normal)
    return so3lr._radial_filter_networks(rbf, module.rbf_first, module.filter_rbf_second, module.filter_bias)


def test_filter_table_accuracy(acetate_modules):
    """The float64 table against the filter networks on 45,000 distances in [0, 4.5 Å]: beyond 0.1 Å within 2e-8 of
    each output's largest value (measured 6.7e-9), below within 2e-5 (2.3e-6; atoms that close overlap), and beyond
    0.1 Å at least 100x closer than the networks evaluated in float32 (their rounding: measured 3.0e-6)."""
    numbers, module, _ = acetate_modules
    tabulated = so3lr.SO3LR(numbers, charge=-1, dtype=torch.float64, tabulatedFilters=True)
    assert tabulated.filter_table.shape == (so3lr.FILTER_TABLE_INTERVALS, so3lr.FILTER_TABLE_DEGREE + 1,
                                            2 * module.num_layers, module.num_features)
    n = len(numbers)
    r = torch.linspace(0.0, module.cutoff, 45001, dtype=torch.float64)[1:]
    exact = _exact_radial_filters(module, r)
    scale = exact.abs().amax(dim=1, keepdim=True)
    # The compiled operator reads r from an [n, n] matrix: every distance as pair (0, 1) of its own matrix is slow,
    # so the PyTorch path (the same polynomials, checked against the operator below) evaluates the whole grid.
    plain = so3lr.SO3LR(numbers, charge=-1, dtype=torch.float64, tabulatedFilters=True, compiledOperators=False)
    matrix = torch.ones(len(r), n, dtype=torch.float64)
    matrix[:, 1] = r  # r[first, second] with first = pair index, second = 1: one row per distance
    table = torch.cat(plain._tabulated_filters(matrix, torch.arange(len(r)), torch.ones(len(r), dtype=torch.long)))
    error = ((table - exact).abs() / scale).amax(dim=(0, 2))
    assert error[r >= 0.1].max() < 2e-8
    assert error[r < 0.1].max() < 2e-5
    single = _exact_radial_filters(so3lr.SO3LR(numbers, charge=-1, dtype=torch.float32, tabulatedFilters=False),
                                   r.float()).double()
    rounding = ((single - exact).abs() / scale).amax(dim=(0, 2))
    assert 100 * error[r >= 0.1].max() < rounding.max()


def test_compiled_tabulated_filters_match_pytorch_path():
    """so3lr_tabulated_filters against the module's PyTorch path (the same polynomials), float64, on a region with
    pairs within the table and one beyond it (its last value, no gradient): values to 1e-12,
    the gradient of r (a random cotangent) to 1e-10 relative; gradcheck on a small random table; refusals."""
    numbers_a, positions_a = _molecule('CH3CH2OH', 0)
    numbers_b, positions_b = _molecule('acetate', -1)
    numbers = numbers_a + numbers_b
    positions = np.concatenate([positions_a, positions_b + np.array([5.0, 0.5, 0.0])])
    module = so3lr.SO3LR(numbers, charge=-1, dtype=torch.float64, tabulatedFilters=True)
    plain = so3lr.SO3LR(numbers, charge=-1, dtype=torch.float64, tabulatedFilters=True, compiledOperators=False)
    x = torch.tensor(positions, dtype=torch.float64)
    r = torch.cdist(x, x) + torch.eye(len(numbers), dtype=torch.float64)
    first, second = torch.triu_indices(len(numbers), len(numbers), 1)
    listed = r[first, second] < module.cutoff
    beyond = torch.nonzero(~listed)[0]  # a pair beyond the table, in the place of the module's copy of pair 0
    first = torch.cat([first[listed], first[beyond]])
    second = torch.cat([second[listed], second[beyond]])
    r.requires_grad_()
    layers = module._tabulated_filters(r, first, second)
    expected = torch.cat(plain._tabulated_filters(r, first, second))
    assert len(layers) == module.num_layers
    filters = torch.cat(layers)
    torch.testing.assert_close(filters, expected, rtol=1e-12, atol=1e-12 * expected.abs().max().item())
    cotangent = torch.randn(expected.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    gradient, = torch.autograd.grad(filters, r, cotangent)
    expected_gradient, = torch.autograd.grad(expected, r, cotangent)
    torch.testing.assert_close(gradient, expected_gradient, rtol=1e-10,
                               atol=1e-10 * expected_gradient.abs().max().item())
    assert gradient[first[-1], second[-1]] == 0  # nothing from the pair beyond the table

    generator = torch.Generator().manual_seed(5)
    table = torch.randn(3, 4, 2, 5, dtype=torch.float64, generator=generator)
    small = (torch.rand(4, 4, dtype=torch.float64, generator=generator) * 2.0 + 0.1).requires_grad_()
    pair_first, pair_second = torch.tensor([0, 1, 2, 3]), torch.tensor([1, 2, 3, 0])
    assert torch.autograd.gradcheck(lambda d: tuple(torch.ops.openmm_nnp.so3lr_tabulated_filters(
        d, pair_first, pair_second, table, 0.6, 1)), (small,))
    with pytest.raises(RuntimeError, match=re.escape('table must be [M, D, S, F]')):
        torch.ops.openmm_nnp.so3lr_tabulated_filters(small, pair_first, pair_second, table[0], 0.6, 1)
    with pytest.raises(RuntimeError, match='group must divide the number of networks'):
        torch.ops.openmm_nnp.so3lr_tabulated_filters(small, pair_first, pair_second, table, 0.6, 3)
    with pytest.raises(RuntimeError, match='must not require gradients'):
        torch.ops.openmm_nnp.so3lr_tabulated_filters(small, pair_first, pair_second, table.requires_grad_(), 0.6, 1)
    with pytest.raises(RuntimeError, match=r'so3lr_tabulated_filters: pair 1 \(1, 1\) is not a pair of distinct'):
        torch.ops.openmm_nnp.so3lr_tabulated_filters(small, pair_first, torch.tensor([1, 1, 3, 0]),
                                                     table.detach(), 0.6, 1)


@pytest.mark.parametrize('name, charge', [('acetate', -1), ('CH3SCH3', 0)])
def test_tabulated_filters_match_package(package, name, charge):
    """A float64 module with the filter table (float32 modules have it by default, float64 ones not) against the
    package: the table's error, not float32 rounding, at 1e-8 relative (energy; forces relative to the largest);
    with the compiled operators and with PyTorch operations. Such a module keeps no radial basis constants (the
    front computes no basis)."""
    assert so3lr.SO3LR([6, 1], dtype=torch.float32).tabulated_filters
    assert not so3lr.SO3LR([6, 1], dtype=torch.float64).tabulated_filters
    numbers, positions = _molecule(name, charge)
    moved = positions + np.random.default_rng(4).normal(scale=0.15, size=positions.shape)
    reference = package(numbers, moved, charge)
    for compiled, fused in ((True, True), (True, False), (False, False)):
        module = so3lr.SO3LR(numbers, charge=charge, dtype=torch.float64, tabulatedFilters=True,
                             compiledOperators=compiled, fusedNetwork=fused if compiled else None)
        assert module.rbf_k.numel() == 0
        assert module.fused_network == fused
        assertSame(evaluateModule(torch.jit.script(module), moved), reference, 1e-8)


def _fused_and_separate(numbers, charge):
    """Float64 modules with the filter table: the whole network in one operator (so3lr_network) and through the
    separate operators."""
    fused = so3lr.SO3LR(numbers, charge=charge, dtype=torch.float64, tabulatedFilters=True)
    separate = so3lr.SO3LR(numbers, charge=charge, dtype=torch.float64, tabulatedFilters=True, fusedNetwork=False)
    return torch.jit.script(fused), torch.jit.script(separate)


@pytest.mark.parametrize('name, charge, periodic', [('acetate', -1, False), ('CH3SCH3', 0, True),
                                                    ('methylammonium', 1, True)])
def test_fused_network_matches_separate_operators(name, charge, periodic):
    """so3lr_network (SO3LRNetwork.cpp: the operators' forward and backward functions called in one operator) against
    the same module through the separate operators and autograd, float64. The same arithmetic; the gradients of
    tensors read twice are summed in another order, so energies and forces agree to rounding (measured: energies
    equal, forces within 7e-16 of the largest); 1e-12 relative. Periodic: a box narrow enough (12 Å) that pairs are
    taken at their minimum image."""
    numbers, positions = _molecule(name, charge)
    moved = positions + np.random.default_rng(5).normal(scale=0.15, size=positions.shape)
    box = np.eye(3) * 12.0 if periodic else None
    if periodic:
        moved = wrapIntoBox(moved, box)[1]
    fused, separate = _fused_and_separate(numbers, charge)
    assert fused.fused_network and not separate.fused_network
    assertSame(evaluateModule(fused, moved, box), evaluateModule(separate, moved, box), 1e-12)
    # Energy without gradients (the operator then skips the backward pass).
    x = torch.tensor(moved / 10.0, dtype=torch.float64)
    boxVectors = None if box is None else torch.tensor(box / 10.0, dtype=torch.float64)
    assert fused(x, boxVectors).item() == pytest.approx(separate(x, boxVectors).item(), rel=1e-12)


def test_fused_network_is_deterministic_and_the_default():
    """On two threads the parallel loops' partial sums are added in a fixed order: repeated calls give identical
    energies and forces; one thread agrees to rounding. The single operator is the default wherever the filter table
    is (float32 modules), and needs it."""
    numbers, positions = _molecule('acetate', -1)
    fused, _ = _fused_and_separate(numbers, -1)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        first, second = evaluateModule(fused, positions), evaluateModule(fused, positions)
        torch.set_num_threads(1)
        single = evaluateModule(fused, positions)
    finally:
        torch.set_num_threads(threads)
    assert first[0] == second[0]
    np.testing.assert_array_equal(first[1], second[1])
    assertSame(single, first, 1e-12)
    assert so3lr.SO3LR(numbers, charge=-1).fused_network
    assert not so3lr.SO3LR(numbers, charge=-1, dtype=torch.float64).fused_network
    with pytest.raises(ValueError, match=r'fusedNetwork=True\) needs the compiled operators and the filter table'):
        so3lr.SO3LR(numbers, charge=-1, dtype=torch.float64, fusedNetwork=True)


def test_parallel_loops_match_pytorch_path():
    """The compiled operators' loops over atoms, pairs and rows run in several tasks on the intra-op threads, each
    task summing into a buffer of its own (PartialSums.h). On a 16-atom region (ethanol and acetate 5 Å apart: pairs
    within the cutoff across the molecules, more pairs than one ev-filter task takes) with 1, 2 and 3 threads, the
    single operator and the separate operators against the PyTorch path (no compiled operators), float64 with the
    filter table: 1e-10 relative, as the package comparisons (measured ≤ 3.4e-15 of the largest force)."""
    numbers_a, positions_a = _molecule('CH3CH2OH', 0)
    numbers_b, positions_b = _molecule('acetate', -1)
    numbers = numbers_a + numbers_b
    positions = np.concatenate([positions_a, positions_b + np.array([5.0, 0.5, 0.0])])
    fused, separate = _fused_and_separate(numbers, -1)
    plain = torch.jit.script(so3lr.SO3LR(numbers, charge=-1, dtype=torch.float64, tabulatedFilters=True,
                                         compiledOperators=False))
    reference = evaluateModule(plain, positions)
    threads = torch.get_num_threads()
    try:
        for count in (1, 2, 3):
            torch.set_num_threads(count)
            assertSame(evaluateModule(fused, positions), reference, 1e-10)
            assertSame(evaluateModule(separate, positions), reference, 1e-10)
    finally:
        torch.set_num_threads(threads)


def test_fused_network_refusals():
    """so3lr_network refuses a second derivative (its gradient has no graph), positions of another region size and
    a parameter list of the wrong length, each with a message that names the problem."""
    numbers, positions = _molecule('acetate', -1)
    fused, _ = _fused_and_separate(numbers, -1)
    x = torch.tensor(positions / 10.0, dtype=torch.float64, requires_grad=True)
    (gradient,) = torch.autograd.grad(fused(x), x, create_graph=False)
    assert torch.isfinite(gradient).all()
    with pytest.raises(RuntimeError, match='so3lr_network: first derivatives only'):
        torch.autograd.grad(fused(x), x, create_graph=True)
    module = so3lr.SO3LR(numbers, charge=-1, dtype=torch.float64, tabulatedFilters=True)
    parameters = [module.pair_first, module.pair_second, module.harmonics_matrix]
    arguments = (module.network_constants, module.physical_zbl, module.physical_switches, module.physical_constants,
                 module.num_heads)
    with pytest.raises(RuntimeError, match='so3lr_network: expected 31 parameter tensors, got 3'):
        torch.ops.openmm_nnp.so3lr_network(x.detach(), None, parameters, *arguments)
    with pytest.raises(RuntimeError, match=f'so3lr_network: 3 positions for a module of {len(numbers)} atoms'):
        module(x.detach()[:3])


def test_fused_network_in_nnpforce(package):
    """The single operator inside an NNPForce (Reference platform, float64; the kernel differentiates the module
    from C++) against the package, at the filter table's tolerance (test_tabulated_filters_match_package)."""
    numbers, positions = _molecule('acetate', -1)
    fused, _ = _fused_and_separate(numbers, -1)
    assertSame(evaluateInNNPForce(fused, positions), package(numbers, positions, -1), 1e-8)


def test_compiled_ev_filters_match_pytorch_path(acetate_modules):
    """The compiled operator for one layer's filters (radial parts plus the ev-invariant parts) against the
    module's PyTorch path, float64: values to 1e-12 relative, the gradients of the radial parts and the ev features
    (a random cotangent) to 1e-10 relative (of the largest entry); gradcheck of the operator."""
    numbers, module, plain = acetate_modules
    assert module.compiled_ev_filters and not plain.compiled_ev_filters
    n, F = len(numbers), module.num_features
    generator = torch.Generator().manual_seed(8)
    first, second = torch.triu_indices(n, n, offset=1)
    first = torch.cat([first, first[:1]]).contiguous()  # the module's extra copy of pair 0
    second = torch.cat([second, second[:1]]).contiguous()
    radial = torch.randn(2, first.shape[0], F, dtype=torch.float64, generator=generator, requires_grad=True)
    ev = torch.randn(n, module.harmonics_matrix.shape[1], dtype=torch.float64, generator=generator,
                     requires_grad=True)
    cotangent = torch.randn(radial.shape, dtype=torch.float64, generator=generator)
    for layer in (1, 2):
        expected = plain._ev_filters(radial, ev, first, second, layer)
        filters = module._ev_filters(radial, ev, first, second, layer)
        torch.testing.assert_close(filters, expected, rtol=1e-12, atol=1e-12 * expected.abs().max().item())
        for ours, theirs in zip(torch.autograd.grad(filters, (radial, ev), cotangent),
                                torch.autograd.grad(expected, (radial, ev), cotangent)):
            torch.testing.assert_close(ours, theirs, rtol=1e-10, atol=1e-10 * theirs.abs().max().item())

    hidden, features, atoms = 3, 4, 4
    contract = module.degree_contract
    ev_first = torch.randn(contract.shape[1] + 1, 2 * hidden, dtype=torch.float64, generator=generator)
    ev_second = torch.randn(2, hidden, features, dtype=torch.float64, generator=generator)
    first, second = torch.triu_indices(atoms, atoms, offset=1)
    small_radial = torch.randn(2, first.shape[0], features, dtype=torch.float64, generator=generator,
                               requires_grad=True)
    small_ev = torch.randn(atoms, contract.shape[0], dtype=torch.float64, generator=generator, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda r, e: torch.ops.openmm_nnp.so3lr_ev_filters(r, e, first.contiguous(), second.contiguous(), contract,
                                                           ev_first, ev_second),
        (small_radial, small_ev))


def test_compiled_layer_update_matches_pytorch_path(acetate_modules):
    """The compiled operator for a layer's update of the features after the attention (messages, layer norms,
    residual MLP, interaction) against the module's PyTorch path, float64, for every layer (the last one leaves the
    ev features as the messages made them): values to 1e-12 relative, the gradients of all six inputs (random
    cotangents) to 1e-10 relative (of the largest entry); gradcheck of the operator on a small random layer; and the
    weights may not require gradients."""
    numbers, module, plain = acetate_modules
    assert module.compiled_update and not plain.compiled_update
    n, F, C = len(numbers), module.num_features, module.harmonics_matrix.shape[1]
    generator = torch.Generator().manual_seed(9)

    def random(*shape):
        return torch.randn(*shape, dtype=torch.float64, generator=generator)
    cutoff = torch.rand(n, n, dtype=torch.float64, generator=generator)
    cutoff = (cutoff + cutoff.t()) * (1.0 - torch.eye(n, dtype=torch.float64))
    cutoff[0, 1] = cutoff[1, 0] = 0.0  # a pair beyond the cutoff
    inputs = [random(n, F), random(n, C), random(2, n, n, module.num_heads), cutoff, random(n, n, C),
              random(n, F)]
    inputs = [t.requires_grad_() for t in inputs]
    cotangents = (random(n, F), random(n, C))
    for layer in range(module.num_layers):
        expected = plain._update(*inputs, layer)
        outputs = module._update(*inputs, layer)
        for ours, theirs in zip(outputs, expected):
            torch.testing.assert_close(ours, theirs, rtol=1e-12, atol=1e-12 * theirs.abs().max().item())
        gradients = torch.autograd.grad(outputs, inputs, cotangents)
        expected_gradients = torch.autograd.grad(expected, inputs, cotangents)
        for ours, theirs in zip(gradients, expected_gradients):
            torch.testing.assert_close(ours, theirs, rtol=1e-10, atol=1e-10 * theirs.abs().max().item())

    atoms, features, heads, components, invariants = 4, 6, 2, 5, 2
    expand = torch.nn.functional.one_hot(torch.tensor([0, 1, 1, 0, 1]), heads).t().to(torch.float64).contiguous()
    weights = [random(4, features), random(features, features), random(features), random(features, features),
               random(features), random(features + invariants, features + invariants),
               random(features + invariants), expand, random(components, invariants)]
    small_cutoff = torch.rand(atoms, atoms, dtype=torch.float64, generator=generator) + 0.5
    small = [random(atoms, features), random(atoms, components), random(2, atoms, atoms, heads), small_cutoff,
             random(atoms, atoms, components), random(atoms, features)]
    small = [t.requires_grad_() for t in small]
    for update_ev in (True, False):
        assert torch.autograd.gradcheck(
            lambda *x: torch.ops.openmm_nnp.so3lr_layer_update(*x, *weights, 1e-6, update_ev), tuple(small))
    # Without the ev update the interaction may read any number of invariants; the update needs one per degree.
    wide = [*weights[:5], random(features + 3, features + 3), random(features + 3), expand, random(components, 3)]
    torch.ops.openmm_nnp.so3lr_layer_update(*small, *wide, 1e-6, False)
    with pytest.raises(RuntimeError, match=r'^so3lr_layer_update: updating ev needs expand \[I, C\]'):
        torch.ops.openmm_nnp.so3lr_layer_update(*small, *wide, 1e-6, True)
    with pytest.raises(RuntimeError, match='must not require gradients'):
        torch.ops.openmm_nnp.so3lr_layer_update(*small, *weights[:5], weights[5].requires_grad_(), *weights[6:],
                                                1e-6, True)


def _two_molecule_modules():
    """Ethanol and acetate side by side (pairs within and beyond the short-range cutoff): atomic numbers, positions
    (Å), and float64 modules with and without the compiled operators."""
    numbers_a, positions_a = _molecule('CH3CH2OH', 0)
    numbers_b, positions_b = _molecule('acetate', -1)
    numbers = numbers_a + numbers_b
    positions = np.concatenate([positions_a, positions_b + np.array([5.0, 1.0, -0.5])])
    module = so3lr.SO3LR(numbers, charge=-1, dtype=torch.float64)
    plain = so3lr.SO3LR(numbers, charge=-1, dtype=torch.float64, compiledOperators=False)
    return numbers, positions, module, plain


def test_compiled_pair_geometry_matches_pytorch_path():
    """The compiled operator for the pairs' spherical harmonics and radial basis against the module's PyTorch path,
    float64, on a region with pairs within and beyond the short-range cutoff: values to 1e-12 relative and the
    gradient of the pair vectors (random cotangents) to 1e-10 relative (of its largest entry). The operator leaves
    zeros where the PyTorch path has the copy of pair 0's harmonics (pairs beyond the cutoff, the diagonal: both
    are multiplied by a zero cutoff), so those entries are compared with zero and get no cotangent. Then gradcheck
    of the operator on a small region, one pair so long that its basis is clamped."""
    numbers, positions, module, plain = _two_molecule_modules()
    assert module.compiled_geometry and not plain.compiled_geometry
    n = len(numbers)
    x = torch.tensor(positions, dtype=torch.float64)
    vectors = (x[:, None, :] - x[None, :, :]).requires_grad_()
    r = torch.sqrt((vectors * vectors).sum(-1) + torch.eye(n, dtype=torch.float64))
    count, first, second, active_flat, dense_slot = module._listed_pairs(r.detach())
    assert 0 < count < n * (n - 1) // 2
    listed = torch.zeros(n, n, 1, dtype=torch.float64)
    listed[first[:count], second[:count]] = listed[second[:count], first[:count]] = 1.0
    generator = torch.Generator().manual_seed(10)
    expected = plain._pair_geometry(vectors, r, active_flat, dense_slot, first, second, count)
    outputs = module._pair_geometry(vectors, r, active_flat, dense_slot, first, second, count)
    torch.testing.assert_close(outputs[0], expected[0] * listed, rtol=1e-12,
                               atol=1e-12 * expected[0].abs().max().item())
    torch.testing.assert_close(outputs[1], expected[1], rtol=1e-12, atol=1e-12 * expected[1].abs().max().item())
    cotangents = (torch.randn(expected[0].shape, dtype=torch.float64, generator=generator) * listed,
                  torch.randn(expected[1].shape, dtype=torch.float64, generator=generator))
    gradient, = torch.autograd.grad(outputs, vectors, cotangents)
    expected_gradient, = torch.autograd.grad(expected, vectors, cotangents)
    torch.testing.assert_close(gradient, expected_gradient, rtol=1e-10,
                               atol=1e-10 * expected_gradient.abs().max().item())

    atoms = 4
    small = torch.randn(atoms, 3, dtype=torch.float64, generator=generator) * 1.5
    small[3] = small[2] + torch.tensor([15.0, 0.5, -0.3], dtype=torch.float64)  # exp(-gamma r) clamped at epsilon
    small_vectors = (small[:, None, :] - small[None, :, :]).requires_grad_()
    pair_first, pair_second = torch.triu_indices(atoms, atoms, offset=1)
    pair_first = torch.cat([pair_first, pair_first[:1]]).contiguous()  # the module's extra copy of pair 0
    pair_second = torch.cat([pair_second, pair_second[:1]]).contiguous()
    constants = (module.harmonics_matrix, module.harmonics_parity, module.rbf_log_binomial, module.rbf_k,
                 module.rbf_k_reverse, module.rbf_gamma, module.rbf_epsilon, module.smallest_normal)
    assert torch.autograd.gradcheck(
        lambda v: torch.ops.openmm_nnp.so3lr_pair_geometry(v, pair_first, pair_second, 6, *constants),
        (small_vectors,))


def test_compiled_heads_match_pytorch_path(acetate_modules):
    """The compiled operator for the output heads (atomic energies, partial charges shifted to the total charge,
    Hirshfeld ratios) against the module's PyTorch path, float64: values to 1e-12 relative, the gradient of the
    features (random cotangents, also with only some outputs used) to 1e-10 relative (of its largest entry), and the
    charges sum to the total charge; gradcheck of the operator on small random heads; the weights may not require
    gradients."""
    numbers, module, plain = acetate_modules
    assert module.compiled_heads and not plain.compiled_heads
    n, F = len(numbers), module.num_features
    generator = torch.Generator().manual_seed(11)
    features = torch.randn(n, F, dtype=torch.float64, generator=generator, requires_grad=True)
    expected = plain._heads(features)
    outputs = module._heads(features)
    assert abs(outputs[1].sum().item() + 1.0) < 1e-12
    for ours, theirs in zip(outputs, expected):
        torch.testing.assert_close(ours, theirs, rtol=1e-12, atol=1e-12 * theirs.abs().max().item())
    cotangents = [torch.randn(t.shape, dtype=torch.float64, generator=generator) for t in expected]
    for used in ((0, 1, 2), (0,), (1, 2)):  # the outputs not used contribute nothing
        gradient, = torch.autograd.grad([outputs[i] for i in used], features, [cotangents[i] for i in used],
                                        retain_graph=True)
        expected_gradient, = torch.autograd.grad([expected[i] for i in used], features, [cotangents[i] for i in used],
                                                 retain_graph=True)
        torch.testing.assert_close(gradient, expected_gradient, rtol=1e-10,
                                   atol=1e-10 * expected_gradient.abs().max().item())

    atoms, width, hidden = 4, 5, 6
    weights = [torch.randn(width, hidden, dtype=torch.float64, generator=generator),
               torch.randn(hidden, dtype=torch.float64, generator=generator),
               torch.randn(atoms, hidden, dtype=torch.float64, generator=generator),
               torch.nn.functional.one_hot(torch.tensor([0, 0, 1, 1, 2, 2]), 3).to(torch.float64),
               torch.randn(atoms, 3, dtype=torch.float64, generator=generator),
               torch.tensor([1.0], dtype=torch.float64)]
    small = torch.randn(atoms, width, dtype=torch.float64, generator=generator, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x: torch.ops.openmm_nnp.so3lr_heads(x, *weights), (small,))
    with pytest.raises(RuntimeError, match='must not require gradients'):
        torch.ops.openmm_nnp.so3lr_heads(small, weights[0].requires_grad_(), *weights[1:])


@pytest.mark.parametrize('periodic', [False, True])
def test_compiled_front_matches_pytorch_path(periodic):
    """The compiled front of the network (positions to distances, cutoff function, pair listing, spherical harmonics
    and radial basis) against the module's PyTorch path, float64, on a region with pairs within and beyond the
    short-range cutoff, isolated and in a box small enough that some pairs take another image: values to 1e-12
    relative, the listed pairs exactly, and the gradient of the positions (random cotangents on every output) to
    1e-10 relative (of its largest entry). Harmonics of unlisted pairs: zero (the PyTorch path has a copy of pair
    0's there; both are multiplied by a zero cutoff). Then gradcheck of the operator on a small region with a box."""
    numbers, positions, module, plain = _two_molecule_modules()
    assert module.compiled_front and not plain.compiled_front
    n = len(numbers)
    x = torch.tensor(positions, dtype=torch.float64, requires_grad=True)
    box = torch.diag(torch.tensor([0.9, 1.0, 1.1], dtype=torch.float64)) if periodic else None  # nm
    expected = plain._front(x, box)
    outputs = module._front(x, box)
    count = expected[2]
    assert outputs[2] == count and 0 < count < n * (n - 1) // 2
    assert torch.equal(outputs[3], expected[3]) and torch.equal(outputs[4], expected[4])
    first, second = expected[3][:count], expected[4][:count]
    listed = torch.zeros(n, n, 1, dtype=torch.float64)
    listed[first, second] = listed[second, first] = 1.0
    values = [(outputs[0], expected[0]), (outputs[1], expected[1]), (outputs[7], expected[7] * listed),
              (outputs[8], expected[8])]
    for value, reference in values:
        torch.testing.assert_close(value, reference, rtol=1e-12, atol=1e-12 * reference.abs().max().item())
    generator = torch.Generator().manual_seed(11)
    cotangents = [torch.randn(reference.shape, dtype=torch.float64, generator=generator)
                  for _, reference in values]
    cotangents[2] = cotangents[2] * listed
    gradient, = torch.autograd.grad([value for value, _ in values], x, cotangents)
    expected_gradient, = torch.autograd.grad([reference for _, reference in values], x, cotangents)
    torch.testing.assert_close(gradient, expected_gradient, rtol=1e-10,
                               atol=1e-10 * expected_gradient.abs().max().item())

    atoms = 5
    small = torch.randn(atoms, 3, dtype=torch.float64, generator=generator) * 1.5
    small[3] = small[2] + torch.tensor([3.5, 2.5, -0.3], dtype=torch.float64)  # within the 4.5 Å cutoff or not
    small[4] = small[2] + torch.tensor([15.0, 0.5, -0.3], dtype=torch.float64)  # exp(-gamma r) clamped at epsilon
    small.requires_grad_()
    pair_first, pair_second = torch.triu_indices(atoms, atoms, offset=1)
    vectors = (small[:, None, :] - small[None, :, :]).detach()
    shifts = so3lr.minimum_image_shifts(vectors, torch.diag(torch.tensor([30.0, 7.0, 40.0], dtype=torch.float64)))
    assert shifts.abs().max() > 0
    constants = (module.harmonics_matrix, module.harmonics_parity, module.rbf_log_binomial, module.rbf_k,
                 module.rbf_k_reverse, module.rbf_gamma, module.rbf_epsilon, module.smallest_normal)
    for shift in (None, shifts):
        outputs = torch.ops.openmm_nnp.so3lr_front(small, shift, pair_first, pair_second, module.cutoff, *constants)
        assert 1 < outputs[2].shape[0] <= len(pair_first)  # some pairs listed, some not
        assert torch.autograd.gradcheck(
            lambda p: tuple(torch.ops.openmm_nnp.so3lr_front(p, shift, pair_first, pair_second, module.cutoff,
                                                             *constants)[i] for i in (0, 1, 4, 5)), (small,))

def test_compiled_projections_match_pytorch_path(acetate_modules):
    """The compiled queries, keys and values of each layer against the module's PyTorch path, float64: values to
    1e-12 relative, the gradient of the features (random cotangents, also with only some outputs used) to 1e-10
    relative (of its largest entry); gradcheck of the operator; the weights may not require gradients."""
    numbers, module, plain = acetate_modules
    assert module.compiled_projections and not plain.compiled_projections
    generator = torch.Generator().manual_seed(12)
    features = torch.randn(len(numbers), module.num_features, dtype=torch.float64, generator=generator,
                           requires_grad=True)
    for layer in range(module.num_layers):
        expected = plain._projections(features, layer)
        outputs = module._projections(features, layer)
        for value, reference in zip(outputs, expected):
            assert value.is_contiguous()
            torch.testing.assert_close(value, reference, rtol=1e-12, atol=1e-12 * reference.abs().max().item())
        cotangents = [torch.randn(reference.shape, dtype=torch.float64, generator=generator)
                      for reference in expected]
        for used in ((0, 1, 2), (1,)):
            gradient, = torch.autograd.grad([outputs[i] for i in used], features, [cotangents[i] for i in used],
                                            retain_graph=True)
            expected_gradient, = torch.autograd.grad([expected[i] for i in used], features,
                                                     [cotangents[i] for i in used], retain_graph=True)
            torch.testing.assert_close(gradient, expected_gradient, rtol=1e-10,
                                       atol=1e-10 * expected_gradient.abs().max().item())
    weights = torch.randn(2, 3, 15, dtype=torch.float64, generator=generator)  # 2 heads of 3 features
    small = torch.randn(4, 6, dtype=torch.float64, generator=generator, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x: torch.ops.openmm_nnp.so3lr_projections(x, weights), (small,))
    # The dense [F, 5 F] layout of earlier versions, or heads that do not make up the features: refused.
    for wrong in (torch.zeros(6, 30, dtype=torch.float64), torch.zeros(3, 3, 15, dtype=torch.float64)):
        with pytest.raises(RuntimeError, match=re.escape('so3lr_projections: features must be [n, H D], weights '
                                                         '[H, D, 5 D]')):
            torch.ops.openmm_nnp.so3lr_projections(small, wrong)
    with pytest.raises(RuntimeError, match='must not require gradients'):
        torch.ops.openmm_nnp.so3lr_projections(small, weights.requires_grad_())


def test_operators_refuse_pairs_that_are_not_two_distinct_atoms():
    """A pair list naming an atom twice or one beyond the region is refused with a message naming the operator
    and the pair (memory outside the tensors would be read otherwise)."""
    queries = torch.zeros(2, 3, 4, dtype=torch.float64)
    filters = torch.zeros(2, 2, 4, dtype=torch.float64)
    for first, second, pair in (([0, 1], [0, 2], '0 (0, 0)'), ([0, 1], [1, 3], '1 (1, 3)')):
        with pytest.raises(RuntimeError, match=rf'so3lr_attention: pair {re.escape(pair)} is not a pair of distinct'):
            torch.ops.openmm_nnp.so3lr_attention(queries, queries, filters, torch.tensor(first), torch.tensor(second),
                                                 2)
        with pytest.raises(RuntimeError, match=rf'so3lr_ev_filters: pair {re.escape(pair)} is not a pair of distinct'):
            torch.ops.openmm_nnp.so3lr_ev_filters(filters, torch.zeros(3, 24, dtype=torch.float64),
                                                  torch.tensor(first), torch.tensor(second),
                                                  torch.zeros(24, 4, dtype=torch.float64),
                                                  torch.zeros(5, 6, dtype=torch.float64),
                                                  torch.zeros(2, 3, 4, dtype=torch.float64))
