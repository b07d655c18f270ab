"""Equilibrium λ windows: independent Langevin sampling at each λ, MBAR and TI.

Each window is one task (parallel through Dask or serial); each records, every ``steps_per_sample`` steps,
the reduced potential of its configuration at every λ and dU/dλ. Analysis: equilibration detection and
subsampling (pymbar.timeseries on dU/dλ), MBAR for ΔG(λ=0 → 1) with its uncertainty and overlap matrix,
trapezoidal TI of <dU/dλ> as a cross-check.
"""

import dataclasses
import logging
import os
import time

import numpy as np
import openmm
import openmm.unit as unit

from openmm_nnp.files import writeJSON
from openmm_nnp.freeenergy import _md, analysis
from openmm_nnp.freeenergy.parallel import worker_info
from openmm_nnp.freeenergy.protocol import WindowTask, common_settings, make_lambdas, result_store, window_validator
from openmm_nnp.freeenergy.states import DEFAULT_LAMBDA_NAME

logger = logging.getLogger('openmm_nnp.freeenergy')


def sample_window(task):
    """Task: sample one λ window (protocol.WindowTask). Returns reduced potentials at all λ [K, n_samples] and
    β dU/dλ [n_samples]."""
    start = time.time()
    lam = task.lambdas[task.window]
    sim = _md.LambdaSimulation(task.md, lam, task.lambdas, task.seed)
    if task.minimize:
        openmm.LocalEnergyMinimizer.minimize(sim.context, 1.0, task.minimize_iterations)
    sim.set_velocities(task.velocities)
    if task.n_equilibration_steps > 0:
        sim.integrator.step(task.n_equilibration_steps)
    n_samples, n_snapshots = task.n_samples, task.n_snapshots
    snapshot_at = set(np.linspace(0, n_samples - 1, n_snapshots).round().astype(int).tolist()) if n_snapshots else set()
    u_kn = np.empty((len(task.lambdas), n_samples))
    dudl = np.empty(n_samples)
    snapshots = []
    for n in range(n_samples):
        sim.integrator.step(task.steps_per_sample)
        u_kn[:, n], dudl[n] = sim.reduced_potentials(task.linear)
        if n in snapshot_at:
            snapshots.append(sim.snapshot())
    final = sim.snapshot()
    return {'window': task.window, 'lambda': lam, 'u_kn': u_kn, 'dudl': dudl, 'snapshots': snapshots,
            'final_positions': final['positions'], 'final_box': final['box'],
            'worker': worker_info(sim.context), 'elapsed_s': time.time() - start}


@dataclasses.dataclass
class EquilibriumResult:
    lambdas: list
    temperature: float
    mbar: analysis.FreeEnergy
    ti: analysis.FreeEnergy
    overlap_matrix: np.ndarray
    dudl_mean_kT: np.ndarray
    dudl_sem_kT: np.ndarray
    statistical_inefficiency: list
    n_uncorrelated: list
    offset_kT: float
    linear: bool
    windows: list = dataclasses.field(repr=False, default_factory=list)

    @property
    def delta_g(self):
        return self.mbar

    def end_state_snapshots(self):
        """Snapshots saved at λ = 0 and λ = 1 (for nonequilibrium switching)."""
        return self.windows[0]['snapshots'], self.windows[-1]['snapshots']

    def to_dict(self):
        return {'estimator': 'MBAR', 'delta_g': self.mbar.to_dict(), 'ti': self.ti.to_dict(),
                'lambdas': list(self.lambdas), 'temperature_K': self.temperature,
                'overlap_matrix': np.asarray(self.overlap_matrix).tolist(),
                'dudl_mean_kT': np.asarray(self.dudl_mean_kT).tolist(),
                'dudl_sem_kT': np.asarray(self.dudl_sem_kT).tolist(),
                'statistical_inefficiency': list(self.statistical_inefficiency),
                'n_uncorrelated': list(self.n_uncorrelated), 'offset_kT': self.offset_kT,
                'linear_in_lambda': self.linear}

    def save(self, output_dir, plots=True):
        os.makedirs(output_dir, exist_ok=True)
        writeJSON(os.path.join(output_dir, 'equilibrium.json'), self.to_dict())
        if plots:
            from openmm_nnp.freeenergy import plots as _plots
            _plots.plot_overlap(self.overlap_matrix, self.lambdas, os.path.join(output_dir, 'overlap_matrix.png'))
            _plots.plot_dudl(self.lambdas, self.dudl_mean_kT, self.dudl_sem_kT, self.offset_kT,
                             os.path.join(output_dir, 'dudl.png'))


