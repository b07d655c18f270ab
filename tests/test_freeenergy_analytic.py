"""Free-energy protocols on analytic systems with known ΔG: estimators, openmmtools states, resume, Dask."""

import math
import os
import signal
import threading
import time

import numpy as np
import openmm
import openmm.unit as unit
import pytest

from openmm_nnp.freeenergy import (TaskRunner, alchemical_state_class, corrected_binding_free_energy,
                                   corrected_relative_free_energy, lambda_states, run_equilibrium,
                                   run_nonequilibrium)
from openmm_nnp.freeenergy.analysis import FreeEnergy, kT_in_kJ_per_mol

T = 300.0
K0, K1 = 200.0, 800.0  # kJ/mol/nm^2
N_PARTICLES = 4
# Z ∝ k^(-3/2) per particle: ΔG = -kT ln(Z1/Z0) = (3N/2) ln(k1/k0) kT
EXACT_KT = 1.5 * N_PARTICLES * math.log(K1 / K0)
FAST = dict(temperature=T, collision_rate=10 / unit.picosecond, platform='Reference')


def harmonic_system(shift=0.0, lambda_name='lambda_interpolate', constant=0.0):
    """Particles in isotropic wells whose spring constant goes from K0 (λ=0) to K1 (λ=1), whose centre moves by
    λ·shift along x (ΔG unchanged: a translation), plus λ·constant (adds constant to ΔG)."""
    system = openmm.System()
    force = openmm.CustomCompoundBondForce(
        1, f'0.5*(k0+{lambda_name}*(k1-k0))*((x1-{lambda_name}*{shift})^2+y1^2+z1^2) + {lambda_name}*c/{N_PARTICLES}')
    force.addGlobalParameter(lambda_name, 0.0)
    for name, value in [('k0', K0), ('k1', K1), ('c', constant)]:
        force.addGlobalParameter(name, value)
    force.addEnergyParameterDerivative(lambda_name)
    for i in range(N_PARTICLES):
        system.addParticle(12.0)
        force.addBond([i], [])
    system.addForce(force)
    return system, np.full((N_PARTICLES, 3), 0.01)


def within(a, b, sigmas):
    """|a - b| <= sigmas * combined error (a, b: FreeEnergy or (value, error) in kT)."""
    va, ea = (a.value_kT, a.error_kT) if isinstance(a, FreeEnergy) else a
    vb, eb = (b.value_kT, b.error_kT) if isinstance(b, FreeEnergy) else b
    return abs(va - vb) <= sigmas * math.hypot(ea, eb), (va, ea, vb, eb)


def equilibrium(system, positions, **kwargs):
    options = dict(FAST, lambdas=5, n_samples=300, steps_per_sample=20, n_equilibration_steps=200)
    options.update(kwargs)
    return run_equilibrium(system, positions, options.pop('lambdas'), **options)


def test_harmonic_known_answer_mbar_ti_bar():
    system, positions = harmonic_system()
    eq = equilibrium(system, positions)
    assert eq.linear
    ok, numbers = within(eq.mbar, (EXACT_KT, 0.0), 3)
    assert ok, f'MBAR {numbers} vs exact {EXACT_KT}'
    assert 0 < eq.mbar.error_kT < 1.0
    ok, numbers = within(eq.ti, (EXACT_KT, 0.0), 3)
    assert ok, f'TI {numbers}'
    neq = run_nonequilibrium(system, positions, n_switches=50, switching_steps=50, n_equilibration_steps=200,
                             steps_between_snapshots=400, **FAST)
    ok, numbers = within(neq.bar, (EXACT_KT, 0.0), 3)
    assert ok, f'BAR {numbers}'
    ok, numbers = within(neq.bar, eq.mbar, 2)
    assert ok, f'BAR vs MBAR {numbers}'
    # Overlap matrix: rows sum to 1, neighbours overlap.
    overlap = np.asarray(eq.overlap_matrix)
    assert np.allclose(overlap.sum(axis=1), 1.0, atol=1e-6)
    assert np.all(np.diag(overlap, 1) > 0.03)


def test_jarzynski_forward_only_slow_switching():
    system, positions = harmonic_system()
    neq = run_nonequilibrium(system, positions, directions='forward', n_switches=60, switching_steps=1000,
                             n_equilibration_steps=200, steps_between_snapshots=400, **FAST)
    assert neq.bar is None and neq.delta_g is neq.jarzynski
    assert len(neq.reverse_work_kT) == 0
    ok, numbers = within(neq.jarzynski, (EXACT_KT, 0.0), 3)
    assert ok, f'Jarzynski {numbers} vs {EXACT_KT}'


