"""The CPU kernel's overlap (NNPForce property 'overlap'): when a step begins the model starts on a worker
thread with the positions, box and parameters of that moment, while OpenMM computes the other forces; the
force uses that result only if its inputs are bitwise the ones it would compute from, else it computes again.

So trajectories must be bitwise the same with and without overlap (one OpenMM thread, so that OpenMM itself
is deterministic), whatever changes the inputs in between (a barostat after the NNPForce, MTS integrators,
energy-only evaluations), errors raised by the model must reach the caller, and a Context must be destroyed
safely with a prefetch still running. No timing here: benchmarks/bench_overhead.py measures the gain.
"""

import os
import subprocess
import sys

import numpy as np
import openmm
import pytest
import torch
from openmm import unit

import openmm_nnp
from openmm_nnp import NNPForce
from openmm_nnp.integrators import NNPMTSLangevinMiddleIntegrator

from test_nnp_force import PairModel, PeriodicPairModel, random_positions

CPU = openmm.Platform.getPlatformByName('CPU')


class RaisingModel(torch.nn.Module):
    """PairModel's energy, but it raises when the first atom's x goes beyond 10 nm."""

    def __init__(self, n):
        super().__init__()
        self.pair = PairModel(n)

    def forward(self, positions):
        if bool(positions[0, 0] > 10.0):
            raise ValueError('atom 0 went beyond 10 nm')
        return self.pair(positions)


