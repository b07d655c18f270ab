"""Multiple time steps for NNP/MM: the MM force field every step with OpenMM's own LangevinMiddleIntegrator,
the NNP correction once every N steps as an impulse.

With ``NNPotential.createMTSSystem``'s layout (group 0: all of MM, group 1: the NNP correction
U_NNP(region) - U_MM(region)), r-RESPA applies the slow forces as kicks of N inner steps' worth at the
boundaries of an outer step. OpenMM's ``MTSLangevinIntegrator`` writes that as a CustomIntegrator, whose
per-DOF arithmetic and random numbers run serially on the CPU platform in every inner step, and which computes
the MM forces N + 1 times per N inner steps (a CustomIntegrator remembers the forces of one force-group set
only; the fast group is computed again at the positions where the slow group was). On two cores that made
``--mts 2`` cost more than computing the NNP at every step (benchmarks/bench_overhead.py).

``NNPMTSLangevinMiddleIntegrator`` is the leapfrog form of the same splitting. Inner steps are
LangevinMiddleIntegrator steps (kick with the fast forces, half drift, friction and noise, half drift,
constraints) on the fast group, in OpenMM's native multithreaded code. Every N-th inner step is a
CustomIntegrator step that adds the slow kick, N times the inner step times the slow forces, to that step's
fast kick; both groups are computed there once, at positions nothing has computed them at. The two
end-of-step half kicks of r-RESPA at the same positions are thus one kick, and the positions are those of
BAOAB-RESPA (``MTSLangevinIntegrator``, with the same noise in each inner step); without friction they are
MTSIntegrator's / MTSLangevinIntegrator's exactly (tests/test_integrators.py). Velocities are stored, as by
LangevinMiddleIntegrator, half an inner step behind the positions, before the next kicks.

``step(n)`` advances n inner steps. Which inner step of the outer step comes next is a global variable of
the CustomIntegrator, so checkpoints keep it. The scheme lives in this Python class (``step``, the setters):
an integrator read back from XML or from ``Context.getIntegrator()`` is a plain CompoundIntegrator that steps
with its current member only, so create a new one instead (``openmm-nnp run --resume`` does).
"""

import openmm
from openmm import unit
from openmm.unit import MOLAR_GAS_CONSTANT_R

_INNER, _IMPULSE = 0, 1  # member integrators
_PHASE = 'innerStepOfOuterStep'  # 0: the next inner step carries the slow kick


def _inUnit(value, unitOf):
    return value.value_in_unit(unitOf) if unit.is_quantity(value) else value


