"""Small System utilities for free-energy setups: cutting a molecule out of a larger MM System."""

import openmm
import openmm.app as app

_SUPPORTED = (openmm.HarmonicBondForce, openmm.HarmonicAngleForce, openmm.PeriodicTorsionForce,
              openmm.NonbondedForce, openmm.CMMotionRemover, openmm.MonteCarloBarostat)


def extract_subsystem(system, topology, positions, atoms, nonbonded_method=None):
    """The part of an MM System that involves only ``atoms`` (e.g. a ligand taken out of its solvated System).

    Bonds, angles, torsions and nonbonded parameters (charges, Lennard-Jones and exceptions) among the kept atoms
    are copied; constraints between kept atoms too. Terms that touch a removed atom are dropped.

    Parameters
    ----------
    system : openmm.System
        A System made of the standard Amber-style forces (HarmonicBond, HarmonicAngle, PeriodicTorsion,
        Nonbonded, CMMotionRemover, MonteCarloBarostat).
    topology : openmm.app.Topology
    positions : positions of every atom of ``system``
    atoms : sequence of int
        The particles to keep, in increasing order.
    nonbonded_method : NonbondedForce method or None
        None keeps the System's method when the kept atoms still fill the periodic box, which this function
        cannot know: pass ``openmm.NonbondedForce.NoCutoff`` for a molecule in vacuum.

    Returns
    -------
    (system, topology, positions)
    """
    keep = sorted(set(int(i) for i in atoms))
    if not keep:
        raise ValueError('extract_subsystem: no atoms to keep.')
    if keep[0] < 0 or keep[-1] >= system.getNumParticles():
        raise ValueError(f'extract_subsystem: atom indices must lie in [0, {system.getNumParticles()}).')
    new_index = {old: new for new, old in enumerate(keep)}
    sub = openmm.System()
    for old in keep:
        sub.addParticle(system.getParticleMass(old))
    if nonbonded_method is None:
        sub.setDefaultPeriodicBoxVectors(*system.getDefaultPeriodicBoxVectors())
    for i in range(system.getNumConstraints()):
        a, b, d = system.getConstraintParameters(i)
        if a in new_index and b in new_index:
            sub.addConstraint(new_index[a], new_index[b], d)
    for force in system.getForces():
        if not isinstance(force, _SUPPORTED):
            raise ValueError(f'extract_subsystem supports {", ".join(c.__name__ for c in _SUPPORTED)}, not '
                             f'{type(force).__name__}. Build the subsystem with your force field tool instead.')
        if isinstance(force, openmm.HarmonicBondForce):
            new = openmm.HarmonicBondForce()
            for i in range(force.getNumBonds()):
                a, b, *p = force.getBondParameters(i)
                if a in new_index and b in new_index:
                    new.addBond(new_index[a], new_index[b], *p)
        elif isinstance(force, openmm.HarmonicAngleForce):
            new = openmm.HarmonicAngleForce()
            for i in range(force.getNumAngles()):
                a, b, c, *p = force.getAngleParameters(i)
                if all(x in new_index for x in (a, b, c)):
                    new.addAngle(new_index[a], new_index[b], new_index[c], *p)
        elif isinstance(force, openmm.PeriodicTorsionForce):
            new = openmm.PeriodicTorsionForce()
            for i in range(force.getNumTorsions()):
                a, b, c, d, *p = force.getTorsionParameters(i)
                if all(x in new_index for x in (a, b, c, d)):
                    new.addTorsion(new_index[a], new_index[b], new_index[c], new_index[d], *p)
        elif isinstance(force, openmm.NonbondedForce):
            new = openmm.NonbondedForce()
            new.setNonbondedMethod(force.getNonbondedMethod() if nonbonded_method is None else nonbonded_method)
            new.setCutoffDistance(force.getCutoffDistance())
            new.setUseDispersionCorrection(force.getUseDispersionCorrection())
            new.setUseSwitchingFunction(force.getUseSwitchingFunction())
            new.setSwitchingDistance(force.getSwitchingDistance())
            new.setEwaldErrorTolerance(force.getEwaldErrorTolerance())
            for old in keep:
                new.addParticle(*force.getParticleParameters(old))
            for i in range(force.getNumExceptions()):
                a, b, *p = force.getExceptionParameters(i)
                if a in new_index and b in new_index:
                    new.addException(new_index[a], new_index[b], *p)
        elif isinstance(force, openmm.CMMotionRemover):
            new = openmm.CMMotionRemover(force.getFrequency())
        else:  # barostat: only meaningful when the subsystem stays periodic
            if nonbonded_method is not None:
                continue
            new = openmm.MonteCarloBarostat(force.getDefaultPressure(), force.getDefaultTemperature(),
                                            force.getFrequency())
        new.setForceGroup(force.getForceGroup())
        sub.addForce(new)

    modeller = app.Modeller(topology, positions)
    keep_set = set(keep)
    modeller.delete([a for a in topology.atoms() if a.index not in keep_set])
    sub_topology = modeller.topology
    if nonbonded_method is not None:
        sub_topology.setPeriodicBoxVectors(None)
    return sub, sub_topology, modeller.positions
