"""Scaling of the free-energy tasks with Dask workers: one protocol run serially and on 1, 2, … local workers.

Run:  PYTHONPATH=. .venv/bin/python benchmarks/bench_freeenergy_scaling.py [--system harmonic lj] [--rounds 3]
          [--windows 8] [--workers 1 2]

The protocol is ``run_equilibrium`` (λ windows, one task each, results stored in an output directory as in a
real run) on the CPU platform for
* ``harmonic``: 3,000 particles in wells whose spring constant depends on λ (CustomCompoundBondForce, which
  OpenMM's CPU platform computes on one thread: tasks scale only by running side by side),
* ``lj``: a Lennard-Jones fluid of 3,000 particles with a λ-dependent restraint (NonbondedForce, which the CPU
  platform runs on all the threads it is given: the serial run already uses every core).
Each configuration is the same protocol: ``serial`` (one task at a time with all cores), ``N workers``
(a LocalCluster of N one-thread workers; TaskRunner gives each task cores // N threads) and, for contrast,
``N workers, oversubscribed`` (every task told to use all cores, as when each worker's OpenMM and torch
take the whole machine). The clusters are started and warmed up (imports, first task) before timing; the
configurations are interleaved round by round so that load from other processes affects all alike, and
medians are reported. Speed-up: serial time / configuration time; efficiency: speed-up / workers. Then the
per-task overhead is measured: a task that does nothing with a real window's specification (submission,
pickling and transfer of the System, the share lookup on the worker, result return and writing), pickling
of a specification alone, and writing one window's result.
"""

import argparse
import datetime
import logging
import os
import pickle
import platform
import statistics
import sys
import tempfile
import time

import numpy as np
import openmm

from openmm_nnp.freeenergy import TaskRunner, run_equilibrium
from openmm_nnp.freeenergy.parallel import ResultStore, available_cores

N_PARTICLES = 3000
# Per system: sampling per window (equilibration steps, samples, steps per sample), ~ a few seconds per task.
SAMPLING = {'harmonic': (1000, 250, 20), 'lj': (100, 100, 5)}


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--system', nargs='+', choices=sorted(SAMPLING), default=sorted(SAMPLING))
    parser.add_argument('--rounds', type=int, default=3, help='timed repetitions of every configuration')
    parser.add_argument('--windows', type=int, default=8, help='λ windows (tasks) per protocol')
    parser.add_argument('--workers', type=int, nargs='+', help='local worker counts (default: 1 … cores)')
    parser.add_argument('--overhead-tasks', type=int, default=40, help='no-op tasks timed for the overhead')
    return parser.parse_args()


def harmonic_system():
    """Particles in wells; λ stiffens the wells of 10 of them (ΔG = 15 ln 4 kT, so that windows overlap)."""
    system = openmm.System()
    force = openmm.CustomCompoundBondForce(1, '0.5*(k0+w*lam*(k1-k0))*(x1^2+y1^2+z1^2)')
    for name, value in [('lam', 0.0), ('k0', 200.0), ('k1', 800.0)]:
        force.addGlobalParameter(name, value)
    force.addPerBondParameter('w')
    force.addEnergyParameterDerivative('lam')
    for i in range(N_PARTICLES):
        system.addParticle(12.0)
        force.addBond([i], [1.0 if i < 10 else 0.0])
    system.addForce(force)
    return system, np.random.default_rng(0).normal(0.0, 0.05, (N_PARTICLES, 3))


