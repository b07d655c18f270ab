"""NNPMTSLangevinIntegrator: MTSLangevinIntegrator's arithmetic (without friction, its trajectory bit for bit:
OpenMM's random numbers for a seed depend on the integrator's list of computations, so with friction the two
differ by their noise), with one evaluation of each force group per new set of positions, and the stored slow forces recomputed whenever positions or global
parameters changed between steps (setPositions, a barostat, setParameter) or on request.

Counting PythonForces in both groups give the number of evaluations exactly; trajectories are compared on
the CPU platform with one thread (deterministic)."""

import numpy as np
import openmm
import pytest
from openmm import unit

from openmm_nnp import NNPForce
from openmm_nnp.integrators import NNPMTSLangevinIntegrator

from test_overlap import CPU, fluid

SLOW, FAST = 1, 0
T, FRICTION, DT = 300 * unit.kelvin, 2 / unit.picosecond, 0.002 * unit.picoseconds


def counting_force(group, counts):
    """A PythonForce with no energy that counts its evaluations in counts[group]."""
    def compute(state):
        counts[group] += 1
        return 0.0, np.zeros((state.getPositions(asNumpy=True).shape[0], 3))
    force = openmm.PythonForce(compute)
    force.setForceGroup(group)
    return force


def system_with_lambda(barostat_frequency=0):
    """test_overlap's LJ fluid (NNPForce in group 1) with a scale parameter 'lambda_nnp' on the NNPForce."""
    system, positions = fluid(mts=True, barostat_frequency=barostat_frequency)
    force = next(f for f in system.getForces() if isinstance(f, NNPForce))
    force.setScaleParameter('lambda_nnp', 1.0)
    return system, positions


def run(integrator, system, positions, steps, between=None):
    """Step one at a time; `between(context, step)` may change the context between steps."""
    context = openmm.Context(system, integrator, CPU, {'Threads': '1'})
    context.setPositions(positions)
    context.setVelocitiesToTemperature(T, 11)
    for step in range(steps):
        if between:
            between(context, step)
        integrator.step(1)
    state = context.getState(getPositions=True, getVelocities=True)
    return state.getPositions(asNumpy=True)._value, state.getVelocities(asNumpy=True)._value


def both_integrators(system, substeps=2, friction=FRICTION):
    ours = NNPMTSLangevinIntegrator(system, T, friction, DT, [(SLOW, 1), (FAST, substeps)])
    theirs = openmm.MTSLangevinIntegrator(T, friction, DT, [(SLOW, 1), (FAST, substeps)])
    for integrator in (ours, theirs):
        integrator.setRandomNumberSeed(17)
    return ours, theirs


@pytest.mark.parametrize('substeps', [2, 3])
def test_same_trajectory_as_openmm_mts_with_changes_between_steps(substeps):
    """Positions set anew and the NNP's lambda changed between steps: the stored slow forces must be recomputed
    each time, or the trajectory would differ from OpenMM's. Without friction: no random numbers."""
    system, positions = system_with_lambda()
    moved = positions + 0.01

    def between(context, step):
        if step == 4:
            context.setPositions(moved)
        if step == 7:
            context.setParameter('lambda_nnp', 0.4)
    ours, theirs = both_integrators(system, substeps, friction=0 / unit.picosecond)
    x, v = run(ours, system, positions, 12, between)
    x_ref, v_ref = run(theirs, system, positions, 12, between)
    assert np.array_equal(x, x_ref) and np.array_equal(v, v_ref)
    # ... and the changes mattered: without them the trajectory differs.
    ours, _ = both_integrators(system, substeps, friction=0 / unit.picosecond)
    x_unchanged, _ = run(ours, system, positions, 12)
    assert not np.allclose(x, x_unchanged)


def test_a_barostat_move_makes_the_stored_forces_stale():
    """A barostat moves the atoms when a step begins. (Its random numbers come from the stream the integrator
    draws from, so trajectories cannot be compared with MTSLangevinIntegrator's: the integrator's own check is.)
    The stored forces must count as stale in exactly the steps that begin with an accepted move (a trial every
    other step)."""
    system, positions = system_with_lambda(barostat_frequency=2)
    integrator, _ = both_integrators(system)
    context = openmm.Context(system, integrator, CPU, {'Threads': '1'})
    context.setPositions(positions)
    context.setVelocitiesToTemperature(T, 11)
    integrator.step(1)
    accepted = []
    for _ in range(20):
        box = context.getState().getPeriodicBoxVectors(asNumpy=True)._value
        integrator.step(1)
        moved = not np.array_equal(box, context.getState().getPeriodicBoxVectors(asNumpy=True)._value)
        assert (integrator.getGlobalVariableByName('slowForcesStale') != 0) == moved
        accepted.append(moved)
    assert any(accepted) and not all(accepted)


