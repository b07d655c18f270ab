"""What one evaluation of the NNPForce costs on the CPU platform, back to back and right after the MM forces.

Run:  .venv/bin/python benchmarks/bench_force_call.py [--rounds 7] [--calls 15] [--threads 2]

CB7:B2 (openmmtools HostGuestExplicit, the 30-atom guest as ANI-2x region, createMixedSystem's NNPForce). Each
variant is a Context of that System with the NNPForce in force group 1 and everything else in group 0; only
group 1 is timed (getState), each call either right after the previous one ("back to back") or right after an
evaluation of group 0, the MM forces ("after MM"), which is where an MD step calls it. Variants:

* ANI-2x: openmm_nnp.models.ANI as built; the force calls its exported energy_and_forces() (analytic forces,
  no autograd);
* ANI-2x, forward + autograd: the same scripted model inside a wrapper that exports only forward(), so the
  force runs forward() with positions that require grad and autograd's backward pass (the path before
  2026-11-30); the script first checks that both (and the small-pages variant) give bitwise the same energy and forces;
* ANI-2x, small pages: the same with the NNPForce property hugePages false, so the model's weights stay in
  torch's memory (4 KiB pages) instead of one block of 2 MiB pages;
* ANI-2x, one member (modelIndex 0): an eighth of the networks and of their weights;
* a model that computes nothing (zero energy and forces): what the force, TorchScript and OpenMM cost around
  any model;
* a model that returns buffers (zero energy and forces it holds): the same without a single tensor operation in
  the model;
* no NNPForce: the same group evaluated without the force (OpenMM's own cost of a force-group evaluation);
* one tensor operation: not a force group but `x + 1` on a [30, 3] tensor from Python, the smallest thing torch
  does, timed the same ways.

Each call is timed right after the previous one ("back to back"), right after an evaluation of group 0 ("after
MM"), or after the thread slept 20 ms, about an MM step, without any other work ("after idle"). Alternating rounds
in one process; medians over rounds of each round's median call. The column "after MM - back to back" is what the
MM evaluation cost each variant; "after idle" shows how much of that the mere passing of time costs on this
machine (caches, TLBs and page-table walks gone cold while the thread did nothing).
ANI weights come from TORCHANI_DATA_DIR (the Makefile exports ../shared/models/torchani).
"""

import argparse
import os
import statistics
import sys
import time
from typing import Optional, Tuple

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import openmm_nnp  # noqa: E402  (first: it sets torch's OpenMP waiting before torch loads)
import numpy as np  # noqa: E402
import openmm  # noqa: E402
import torch  # noqa: E402
from torch import Tensor  # noqa: E402

from bench_overhead import host_guest  # noqa: E402
from openmm_nnp.inputs import createNNPSystem  # noqa: E402
from openmm_nnp.models import ANI  # noqa: E402


