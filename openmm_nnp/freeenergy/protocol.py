"""What the equilibrium and nonequilibrium protocols share: the typed, picklable task specifications, the checked
settings common to both, and the run folder (protocol.json with the settings' fingerprint, the task store).

A task is a function of one specification, run wherever the TaskRunner sends it (this process or a Dask
worker): ``sample_window(WindowTask)`` (equilibrium.py) and ``switch(SwitchTask)`` (nonequilibrium.py). Both
carry an ``MDSettings``: the System (as XML, so NNPForce models travel inside it), the starting configuration
and the Langevin settings.
"""

import dataclasses
import json
import os
from typing import List, Optional

import numpy as np
import openmm.unit as unit

from openmm_nnp.files import writeJSON
from openmm_nnp.freeenergy import _md
from openmm_nnp.freeenergy.parallel import ResultStore, TaskRunner
from openmm_nnp.freeenergy.states import check_lambda_system


@dataclasses.dataclass(eq=False)
class MDSettings:
    """A λ-dependent System and how to simulate it: what every task of a protocol shares."""
    system_xml: str
    positions: np.ndarray            # nm, [n, 3]
    box: Optional[np.ndarray]        # nm, [3, 3], or None when not periodic
    lambda_name: str
    temperature: float               # K
    timestep: float                  # ps
    collision_rate: float            # 1/ps
    platform: str = 'CPU'
    platform_properties: dict = dataclasses.field(default_factory=dict)

    def at(self, positions, box):
        """The same settings starting from another configuration."""
        return dataclasses.replace(self, positions=positions, box=box)


@dataclasses.dataclass(eq=False)
class WindowTask:
    """Sample one λ window: ``n_samples`` samples ``steps_per_sample`` apart after equilibration; reduced potentials
    at every λ of ``lambdas``, β dU/dλ, and ``n_snapshots`` saved configurations."""
    md: MDSettings
    lambdas: List[float]
    window: int
    n_samples: int
    steps_per_sample: int
    n_equilibration_steps: int
    seed: int
    linear: bool = True
    minimize: bool = True
    minimize_iterations: int = 500
    n_snapshots: int = 0
    velocities: Optional[np.ndarray] = None


@dataclasses.dataclass(eq=False)
class SwitchTask:
    """Switch λ from one end to the other in ``switching_steps`` steps from each of ``snapshots`` in turn."""
    md: MDSettings
    direction: str                   # 'forward' (λ 0 → 1) or 'reverse'
    snapshots: list                  # dicts with positions, velocities, box
    switching_steps: int
    seed: int
    linear: bool = True


def make_lambdas(lambdas):
    """An int n gives n evenly spaced values from 0 to 1; a sequence must go from 0 to 1 in increasing order."""
    if isinstance(lambdas, (int, np.integer)):
        if lambdas < 2:
            raise ValueError('At least two λ values (0 and 1) are needed.')
        return np.linspace(0.0, 1.0, int(lambdas)).tolist()
    values = [float(x) for x in lambdas]
    if len(values) < 2 or values[0] != 0.0 or values[-1] != 1.0 or np.any(np.diff(values) <= 0):
        raise ValueError(f'λ schedule must increase from 0 to 1, got {values}.')
    return values


def common_settings(system, positions, box_vectors, lambda_name, temperature, timestep, collision_rate, platform,
                    platform_properties, runner, lambda_dependence):
    """Settings shared by the equilibrium and nonequilibrium protocols, checked.

    Returns (md, runner, offset, linear): the MDSettings of every task, the task runner, the energy offset used to
    keep reduced potentials in range, and whether U is linear in λ (probed unless lambda_dependence says 'linear'
    or 'general').
    """
    if lambda_dependence not in ('auto', 'linear', 'general'):
        raise ValueError(f"lambda_dependence must be 'auto', 'linear' or 'general', not {lambda_dependence!r}.")
    check_lambda_system(system, lambda_name)
    positions = _md.to_nm_array(positions)
    if len(positions) != system.getNumParticles():
        raise ValueError(f'{len(positions)} positions for a System of {system.getNumParticles()} particles.')
    if box_vectors is None and system.usesPeriodicBoundaryConditions():
        box_vectors = system.getDefaultPeriodicBoxVectors()
    box = _md.box_array(box_vectors) if system.usesPeriodicBoundaryConditions() else None
    runner = runner if runner is not None else TaskRunner('serial')
    md = MDSettings(system_xml=_md.system_xml(system), positions=positions, box=box, lambda_name=lambda_name,
                    temperature=_md.quantity(temperature, unit.kelvin), timestep=_md.quantity(timestep, unit.picosecond),
                    collision_rate=_md.quantity(collision_rate, unit.picosecond ** -1), platform=platform,
                    platform_properties=dict(platform_properties or {}))
    offset, linear = _md.probe(md)
    if lambda_dependence != 'auto':
        linear = lambda_dependence == 'linear'
    return md, runner, offset, linear


def check_output_dir(output_dir, settings):
    """Record the settings in output_dir/protocol.json; refuse to resume into a directory made with others."""
    os.makedirs(output_dir, exist_ok=True)
    path = os.path.join(output_dir, 'protocol.json')
    if os.path.exists(path):
        with open(path) as f:
            previous = json.load(f)
        if previous.get('fingerprint') != settings['fingerprint']:
            changed = sorted(k for k in set(previous) | set(settings) if previous.get(k) != settings.get(k))
            raise ValueError(f'{output_dir} holds results of a run with other settings (differences: {changed}). '
                             'Use a new output_dir, or delete it to start over.')
    else:
        writeJSON(path, settings)


def result_store(settings, md, output_dir):
    """Fingerprint the run's settings and inputs, and open the store of finished tasks in output_dir (None: no
    store). A directory written by a run with other settings is refused."""
    settings['fingerprint'] = _md.fingerprint([settings, md.system_xml, md.positions.round(6).tolist()])
    if output_dir is None:
        return None
    check_output_dir(output_dir, settings)
    return ResultStore(output_dir)


def window_validator(lambdas, n_samples, n_snapshots):
    """Checks a sample_window result: shapes, snapshot count, finite energies."""
    def validate(name, result):
        if not isinstance(result, dict) or 'u_kn' not in result or 'dudl' not in result:
            raise ValueError(f'{name}: incomplete result')
        if np.shape(result['u_kn']) != (len(lambdas), n_samples) or np.shape(result['dudl']) != (n_samples,):
            raise ValueError(f'{name}: result has shape {np.shape(result["u_kn"])}, expected '
                             f'{(len(lambdas), n_samples)}')
        if len(result['snapshots']) != n_snapshots:
            raise ValueError(f'{name}: {len(result["snapshots"])} snapshots instead of {n_snapshots}')
        if not (np.all(np.isfinite(result['u_kn'])) and np.all(np.isfinite(result['dudl']))):
            raise ValueError(f'{name}: NaN or infinite energies (the simulation blew up: use a smaller time step '
                             'or minimize the starting structure)')
    return validate