def analyze_windows(windows, lambdas, temperature, offset_kT, linear, discard_equilibration=True):
    """MBAR and TI from window results (ordered by λ)."""
    lambdas = np.asarray(lambdas)
    u_blocks, N_k, means, sems, gs = [], [], [], [], []
    for window in windows:
        dudl = np.asarray(window['dudl']) - offset_kT
        if discard_equilibration:
            _, g, idx = analysis.decorrelate(dudl)
        else:
            from pymbar import timeseries
            g = 1.0 if np.ptp(dudl) == 0 else float(timeseries.statistical_inefficiency(dudl))
            idx = np.asarray(timeseries.subsample_correlated_data(dudl, g=g), dtype=int)
        u = np.asarray(window['u_kn'])[:, idx] - lambdas[:, None] * offset_kT
        u_blocks.append(u)
        N_k.append(len(idx))
        means.append(float(np.mean(dudl[idx])))
        sems.append(float(np.std(dudl[idx], ddof=1) / np.sqrt(len(idx))) if len(idx) > 1 else float('inf'))
        gs.append(g)
    m = analysis.mbar(np.concatenate(u_blocks, axis=1), N_k)
    ti_value, ti_error = analysis.thermodynamic_integration(lambdas, means, sems)
    return EquilibriumResult(
        lambdas=lambdas.tolist(), temperature=temperature,
        mbar=analysis.FreeEnergy(m['Delta_f'] + offset_kT, m['dDelta_f'], temperature, 'MBAR'),
        ti=analysis.FreeEnergy(ti_value + offset_kT, ti_error, temperature, 'TI (trapezoid)'),
        overlap_matrix=np.asarray(m['overlap_matrix']), dudl_mean_kT=np.asarray(means) + offset_kT,
        dudl_sem_kT=np.asarray(sems), statistical_inefficiency=gs, n_uncorrelated=N_k, offset_kT=offset_kT,
        linear=linear, windows=windows)


def run_equilibrium(system, positions, lambdas=11, *, topology=None, lambda_name=DEFAULT_LAMBDA_NAME,
                    temperature=300 * unit.kelvin, n_samples=500, steps_per_sample=250, n_equilibration_steps=5000,
                    timestep=2 * unit.femtosecond, collision_rate=1 / unit.picosecond, minimize=True,
                    box_vectors=None, lambda_dependence='auto', n_snapshots=0, platform='CPU',
                    platform_properties=None, seed=2024, output_dir=None, runner=None, plots=True,
                    discard_equilibration=True):
    """ΔG from λ = 0 (MM) to λ = 1 (NNP/MM) by MBAR over independent λ windows, with TI as a cross-check.

    Parameters
    ----------
    system : openmm.System
        Any System with the global parameter ``lambda_name`` and its energy derivative (e.g.
        ``NNPotential(...).createMixedSystem(..., interpolate=True)``). A MonteCarloBarostat makes it NPT.
    positions : starting positions (every window starts from them, minimized at its own λ if ``minimize``)
    lambdas : int or sequence
        Number of evenly spaced windows, or the schedule (0 … 1).
    topology : openmm.app.Topology, optional
        When given with ``output_dir``, the last frame of each window is written as PDB.
    n_samples, steps_per_sample, n_equilibration_steps : sampling length of each window.
    lambda_dependence : 'auto', 'linear' or 'general'
        'linear' computes the energies at all λ from one energy and dU/dλ (exact for the interpolating mixed
        System); 'general' evaluates each λ; 'auto' checks linearity at the starting positions.
    n_snapshots : int
        Positions and velocities saved per end-state window (for ``run_nonequilibrium(..., equilibrium=...)``).
    seed : int
        Window i uses seed + i (integrator and initial velocities).
    output_dir : str, optional
        Finished windows are stored there; a rerun with the same settings resumes. Results go to
        equilibrium.json, overlap_matrix.png and dudl.png.
    runner : TaskRunner, optional
        Serial (default) or Dask.

    Returns
    -------
    EquilibriumResult
    """
    lambdas = make_lambdas(lambdas)
    if n_samples < 4:
        raise ValueError('n_samples must be at least 4.')
    md, runner, offset, linear = common_settings(system, positions, box_vectors, lambda_name, temperature, timestep,
                                                 collision_rate, platform, platform_properties, runner,
                                                 lambda_dependence)
    settings = {'kind': 'equilibrium', 'lambdas': lambdas, 'n_samples': n_samples,
                'steps_per_sample': steps_per_sample, 'n_equilibration_steps': n_equilibration_steps,
                'minimize': bool(minimize), 'linear': linear, 'n_snapshots': n_snapshots, 'seed': seed,
                'temperature': md.temperature, 'timestep': md.timestep,
                'collision_rate': md.collision_rate, 'lambda_name': lambda_name}
    store = result_store(settings, md, output_dir)
    tasks = {}
    for i in range(len(lambdas)):
        task = WindowTask(md, lambdas, window=i, n_samples=n_samples, steps_per_sample=steps_per_sample,
                          n_equilibration_steps=n_equilibration_steps, seed=seed + i, linear=linear,
                          minimize=bool(minimize), n_snapshots=n_snapshots if i in (0, len(lambdas) - 1) else 0)
        tasks[f'window-{i:03d}'] = (sample_window, task)

    def validate(name, result):
        window_validator(lambdas, n_samples, tasks[name][1].n_snapshots)(name, result)

    results = runner.run(tasks, store, validate, description='λ windows')
    windows = [results[name] for name in sorted(results)]
    result = analyze_windows(windows, lambdas, md.temperature, offset, linear, discard_equilibration)
    if output_dir is not None:
        result.save(output_dir, plots)
        if topology is not None:
            import openmm.app as app
            for window in windows:
                path = os.path.join(output_dir, f'window-{window["window"]:03d}-final.pdb')
                with open(path, 'w') as f:
                    app.PDBFile.writeFile(topology, window['final_positions'] * unit.nanometer, f)
    logger.info('MBAR ΔG = %s; TI ΔG = %s', result.mbar, result.ti)
    return result
