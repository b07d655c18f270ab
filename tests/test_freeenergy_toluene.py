"""Free-energy protocols on toluene with ANI-2x (MM → NNP/MM), in vacuum and in water.

The end states and dU/dλ are checked in both. The estimators' agreement (MBAR, BAR, TI within their errors)
is checked in vacuum, where sampling is cheap; in water (6,495 atoms with PME, ANI in float64: a step costs
about 0.15 s on two cores) the protocols run as a smoke test: a few steps end to end, finite results, files.
"""

import math
import os

import numpy as np
import openmm
import openmm.app as app
import openmm.unit as unit
import pytest

_SHARED = os.path.join(os.path.dirname(__file__), '..', '..', 'shared')
DATA = os.path.join(_SHARED, 'data', 'toluene-water')
pytestmark = pytest.mark.skipif(not os.path.isdir(DATA), reason='needs ../shared/data/toluene-water')

from openmm_nnp import NNPotential  # noqa: E402
from openmm_nnp.freeenergy import extract_subsystem, run_equilibrium, run_nonequilibrium  # noqa: E402

T = 300.0


def _mm(solvated):
    prmtop = app.AmberPrmtopFile(os.path.join(DATA, 'toluene-explicit.prm7'))
    inpcrd = app.AmberInpcrdFile(os.path.join(DATA, 'toluene-explicit.rst7'))
    # No constraints on the solute: the NNP region must keep its C-H bond terms at λ = 0.
    system = prmtop.createSystem(nonbondedMethod=app.PME, nonbondedCutoff=0.9 * unit.nanometer, constraints=None,
                                 rigidWater=True)
    if solvated:
        system.setDefaultPeriodicBoxVectors(*inpcrd.boxVectors)
        return system, prmtop.topology, inpcrd.positions
    atoms = [a.index for a in prmtop.topology.atoms() if a.residue.name == 'MBN']
    return extract_subsystem(system, prmtop.topology, inpcrd.positions, atoms, openmm.NonbondedForce.NoCutoff)


@pytest.fixture(scope='module', params=['vacuum', 'water'])
def toluene(request):
    mm, topology, positions = _mm(request.param == 'water')
    potential = NNPotential('ani2x', precision='double')
    mixed = potential.createMixedSystem(topology, mm, 'resname MBN', interpolate=True)
    nnp_mm = potential.createMixedSystem(topology, mm, 'resname MBN')
    return request.param, mm, mixed, nnp_mm, topology, positions


def _energy(system, positions, **parameters):
    context = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName('CPU'))
    context.setPositions(positions)
    for name, value in parameters.items():
        context.setParameter(name, value)
    state = context.getState(getEnergy=True, getParameterDerivatives=bool(parameters))
    return state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole), state


def test_end_states_and_derivative(toluene):
    kind, mm, mixed, nnp_mm, topology, positions = toluene
    e_mm, _ = _energy(mm, positions)
    e_nnp_mm, _ = _energy(nnp_mm, positions)
    e0, _ = _energy(mixed, positions, lambda_interpolate=0.0)
    e1, _ = _energy(mixed, positions, lambda_interpolate=1.0)
    tolerance = 1e-3 if kind == 'vacuum' else 2e-2  # PME sums of 6,495 atoms
    print(f'{kind}: U_MM {e_mm:.4f} vs U(0) {e0:.4f}; U_NNP/MM {e_nnp_mm:.4f} vs U(1) {e1:.4f} kJ/mol')
    assert e0 == pytest.approx(e_mm, abs=tolerance)
    assert e1 == pytest.approx(e_nnp_mm, abs=tolerance)
    h = 1e-3
    for lam in (0.0, 0.3, 1.0):
        _, state = _energy(mixed, positions, lambda_interpolate=lam)
        derivative = state.getEnergyParameterDerivatives()['lambda_interpolate']
        plus, _ = _energy(mixed, positions, lambda_interpolate=lam + h)
        minus, _ = _energy(mixed, positions, lambda_interpolate=lam - h)
        fd = (plus - minus) / (2 * h)
        print(f'{kind} λ={lam}: dU/dλ {derivative:.4f}, finite difference {fd:.4f} kJ/mol')
        assert derivative == pytest.approx(fd, abs=tolerance / h)
        assert derivative == pytest.approx(e1 - e0, abs=tolerance)


SAMPLING = {
    'vacuum': dict(lambdas=[0.0, 0.5, 1.0], n_samples=100, steps_per_sample=10, n_equilibration_steps=200,
                   n_snapshots=20, n_switches=20, switching_steps=20),
    # Too few samples for the estimators to be compared: the protocols run end to end.
    'water': dict(lambdas=[0.0, 1.0], n_samples=4, steps_per_sample=2, n_equilibration_steps=2, n_snapshots=2,
                  n_switches=2, switching_steps=2),
}


def _sample(toluene, tmp_path):
    kind, mm, mixed, nnp_mm, topology, positions = toluene
    s = SAMPLING[kind]
    common = dict(temperature=T, timestep=1 * unit.femtosecond, collision_rate=5 / unit.picosecond, platform='CPU')
    eq = run_equilibrium(mixed, positions, s['lambdas'], topology=topology, n_samples=s['n_samples'],
                         steps_per_sample=s['steps_per_sample'], n_equilibration_steps=s['n_equilibration_steps'],
                         n_snapshots=s['n_snapshots'], minimize=False, seed=11, output_dir=str(tmp_path / 'eq'),
                         **common)
    neq = run_nonequilibrium(mixed, equilibrium=eq, n_switches=s['n_switches'], switching_steps=s['switching_steps'],
                             seed=12, output_dir=str(tmp_path / 'neq'), switches_per_task=20, **common)
    assert eq.linear
    print(f'{kind}: MBAR {eq.mbar}\n  TI {eq.ti}\n  BAR {neq.bar}\n  overlap '
          f'{np.round(eq.overlap_matrix, 3).tolist()}')
    assert (tmp_path / 'eq' / 'overlap_matrix.png').exists() and (tmp_path / 'neq' / 'work_distributions.png').exists()
    return eq.mbar, eq.ti, neq.bar


@pytest.mark.parametrize('toluene', ['vacuum'], indirect=True)
def test_mbar_bar_ti_agree(toluene, tmp_path):
    mbar, ti, bar = _sample(toluene, tmp_path)
    assert 0 < mbar.error_kT < 2 and 0 < bar.error_kT < 2
    assert abs(mbar.value_kT - bar.value_kT) <= 2 * math.hypot(mbar.error_kT, bar.error_kT)
    assert abs(mbar.value_kT - ti.value_kT) <= 2 * math.hypot(mbar.error_kT, ti.error_kT)


@pytest.mark.parametrize('toluene', ['water'], indirect=True)
def test_protocols_run_in_water(toluene, tmp_path):
    """Smoke test: equilibrium and nonequilibrium protocols in a periodic box with PME."""
    assert all(math.isfinite(estimate.value_kT) for estimate in _sample(toluene, tmp_path))
