"""Where the CPU time of an NNP/MM step goes, by library, with Linux perf (`perf record` must be installed).

Run:  .venv/bin/python benchmarks/perf_overhead.py [--system cb7|toluene] [--steps 40] [--rounds 3]

The contexts are bench_overhead.py's (same Systems, integrators and 1 fs steps). In alternating rounds it
steps MM only, NNP/MM (sequential kernel), NNP/MM with MTS 2 (NNPMTSLangevinMiddleIntegrator) and with OpenMM's
MTSLangevinIntegrator, and calls the region's model alone from Python, under `perf record` (sampling
the process's CPU time); each phase's samples are then split by shared library and scaled to CPU ms per
(inner) step. So it shows what an NNP/MM step spends beyond MM, and whether torch spends more inside a step
than in the model alone. Then the model alone again, after streaming through 0 to 256 MB of memory between
calls (what cold caches cost), for the ANI-2x ensemble and for one of its members (an eighth of the weights).
"""

import argparse
import collections
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

GROUPS = {'OpenMM': ('libOpenMM',), 'torch': ('libtorch', 'libc10', 'libOpenMMNNP', '[JIT]', 'libgomp'),
          'libc, libm': ('libc.so', 'libm.so', 'libstdc++'), 'kernel': ('[kernel',)}
# Matched torch first: our operator library's name (libOpenMMNNPTorchOps) also starts with libOpenMM (before
# 2026-11-30 its time was counted as OpenMM's).
MATCH_ORDER = ('torch', 'OpenMM', 'libc, libm', 'kernel')


