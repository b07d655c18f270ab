"""NNPMTSLangevinMiddleIntegrator: LangevinMiddleIntegrator inner steps on the fast group, the slow group as an
impulse every N-th inner step.

Checked here:
* without friction its positions are those of OpenMM's MTSLangevinIntegrator (BAOAB-RESPA; the same positions
  in exact arithmetic, once the velocities are started half an inner step earlier), to rounding;
* with an empty slow group it is LangevinMiddleIntegrator without friction, to rounding;
* each group is computed exactly once per new positions: N fast and 1 slow evaluation per N inner steps
  (counted with PythonForces), whatever the chunks step() is called with;
* checkpoints continue the same trajectory (the position in the outer step follows from the step count);
* settings changed after construction are used; XML, pickling and Context.getIntegrator() give it back;
* with friction, the kinetic temperature is the target's (sampling, not only arithmetic);
* openmm.app.Simulation counts inner steps, and a barostat works with it;
* bad arguments are refused.
Trajectories are compared on the Reference platform (double precision, deterministic)."""

import numpy as np
import openmm
import pytest
from openmm import unit

from openmm_nnp import NNPForce
from openmm_nnp.integrators import NNPMTSLangevinMiddleIntegrator

from test_overlap import fluid

REFERENCE = openmm.Platform.getPlatformByName('Reference')
SLOW, FAST = 1, 0
T = 300 * unit.kelvin
INNER_PS = 0.002
INNER = INNER_PS * unit.picoseconds
STILL = 0 / unit.picosecond


def counting_force(group, counts):
    """A PythonForce with no energy that counts its evaluations in counts[group]."""
    def compute(state):
        counts[group] += 1
        return 0.0, np.zeros((state.getPositions(asNumpy=True).shape[0], 3))
    force = openmm.PythonForce(compute)
    force.setForceGroup(group)
    return force


def start(system, integrator, positions, velocities=None):
    context = openmm.Context(system, integrator, REFERENCE)
    context.setPositions(positions)
    if velocities is None:
        context.setVelocitiesToTemperature(T, 11)
    else:
        context.setVelocities(velocities)
    return context


def positions_of(context):
    return context.getState(getPositions=True).getPositions(asNumpy=True)._value


def forces_by_group(system, positions, group):
    context = openmm.Context(system, openmm.VerletIntegrator(0.001), REFERENCE)
    context.setPositions(positions)
    return context.getState(getForces=True, groups={group}).getForces(asNumpy=True)._value


@pytest.mark.parametrize('substeps', [1, 2, 3])
def test_positions_equal_mts_langevin_without_friction(substeps):
    """BAOAB-RESPA starts from synchronous velocities v0; the leapfrog form from v0 minus the half kicks that
    precede its first drift: u = v0 - (N dt/2) F_slow/m - (dt/2) F_fast/m. Both then visit the same positions
    (exact arithmetic); double precision keeps them equal to ~1e-12 nm over 24 inner steps."""
    system, positions = fluid(mts=True)
    masses = np.array([system.getParticleMass(i).value_in_unit(unit.dalton) for i in range(system.getNumParticles())])
    theirs = openmm.MTSLangevinIntegrator(T, STILL, substeps * INNER, [(SLOW, 1), (FAST, substeps)])
    reference = start(system, theirs, positions)
    v0 = reference.getState(getVelocities=True).getVelocities(asNumpy=True)._value
    u = v0 - (0.5 * INNER_PS / masses[:, None]) * (substeps * forces_by_group(system, positions, SLOW)
                                                 + forces_by_group(system, positions, FAST))
    ours = NNPMTSLangevinMiddleIntegrator(T, STILL, INNER, substeps)
    context = start(system, ours, positions, u)
    outer = 24 // substeps
    theirs.step(outer)
    ours.step(3)  # in chunks that do not end at outer steps
    ours.step(outer * substeps - 3)
    x_ref = positions_of(reference)
    assert np.abs(positions_of(context) - x_ref).max() < 1e-10
    assert np.abs(x_ref - positions).max() > 0.01  # the atoms did move