def test_each_group_is_evaluated_once_per_new_positions():
    system, positions = system_with_lambda()
    counts = {SLOW: 0, FAST: 0}
    system.addForce(counting_force(SLOW, counts))
    system.addForce(counting_force(FAST, counts))
    substeps, steps = 2, 10
    ours, theirs = both_integrators(system, substeps)
    run(theirs, system, positions, steps)
    # OpenMM's: the fast group once more per step (at the positions the slow group was computed at last).
    assert counts == {SLOW: steps + 1, FAST: (substeps + 1) * steps}
    counts.update({SLOW: 0, FAST: 0})
    context = openmm.Context(system, ours, CPU, {'Threads': '1'})
    context.setPositions(positions)
    context.setVelocitiesToTemperature(T, 11)
    ours.step(steps)
    # The first step computes the slow forces at the start too (nothing stored yet), and the fast ones after.
    assert counts == {SLOW: steps + 1, FAST: substeps * steps + 1}
    # Unchanged positions and parameters: the stored slow forces are used, and OpenMM's fast ones. A changed
    # lambda, or a request, recomputes the slow ones; setPositions to the same positions does not (OpenMM may
    # then compute the fast ones once more).
    same_positions = lambda: context.setPositions(context.getState(getPositions=True).getPositions())  # noqa: E731
    def no_change():
        pass
    for change, extra in ((no_change, 0), (lambda: context.setParameter('lambda_nnp', 0.5), 1),
                          (ours.invalidateSlowForces, 1), (same_positions, 0)):
        counts.update({SLOW: 0, FAST: 0})
        change()
        ours.step(1)
        assert counts[SLOW] == 1 + extra
        assert counts[FAST] == substeps if change is no_change else counts[FAST] <= substeps + 1


def test_checkpoint_continues_the_same_trajectory():
    """Without friction (a stored force recomputed after loading would change which random numbers later steps
    draw, see the barostat test)."""
    system, positions = system_with_lambda()
    still = 0 / unit.picosecond
    ours, _ = both_integrators(system, friction=still)
    x_straight, _ = run(ours, system, positions, 6)
    ours, _ = both_integrators(system, friction=still)
    context = openmm.Context(system, ours, CPU, {'Threads': '1'})
    context.setPositions(positions)
    context.setVelocitiesToTemperature(T, 11)
    ours.step(3)
    checkpoint = context.createCheckpoint()
    ours, _ = both_integrators(system, friction=still)
    context = openmm.Context(system, ours, CPU, {'Threads': '1'})
    context.loadCheckpoint(checkpoint)
    ours.step(1)
    assert ours.getGlobalVariableByName('slowForcesStale') == 0  # the checkpoint restored the stored forces
    ours.step(2)
    # A new Context sums the MM forces in another order (CPU neighbour lists): equal to ~1e-12 nm, not bitwise.
    # Stored forces restored wrongly (zero) would move the atoms by ~1e-3 nm.
    x = context.getState(getPositions=True).getPositions(asNumpy=True)._value
    assert np.abs(x - x_straight).max() < 1e-9


@pytest.mark.parametrize('groups', [[(1, 1)], [(1, 1), (0, 2), (2, 4)], [(1, 2), (0, 4)], [(1, 1), (1, 2)],
                                    [(1, 1), (0, 2.5)], [(1, 1), (32, 2)]])
def test_bad_groups_are_refused(groups):
    with pytest.raises(ValueError, match='force group|Force group'):
        NNPMTSLangevinIntegrator(openmm.System(), T, FRICTION, DT, groups)


def test_the_system_comes_first():
    """MTSLangevinIntegrator's arguments with the System last are refused with a message that names the order."""
    with pytest.raises(TypeError, match='takes the System it will integrate first'):
        NNPMTSLangevinIntegrator(T, FRICTION, DT, [(SLOW, 1), (FAST, 2)], openmm.System())