def test_nonlinear_lambda_path_uses_general_energies():
    system, positions = harmonic_system(shift=0.1)
    eq = equilibrium(system, positions, lambdas=6)
    assert not eq.linear  # U is quadratic in λ here
    ok, numbers = within(eq.mbar, (EXACT_KT, 0.0), 3)
    assert ok, f'MBAR {numbers} vs {EXACT_KT}'
    # The linear shortcut would be wrong for this System: with the same trajectories (same seed), its energies at
    # the other λ values differ from the exact ones, which match at the window's own λ.
    wrong = equilibrium(system, positions, lambdas=6, lambda_dependence='linear')
    exact_u, linear_u = eq.windows[2]['u_kn'], wrong.windows[2]['u_kn']
    assert np.allclose(exact_u[2], linear_u[2], atol=1e-6)
    assert np.max(np.abs(exact_u[5] - linear_u[5])) > 1.0


def test_constant_shift_exact():
    constant = 12.5  # kJ/mol
    system, positions = harmonic_system(constant=constant)
    eq = equilibrium(system, positions, n_samples=100)
    expected = EXACT_KT + constant / kT_in_kJ_per_mol(T)
    assert within(eq.mbar, (expected, 0.0), 3)[0], (eq.mbar, expected)
    # Only the constant: ΔG is exact, with zero variance.
    system = openmm.System()
    system.addParticle(1.0)
    force = openmm.CustomCompoundBondForce(1, 'lambda_interpolate*c + 100*(x1^2+y1^2+z1^2)')
    force.addGlobalParameter('lambda_interpolate', 0.0)
    force.addGlobalParameter('c', constant)
    force.addEnergyParameterDerivative('lambda_interpolate')
    force.addBond([0], [])
    system.addForce(force)
    eq = equilibrium(system, np.zeros((1, 3)), lambdas=3, n_samples=20)
    assert eq.mbar.kJ_per_mol == pytest.approx(constant, abs=1e-6)
    assert eq.ti.kJ_per_mol == pytest.approx(constant, abs=1e-6)
    neq = run_nonequilibrium(system, np.zeros((1, 3)), n_switches=4, switching_steps=10, n_equilibration_steps=10,
                             steps_between_snapshots=10, **FAST)
    assert neq.bar.kJ_per_mol == pytest.approx(constant, abs=1e-6)


def test_openmmtools_states_read_and_set_lambda():
    from openmmtools.states import CompoundThermodynamicState, ThermodynamicState
    for name in ['lambda_interpolate', 'lam2']:
        system, positions = harmonic_system(lambda_name=name)
        cls = alchemical_state_class(name)
        state = CompoundThermodynamicState(ThermodynamicState(system, T * unit.kelvin), [cls.from_system(system)])
        assert getattr(state, name) == 0.0
        setattr(state, name, 0.25)
        context = state.create_context(openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName('Reference'))
        context.setPositions(positions)
        assert context.getParameter(name) == 0.25
        states = lambda_states(system, T, [0.0, 0.5, 1.0], name)
        reduced = states[0].reduced_potential_at_states(context, states)
        beta = 1 / kT_in_kJ_per_mol(T)
        for lam, u in zip([0.0, 0.5, 1.0], reduced):
            k = K0 + lam * (K1 - K0)
            assert u == pytest.approx(beta * 0.5 * k * np.sum(positions ** 2), rel=1e-10)
    with pytest.raises(ValueError, match="no global parameter 'lambda_interpolate'"):
        run_equilibrium(harmonic_system(lambda_name='other')[0], positions, 3, **FAST)


def test_rbfe_combination_propagates_errors():
    result = corrected_relative_free_energy((-4.0, 0.5), (-10.0, 0.3), (-8.0, 0.4), (-20.0, 0.2), (-19.0, 0.1),
                                            units='kcal/mol')
    # correction = (-20 + 19) - (-10 + 8) = 1 kcal/mol; ddg = -3 kcal/mol
    value, error = result['ddg'].kcal_per_mol
    assert value == pytest.approx(-3.0)
    assert error == pytest.approx(math.sqrt(0.5 ** 2 + 0.3 ** 2 + 0.4 ** 2 + 0.2 ** 2 + 0.1 ** 2))
    assert result['correction'].kcal_per_mol[0] == pytest.approx(1.0)
    fe = FreeEnergy(2.0, 0.1, T)
    binding = corrected_binding_free_energy((-30.0 * unit.kilojoule_per_mole, 1.0 * unit.kilojoule_per_mole),
                                            fe, FreeEnergy(1.0, 0.1, T))
    assert binding.value == pytest.approx(-30.0 + kT_in_kJ_per_mol(T))
    with pytest.raises(TypeError, match='free energy with an error'):
        corrected_binding_free_energy(1.0, fe, fe)


