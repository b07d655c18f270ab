"""Multiple time steps for NNP/MM that evaluate each force group once per new set of positions.

OpenMM's ``MTSLangevinIntegrator`` (BAOAB-RESPA) is a CustomIntegrator, and a CustomIntegrator remembers the
forces of only the last force-group set it computed. With two groups, every outer step ends with the slow
group at the new positions and the next one begins with the fast group at the same positions, so the fast
group is computed again: N + 1 evaluations of the MM force field per N inner steps, where N are needed.
With the NNP/MM layout of ``NNPotential.createMTSSystem`` (group 0: all of MM, group 1: the NNP correction)
that made ``--mts 2`` cost 1.4x an MM step before any NNP work (benchmarks/bench_overhead.py).

``NNPMTSLangevinIntegrator`` performs the same arithmetic in the same order (without friction its trajectory
equals ``MTSLangevinIntegrator``'s bit for bit; with friction the noise differs, because OpenMM's random
numbers for a seed depend on the integrator's list of computations) but keeps the slow forces in a per-DOF
variable: it computes them at the end of an outer step just before the last fast forces, so that OpenMM's
one-entry cache still holds the fast forces when the next step begins, and reuses the stored slow forces
then. The stored forces are recomputed whenever they may be stale: when any coordinate differs from the
one they were computed at (setPositions, setState, a barostat move, a checkpoint) or any global parameter
of the System differs from its value then (setParameter, e.g. a lambda). After changing a force's
parameters with updateParametersInContext, or the box with setPeriodicBoxVectors, at unchanged coordinates,
call ``invalidateSlowForces()``.
"""

import math

import openmm
from openmm.unit import MOLAR_GAS_CONSTANT_R

_STORED_FORCES = 'fSlow'
_STORED_POSITIONS = 'xSlow'
_VALID = 'slowForcesValid'
_STALE = 'slowForcesStale'


def _globalParameterNames(system):
    names = set()
    for force in system.getForces():
        if hasattr(force, 'getNumGlobalParameters'):
            names.update(force.getGlobalParameterName(i) for i in range(force.getNumGlobalParameters()))
        if hasattr(force, 'getScaleParameter') and force.getScaleParameter():  # NNPForce's lambda
            names.add(force.getScaleParameter())
    return sorted(names)


class NNPMTSLangevinIntegrator(openmm.CustomIntegrator):
    """BAOAB-RESPA Langevin dynamics with a slow and a fast force group; each group is computed once per new
    set of positions (see the module docstring).

    ``NNPMTSLangevinIntegrator(system, temperature, friction, dt, groups)`` takes ``MTSLangevinIntegrator``'s
    arguments and the System it will integrate (whose global parameters it watches). ``dt`` is the outer
    step; ``groups`` is ``[(slowGroup, 1), (fastGroup, N)]``: the fast group is evaluated N times per outer
    step. For ``NNPotential.createMTSSystem``'s layout: ``[(1, 1), (0, N)]``.
    """

    def __init__(self, system, temperature, friction, dt, groups):
        if not isinstance(system, openmm.System):
            raise TypeError('NNPMTSLangevinIntegrator(system, temperature, friction, dt, groups) takes the System it '
                            f'will integrate first (its global parameters are watched), not {type(system).__name__}.')
        groups = sorted(groups, key=lambda group: group[1])
        if len(groups) != 2 or groups[0][1] != 1 or int(groups[1][1]) != groups[1][1] or groups[1][1] < 1:
            raise ValueError(f'NNPMTSLangevinIntegrator takes two force groups, [(slowGroup, 1), (fastGroup, N)] '
                             f'with an integer N >= 1, not {groups}; use openmm.MTSLangevinIntegrator for more.')
        (slow, _), (fast, substeps) = groups
        substeps = int(substeps)
        for group in (slow, fast):
            if not 0 <= group <= 31:
                raise ValueError(f'Force group must be between 0 and 31, not {group}.')
        if slow == fast:
            raise ValueError(f'The slow and the fast force group must differ (both are {slow}).')
        super().__init__(dt)
        self.addGlobalVariable('a', math.exp(-friction * dt / substeps))
        self.addGlobalVariable('b', math.sqrt(1 - math.exp(-2 * friction * dt / substeps)))
        self.addGlobalVariable('kT', MOLAR_GAS_CONSTANT_R * temperature)
        self.addPerDofVariable('x1', 0)
        self.addPerDofVariable(_STORED_FORCES, 0)
        self.addPerDofVariable(_STORED_POSITIONS, 0)
        self.addGlobalVariable(_VALID, 0)
        self.addGlobalVariable(_STALE, 0)
        parameters = _globalParameterNames(system)
        for i, name in enumerate(parameters):
            self.addGlobalVariable(f'slowParameter{i}', 0)
        slowKick = f'v+0.5*(dt/1)*{_STORED_FORCES}/m'
        fastKick = f'v+0.5*(dt/{substeps})*f{fast}/m'

        self.addUpdateContextState()
        # Are the stored slow forces those of the current positions and parameters?
        self.addComputeSum(_STALE, f'abs(x-{_STORED_POSITIONS})')
        self.addComputeGlobal(_STALE, ' + '.join([f'{_STALE} + 1 - {_VALID}']
                                                 + [f'abs({name} - slowParameter{i})'
                                                    for i, name in enumerate(parameters)]))
        self.beginIfBlock(f'{_STALE} != 0')
        self._storeSlowForces(slow, parameters)
        self.endBlock()
        self.addComputePerDof('v', slowKick)
        for i in range(substeps):
            self.addComputePerDof('v', fastKick)
            self.addComputePerDof('x', f'x+(dt/{2 * substeps})*v')
            self.addComputePerDof('v', 'a*v + b*sqrt(kT/m)*gaussian')
            self.addComputePerDof('x', f'x+(dt/{2 * substeps})*v')
            self.addComputePerDof('x1', 'x')
            self.addConstrainPositions()
            self.addComputePerDof('v', f'v+(x-x1)/(dt/{substeps})')
            self.addConstrainVelocities()
            if i == substeps - 1:
                # The slow forces at the new positions before the fast ones: OpenMM then still holds the fast
                # forces when the next step needs them at these positions.
                self._storeSlowForces(slow, parameters)
            self.addComputePerDof('v', fastKick)
        self.addComputePerDof('v', slowKick)
        self.addConstrainVelocities()

    def _storeSlowForces(self, slow, parameters):
        self.addComputePerDof(_STORED_FORCES, f'f{slow}')
        self.addComputePerDof(_STORED_POSITIONS, 'x')
        for i, name in enumerate(parameters):
            self.addComputeGlobal(f'slowParameter{i}', name)
        self.addComputeGlobal(_VALID, '1')

    def invalidateSlowForces(self):
        """Make the next step recompute the slow forces (after updateParametersInContext at unchanged
        positions, for example)."""
        self.setGlobalVariableByName(_VALID, 0)
