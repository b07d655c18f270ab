"""Multiple time steps for NNP/MM: the MM force field every inner step, the NNP correction once every N inner
steps as an impulse, in compiled code on every platform.

With ``NNPotential.createMTSSystem``'s layout (group 0: all of MM, group 1: the NNP correction
U_NNP(region) - U_MM(region)), r-RESPA applies the slow forces as kicks of N inner steps' worth at the
boundaries of an outer step. OpenMM's ``MTSLangevinIntegrator`` writes that as a CustomIntegrator, whose
per-DOF arithmetic and random numbers run serially on the CPU platform in every inner step, and which computes
the MM forces N + 1 times per N inner steps (a CustomIntegrator remembers the forces of one force-group set
only). On two cores that made ``--mts 2`` cost more than computing the NNP at every step
(benchmarks/bench_overhead.py).

``NNPMTSLangevinMiddleIntegrator`` (C++: plugin_cpp/include/NNPMTSLangevinMiddleIntegrator.h) is the leapfrog
form of the same splitting. Every inner step is a LangevinMiddleIntegrator step (kick, half drift, friction and
noise, half drift, constraints) taken by OpenMM's own kernel for that integrator on the platform. In the first
inner step of each outer step (the context's step count a multiple of N) the kick carries the slow impulse:
the fast group is computed, its forces kept, the slow group computed by itself, and N times its forces added
to the kept ones before the kick (a small kernel of this plugin per platform; exact in the GPU platforms'
fixed point). With the NNPForce property overlap, the model starts when such a step begins and runs while
the fast group is computed.
Each group is thus computed once per new positions, nothing is cached across steps (so setPositions, a
barostat or a changed parameter never meet stale forces), and nothing runs serially in Python or in a
CustomIntegrator. The two end-of-step half kicks of r-RESPA at the same positions are one kick here, so the
positions are those of BAOAB-RESPA (``MTSLangevinIntegrator``, with the same noise in each inner step); without
friction they are MTSIntegrator's / MTSLangevinIntegrator's exactly (tests/test_integrators.py). Velocities are
stored, as by LangevinMiddleIntegrator, half an inner step behind the positions, before the next kicks.

``step(n)`` advances n inner steps. Where an outer step begins follows from the context's step count, so
checkpoints, ``Context.setStepCount`` and ``Simulation.currentStep`` agree with it. The integrator serializes
to XML and comes back as itself from ``XmlSerializer`` and ``Context.getIntegrator()``.
"""

import openmm
from openmm import unit

from openmm_nnp import _plugin
from openmm_nnp.force import installDowncasts

_plugin.loadLibraries()
from openmm_nnp import nnp_swig  # noqa: E402


def _inUnit(value, unitOf):
    return value.value_in_unit(unitOf) if unit.is_quantity(value) else value


class NNPMTSLangevinMiddleIntegrator(nnp_swig.NNPMTSLangevinMiddleIntegrator):
    """Langevin dynamics (LangevinMiddleIntegrator's scheme) with a fast force group every inner step and a
    slow one every ``slowInterval`` inner steps (see the module docstring).

    ``NNPMTSLangevinMiddleIntegrator(temperature, frictionCoeff, stepSize, slowInterval, slowGroup=1,
    fastGroup=0)``: ``stepSize`` is the inner step (what ``step(1)`` advances); the defaults are
    ``NNPotential.createMTSSystem``'s layout. Forces in other groups are not integrated. Quantities or plain
    numbers in OpenMM's units (K, 1/ps, ps).
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
        super().__init__(_inUnit(temperature, unit.kelvin), _inUnit(frictionCoeff, unit.picosecond ** -1),
                         _inUnit(stepSize, unit.picosecond), int(slowInterval), int(slowGroup), int(fastGroup))

    def getTemperature(self):
        return super().getTemperature() * unit.kelvin

    def setTemperature(self, temperature):
        super().setTemperature(_inUnit(temperature, unit.kelvin))

    def getFriction(self):
        return super().getFriction() / unit.picosecond

    def setFriction(self, frictionCoeff):
        super().setFriction(_inUnit(frictionCoeff, unit.picosecond ** -1))

    def setIntegrationForceGroups(self, groups):
        raise ValueError('NNPMTSLangevinMiddleIntegrator integrates its slowGroup and fastGroup: pass them to its '
                         'constructor instead of calling setIntegrationForceGroups.')

    def __getstate__(self):
        return openmm.XmlSerializer.serialize(self)

    def __setstate__(self, state):
        self.this = openmm.XmlSerializer.deserialize(state).this

    def __copy__(self):
        return openmm.XmlSerializer.clone(self)

    def __deepcopy__(self, memo):
        return self.__copy__()


installDowncasts(openmm.Integrator, nnp_swig.NNPMTSLangevinMiddleIntegrator, NNPMTSLangevinMiddleIntegrator,
                 [(openmm.Context, 'getIntegrator', False), (openmm.CompoundIntegrator, 'getIntegrator', False),
                  (openmm.XmlSerializer, '_deserializeIntegrator', True),
                  (openmm.XmlSerializer, '_cloneIntegrator', True)])