def fluid(overlap=None, barostat_frequency=0, region=(3, 10, 17, 24, 31), mts=False):
    """A periodic Lennard-Jones fluid of 64 atoms (charged pairs, PME) with an NNPForce on `region`,
    optionally a barostat after the NNPForce (so it changes positions after the prefetch has started)."""
    spacing = 0.5
    box = 4 * spacing
    system = openmm.System()
    system.setDefaultPeriodicBoxVectors(openmm.Vec3(box, 0, 0), openmm.Vec3(0, box, 0), openmm.Vec3(0, 0, box))
    nonbonded = openmm.NonbondedForce()
    nonbonded.setNonbondedMethod(openmm.NonbondedForce.PME)
    nonbonded.setCutoffDistance(0.9)
    positions = []
    for i in range(64):
        system.addParticle(40.0)
        nonbonded.addParticle(0.2 * (-1) ** i, 0.34, 0.99)
        positions.append([spacing * (i % 4), spacing * (i // 4 % 4), spacing * (i // 16)])
    system.addForce(nonbonded)
    force = NNPForce(PeriodicPairModel(len(region)), list(region))
    force.setUsesPeriodicBoundaryConditions(True)
    if overlap is not None:
        force.setProperty('overlap', overlap)
    if mts:
        force.setForceGroup(1)
    system.addForce(force)
    if barostat_frequency:
        barostat = openmm.MonteCarloBarostat(1 * unit.bar, 300 * unit.kelvin, barostat_frequency)
        barostat.setRandomNumberSeed(7)
        system.addForce(barostat)
    return system, np.array(positions) + random_positions(64, seed=3, scale=0.02)


def run(system, positions, integrator, steps, energy_every=0):
    """Step `integrator` on the CPU platform (one thread) from fixed velocities; return the final state and the
    NNPForce's overlap statistics."""
    context = openmm.Context(system, integrator, CPU, {'Threads': '1'})
    context.setPositions(positions)
    context.setVelocitiesToTemperature(300 * unit.kelvin, 11)
    for step in range(steps):
        integrator.step(1)
        if energy_every and step % energy_every == 0:
            context.getState(getEnergy=True)  # an energy-only evaluation between steps
    state = context.getState(getPositions=True, getVelocities=True, getEnergy=True)
    force = next(f for f in context.getSystem().getForces() if isinstance(f, NNPForce))
    return state, list(force.getOverlapStatisticsInContext(context))


def langevin():
    integrator = openmm.LangevinMiddleIntegrator(300 * unit.kelvin, 1 / unit.picosecond, 0.002 * unit.picoseconds)
    integrator.setRandomNumberSeed(5)
    return integrator


def assert_same_trajectory(a, b):
    for getter in ('getPositions', 'getVelocities'):
        assert np.array_equal(getattr(a, getter)(asNumpy=True)._value, getattr(b, getter)(asNumpy=True)._value), getter
    if a.getPeriodicBoxVectors() is not None:
        assert a.getPeriodicBoxVectors() == b.getPeriodicBoxVectors()
    assert a.getPotentialEnergy() == b.getPotentialEnergy()


def test_overlap_gives_bitwise_the_same_trajectory_with_a_barostat_moving_atoms_in_between():
    """Against the sequential kernel on one torch thread, the thread count every overlapped evaluation uses."""
    steps = 30
    before = torch.get_num_threads()
    try:
        results = {}
        for overlap, threads in (('false', 1), ('true', 2)):
            torch.set_num_threads(threads)
            results[overlap] = run(*fluid(overlap, barostat_frequency=1), langevin(), steps, energy_every=4)
    finally:
        torch.set_num_threads(before)
    assert_same_trajectory(results['false'][0], results['true'][0])
    assert results['false'][1] == [0, 0, 0]
    started, used, discarded = results['true'][1]
    assert started == used + discarded
    # Accepted volume moves change the positions after the prefetch began (recomputed); rejected ones restore them.
    assert used > 0 and discarded > 0
    assert started <= steps


def test_overlap_is_off_by_default_and_only_on_the_cpu_platform():
    assert run(*fluid(), langevin(), 5)[1] == [0, 0, 0]
    assert run(*fluid('true'), langevin(), 5)[1] == [5, 5, 0]
    system, positions = fluid('true')
    context = openmm.Context(system, langevin(), openmm.Platform.getPlatformByName('Reference'))
    context.setPositions(positions)
    context.getIntegrator().step(2)
    force = next(f for f in context.getSystem().getForces() if isinstance(f, NNPForce))
    assert list(force.getOverlapStatisticsInContext(context)) == [0, 0, 0]


def test_ani2x_trajectory_is_the_sequential_one_on_one_torch_thread():
    """ANI-2x's forces depend on torch's thread count in the last bits. With overlap, every evaluation, prefetched
    or not (energy-only ones here), runs on the worker with one torch thread, whatever the caller's setting:
    the trajectory is bitwise the one of the sequential kernel with one torch thread."""
    from openmm_nnp.models.ani import ANI
    from test_ani_models import molecule
    numbers, positions = molecule('b2')
    system = openmm.System()
    for z in numbers:
        system.addParticle(openmm.app.Element.getByAtomicNumber(z).mass)
    before = torch.get_num_threads()
    try:
        results = {}
        # (overlap, the caller's torch threads, numThreads): numThreads also sets the worker's thread count.
        for case in (('false', 1, ''), ('true', 2, ''), ('false', 2, '2'), ('true', 1, '2')):
            overlap, threads, numThreads = case
            torch.set_num_threads(threads)
            copy = openmm.XmlSerializer.clone(system)
            copy.addForce(NNPForce(ANI('ani2x', numbers), {'overlap': overlap, 'numThreads': numThreads}))
            results[case] = run(copy, positions, langevin(), 8, energy_every=3)
    finally:
        torch.set_num_threads(before)
    assert_same_trajectory(results[('false', 1, '')][0], results[('true', 2, '')][0])
    assert results[('true', 2, '')][1] == [8, 8, 0]
    assert_same_trajectory(results[('false', 2, '2')][0], results[('true', 1, '2')][0])


@pytest.mark.parametrize('ours', [False, True])
def test_mts_integrator_gives_the_same_trajectory(ours):
    """MTS integrators compute the NNP group in some steps only: OpenMM's MTSLangevinIntegrator (a
    CustomIntegrator, the NNP group after the MM group) and ours (the NNP group by itself, then the MM group,
    every other step). Ours starts prefetches only in the steps that compute the NNP group, so none is left
    over or wasted."""
    def integrator():
        if ours:
            mts = NNPMTSLangevinMiddleIntegrator(300 * unit.kelvin, 1 / unit.picosecond, 0.001 * unit.picoseconds, 2)
        else:
            mts = openmm.MTSLangevinIntegrator(300 * unit.kelvin, 1 / unit.picosecond, 0.002 * unit.picoseconds,
                                               [(1, 1), (0, 2)])
        mts.setRandomNumberSeed(5)
        return mts
    systems = {overlap: fluid(overlap, mts=True) for overlap in ('false', 'true')}
    results = {overlap: run(*systems[overlap], integrator(), 10) for overlap in systems}
    assert_same_trajectory(results['false'][0], results['true'][0])
    started, used, discarded = results['true'][1]
    assert started == used + discarded and started > 0
    if ours:
        assert (started, used, discarded) == (5, 5, 0)  # 10 inner steps, the NNP in every other one


def test_prefetches_nobody_uses_back_off_and_a_context_is_destroyed_while_one_runs():
    """An integrator that moves the atoms before it computes forces: each prefetch is wasted, so they become
    rarer (doubling gaps)."""
    system, positions = fluid('true')
    integrator = openmm.CustomIntegrator(0.0001)
    integrator.addUpdateContextState()
    integrator.addComputePerDof('x', 'x + dt*v')
    integrator.addComputePerDof('v', 'v + dt*f/m')
    context = openmm.Context(system, integrator, CPU, {'Threads': '1'})
    context.setPositions(positions)
    context.setVelocitiesToTemperature(300 * unit.kelvin, 1)
    integrator.step(200)
    force = next(f for f in context.getSystem().getForces() if isinstance(f, NNPForce))
    started, used, discarded = force.getOverlapStatisticsInContext(context)
    assert used == 0 and started - discarded in (0, 1) and 0 < started <= 10
    integrator.step(1)  # may start a prefetch that is still running when the Context goes
    del context, integrator


def test_model_errors_in_a_prefetch_reach_the_caller():
    n = 4
    system = openmm.System()
    for _ in range(n):
        system.addParticle(12.0)
    system.addForce(NNPForce(RaisingModel(n)))
    system.getForce(0).setProperty('overlap', 'true')
    integrator = openmm.VerletIntegrator(0.001)
    context = openmm.Context(system, integrator, CPU)
    positions = random_positions(n, seed=5)
    context.setPositions(positions)
    integrator.step(2)
    far = positions.copy()
    far[0, 0] = 20.0
    context.setPositions(far)
    with pytest.raises(openmm.OpenMMException, match='atom 0 went beyond 10 nm'):
        integrator.step(1)
    force = NNPForce.cast(context.getSystem().getForce(0))
    assert list(force.getOverlapStatisticsInContext(context)) == [3, 3, 0]  # the error was the prefetch's result
    context.setPositions(positions)  # the context still works
    integrator.step(1)
    assert np.isfinite(context.getState(getEnergy=True).getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole))


def test_overlap_property_values():
    force = NNPForce(PairModel(2))
    for value in ('true', 'false', ''):
        force.setProperty('overlap', value)
    with pytest.raises(openmm.OpenMMException, match="overlap must be 'true' or 'false'"):
        force.setProperty('overlap', 'yes')
    force.setProperty('overlap', 'false')
    assert openmm.XmlSerializer.deserialize(openmm.XmlSerializer.serialize(force)).getProperties()['overlap'] == 'false'


def test_import_sets_openmp_waiting_unless_the_user_did():
    # torch's OpenMP threads must not spin for milliseconds on OpenMM's cores (libgomp's default), nor sleep
    # after every parallel region (a model of many small operations then pays a wake-up for each): import
    # openmm_nnp sets a short spin, then passive waiting, before torch loads; the user's own settings win.
    script = "import os, openmm_nnp; print(os.environ.get('OMP_WAIT_POLICY'), os.environ.get('GOMP_SPINCOUNT'))"
    env = {k: v for k, v in os.environ.items() if k not in ('OMP_WAIT_POLICY', 'GOMP_SPINCOUNT')}

    def settings(**extra):
        result = subprocess.run([sys.executable, '-c', script], env={**env, **extra}, capture_output=True, text=True,
                                check=True)
        return result.stdout.split()

    assert settings() == ['PASSIVE', str(openmm_nnp.OPENMP_SPIN_COUNT)]
    assert settings(GOMP_SPINCOUNT='5', OMP_WAIT_POLICY='ACTIVE') == ['ACTIVE', '5']
    # torch already loaded: libgomp has read its settings, so openmm_nnp leaves them alone.
    script = 'import torch; ' + script
    assert settings() == ['None', 'None']
