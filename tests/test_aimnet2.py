"""openmm_nnp.models.aimnet2 against the aimnet package's own calculator, on an AIMNet2 network with random weights.

No published AIMNet2 weights can be downloaded here, so the test builds the network of aimnet's own aimnet2.yaml
architecture (with its embedded long-range Coulomb term) with random weights, in float64. aimnet's calculator
evaluates it with neighbour matrices on float32 coordinates and returns float32 forces; ours evaluates the same
network in dense mode on float64 coordinates. Energies must agree to 1e-6 relative and every force component to
1e-5 of the largest one: float32 coordinates and float32 force output limit the agreement to about 1e-7.
"""

import numpy as np
import pytest
import torch

pytest.importorskip('aimnet', reason='aimnet is not installed')

from model_reference import assertSame, evaluateInNNPForce, exportRandomAIMNet2File  # noqa: E402

from openmm_nnp.models import aimnet2  # noqa: E402

EV = aimnet2.EV_TO_KJ_PER_MOL
ENERGY_RTOL = 1e-6
FORCE_RTOL = 1e-5


@pytest.fixture(scope='module')
def network():
    import importlib.resources
    from aimnet.config import build_module, load_yaml
    config = load_yaml(str(importlib.resources.files('aimnet') / 'models' / 'aimnet2.yaml'))
    torch.manual_seed(0)
    return build_module(config).double().eval()


@pytest.fixture(scope='module')
def package(network):
    from aimnet.calculators import AIMNet2Calculator
    calculator = AIMNet2Calculator(model=network, device='cpu')

    def evaluate(numbers, positions, charge):
        result = calculator({'coord': positions, 'numbers': np.asarray(numbers), 'charge': float(charge)},
                            forces=True)
        return result['energy'].item() * EV, result['forces'].double().numpy() * EV * 10.0
    return evaluate


def _acetate():
    from ase.build import molecule
    atoms = molecule('CH3COOH')
    oxygens = [i for i, a in enumerate(atoms) if a.symbol == 'O']
    acidic = [i for i, a in enumerate(atoms) if a.symbol == 'H' and min(atoms.get_distance(i, j) for j in oxygens) < 1.2]
    del atoms[acidic[0]]
    return atoms.get_atomic_numbers().tolist(), atoms.positions


def _evaluate(module, positions):
    x = torch.tensor(positions / 10.0, dtype=torch.float64, requires_grad=True)
    energy = module(x)
    energy.backward()
    return energy.item(), -x.grad.numpy()


def _assertClose(ours, theirs):
    assert ours[0] == pytest.approx(theirs[0], rel=ENERGY_RTOL)
    np.testing.assert_allclose(ours[1], theirs[1], rtol=0, atol=FORCE_RTOL * np.abs(theirs[1]).max())


@pytest.mark.parametrize('charge', [-1, 0])
def test_matches_package(network, package, charge):
    numbers, positions = _acetate()
    module = aimnet2.createAIMNet2Model(numbers, charge=charge, dtype=torch.float64, model=network)
    rng = np.random.default_rng(charge + 5)
    for _ in range(2):  # positions other than the traced example
        moved = positions + rng.normal(scale=0.1, size=positions.shape)
        _assertClose(_evaluate(module, moved), package(numbers, moved, charge))


def test_charge_reaches_network(network):
    numbers, positions = _acetate()
    charged = aimnet2.createAIMNet2Model(numbers, charge=-1, dtype=torch.float64, model=network)
    neutral = aimnet2.createAIMNet2Model(numbers, charge=0, dtype=torch.float64, model=network)
    assert abs(_evaluate(charged, positions)[0] - _evaluate(neutral, positions)[0]) > 1e-3


def test_in_nnpforce(network):
    """In an NNPForce (Reference, float64) the module gives what it gives on its own."""
    numbers, positions = _acetate()
    module = aimnet2.createAIMNet2Model(numbers, charge=-1, dtype=torch.float64, model=network)
    assertSame(evaluateInNNPForce(module, positions), _evaluate(module, positions), 1e-12)


def test_bad_input(tmp_path):
    with pytest.raises(ValueError, match='pass modelPath='):
        aimnet2.createAIMNet2Model([6, 8])
    with pytest.raises(ValueError, match='does not exist'):
        aimnet2.createAIMNet2Model([6, 8], modelPath=tmp_path / 'missing.pt')
    junk = tmp_path / 'junk.pt'
    junk.write_bytes(b'not a model')
    with pytest.raises(ValueError, match='could not be read as an aimnet model file'):
        aimnet2.createAIMNet2Model([6, 8], modelPath=junk)


@pytest.fixture(scope='module')
def exported(tmp_path_factory):
    return exportRandomAIMNet2File(tmp_path_factory.mktemp('aimnet2'))


def test_exported_file_needs_long_range_terms(exported):
    """The file really leaves Coulomb and D3 to the calculator (else the next test would prove nothing)."""
    model, metadata = aimnet2.loadModelFile(exported)
    assert metadata['needs_coulomb'] and metadata['needs_dispersion']
    assert metadata['coulomb_mode'] == 'sr_embedded'
    numbers, positions = _acetate()
    bare = torch.jit.script(aimnet2.AIMNet2(model, numbers, dtype=torch.float64))
    complete = aimnet2.createAIMNet2Model(numbers, dtype=torch.float64, modelPath=exported)
    assert abs(_evaluate(bare, positions)[0] - _evaluate(complete, positions)[0]) > 1.0


@pytest.mark.parametrize('charge', [-1, 0])
def test_exported_file_matches_package(exported, charge):
    """With the external Coulomb and D3 terms the module equals aimnet's calculator on the same file (the
    calculator runs in float32: tolerances as above)."""
    from aimnet.calculators import AIMNet2Calculator
    calculator = AIMNet2Calculator(str(exported), device='cpu')
    numbers, positions = _acetate()
    module = aimnet2.createAIMNet2Model(numbers, charge=charge, dtype=torch.float64, modelPath=exported)
    rng = np.random.default_rng(charge + 11)
    for _ in range(2):
        moved = positions + rng.normal(scale=0.1, size=positions.shape)
        result = calculator({'coord': moved, 'numbers': np.asarray(numbers), 'charge': float(charge)}, forces=True)
        theirs = result['energy'].item() * EV, result['forces'].double().numpy() * EV * 10.0
        _assertClose(_evaluate(module, moved), theirs)
    assertSame(evaluateInNNPForce(module, positions), _evaluate(module, positions), 1e-12)


def test_incomplete_dispersion_parameters():
    with pytest.raises(ValueError, match='no complete d3_params'):
        aimnet2.externalLongRangeTerms({'needs_dispersion': True, 'd3_params': {'s8': 0.4}})
