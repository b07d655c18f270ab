"""Nonequilibrium switching between λ = 0 (MM) and λ = 1 (NNP/MM): protocol work, BAR and Jarzynski.

Starting configurations (positions and velocities) come from equilibrium sampling at the end states, either
run here (one task per chain and end state) or taken from an ``EquilibriumResult`` whose end windows saved
snapshots. Each switching trajectory is one task: λ changes in ``switching_steps`` equal increments, each
increment followed by one Langevin step; the work is the sum of the energy changes at fixed configuration,
W = Σ [U(λ_{k+1}, x_k) − U(λ_k, x_k)].
"""

import dataclasses
import os
import time

import numpy as np
import openmm
import openmm.unit as unit

from openmm_nnp.freeenergy import _md, analysis
from openmm_nnp.files import writeJSON
from openmm_nnp.freeenergy.equilibrium import sample_window
from openmm_nnp.freeenergy.protocol import SwitchTask, WindowTask, common_settings, result_store, window_validator
from openmm_nnp.freeenergy.parallel import worker_info
from openmm_nnp.freeenergy.states import DEFAULT_LAMBDA_NAME


def switch(task):
    """Task: switching trajectories from each of ``task.snapshots`` (protocol.SwitchTask; one Context for all of
    them, since creating a Context with an NNP costs seconds). Returns the works in kT and their profiles."""
    start = time.time()
    forward = task.direction == 'forward'
    lam0, lam1 = (0.0, 1.0) if forward else (1.0, 0.0)
    first = task.snapshots[0]
    sim = _md.LambdaSimulation(task.md.at(first['positions'], first['box']), lam0, seed=task.seed)
    n = task.switching_steps
    schedule = np.linspace(lam0, lam1, n + 1)
    works, profiles = [], []
    for snapshot in task.snapshots:
        sim.set_lambda(lam0)
        if snapshot['box'] is not None:
            sim.context.setPeriodicBoxVectors(*[openmm.Vec3(*row) for row in snapshot['box']])
        sim.context.setPositions(snapshot['positions'] * unit.nanometer)
        sim.set_velocities(snapshot['velocities'])
        work = 0.0
        profile = np.empty(n)
        for k in range(n):
            if task.linear:
                _, dudl = sim.energy_and_derivative()
                work += (schedule[k + 1] - schedule[k]) * dudl
                sim.set_lambda(schedule[k + 1])
            else:
                before = sim.energy_and_derivative()[0]
                work += sim.energy_at(schedule[k + 1]) - before
            profile[k] = work
            sim.integrator.step(1)
        works.append(float(work))
        profiles.append(profile)
    return {'direction': task.direction, 'works': works, 'work_profiles': profiles,
            'worker': worker_info(sim.context), 'elapsed_s': time.time() - start}


def _switch_validator(expected):
    def validate(name, result):
        if not isinstance(result, dict) or 'works' not in result or len(result['works']) != expected[name]:
            raise ValueError(f'{name}: incomplete result')
        if not np.all(np.isfinite(result['works'])):
            raise ValueError(f'{name}: non-finite work (a trajectory blew up: use more switching steps or a smaller '
                             'time step)')
    return validate


@dataclasses.dataclass
class NonequilibriumResult:
    temperature: float
    forward_work_kT: np.ndarray
    reverse_work_kT: np.ndarray
    offset_kT: float
    bar: analysis.FreeEnergy = None
    jarzynski: analysis.FreeEnergy = None
    switching_steps: int = 0

    @property
    def delta_g(self):
        return self.bar if self.bar is not None else self.jarzynski

    def to_dict(self):
        return {'estimator': 'BAR' if self.bar is not None else 'Jarzynski',
                'delta_g': self.delta_g.to_dict(),
                'bar': None if self.bar is None else self.bar.to_dict(),
                'jarzynski_forward': None if self.jarzynski is None else self.jarzynski.to_dict(),
                'temperature_K': self.temperature, 'switching_steps': self.switching_steps,
                'offset_kT': self.offset_kT,
                'forward_work_kT': np.asarray(self.forward_work_kT).tolist(),
                'reverse_work_kT': np.asarray(self.reverse_work_kT).tolist()}

    def save(self, output_dir, plots=True):
        os.makedirs(output_dir, exist_ok=True)
        writeJSON(os.path.join(output_dir, 'nonequilibrium.json'), self.to_dict())
        if plots:
            from openmm_nnp.freeenergy import plots as _plots
            _plots.plot_work(self.forward_work_kT, self.reverse_work_kT, self.delta_g.value_kT,
                             os.path.join(output_dir, 'work_distributions.png'))


def analyze_work(forward, reverse, temperature, offset_kT, switching_steps=0, n_bootstrap=200, seed=0):
    """BAR (both directions) and forward Jarzynski from work values in kT; works are shifted by the offset
    (β(U1 − U0) at the starting structure) for numerical range and the result shifted back."""
    forward = np.asarray(forward, dtype=float)
    reverse = np.asarray(reverse, dtype=float)
    result = NonequilibriumResult(temperature, forward, reverse, offset_kT, switching_steps=switching_steps)
    if len(forward) >= 2:
        j = analysis.jarzynski(forward - offset_kT, n_bootstrap, seed)
        result.jarzynski = analysis.FreeEnergy(j['Delta_f'] + offset_kT, j['dDelta_f'], temperature,
                                               'Jarzynski (forward)')
    if len(forward) >= 2 and len(reverse) >= 2:
        b = analysis.bar(forward - offset_kT, reverse + offset_kT, n_bootstrap, seed)
        result.bar = analysis.FreeEnergy(b['Delta_f'] + offset_kT, b['dDelta_f'], temperature,
                                         'BAR (bootstrap error)')
    return result


