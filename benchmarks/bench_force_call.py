"""What one evaluation of an ANI NNPForce costs on the CPU platform, by the way the force gets the forces.

Run:  .venv/bin/python benchmarks/bench_force_call.py [--rounds 7] [--calls 15] [--threads 2]

CB7:B2 (openmmtools HostGuestExplicit, the 30-atom guest as ANI-2x region, createMixedSystem's NNPForce) in
two Contexts that differ only in how the force obtains the forces:

* energy_and_forces: openmm_nnp.models.ANI as built, whose exported energy_and_forces() NNPForce calls (the
  analytic forces, no autograd);
* forward + autograd: the same scripted model inside a wrapper that exports only forward(), so the force runs
  forward() with positions that require grad and autograd's backward pass (the path before 2026-11-30).

Only the NNPForce is timed (getState of its force group), in alternating rounds, medians over rounds of the
median call: back to back, and each right after an evaluation of the MM forces (the other force group), which
is where a step calls it. Both must give bitwise the same energy and forces; the script checks that first.
ANI weights come from TORCHANI_DATA_DIR (the Makefile exports ../shared/models/torchani).
"""

import argparse
import os
import statistics
import sys
import time
from typing import Optional

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import openmm_nnp  # noqa: E402  (first: it sets torch's OpenMP waiting before torch loads)
import numpy as np  # noqa: E402
import openmm  # noqa: E402
import torch  # noqa: E402
from torch import Tensor  # noqa: E402

from bench_overhead import host_guest  # noqa: E402
from openmm_nnp.inputs import createNNPSystem  # noqa: E402


class ForwardOnly(torch.nn.Module):
    """The model behind forward() alone, so that NNPForce takes the forces from autograd."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, positions: Tensor, boxVectors: Optional[Tensor] = None) -> Tensor:
        return self.model(positions, boxVectors)


def context_for(system, threads, wrap):
    """A Context of ``system`` with its NNPForce in group 1 (everything else in group 0); ``wrap``: the model
    behind ForwardOnly."""
    system = openmm.XmlSerializer.clone(system)
    index, force = next((i, f) for i, f in enumerate(system.getForces()) if isinstance(f, openmm_nnp.NNPForce))
    for other in system.getForces():
        other.setForceGroup(0)
    if wrap:
        replacement = openmm_nnp.NNPForce(torch.jit.script(ForwardOnly(force.getModel())), list(force.getAtoms()))
        replacement.setBonds(force.getBonds())
        replacement.setUsesPeriodicBoundaryConditions(force.usesPeriodicBoundaryConditions())
        for name, value in force.getProperties().items():
            replacement.setProperty(name, value)
        system.removeForce(index)
        force = replacement
        system.addForce(force)
    force.setForceGroup(1)
    platform = openmm.Platform.getPlatformByName('CPU')
    return openmm.Context(system, openmm.VerletIntegrator(0.001), platform, {'Threads': str(threads)})


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--rounds', type=int, default=7)
    parser.add_argument('--calls', type=int, default=15, help='timed NNPForce evaluations per round and variant')
    parser.add_argument('--threads', type=int, default=2, help='OpenMM CPU threads and torch intra-op threads')
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    _, loaded, region = host_guest()
    mixed, _, _ = createNNPSystem(loaded, region)
    contexts = {'energy_and_forces': context_for(mixed, args.threads, False),
                'forward + autograd': context_for(mixed, args.threads, True)}
    results = []
    for context in contexts.values():
        context.setPositions(loaded.positions)
        state = context.getState(getEnergy=True, getForces=True, groups={1})
        results.append((state.getPotentialEnergy()._value, state.getForces(asNumpy=True)._value))
    if results[0][0] != results[1][0] or not np.array_equal(results[0][1], results[1][1]):
        sys.exit('The two ways of getting the forces disagree: ' + str([r[0] for r in results]))
    print(f"{time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}, "
          f"{args.threads} threads; CB7:B2, ANI-2x float32 on the 30-atom guest; same energy and forces: yes")
    times = {label: {'back to back': [], 'after MM': []} for label in contexts}
    for _ in range(args.rounds):
        for label, context in contexts.items():
            for mode in times[label]:
                calls = []
                for _ in range(args.calls):
                    if mode == 'after MM':
                        context.getState(getForces=True, groups={0})
                    start = time.perf_counter()
                    context.getState(getForces=True, groups={1})
                    calls.append(time.perf_counter() - start)
                times[label][mode].append(statistics.median(calls) * 1e3)
    medians = {label: {mode: statistics.median(values) for mode, values in modes.items()}
               for label, modes in times.items()}
    print(f"{'NNPForce evaluation, ms':26s} {'back to back':>13s} {'after MM':>9s}")
    for label, row in medians.items():
        print(f"{label:26s} {row['back to back']:13.2f} {row['after MM']:9.2f}")
    print(f"{'saved by energy_and_forces':26s} " + ' '.join(
        f"{medians['forward + autograd'][mode] - medians['energy_and_forces'][mode]:{width}.2f}"
        for mode, width in (('back to back', 13), ('after MM', 9))))
    print(f"load average at the end {os.getloadavg()[0]:.1f}")


if __name__ == '__main__':
    main()
