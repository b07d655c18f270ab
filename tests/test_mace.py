"""openmm_nnp.models.mace against mace-torch's own calculator, on a small MACE model with random weights.

No published MACE weights can be downloaded here, so the test builds a small ScaleShiftMACE with mace-torch's own
code, saves it as a model file the way mace-torch does (torch.save of the module) and loads that file through
our loader. Both sides run the same float64 model; only the graph construction differs, so energies and forces
agree to rounding: 1e-10 relative (energy) and 1e-10 of the largest force component.
"""

import numpy as np
import pytest
import torch

pytest.importorskip('mace', reason='mace-torch is not installed')

from openmm_nnp.models import mace  # noqa: E402
from model_reference import assertSame, evaluateInNNPForce, evaluateModule, wrapIntoBox  # noqa: E402

EV = mace.EV_TO_KJ_PER_MOL
RTOL = 1e-10


@pytest.fixture(scope='module')
def model_file(tmp_path_factory):
    mace._importMACE()
    from e3nn import o3
    from mace import modules
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        torch.manual_seed(0)
        block = modules.interaction_classes['RealAgnosticResidualInteractionBlock']
        model = modules.ScaleShiftMACE(
            r_max=4.0, num_bessel=6, num_polynomial_cutoff=5, max_ell=2, interaction_cls=block,
            interaction_cls_first=block, num_interactions=2, num_elements=4, hidden_irreps=o3.Irreps('8x0e+8x1o'),
            MLP_irreps=o3.Irreps('8x0e'), atomic_energies=np.array([-13.6, -1029.0, -1484.0, -2041.0]),
            avg_num_neighbors=6.0, atomic_numbers=[1, 6, 7, 8], correlation=2, gate=torch.nn.functional.silu,
            atomic_inter_scale=1.3, atomic_inter_shift=0.1)
    finally:
        torch.set_default_dtype(default)
    path = tmp_path_factory.mktemp('mace') / 'small.model'
    torch.save(model, path)
    return path


@pytest.fixture(scope='module')
def package(model_file):
    from mace.calculators import MACECalculator
    default = torch.get_default_dtype()
    calculator = MACECalculator(models=[mace.loadModelFile(model_file, torch.float64)], device='cpu',
                                default_dtype='float64')
    torch.set_default_dtype(default)

    def evaluate(numbers, positions, box=None):
        import ase
        atoms = ase.Atoms(numbers=numbers, positions=positions)
        if box is not None:
            atoms.set_cell(box)
            atoms.set_pbc(True)
        previous = torch.get_default_dtype()
        torch.set_default_dtype(torch.float64)
        try:
            atoms.calc = calculator
            return atoms.get_potential_energy() * EV, atoms.get_forces() * EV * 10.0
        finally:
            torch.set_default_dtype(previous)
    return evaluate


def _acetamide():
    from ase.build import molecule
    atoms = molecule('CH3CONH2')  # acetamide: H C N O
    rng = np.random.default_rng(3)
    return atoms.get_atomic_numbers().tolist(), atoms.positions + rng.normal(scale=0.1, size=atoms.positions.shape)


def test_matches_package(model_file, package):
    numbers, positions = _acetamide()
    module = mace.createMACEModel(numbers, dtype=torch.float64, modelPath=model_file)
    rng = np.random.default_rng(0)
    for _ in range(2):
        moved = positions + rng.normal(scale=0.2, size=positions.shape)
        assertSame(evaluateModule(module, moved), package(numbers, moved), RTOL)


def test_matches_package_periodic(model_file, package):
    numbers, positions = _acetamide()
    module = mace.createMACEModel(numbers, dtype=torch.float64, modelPath=model_file)
    box = np.array([[12.0, 0.0, 0.0], [2.0, 11.0, 0.0], [-3.0, 4.0, 13.0]])
    _, wrapped = wrapIntoBox(positions, box)
    assertSame(evaluateModule(module, wrapped, box), package(numbers, wrapped, box), RTOL)


def test_refusals(model_file):
    with pytest.raises(ValueError, match=r'does not support atomic number\(s\) \[16\]'):
        mace.createMACEModel([6, 16], modelPath=model_file)
    with pytest.raises(ValueError, match=r'neutral molecules only.*-1 e'):
        mace.createMACEModel([6, 8, 8], charge=-1, modelPath=model_file)
    with pytest.raises(ValueError, match='does not exist'):
        mace.createMACEModel([6, 8], modelPath=str(model_file) + '.missing')
    with pytest.raises(ValueError, match='Unknown MACE model'):
        mace.createMACEModel([6, 8], name='mace-off99')


def test_in_nnpforce(model_file, package):
    numbers, positions = _acetamide()
    module = mace.createMACEModel(numbers, dtype=torch.float64, modelPath=model_file)
    energy, forces = evaluateInNNPForce(module, positions)
    assertSame((energy, forces), package(numbers, positions), RTOL)