def lj_system():
    """Argon-like fluid on a cubic lattice (minimized by each window), 1 nm cutoff; λ turns on 10 bonds."""
    side = (N_PARTICLES / 20.0) ** (1 / 3)  # nm, 20 particles per nm³
    system = openmm.System()
    system.setDefaultPeriodicBoxVectors(openmm.Vec3(side, 0, 0), openmm.Vec3(0, side, 0), openmm.Vec3(0, 0, side))
    nonbonded = openmm.NonbondedForce()
    nonbonded.setNonbondedMethod(openmm.NonbondedForce.CutoffPeriodic)
    nonbonded.setCutoffDistance(1.0)
    m = int(np.ceil(N_PARTICLES ** (1 / 3)))
    for _ in range(N_PARTICLES):
        system.addParticle(39.9)
        nonbonded.addParticle(0.0, 0.34, 0.996)
    system.addForce(nonbonded)
    restraint = openmm.CustomBondForce('0.5*lam*k*r^2')
    restraint.addGlobalParameter('lam', 0.0)
    restraint.addGlobalParameter('k', 10.0)
    restraint.addEnergyParameterDerivative('lam')
    for i in range(0, 20, 2):
        restraint.addBond(i, i + 1)
    system.addForce(restraint)
    grid = np.array([(i % m, (i // m) % m, i // (m * m)) for i in range(N_PARTICLES)], dtype=float)
    return system, (grid + 0.5) * side / m


class TimedRunner(TaskRunner):
    """A TaskRunner that records how long its ``run`` calls took (the task part of a protocol)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, progress=False, **kwargs)
        self.run_s = 0.0

    def run(self, *args, **kwargs):
        start = time.perf_counter()
        try:
            return super().run(*args, **kwargs)
        finally:
            self.run_s += time.perf_counter() - start


def load():
    return float(open('/proc/loadavg').read().split()[0])


def protocol(system, positions, sampling, windows, runner):
    """One timed protocol run into a fresh output directory: (wall s, task-part s, task elapsed s, result)."""
    n_equilibration, n_samples, steps_per_sample = sampling
    with tempfile.TemporaryDirectory() as directory:
        start = time.perf_counter()
        result = run_equilibrium(system, positions, windows, lambda_name='lam', temperature=300.0,
                                 n_samples=n_samples, steps_per_sample=steps_per_sample,
                                 n_equilibration_steps=n_equilibration, lambda_dependence='linear',
                                 platform='CPU', output_dir=directory, plots=False, runner=runner)
        wall = time.perf_counter() - start
    return wall, runner.run_s, [w['elapsed_s'] for w in result.windows], result


def start_cluster(n_workers):
    from distributed import Client, LocalCluster
    start = time.perf_counter()
    cluster = LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=True, dashboard_address=None)
    client = Client(cluster)
    client.wait_for_workers(n_workers)
    return cluster, client, time.perf_counter() - start


def median(values):
    return statistics.median(values)


def overhead(client, system, positions, sampling, n_tasks, serial_result):
    """Per-task costs that are not simulation."""
    # A real window's specification, as run_equilibrium builds it (System XML, positions, settings).
    captured = {}

    class Captured(Exception):
        pass

    class Capture(TimedRunner):
        def run(self, tasks, store=None, validate=None, description='tasks'):
            captured.update(tasks)
            raise Captured

    try:
        protocol(system, positions, sampling, 2, Capture())
    except Captured:
        pass
    spec = next(iter(captured.values()))[1]
    blob = pickle.dumps(spec, protocol=pickle.HIGHEST_PROTOCOL)
    pickling = [timed(lambda: pickle.loads(pickle.dumps(spec, protocol=pickle.HIGHEST_PROTOCOL)))
                for _ in range(20)]
    # No-op tasks carrying that specification, one worker's worth at a time, results stored.
    with tempfile.TemporaryDirectory() as directory:
        store = ResultStore(directory)
        runner = TaskRunner('dask', client=client, progress=False)
        tasks = {f'noop-{i:03d}': (len, spec) for i in range(n_tasks)}
        runner.run({'warmup': (len, spec)}, store)
        start = time.perf_counter()
        runner.run(tasks, store)
        per_task = (time.perf_counter() - start) / n_tasks
        window = serial_result.windows[0]
        writing = [timed(lambda: store.save('window', window)) for _ in range(20)]
        result_size = os.path.getsize(store.path('window'))
    return {'spec_kB': len(blob) / 1e3, 'pickle_ms': 1e3 * median(pickling), 'noop_task_ms': 1e3 * per_task,
            'write_ms': 1e3 * median(writing), 'result_kB': result_size / 1e3}


def timed(function):
    start = time.perf_counter()
    function()
    return time.perf_counter() - start


def bench_system(name, args, worker_counts, clusters):
    system, positions = {'harmonic': harmonic_system, 'lj': lj_system}[name]()
    sampling = SAMPLING[name]
    cores = available_cores()
    configurations = [('serial', None, None)]
    for n in worker_counts:
        configurations.append((f'{n} worker{"s" if n > 1 else ""}', n, None))
    for n in worker_counts:
        if n > 1:
            configurations.append((f'{n} workers, oversubscribed', n, cores))
    times = {label: [] for label, _, _ in configurations}
    tasks_part = {label: [] for label in times}
    elapsed = {label: [] for label in times}
    loads = {label: [] for label in times}
    serial_result = None
    for _ in range(args.rounds):
        for label, n, threads in configurations:
            if n is None:
                runner = TimedRunner('serial', threads_per_task=threads)
            else:
                runner = TimedRunner('dask', client=clusters[n][1], threads_per_task=threads)
            before = load()
            wall, run_s, task_s, result = protocol(system, positions, sampling, args.windows, runner)
            loads[label].append((before + load()) / 2)
            times[label].append(wall)
            tasks_part[label].append(run_s)
            elapsed[label].extend(task_s)
            if n is None:
                serial_result = result
    n_equilibration, n_samples, steps_per_sample = sampling
    print(f'\n## {name}: {N_PARTICLES} particles, {args.windows} windows of {n_equilibration} + '
          f'{n_samples} × {steps_per_sample} steps, CPU platform, {args.rounds} rounds (medians)\n')
    print('| configuration | wall s | task part s | mean task s | speed-up vs serial | vs 1 worker | '
          'efficiency | load (1-min) |')
    print('| --- | --- | --- | --- | --- | --- | --- | --- |')
    serial = median(times['serial'])
    one = median(times['1 worker']) if '1 worker' in times else None
    for label, n, _ in configurations:
        t = median(times[label])
        workers = n or 1
        print(f'| {label} | {t:.2f} | {median(tasks_part[label]):.2f} | {statistics.mean(elapsed[label]):.2f} | '
              f'{serial / t:.2f}× | {"" if one is None else f"{one / t:.2f}×"} | {serial / t / workers:.0%} | '
              f'{median(loads[label]):.1f} |')
    if len(clusters) and max(worker_counts) in clusters:
        o = overhead(clusters[max(worker_counts)][1], system, positions, sampling, args.overhead_tasks,
                     serial_result)
        print(f'\nOverhead per task ({max(worker_counts)} workers): a no-op task with a window\'s specification '
              f'({o["spec_kB"]:.0f} kB pickled) through TaskRunner with a result store: {o["noop_task_ms"]:.1f} ms '
              f'(submission, transfer, share lookup, result return and writing); pickling + unpickling the '
              f'specification alone {o["pickle_ms"]:.2f} ms; writing one window\'s result ({o["result_kB"]:.0f} kB, '
              f'fsync) {o["write_ms"]:.1f} ms.')


def main():
    args = parse_args()
    logging.getLogger('distributed').setLevel(logging.ERROR)
    cores = available_cores()
    worker_counts = args.workers or list(range(1, cores + 1))
    import dask
    import distributed
    print(f'# Free-energy task scaling, {datetime.date.today()}')
    print(f'{platform.node()}: {cores} cores available, load {load():.1f}; Python {sys.version.split()[0]}, '
          f'OpenMM {openmm.__version__}, Dask {dask.__version__} / distributed {distributed.__version__}')
    print('command: ' + ' '.join(['python'] + sys.argv))
    clusters = {}
    try:
        for n in worker_counts:
            cluster, client, startup = start_cluster(n)
            clusters[n] = (cluster, client)
            system, positions = harmonic_system()
            warm = timed(lambda: protocol(system, positions, (10, 4, 2), max(2, n), TimedRunner('dask', client=client)))
            print(f'{n} worker(s): cluster start {startup:.1f} s, first protocol (worker imports) {warm:.1f} s '
                  '(not in the timings below)')
        for name in args.system:
            bench_system(name, args, worker_counts, clusters)
    finally:
        for cluster, client in clusters.values():
            client.close()
            cluster.close()


if __name__ == '__main__':
    main()