class NNPMTSLangevinMiddleIntegrator(openmm.CompoundIntegrator):
    """Langevin dynamics (LangevinMiddleIntegrator's scheme) with a fast force group every inner step and a
    slow one every ``slowInterval`` inner steps (see the module docstring).

    ``NNPMTSLangevinMiddleIntegrator(temperature, frictionCoeff, stepSize, slowInterval, slowGroup=1,
    fastGroup=0)``: ``stepSize`` is the inner step (what ``step(1)`` advances); the defaults are
    ``NNPotential.createMTSSystem``'s layout. Forces in other groups are not integrated.
    """

    def __init__(self, temperature, frictionCoeff, stepSize, slowInterval, slowGroup=1, fastGroup=0):
        if int(slowInterval) != slowInterval or slowInterval < 1:
            raise ValueError(f'slowInterval must be an integer >= 1 (the slow group every N inner steps), not '
                             f'{slowInterval}.')
        for group in (slowGroup, fastGroup):
            if int(group) != group or not 0 <= group <= 31:
                raise ValueError(f'Force group must be an integer between 0 and 31, not {group}.')
        if slowGroup == fastGroup:
            raise ValueError(f'The slow and the fast force group must differ (both are {slowGroup}).')
        super().__init__()
        self._slowInterval = int(slowInterval)
        middle = openmm.LangevinMiddleIntegrator(temperature, frictionCoeff, stepSize)
        middle.setIntegrationForceGroups({int(fastGroup)})
        impulse = openmm.CustomIntegrator(stepSize)
        impulse.addGlobalVariable('friction', 0)
        impulse.addGlobalVariable('kT', 0)
        impulse.addGlobalVariable('a', 0)
        impulse.addGlobalVariable('b', 0)
        impulse.addGlobalVariable(_PHASE, 0)
        impulse.addPerDofVariable('x1', 0)
        impulse.addUpdateContextState()
        impulse.addComputeGlobal('a', 'exp(-friction*dt)')
        impulse.addComputeGlobal('b', 'sqrt(1-a*a)')
        # LangevinMiddleIntegrator's step, its kick including the slow one of the outer step.
        impulse.addComputePerDof('v', f'v + dt*f{int(fastGroup)}/m')
        impulse.addComputePerDof('v', f'v + ({self._slowInterval}*dt)*f{int(slowGroup)}/m')
        impulse.addConstrainVelocities()
        impulse.addComputePerDof('x', 'x + 0.5*dt*v')
        impulse.addComputePerDof('v', 'a*v + b*sqrt(kT/m)*gaussian')
        impulse.addComputePerDof('x', 'x + 0.5*dt*v')
        impulse.addComputePerDof('x1', 'x')
        impulse.addConstrainPositions()
        impulse.addComputePerDof('v', 'v + (x-x1)/dt')
        self.addIntegrator(middle)
        self.addIntegrator(impulse)
        self._middle, self._impulse = middle, impulse
        self.setTemperature(temperature)
        self.setFriction(frictionCoeff)
        self.setCurrentIntegrator(_INNER)

    def step(self, steps):
        """Advance ``steps`` inner steps."""
        phase = int(self._impulse.getGlobalVariableByName(_PHASE))
        try:
            while steps > 0:
                if phase == 0:
                    self.setCurrentIntegrator(_IMPULSE)
                    count = 1
                else:
                    self.setCurrentIntegrator(_INNER)
                    count = min(steps, self._slowInterval - phase)
                openmm.CompoundIntegrator.step(self, count)
                phase = (phase + count) % self._slowInterval
                steps -= count
        finally:
            self._impulse.setGlobalVariableByName(_PHASE, phase)
            self.setCurrentIntegrator(_INNER)  # kinetic energy, step size: LangevinMiddleIntegrator's

    def getSlowInterval(self):
        return self._slowInterval

    def setStepSize(self, stepSize):
        for integrator in (self._middle, self._impulse):
            integrator.setStepSize(stepSize)

    def getTemperature(self):
        return self._middle.getTemperature()

    def setTemperature(self, temperature):
        self._middle.setTemperature(temperature)
        kelvin = _inUnit(temperature, unit.kelvin)
        self._impulse.setGlobalVariableByName('kT', (MOLAR_GAS_CONSTANT_R * kelvin * unit.kelvin).value_in_unit(
            unit.kilojoule_per_mole))

    def getFriction(self):
        return self._middle.getFriction()

    def setFriction(self, frictionCoeff):
        self._middle.setFriction(frictionCoeff)
        self._impulse.setGlobalVariableByName('friction', _inUnit(frictionCoeff, unit.picosecond ** -1))

    def getRandomNumberSeed(self):
        return self._middle.getRandomNumberSeed()

    def setRandomNumberSeed(self, seed):
        """Seeds both members (the impulse steps' noise from another seed derived from ``seed``); 0 picks new
        seeds each time."""
        self._middle.setRandomNumberSeed(seed)
        self._impulse.setRandomNumberSeed(seed % (2 ** 31 - 2) + 1 if seed else 0)  # differs, fits an int

    def setIntegrationForceGroups(self, groups):
        raise ValueError('NNPMTSLangevinMiddleIntegrator integrates its slowGroup and fastGroup: pass them to its '
                         'constructor instead of calling setIntegrationForceGroups.')

    def setConstraintTolerance(self, tolerance):
        for integrator in (self._middle, self._impulse):
            integrator.setConstraintTolerance(tolerance)
