"""A run's settings (stored in run.json), checked, and the option checks the commands share."""

import openmm

from openmm_nnp.errors import InputError


class RunSettings:
    """Everything that defines a run (stored in run.json)."""
    FIELDS = dict(inputs=None, region=None, model='ani2x', precision='single', platform='CPU', temperature=300.0,
                  friction=1.0, timestep=1.0, steps=1000, equilibrationSteps=0, minimize=True,
                  minimizeIterations=500, reportInterval=100, checkpointInterval=1000, trajectoryFormat='dcd',
                  mts=None, pressure=None, seed=None, threads=None, nonbondedCutoff=1.0)

    def __init__(self, **kwargs):
        unknown = set(kwargs) - set(self.FIELDS)
        if unknown:
            raise TypeError(f'Unknown run settings: {", ".join(sorted(unknown))}')
        for key, default in self.FIELDS.items():
            setattr(self, key, kwargs.get(key, default))

    def to_dict(self):
        return {key: getattr(self, key) for key in self.FIELDS}

    def validate(self):
        requirePositive('timestep', self.timestep)
        requirePositive('temperature', self.temperature)
        requirePositive('reportInterval', self.reportInterval, integer=True)
        requirePositive('checkpointInterval', self.checkpointInterval, integer=True)
        if self.threads is not None:
            requirePositive('threads', self.threads, integer=True)
        if self.steps is None or self.steps < 0:
            raise InputError(f'--steps must be zero or positive, not {self.steps}.')
        if self.equilibrationSteps < 0:
            raise InputError(f'--equilibration-steps must be zero or positive, not {self.equilibrationSteps}.')
        if self.friction < 0:
            raise InputError(f'--friction must be zero or positive, not {self.friction}.')
        if self.trajectoryFormat not in ('dcd', 'xtc'):
            raise InputError(f"--trajectory-format must be 'dcd' or 'xtc', not {self.trajectoryFormat!r}.")
        if self.precision not in ('single', 'double'):
            raise InputError(f"--precision must be 'single' or 'double', not {self.precision!r}.")
        if self.mts is not None:
            if int(self.mts) != self.mts or self.mts < 2:
                raise InputError(f'--mts must be an integer of at least 2 (NNP correction every N steps), not {self.mts}.')
            for name in ('steps', 'equilibrationSteps', 'reportInterval', 'checkpointInterval'):
                value = getattr(self, name)
                if value % self.mts:
                    raise InputError(f'With --mts {self.mts}, --{_option(name)} ({value}) must be a multiple of '
                                     f'{self.mts} (the NNP correction is applied once per {self.mts} steps).')
        if self.pressure is not None and self.pressure <= 0:
            raise InputError(f'--pressure must be positive (bar), not {self.pressure}.')
        names = [p.getName() for p in (openmm.Platform.getPlatform(i) for i in range(openmm.Platform.getNumPlatforms()))]
        if self.platform not in names:
            raise InputError(f"Unknown OpenMM platform '{self.platform}'; available here: {', '.join(names)}. "
                             'NNPForce runs on Reference and CPU.')


def _option(name):
    return ''.join('-' + c.lower() if c.isupper() else c for c in name)


def requirePositive(name, value, *, integer=False):
    """InputError naming the option (``name`` in camelCase) unless ``value`` is positive (an integer)."""
    if value is None or value <= 0 or (integer and int(value) != value):
        kind = 'a positive integer' if integer else 'positive'
        raise InputError(f'--{_option(name)} must be {kind}, not {value}.')


def stepsFromTime(timePs, timestepFs, mts=None):
    """The number of steps of ``timestepFs`` in ``timePs`` (a multiple of ``mts`` with multiple time steps)."""
    steps = int(round(timePs * 1000.0 / timestepFs))
    if mts:
        steps = int(round(steps / mts)) * mts
    return steps