class ForwardOnly(torch.nn.Module):
    """The model behind forward() alone, so that NNPForce takes the forces from autograd."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, positions: Tensor, boxVectors: Optional[Tensor] = None) -> Tensor:
        return self.model(positions, boxVectors)


class Nothing(torch.nn.Module):
    """Zero energy and forces, with the interface of the ANI models."""

    def forward(self, positions: Tensor, boxVectors: Optional[Tensor] = None) -> Tensor:
        return positions.sum() * 0.0

    @torch.jit.export
    def energy_and_forces(self, positions: Tensor, boxVectors: Optional[Tensor] = None) -> Tuple[Tensor, Tensor]:
        return positions.sum() * 0.0, torch.zeros_like(positions)


class Constants(torch.nn.Module):
    """Zero energy and forces kept as buffers: a model call that runs no tensor operation at all."""

    def __init__(self, numAtoms):
        super().__init__()
        self.register_buffer('energy', torch.zeros(()))
        self.register_buffer('forces', torch.zeros(numAtoms, 3))

    def forward(self, positions: Tensor, boxVectors: Optional[Tensor] = None) -> Tensor:
        return self.energy

    @torch.jit.export
    def energy_and_forces(self, positions: Tensor, boxVectors: Optional[Tensor] = None) -> Tuple[Tensor, Tensor]:
        return self.energy, self.forces


IDLE_SECONDS = 0.02  # about one MM step of CB7:B2 on 2 threads


def context_for(system, threads, model=None, remove=False, properties=None):
    """A Context of ``system`` with its NNPForce in group 1 and everything else in group 0; ``model``: a
    TorchScript module in place of the force's own; ``remove``: no NNPForce at all; ``properties``: NNPForce
    properties to set."""
    system = openmm.XmlSerializer.clone(system)
    index, force = next((i, f) for i, f in enumerate(system.getForces()) if isinstance(f, openmm_nnp.NNPForce))
    for name, value in (properties or {}).items():
        force.setProperty(name, value)
    for other in system.getForces():
        other.setForceGroup(0)
    if model is not None:
        replacement = openmm_nnp.NNPForce(model, list(force.getAtoms()))
        replacement.setBonds(force.getBonds())
        replacement.setUsesPeriodicBoundaryConditions(force.usesPeriodicBoundaryConditions())
        for name, value in force.getProperties().items():
            replacement.setProperty(name, value)
    if remove or model is not None:
        system.removeForce(index)  # `force` goes with it
    if model is not None:
        system.addForce(replacement)
        force = replacement
    if not remove:
        force.setForceGroup(1)
    platform = openmm.Platform.getPlatformByName('CPU')
    return openmm.Context(system, openmm.VerletIntegrator(0.001), platform, {'Threads': str(threads)})


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--rounds', type=int, default=7)
    parser.add_argument('--calls', type=int, default=15, help='timed evaluations per round, variant and mode')
    parser.add_argument('--threads', type=int, default=2, help='OpenMM CPU threads and torch intra-op threads')
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    _, loaded, region = host_guest()
    mixed, _, _ = createNNPSystem(loaded, region)
    force = next(f for f in mixed.getForces() if isinstance(f, openmm_nnp.NNPForce))
    atoms = list(loaded.topology.atoms())
    numbers = [atoms[i].element.atomic_number for i in force.getAtoms()]
    contexts = {
        'ANI-2x': context_for(mixed, args.threads),
        'ANI-2x, forward + autograd': context_for(mixed, args.threads, torch.jit.script(ForwardOnly(force.getModel()))),
        'ANI-2x, small pages': context_for(mixed, args.threads, properties={'hugePages': 'false'}),
        'ANI-2x, one member': context_for(mixed, args.threads, torch.jit.script(ANI('ani2x', numbers, modelIndex=0))),
        'a model that computes nothing': context_for(mixed, args.threads, torch.jit.script(Nothing())),
        'a model that returns buffers': context_for(mixed, args.threads, torch.jit.script(Constants(len(numbers)))),
        'no NNPForce': context_for(mixed, args.threads, remove=True),
    }
    results = []
    for label, context in contexts.items():
        context.setPositions(loaded.positions)
        if label.startswith('ANI-2x') and 'member' not in label:
            state = context.getState(getEnergy=True, getForces=True, groups={1})
            results.append((state.getPotentialEnergy()._value, state.getForces(asNumpy=True)._value))
    if any(r[0] != results[0][0] or not np.array_equal(r[1], results[0][1]) for r in results[1:]):
        sys.exit('the ANI-2x variants disagree: ' + str([r[0] for r in results]))
    print(f"{time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}, "
          f"{args.threads} threads; CB7:B2, ANI-2x float32 on the 30-atom guest; the three whole-ensemble "
          f"ANI-2x variants: bitwise the same energy and forces")
    calls = {label: (lambda context=context: context.getState(getForces=True, groups={1}))
             for label, context in contexts.items()}
    x = torch.zeros(len(numbers), 3)
    calls['one tensor operation'] = lambda: x + 1
    before = {'back to back': lambda context: None,
              'after MM': lambda context: context.getState(getForces=True, groups={0}),
              'after idle': lambda context: time.sleep(IDLE_SECONDS)}
    times = {label: {mode: [] for mode in before} for label in calls}
    for _ in range(args.rounds):
        for label, call in calls.items():
            context = contexts.get(label, contexts['no NNPForce'])  # whose MM forces come before the call
            for mode, prepare in before.items():
                samples = []
                for _ in range(args.calls):
                    prepare(context)
                    start = time.perf_counter()
                    call()
                    samples.append(time.perf_counter() - start)
                times[label][mode].append(statistics.median(samples) * 1e3)
    print(f"{'force group 1, ms':30s} {'back to back':>13s} {'after MM':>9s} {'after idle':>11s} "
          f"{'after MM - back to back':>24s}")
    for label, row in times.items():
        hot, cold, idle = (statistics.median(row[mode]) for mode in before)
        print(f"{label:30s} {hot:13.2f} {cold:9.2f} {idle:11.2f} {cold - hot:24.2f}")
    print(f"load average at the end {os.getloadavg()[0]:.1f}")


if __name__ == '__main__':
    main()