def run_nonequilibrium(system, positions=None, *, topology=None, lambda_name=DEFAULT_LAMBDA_NAME,
                       temperature=300 * unit.kelvin, n_switches=50, switching_steps=1000, directions='both',
                       equilibrium=None, n_chains=1, n_equilibration_steps=5000, steps_between_snapshots=500,
                       timestep=1 * unit.femtosecond, collision_rate=1 / unit.picosecond, minimize=True,
                       box_vectors=None, lambda_dependence='auto', platform='CPU', platform_properties=None,
                       seed=4048, output_dir=None, runner=None, plots=True, n_bootstrap=200, switches_per_task=10):
    """ΔG(λ = 0 → 1) from nonequilibrium switching: BAR over forward and reverse work, or forward Jarzynski.

    Parameters
    ----------
    system, positions : as for run_equilibrium (positions may be None when ``equilibrium`` is given)
    n_switches : int
        Switching trajectories per direction.
    switching_steps : int
        Integration steps per switch (λ changes before each one).
    directions : 'both' or 'forward'
        'forward' samples only the MM end and estimates ΔG with one-sided Jarzynski.
    equilibrium : EquilibriumResult, optional
        Take starting configurations from its end-state snapshots (``run_equilibrium(..., n_snapshots=...)``)
        instead of sampling the end states here.
    switches_per_task : int
        Switches run one after the other in one task (one Context: creating a Context with an NNP is slow).
    n_chains : int
        Independent end-state sampling tasks per direction (more parallelism); each saves
        n_switches / n_chains snapshots, ``steps_between_snapshots`` apart, after ``n_equilibration_steps``.
    """
    if directions not in ('both', 'forward'):
        raise ValueError(f"directions must be 'both' or 'forward', not {directions!r}.")
    if n_switches < 2:
        raise ValueError('n_switches must be at least 2.')
    if positions is None:
        if equilibrium is None:
            raise ValueError('Pass starting positions, or an EquilibriumResult as equilibrium=.')
        positions = equilibrium.windows[0]['final_positions']
    md, runner, offset, linear = common_settings(system, positions, box_vectors, lambda_name, temperature, timestep,
                                                 collision_rate, platform, platform_properties, runner,
                                                 lambda_dependence)
    ends = ['forward', 'reverse'] if directions == 'both' else ['forward']
    settings = {'kind': 'nonequilibrium', 'n_switches': n_switches, 'switching_steps': switching_steps,
                'directions': directions, 'n_chains': n_chains, 'n_equilibration_steps': n_equilibration_steps,
                'steps_between_snapshots': steps_between_snapshots, 'minimize': bool(minimize), 'linear': linear,
                'seed': seed, 'temperature': md.temperature, 'timestep': md.timestep,
                'collision_rate': md.collision_rate, 'lambda_name': lambda_name,
                'from_equilibrium': equilibrium is not None,
                'switches_per_task': switches_per_task}
    store = result_store(settings, md, output_dir)

    # End-state configurations.
    starts = {}
    if equilibrium is not None:
        at0, at1 = equilibrium.end_state_snapshots()
        starts = {'forward': at0, 'reverse': at1}
        for direction in ends:
            if len(starts[direction]) < n_switches:
                raise ValueError(f'The equilibrium result has {len(starts[direction])} snapshots at the '
                                 f'{"MM" if direction == "forward" else "NNP/MM"} end, fewer than n_switches = '
                                 f'{n_switches}: run_equilibrium(..., n_snapshots={n_switches}).')
    else:
        per_chain = -(-n_switches // n_chains)
        tasks = {}
        for d, direction in enumerate(ends):
            for c in range(n_chains):
                task = WindowTask(md, [0.0, 1.0], window=0 if direction == 'forward' else 1, n_samples=per_chain,
                                  steps_per_sample=steps_between_snapshots,
                                  n_equilibration_steps=n_equilibration_steps, seed=seed + 1000 * d + c,
                                  linear=True, minimize=bool(minimize), n_snapshots=per_chain)
                tasks[f'endstate-{direction}-{c:03d}'] = (sample_window, task)
        validate = window_validator([0.0, 1.0], per_chain, per_chain)
        sampled = runner.run(tasks, store, validate, description='end states')
        for direction in ends:
            starts[direction] = [s for name in sorted(sampled) if name.startswith(f'endstate-{direction}')
                                 for s in sampled[name]['snapshots']]

    # Switching.
    tasks, expected = {}, {}
    for d, direction in enumerate(ends):
        snapshots = starts[direction]
        chosen = np.linspace(0, len(snapshots) - 1, n_switches).round().astype(int)
        for c, first in enumerate(range(0, n_switches, switches_per_task)):
            group = [snapshots[s] for s in chosen[first:first + switches_per_task]]
            name = f'switch-{direction}-{c:04d}'
            tasks[name] = (switch, SwitchTask(md, direction, group, switching_steps, seed=seed + 100000 + 10000 * d + c,
                                              linear=linear))
            expected[name] = len(group)
    done = runner.run(tasks, store, _switch_validator(expected), description='switching tasks')
    forward = [w for n in sorted(done) if n.startswith('switch-forward') for w in done[n]['works']]
    reverse = [w for n in sorted(done) if n.startswith('switch-reverse') for w in done[n]['works']]
    result = analyze_work(forward, reverse, md.temperature, offset, switching_steps, n_bootstrap, seed)
    if output_dir is not None:
        result.save(output_dir, plots)
    return result