def test_empty_slow_group_is_langevin_middle_without_friction():
    system, positions = fluid(mts=True)
    for force in system.getForces():
        force.setForceGroup(FAST)
    reference = start(system, openmm.LangevinMiddleIntegrator(T, STILL, INNER), positions)
    ours = NNPMTSLangevinMiddleIntegrator(T, STILL, INNER, 2)
    context = start(system, ours, positions)
    reference.getIntegrator().step(10)
    ours.step(10)
    assert np.abs(positions_of(context) - positions_of(reference)).max() < 1e-12


def test_each_group_is_computed_once_per_new_positions():
    system, positions = fluid(mts=True)
    counts = {SLOW: 0, FAST: 0}
    system.addForce(counting_force(SLOW, counts))
    system.addForce(counting_force(FAST, counts))
    integrator = NNPMTSLangevinMiddleIntegrator(T, 1 / unit.picosecond, INNER, 3)
    context = start(system, integrator, positions)
    before = dict(counts)  # setVelocitiesToTemperature may evaluate the forces
    for chunk in (1, 4, 2, 5):  # 12 inner steps in chunks that cut outer steps
        integrator.step(chunk)
    assert {group: counts[group] - before[group] for group in counts} == {SLOW: 4, FAST: 12}
    assert context.getStepCount() == 12
    assert context.getTime().value_in_unit(unit.picosecond) == pytest.approx(12 * INNER_PS)
    assert integrator.getStepSize().value_in_unit(unit.picosecond) == pytest.approx(INNER_PS)


def test_checkpoint_continues_the_same_trajectory():
    """A checkpoint taken inside an outer step: the next impulse must come at the same inner step (from the step
    count, which the checkpoint holds). With friction: the random number state is checkpointed too."""
    system, positions = fluid(mts=True)

    def integrator():
        mts = NNPMTSLangevinMiddleIntegrator(T, 1 / unit.picosecond, INNER, 3)
        mts.setRandomNumberSeed(17)
        return mts
    straight = integrator()
    context = start(system, straight, positions)
    straight.step(10)
    x_straight = positions_of(context)

    first = integrator()
    context = start(system, first, positions)
    first.step(4)
    checkpoint = context.createCheckpoint()
    second = integrator()
    context = openmm.Context(system, second, REFERENCE)
    context.loadCheckpoint(checkpoint)
    second.step(6)
    assert np.array_equal(positions_of(context), x_straight)


def test_kinetic_temperature_with_friction():
    """The fluid at 300 K, strong friction so that it equilibrates quickly: the mean kinetic temperature of the
    stored (half-step) velocities over 600 inner steps is 300 K within 5 % (the fluctuation of the mean of this
    189-degree-of-freedom system over ~30 correlation times is about 2 %)."""
    system, positions = fluid(mts=True)
    integrator = NNPMTSLangevinMiddleIntegrator(T, 20 / unit.picosecond, INNER, 2)
    integrator.setRandomNumberSeed(3)
    context = start(system, integrator, positions)
    integrator.step(200)
    dof = 3 * system.getNumParticles() - 3
    temperatures = []
    for _ in range(60):
        integrator.step(10)
        kinetic = context.getState(getEnergy=True).getKineticEnergy()
        temperatures.append((2 * kinetic / (dof * unit.MOLAR_GAS_CONSTANT_R)).value_in_unit(unit.kelvin))
    assert np.mean(temperatures) == pytest.approx(300, rel=0.05)


def test_settings_changed_after_creation_are_used():
    """Temperature, friction, step size and seed set after construction give the trajectory of an integrator
    constructed with them (Reference platform: one random number stream per process, seeded by each Context)."""
    system, positions = fluid(mts=True)
    changed = NNPMTSLangevinMiddleIntegrator(T, 1 / unit.picosecond, INNER, 2)
    changed.setTemperature(310 * unit.kelvin)
    changed.setFriction(5 / unit.picosecond)
    changed.setStepSize(0.001)
    changed.setRandomNumberSeed(17)
    assert changed.getTemperature().value_in_unit(unit.kelvin) == pytest.approx(310)
    assert changed.getFriction().value_in_unit(unit.picosecond ** -1) == pytest.approx(5)
    assert changed.getStepSize().value_in_unit(unit.picosecond) == pytest.approx(0.001)
    assert (changed.getRandomNumberSeed(), changed.getSlowInterval()) == (17, 2)
    finals = []
    for integrator in (changed, NNPMTSLangevinMiddleIntegrator(310, 5, 0.001, 2)):
        integrator.setRandomNumberSeed(17)
        context = start(system, integrator, positions, velocities=np.zeros((system.getNumParticles(), 3)))
        integrator.step(8)
        finals.append(positions_of(context))
    assert np.array_equal(finals[0], finals[1])
    with pytest.raises(openmm.OpenMMException, match='temperature cannot be negative'):
        changed.setTemperature(-1)