def child(args):
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import bench_overhead
    import numpy as np
    import openmm_nnp.models
    import torch
    torch.set_num_threads(2)
    build = bench_overhead.host_guest if args.system == 'cb7' else bench_overhead.toluene_water
    _, loaded, region = build()
    contexts, model = bench_overhead.contexts_for(loaded, region, 2)
    del contexts['NNP/MM']  # overlap is off by default
    for _ in range(20):
        model()
    clock = lambda: time.clock_gettime(time.CLOCK_MONOTONIC)  # noqa: E731  (perf -k CLOCK_MONOTONIC)
    for _ in range(args.rounds):
        for label, (context, integrator, perStep) in [*contexts.items(), ('model', (None, None, 1))]:
            start, cpu = clock(), time.process_time()
            if context is None:
                for _ in range(args.steps):
                    model()
            else:
                integrator.step(args.steps // perStep)
            print(f'PHASE\t{label}\t{start:.6f}\t{clock():.6f}\t{(time.process_time() - cpu) / args.steps * 1e3:.3f}',
                  flush=True)
    # The model alone after streaming through memory, for the ensemble and for one member (1/8 of the weights):
    # if the cost of cold caches came from the weights, one member would pay an eighth of it.
    system = contexts['NNP/MM seq'][0].getSystem()
    force = next(f for f in system.getForces() if isinstance(f, openmm_nnp.NNPForce))
    atoms = list(loaded.topology.atoms())
    numbers = [atoms[i].element.atomic_number for i in force.getAtoms()]
    member = bench_overhead.model_call_of(torch.jit.script(openmm_nnp.models.ANI('ani2x', numbers, modelIndex=0)),
                                          force, system, loaded.positions)
    # Operator calls (torch dispatches, nested ones included) in one call of the model.
    from torch.profiler import profile
    with profile() as profiler:
        model()
    print(f'DISPATCHES\t{sum(event.count for event in profiler.key_averages())}', flush=True)
    buffers = {size: np.ones(size * 2 ** 18, dtype=np.float32) for size in (0, 16, 64, 256)}
    for name, function in (('ensemble', model), ('one member', member)):
        for _ in range(20):
            function()
        times = {size: [] for size in buffers}
        for _ in range(7):
            for size, buffer in buffers.items():
                calls = []
                for _ in range(15):
                    buffer += 1.0  # stream through `size` MB
                    start = time.perf_counter()
                    function()
                    calls.append(time.perf_counter() - start)
                times[size].append(statistics.median(calls) * 1e3)
        print(f'STREAM\t{name}\t' + ', '.join(f'{size} MB {statistics.median(values):.2f}'
                                              for size, values in times.items()), flush=True)


def samples_by_library(data, start, end, libraries=None):
    command = ['perf', 'report', '-i', data, '--no-children', '--sort', 'dso' if libraries is None else 'sym',
               '-g', 'none', '--time', f'{start},{end}', '--stdio', '-F', 'sample,dso' if libraries is None else 'sample,sym']
    if libraries:
        command += ['--dsos', libraries]
    counts = collections.Counter()
    for line in subprocess.run(command, capture_output=True, text=True).stdout.splitlines():
        match = re.match(r'\s+(\d+)\s+(?:\[.\]\s+)?(.+)', line)
        if match and not line.lstrip().startswith('#'):
            counts[match.group(2).strip()[:80]] += int(match.group(1))
    return counts


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--system', choices=['cb7', 'toluene'], default='toluene')
    parser.add_argument('--steps', type=int, default=40, help='(inner) steps or model calls per phase')
    parser.add_argument('--rounds', type=int, default=3)
    parser.add_argument('--child', action='store_true', help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args)
    if shutil.which('perf') is None:
        sys.exit('perf_overhead.py needs Linux perf (`perf record`): install it (Debian: apt-get install linux-perf).')
    with tempfile.TemporaryDirectory() as folder:
        data = os.path.join(folder, 'perf.data')
        command = ['perf', 'record', '-q', '-k', 'CLOCK_MONOTONIC', '-F', '2000', '-o', data, '--', sys.executable,
                   os.path.abspath(__file__), '--child', '--system', args.system, '--steps', str(args.steps),
                   '--rounds', str(args.rounds)]
        output = subprocess.run(command, capture_output=True, text=True)
        lines = [line.split('\t') for line in output.stdout.splitlines()]
        phases = [line[1:] for line in lines if line[0] == 'PHASE']
        if not phases:
            sys.exit(f'perf record gave no phases:\n{output.stderr[-2000:]}')
        print(f"{time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}, "
              f"{args.system}, {args.rounds} rounds x {args.steps} steps; CPU ms per (inner) step or model call")
        totals, cpu, detail = collections.defaultdict(collections.Counter), collections.defaultdict(list), {}
        for label, start, end, cpuPerStep in phases:
            totals[label].update(samples_by_library(data, start, end))
            cpu[label].append(float(cpuPerStep))
        header = ''.join(f'{group:>12s}' for group in [*GROUPS, 'other'])
        print(f"{'phase':14s}{'CPU ms':>8s}{header}")
        for label, counts in totals.items():
            total = sum(counts.values())
            milliseconds = statistics.median(cpu[label])
            share = collections.Counter()
            for library, n in counts.items():
                group = next((g for g in MATCH_ORDER if library.startswith(GROUPS[g])), 'other')
                share[group] += n
            print(f'{label:14s}{milliseconds:8.2f}' + ''.join(f'{share[g] / total * milliseconds:12.2f}'
                                                             for g in [*GROUPS, 'other']))
            # Top functions: OpenMM's in the MTS phases (the integrator), torch's in the sequential and model ones.
            libraries = ('libOpenMM.so,libm.so.6' if 'MTS' in label else
                         'libtorch_cpu.so,libOpenMMNNPTorchOps.so' if label in ('NNP/MM seq', 'model') else None)
            if libraries:
                symbols = collections.Counter()
                for _, start, end, _ in (p for p in phases if p[0] == label):
                    symbols.update(samples_by_library(data, start, end, libraries))
                detail[label] = (libraries, [(n / total * milliseconds, name) for name, n in symbols.most_common(4)])
        for label, (libraries, rows) in detail.items():
            print(f'{label}: top functions in {libraries}: ' + '; '.join(f'{name} {ms:.2f}' for ms, name in rows))
        print('Operator calls (torch dispatches) in one call of the model: '
              + ', '.join(line[1] for line in lines if line[0] == 'DISPATCHES'))
        print('The model alone after streaming through N MB between calls, ms (medians):')
        for name, times in (line[1:] for line in lines if line[0] == 'STREAM'):
            print(f'  {name:12s} {times}')


if __name__ == '__main__':
    main()