def test_resume_skips_finished_windows(tmp_path):
    system, positions = harmonic_system()
    runner = TaskRunner('serial', progress=False)
    first = equilibrium(system, positions, output_dir=str(tmp_path), runner=runner)
    assert len(runner.executed) == 5
    for name in ['equilibrium.json', 'overlap_matrix.png', 'dudl.png', 'protocol.json']:
        assert (tmp_path / name).exists()
    # Lose two windows (as if the run had been interrupted), rerun: only those run, the result is the same.
    os.remove(tmp_path / 'tasks' / 'window-001.pkl')
    os.remove(tmp_path / 'tasks' / 'window-004.pkl')
    runner = TaskRunner('serial', progress=False)
    second = equilibrium(system, positions, output_dir=str(tmp_path), runner=runner)
    assert sorted(runner.executed) == ['window-001', 'window-004']
    assert second.mbar.value_kT == pytest.approx(first.mbar.value_kT, abs=1e-9)
    with pytest.raises(ValueError, match='other settings'):
        equilibrium(system, positions, output_dir=str(tmp_path), n_samples=301)


@pytest.fixture(scope='module')
def dask_client():
    distributed = pytest.importorskip('distributed')
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None)
    client = distributed.Client(cluster)
    client.wait_for_workers(2, timeout=120)
    yield client
    client.close()
    cluster.close()


def test_dask_and_serial_agree(dask_client, tmp_path):
    system, positions = harmonic_system()
    serial = equilibrium(system, positions, seed=7)
    parallel = equilibrium(system, positions, seed=7, runner=TaskRunner('dask', client=dask_client, progress=False),
                           output_dir=str(tmp_path))
    # Same seeds on the deterministic Reference platform: the same trajectories wherever they ran.
    assert parallel.mbar.value_kT == pytest.approx(serial.mbar.value_kT, abs=1e-8)
    workers = {w['worker']['pid'] for w in parallel.windows}
    assert os.getpid() not in workers
    # Other seeds: statistically consistent.
    other = equilibrium(system, positions, seed=99, runner=TaskRunner('dask', client=dask_client, progress=False))
    ok, numbers = within(other.mbar, serial.mbar, 3)
    assert ok, numbers
    neq_serial = run_nonequilibrium(system, positions, n_switches=20, switching_steps=50, n_equilibration_steps=200,
                                    steps_between_snapshots=200, **FAST)
    neq_dask = run_nonequilibrium(system, positions, n_switches=20, switching_steps=50, n_equilibration_steps=200,
                                  steps_between_snapshots=200,
                                  runner=TaskRunner('dask', client=dask_client, progress=False), **FAST)
    assert neq_dask.bar.value_kT == pytest.approx(neq_serial.bar.value_kT, abs=1e-8)


def test_killed_worker_task_is_retried(dask_client, tmp_path):
    """Kill (SIGKILL) the worker process running a window while another window is already stored."""
    system, positions = harmonic_system()
    tasks_dir = tmp_path / 'tasks'
    record = {}

    def killer():
        # Kill a worker right after it has started a task (each takes seconds), so that the task is still
        # running when the worker dies and must be retried elsewhere.
        deadline = time.time() + 120
        first_seen = {}
        while time.time() < deadline and 'pid' not in record:
            finished = sorted(tasks_dir.glob('window-*.pkl')) if tasks_dir.exists() else []
            now = time.time()
            for address, keys in dask_client.processing().items():
                for key in keys:
                    first_seen.setdefault((address, key), now)
            fresh = [(address, key) for (address, key), seen in first_seen.items()
                     if now - seen < 0.3 and key in dask_client.processing().get(address, ())]
            if finished and fresh:
                address, key = fresh[0]
                task = str(key).rsplit('-', 1)[0]
                if (tasks_dir / (task + '.pkl')).exists():
                    continue
                pid = dask_client.run(os.getpid, workers=[address])[address]
                record['finished'] = {p.name: p.stat().st_mtime_ns for p in finished}
                record['task'] = task
                os.kill(pid, signal.SIGKILL)
                record['pid'] = pid
                return
            time.sleep(0.05)

    thread = threading.Thread(target=killer, daemon=True)
    thread.start()
    start = time.time()
    runner = TaskRunner('dask', client=dask_client, progress=False)
    result = equilibrium(system, positions, lambdas=6, n_samples=4000, output_dir=str(tmp_path), runner=runner)
    thread.join(timeout=5)
    assert time.time() - start < 180
    assert 'pid' in record, 'the test did not manage to kill a worker'
    assert len(result.windows) == 6 and len(sorted(tasks_dir.glob('window-*.pkl'))) == 6
    # The killed task was rerun elsewhere; finished results were not lost nor recomputed.
    killed = next(w for w in result.windows if f'window-{w["window"]:03d}' == record['task'])
    assert record['task'] + '.pkl' not in record['finished']
    assert killed['worker']['pid'] != record['pid']
    for name, mtime in record['finished'].items():
        assert (tasks_dir / name).stat().st_mtime_ns == mtime
    ok, numbers = within(result.mbar, (EXACT_KT, 0.0), 3)
    assert ok, numbers