def test_serialization_and_downcasts_give_the_integrator_back():
    """XML (run.json's integrator.xml), pickling, copying and Context.getIntegrator() all hand back an
    NNPMTSLangevinMiddleIntegrator with the same settings."""
    import copy
    import pickle
    integrator = NNPMTSLangevinMiddleIntegrator(305 * unit.kelvin, 2 / unit.picosecond, 0.0015, 3, slowGroup=4,
                                                fastGroup=2)
    integrator.setRandomNumberSeed(99)
    integrator.setConstraintTolerance(1e-7)
    xml = openmm.XmlSerializer.serialize(integrator)
    system, positions = fluid(mts=True)
    context = start(system, copy.deepcopy(integrator), positions)
    for again in (openmm.XmlSerializer.deserialize(xml), pickle.loads(pickle.dumps(integrator)),
                  copy.copy(integrator), context.getIntegrator()):
        assert isinstance(again, NNPMTSLangevinMiddleIntegrator)
        assert openmm.XmlSerializer.serialize(again) == xml
        assert (again.getSlowInterval(), again.getSlowGroup(), again.getFastGroup()) == (3, 4, 2)
        assert again.getTemperature().value_in_unit(unit.kelvin) == pytest.approx(305)
    context.getIntegrator().step(2)
    assert context.getStepCount() == 2


@pytest.mark.parametrize('arguments', [dict(slowInterval=0), dict(slowInterval=2.5), dict(slowGroup=32),
                                       dict(slowGroup=0, fastGroup=0), dict(fastGroup=-1)])
def test_bad_arguments_are_refused(arguments):
    arguments = {'slowInterval': 2, **arguments}
    with pytest.raises(ValueError, match='slowInterval|force group|Force group'):
        NNPMTSLangevinMiddleIntegrator(T, 1 / unit.picosecond, INNER, **arguments)


def test_nnp_force_in_the_slow_group_is_integrated():
    """The fluid's NNPForce (group 1) is integrated: without it the trajectory differs."""
    system, positions = fluid(mts=True)
    without = openmm.XmlSerializer.clone(system)
    without.removeForce(next(i for i, f in enumerate(without.getForces()) if isinstance(f, NNPForce)))
    finals = []
    for s in (system, without):
        integrator = NNPMTSLangevinMiddleIntegrator(T, STILL, INNER, 2)
        context = start(s, integrator, positions)
        integrator.step(10)
        finals.append(positions_of(context))
    assert not np.allclose(finals[0], finals[1], atol=1e-6)


def test_with_a_barostat_and_in_an_openmm_simulation():
    """openmm.app.Simulation steps it through its Python step() (so currentStep counts inner steps), and a
    MonteCarloBarostat, applied when inner steps begin, changes the box without breaking it."""
    from openmm import app
    system, positions = fluid(mts=True, barostat_frequency=2)
    topology = app.Topology()
    chain = topology.addChain()
    for _ in range(system.getNumParticles()):
        residue = topology.addResidue('AR', chain)
        topology.addAtom('AR', app.Element.getBySymbol('Ar'), residue)
    integrator = NNPMTSLangevinMiddleIntegrator(T, 1 / unit.picosecond, INNER, 3)
    simulation = app.Simulation(topology, system, integrator, REFERENCE)
    simulation.context.setPositions(positions)
    simulation.context.setVelocitiesToTemperature(T, 5)
    boxes = []
    for _ in range(10):
        simulation.step(4)
        state = simulation.context.getState(getEnergy=True, getPositions=True)
        boxes.append(state.getPeriodicBoxVolume().value_in_unit(unit.nanometer ** 3))
        assert np.isfinite(state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole))
    assert simulation.currentStep == 40
    assert len(set(boxes)) > 1  # the barostat moved
    assert simulation.context.getStepCount() == 40  # where the outer steps begin


