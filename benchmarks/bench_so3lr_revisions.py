"""Compare openmm_nnp/models/so3lr.py at a git revision with the working tree's, in one process.

Run:  .venv/bin/python benchmarks/bench_so3lr_revisions.py REVISION [--threads 1] [--calls 60]

Energy + forces (forward + backward) of the 30-atom B2 guest of openmmtools' HostGuestExplicit, float32, CPU:
the module of REVISION (its so3lr.py imported from `git show`; the rest of the package is the working tree's),
the working tree's module, and the working tree's module without the compiled operators
(compiledOperators=False). Calls interleaved round by round (load from other processes affects all alike);
medians and minima of wall time and of the calling thread's CPU time, and page faults (minor) per call. First the
float64 energies and forces of the first two are compared (relative differences).
"""

import argparse
import importlib.util
import os
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_ani import host_guest  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("revision", help="git revision of the module to compare with the working tree's")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--calls", type=int, default=60, help="timed calls per module")
    parser.add_argument("--warmup", type=int, default=15, help="untimed calls first (TorchScript profiling runs)")
    return parser.parse_args()


def module_at(revision):
    source = subprocess.check_output(["git", "show", f"{revision}:openmm_nnp/models/so3lr.py"], cwd=ROOT)
    folder = tempfile.mkdtemp()
    path = os.path.join(folder, "so3lr_revision.py")
    with open(path, "wb") as f:
        f.write(source)
    spec = importlib.util.spec_from_file_location("so3lr_revision", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main():
    args = parse_args()
    torch.set_num_threads(args.threads)
    from openmm import unit
    from openmm_nnp.models import so3lr

    old = module_at(args.revision)
    testsystem, guest = host_guest()
    atoms = list(testsystem.topology.atoms())
    numbers = [atoms[i].element.atomic_number for i in guest]
    positions = torch.tensor(np.asarray(testsystem.positions.value_in_unit(unit.nanometer))[guest])

    def energy_and_gradient(module, x):
        x = x.clone().requires_grad_()
        energy = module(x)
        return energy.item(), torch.autograd.grad(energy, x)[0]

    reference = energy_and_gradient(torch.jit.script(old.SO3LR(numbers, dtype=torch.float64)), positions)
    current = energy_and_gradient(torch.jit.script(so3lr.SO3LR(numbers, dtype=torch.float64)), positions)
    force_difference = (current[1] - reference[1]).abs().max() / reference[1].abs().max()
    print(f"float64: energy relative difference {abs(current[0] - reference[0]) / abs(reference[0]):.1e}, largest "
          f"force difference / largest force {force_difference:.1e}")

    positions = positions.to(torch.float32)
    modules = {args.revision: old.SO3LR(numbers, dtype=torch.float32),
               "working tree": so3lr.SO3LR(numbers, dtype=torch.float32),
               "working tree, no compiled operators": so3lr.SO3LR(numbers, dtype=torch.float32,
                                                                  compiledOperators=False)}
    modules = {name: torch.jit.script(module) for name, module in modules.items()}

    def call(module):
        x = positions.clone().requires_grad_()
        module(x).backward()

    for module in modules.values():
        for _ in range(args.warmup):
            call(module)
    wall = {name: [] for name in modules}
    cpu = {name: [] for name in modules}
    faults = {name: 0 for name in modules}
    for _ in range(args.calls):
        for name, module in modules.items():
            before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            start_cpu, start = time.thread_time(), time.perf_counter()
            call(module)
            wall[name].append(1e3 * (time.perf_counter() - start))
            cpu[name].append(1e3 * (time.thread_time() - start_cpu))
            faults[name] += resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
    print(f"Energy + forces, B2 guest ({len(guest)} atoms), float32, {args.threads} threads, {args.calls} calls each "
          f"(load average {os.getloadavg()[0]:.1f}); median [minimum] in ms")
    for name in modules:
        print(f"  {name:<34} wall {np.median(wall[name]):7.2f} [{np.min(wall[name]):6.2f}]   thread CPU "
              f"{np.median(cpu[name]):7.2f} [{np.min(cpu[name]):6.2f}]   page faults per call "
              f"{faults[name] / args.calls:6.0f}")


if __name__ == "__main__":
    main()