def test_cpu_platform_matches_reference():
    """On the CPU platform (OpenMM's multithreaded LangevinMiddleIntegrator kernel, forces combined in the
    Reference platform's force array), without friction: the positions of the Reference platform after 12 inner
    steps (N = 3), to 1e-8 nm (the CPU platform computes nonbonded forces in single precision; measured
    1.4e-10 nm, while the atoms move more than 0.005 nm)."""
    system, positions = fluid(mts=True)
    finals = []
    for platform in (REFERENCE, openmm.Platform.getPlatformByName('CPU')):
        integrator = NNPMTSLangevinMiddleIntegrator(T, STILL, INNER, 3)
        context = openmm.Context(system, integrator, platform)
        context.setPositions(positions)
        context.setVelocitiesToTemperature(T, 11)
        integrator.step(12)
        finals.append(positions_of(context))
    assert np.abs(finals[1] - finals[0]).max() < 1e-8
    assert np.abs(finals[0] - positions).max() > 0.005


def test_minimizer_and_barostat_see_both_groups():
    """OpenMM's LocalEnergyMinimizer and Monte Carlo barostats evaluate the integrator's force groups: both of
    them here (the NNP/MM energy, not MM's alone). A stiff spring in the slow group pulls atom 0 by 0.05 nm:
    minimization ends with it at the spring's rest point (within 0.005 nm; measured 3.6e-4), where an integrator of
    the fast group only leaves it elsewhere (measured 0.4 nm away)."""
    system, positions = fluid(mts=True)
    x0 = np.asarray(positions)[0]
    spring = openmm.CustomExternalForce('5e4*((x-x0)^2+(y-y0)^2+(z-z0)^2)')
    for name, value in zip(('x0', 'y0', 'z0'), (x0[0] + 0.05, x0[1], x0[2])):
        spring.addGlobalParameter(name, value)
    spring.addParticle(0, [])
    spring.setForceGroup(SLOW)
    system.addForce(spring)
    fastOnly = openmm.LangevinMiddleIntegrator(T, 1 / unit.picosecond, INNER)
    fastOnly.setIntegrationForceGroups({FAST})
    ours = NNPMTSLangevinMiddleIntegrator(T, 1 / unit.picosecond, INNER, 2)
    assert ours.getIntegrationForceGroups() == (1 << SLOW) | (1 << FAST)
    moved = []
    for integrator in (ours, fastOnly):
        context = start(system, integrator, positions)
        openmm.LocalEnergyMinimizer.minimize(context, 1.0, 0)
        moved.append(positions_of(context)[0, 0] - x0[0])
    assert abs(moved[0] - 0.05) < 0.005 and abs(moved[1] - 0.05) > 0.05


def test_cpp_constructor_and_xml_refuse_bad_settings():
    """The C++ class checks its arguments itself (for C++ callers and XML), and XML of an unknown version is
    refused with a message naming the integrator."""
    from openmm_nnp import nnp_swig
    for arguments in ((300, 1, 0.001, 0), (300, 1, 0.001, 2, 1, 1), (300, 1, 0.001, 2, 32, 0), (-1, 1, 0.001, 2)):
        with pytest.raises(openmm.OpenMMException, match='NNPMTSLangevinMiddleIntegrator'):
            nnp_swig.NNPMTSLangevinMiddleIntegrator(*arguments)
    xml = openmm.XmlSerializer.serialize(NNPMTSLangevinMiddleIntegrator(T, 1 / unit.picosecond, INNER, 2))
    with pytest.raises(openmm.OpenMMException, match='NNPMTSLangevinMiddleIntegrator: unsupported serialization'):
        openmm.XmlSerializer.deserialize(xml.replace('version="1"', 'version="2"'))
