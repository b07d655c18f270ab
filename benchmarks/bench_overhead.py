"""What an NNP/MM step costs on the CPU platform compared with its parts: MM alone and one model call.

Run:  .venv/bin/python benchmarks/bench_overhead.py [--threads 2] [--rounds 21] [--steps 20] [--omp-default]

Systems: CB7:B2 (openmmtools HostGuestExplicit, 4,491 atoms, the 30-atom guest as ANI-2x region) and
toluene in water (../shared/data/toluene-water, 6,495 atoms, PME 0.9 nm, toluene as region). The MM
Systems are built without constraints (rigid water) so that the MTS layout can copy the region's bond
terms; then X-H bonds are constrained (bond terms kept) where HarmonicBondForce has them: everywhere in
MM, outside the region in NNP/MM (createMixedSystem removes the region's bond terms and constraints, as
openmm-ml does), so the region's X-H bonds move freely under the NNP. Every variant therefore runs at 1 fs,
the `openmm-nnp run` default (until 2026-11-29 this script used 2 fs, and the unconstrained region blew up
within 1,000 steps now and then). Variants,
stepped in alternating rounds within this one process (load from other processes affects all alike),
medians over rounds, all per integration step (the cost of a step does not depend on its length):

* MM only;
* NNP/MM: NNPotential('ani2x').createMixedSystem (openmm_nnp.models.ANI, float32) with the NNPForce
  property overlap=true: the model starts on its own thread (one torch thread) when a step begins and runs
  while OpenMM computes the MM forces;
* NNP/MM sequential: the same as the CPU platform runs it by default (overlap=false): the model runs after
  the MM forces, on the torch threads of the calling thread;
* NNP/MM with MTS: the `openmm-nnp run --mts 2` layout (NNP correction every 2 inner steps) with
  openmm_nnp's NNPMTSLangevinMiddleIntegrator (what `run --mts` uses: OpenMM's LangevinMiddleIntegrator kernel
  on MM, the NNP correction's impulse added to its kick every other step), and the same with
  OpenMM's MTSLangevinIntegrator (a CustomIntegrator in every inner step, computing the MM forces 3 times
  per 2 inner steps instead of 2; see openmm_nnp/integrators.py); time per inner step. The inner step is 1 fs (outer
  2 fs): with a 2 fs inner step (outer 4 fs) CB7:B2 blows up within 20 steps, because the correction
  U_NNP(region) - U_MM(region) still holds fast X-H bending that a 4 fs step cannot follow;
* MTS 2 without the NNP: the MTS System with its NNPForce replaced by the region's MM terms (so group 1,
  U_MM(region) - U_MM(region), is zero and the dynamics MM's) with openmm_nnp's integrator: what the
  integrator and the second force-group evaluation cost by themselves (until 2026-11-29 this variant only
  removed the NNPForce, leaving the region's internal forces alternating in sign between inner steps: with
  the C++ integrator CB7:B2 blew up in both of two runs);
* the model alone: energy + forces of the region's TorchScript model called from Python on the same
  positions, as NNPForce calls it (what one NNP/MM step cannot avoid): its energy_and_forces() where it has one
  (the ANI models since 2026-11-30; up to run 41 this column timed forward() and autograd), else forward() and
  autograd.

It prints each time (wall clock; CPU time of the process per step in parentheses, which shows whether a
variant is faster by using idle cores or by taking more of a busy machine's), NNP/MM / MM (with and without
overlap), the ideal without overlap, (MM + model) / MM, and with MTS 2, (MM + model / 2) / MM; under each
system, the quartiles over rounds of each round's sequential and MTS 2 time divided by the same round's MM
time (how far single rounds scatter: on this 2-core VM by 0.1–0.2). 21 rounds by default (7 until 2026-11-30),
5–6 minutes in all; whole runs of the same code still differ by up to about 0.15 here, as the machine's state
drifts between them, so compare several runs. Then, for each system, where the rest goes:
the NNP/MM context's MM forces (group 0) and NNP force (group 1) computed by getState, each repeated alone and
the two alternating. --omp-default imports torch before
openmm_nnp, so torch's OpenMP threads keep libgomp's default spin-waiting (the behaviour before openmm_nnp
set OMP_WAIT_POLICY=PASSIVE and GOMP_SPINCOUNT): run it both ways to see what spin-waiting costs.
ANI weights come from TORCHANI_DATA_DIR (the Makefile exports ../shared/models/torchani; without it TorchANI
downloads them).
"""

import argparse
import math
import os
import statistics
import sys
import time
from pathlib import Path

if '--omp-default' in sys.argv:
    import torch  # noqa: F401  (loads libgomp before openmm_nnp can choose its wait policy)

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / 'shared'

import openmm_nnp  # noqa: E402  (first, unless --omp-default)
import openmm  # noqa: E402
import torch  # noqa: E402
from openmm import app, unit  # noqa: E402

from openmm_nnp.embedding import regionMMTerms  # noqa: E402
from openmm_nnp.inputs import LoadedInput, createNNPSystem  # noqa: E402
from openmm_nnp.integrators import NNPMTSLangevinMiddleIntegrator  # noqa: E402


def host_guest():
    from openmmtools.testsystems import HostGuestExplicit
    test = HostGuestExplicit(constraints=None)
    box = test.system.getDefaultPeriodicBoxVectors()
    return 'CB7:B2', LoadedInput(test.topology, test.system, test.positions, box), 'resname B2'


def toluene_water():
    directory = SHARED / 'data' / 'toluene-water'
    prmtop = app.AmberPrmtopFile(str(directory / 'toluene-explicit.prm7'))
    inpcrd = app.AmberInpcrdFile(str(directory / 'toluene-explicit.rst7'))
    system = prmtop.createSystem(nonbondedMethod=app.PME, nonbondedCutoff=0.9 * unit.nanometer, constraints=None, rigidWater=True)
    system.setDefaultPeriodicBoxVectors(*inpcrd.boxVectors)
    return 'toluene/water', LoadedInput(prmtop.topology, system, inpcrd.positions, inpcrd.boxVectors), 'resname MBN'


def constrain_hydrogen_bonds(system, topology):
    """Constrain every X-H bond of `system` at its HarmonicBondForce length (the terms stay; water is rigid already)."""
    hydrogens = {atom.index for atom in topology.atoms() if atom.element is not None and atom.element.symbol == 'H'}
    existing = {tuple(sorted(system.getConstraintParameters(i)[:2])) for i in range(system.getNumConstraints())}
    for force in system.getForces():
        if isinstance(force, openmm.HarmonicBondForce):
            for i in range(force.getNumBonds()):
                a, b, length, _ = force.getBondParameters(i)
                if (a in hydrogens or b in hydrogens) and tuple(sorted((a, b))) not in existing:
                    system.addConstraint(a, b, length)
    return system


def model_call(system, positions):
    """A function that runs the NNPForce's model once for energy and forces, as the kernel does."""
    force = next(f for f in system.getForces() if isinstance(f, openmm_nnp.NNPForce))
    return model_call_of(force.getModel(), force, system, positions)


def model_call_of(model, force, system, positions):
    """model_call for `model` in place of the force's own (same atoms, positions and box)."""
    atoms = list(force.getAtoms())
    coordinates = torch.tensor(positions.value_in_unit(unit.nanometer), dtype=torch.float32)[atoms]
    box = torch.tensor([list(v.value_in_unit(unit.nanometer)) for v in system.getDefaultPeriodicBoxVectors()], dtype=torch.float32)
    periodic = force.usesPeriodicBoundaryConditions()  # read now: `force` belongs to `system`, which may go

    inputs = (box,) if periodic else ()
    if hasattr(model, 'energy_and_forces'):  # what NNPForce calls when the model has it (ANI, since 2026-11-30)
        def run():
            model.energy_and_forces(coordinates.clone(), *inputs)
    else:
        def run():
            x = coordinates.clone().requires_grad_(True)
            torch.autograd.grad(model(x, *inputs), x)
    return run


def with_overlap(system, overlap):
    system = openmm.XmlSerializer.clone(system)
    for force in system.getForces():
        if isinstance(force, openmm_nnp.NNPForce):
            force.setProperty('overlap', overlap)
    return system


def without_nnp(system, mm, region):
    """A copy of the MTS System ``system`` whose NNPForce is replaced by the region's MM terms of ``mm`` (same
    group): the slow group is then U_MM(region) - U_MM(region), zero up to rounding, and the dynamics MM's, at
    the cost of the layout and the integrator without the model."""
    system = openmm.XmlSerializer.clone(system)
    for i in reversed(range(system.getNumForces())):
        force = system.getForce(i)
        if isinstance(force, openmm_nnp.NNPForce):
            group, atoms = force.getForceGroup(), list(force.getAtoms())
            system.removeForce(i)
    for term in regionMMTerms(mm, atoms, 1.0, 'NoNNPRegionMM'):
        term.setForceGroup(group)
        system.addForce(term)
    return system


def contexts_for(loaded, region, threads):
    platform = openmm.Platform.getPlatformByName('CPU')
    properties = {'Threads': str(threads)}
    mixed, _, _ = createNNPSystem(loaded, region)
    mts, _, _ = createNNPSystem(loaded, region, mts=2)
    mm = openmm.XmlSerializer.clone(loaded.system)
    variants = {label: (constrain_hydrogen_bonds(system, loaded.topology), steps)
                for label, system, steps in (('MM', mm, None), ('NNP/MM', with_overlap(mixed, 'true'), None),
                                             ('NNP/MM seq', with_overlap(mixed, 'false'), None), ('NNP/MM MTS 2', mts, 2),
                                             ('MTS 2 OpenMM', openmm.XmlSerializer.clone(mts), 2),
                                             ('MTS 2 no NNP', without_nnp(mts, loaded.system, region), 2))}
    result = {}
    for label, (system, mts_steps) in variants.items():
        T, friction = 300 * unit.kelvin, 1 / unit.picosecond
        groups = [(1, 1), (0, mts_steps)]
        per_step = 1  # inner steps per integrator.step(1)
        if label == 'MTS 2 OpenMM':
            integrator = openmm.MTSLangevinIntegrator(T, friction, mts_steps * unit.femtosecond, groups)
            per_step = mts_steps
        elif mts_steps:
            integrator = NNPMTSLangevinMiddleIntegrator(T, friction, 1 * unit.femtosecond, mts_steps)
        else:
            integrator = openmm.LangevinMiddleIntegrator(T, friction, 1 * unit.femtosecond)
        context = openmm.Context(system, integrator, platform, properties)
        context.setPositions(loaded.positions)
        context.applyConstraints(1e-6)
        openmm.LocalEnergyMinimizer.minimize(context, 10.0, 200)
        context.setVelocitiesToTemperature(T, 1)
        integrator.step(10)  # warm-up: TorchScript profiling runs, neighbour lists
        result[label] = (context, integrator, per_step)
    return result, model_call(variants['NNP/MM'][0], loaded.positions)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--threads', type=int, default=2, help='OpenMM CPU threads and torch intra-op threads')
    parser.add_argument('--rounds', type=int, default=21, help='alternating rounds per variant')
    parser.add_argument('--steps', type=int, default=20, help='(inner) steps per round')
    parser.add_argument('--omp-default', action='store_true', help="import torch first (libgomp's default spin-waiting)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', '(unset: libgomp default)')}, "
          f"GOMP_SPINCOUNT={os.environ.get('GOMP_SPINCOUNT', '(unset: libgomp default)')}, {args.threads} threads, "
          f"{time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}")
    print(f"{'system':14s} {'MM':>12s} {'NNP/MM':>12s} {'sequential':>12s} {'MTS 2':>12s} {'MTS 2 OpenMM':>12s} "
          f"{'MTS 2 no NNP':>12s} {'model':>5s}   ms per step (CPU ms)  |  {'NNP/MM÷MM':>9s} {'seq.÷MM':>8s} "
          f"{'ideal seq.':>10s} {'MTS÷MM':>7s} {'ideal MTS':>9s} {'OpenMM MTS÷MM':>13s} {'no NNP÷MM':>9s}")
    split = {}
    for build in (host_guest, toluene_water):
        name, loaded, region = build()
        contexts, model = contexts_for(loaded, region, args.threads)
        for _ in range(5):
            model()
        times = {label: [] for label in [*contexts, 'model']}
        cpu = {label: [] for label in contexts}
        for _ in range(args.rounds):
            for label, (context, integrator, per_step) in contexts.items():
                steps = args.steps // per_step
                start, start_cpu = time.perf_counter(), time.process_time()
                try:
                    integrator.step(steps)
                except openmm.OpenMMException as e:
                    raise RuntimeError(f'{name}, {label}: {e}') from e
                times[label].append((time.perf_counter() - start) / (steps * per_step) * 1e3)
                cpu[label].append((time.process_time() - start_cpu) / (steps * per_step) * 1e3)
                energy = context.getState(getEnergy=True).getPotentialEnergy()  # outside the timed interval
                if not math.isfinite(energy.value_in_unit(unit.kilojoule_per_mole)):
                    raise RuntimeError(f'{name}, {label}: the potential energy is {energy} after a round')
            start = time.perf_counter()
            for _ in range(args.steps):
                model()
            times['model'].append((time.perf_counter() - start) / args.steps * 1e3)
        m = {label: statistics.median(values) for label, values in times.items()}
        c = {label: statistics.median(values) for label, values in cpu.items()}
        columns = ' '.join(f"{m[label]:5.1f} ({c[label]:4.1f})" for label in contexts)
        print(f"{name:14s} {columns} {m['model']:5.1f}   ms per step (CPU ms)  |  "
              f"{m['NNP/MM'] / m['MM']:9.2f} {m['NNP/MM seq'] / m['MM']:8.2f} {(m['MM'] + m['model']) / m['MM']:10.2f} "
              f"{m['NNP/MM MTS 2'] / m['MM']:7.2f} {(m['MM'] + m['model'] / 2) / m['MM']:9.2f} "
              f"{m['MTS 2 OpenMM'] / m['MM']:13.2f} {m['MTS 2 no NNP'] / m['MM']:9.2f}")
        if args.rounds > 1:  # quartiles need two rounds
            spread = []
            for label, key in (('sequential', 'NNP/MM seq'), ('MTS 2', 'NNP/MM MTS 2')):
                q1, _, q3 = statistics.quantiles([t / mm for t, mm in zip(times[key], times['MM'])], n=4)
                spread.append(f'{label} {q1:.2f}–{q3:.2f}')
            print(f"{'':14s} each round's time ÷ the same round's MM, quartiles over rounds: {', '.join(spread)}")
        split[name] = alternation(contexts['NNP/MM'][0], args)
        del contexts
    print(f"load average at the end {os.getloadavg()[0]:.1f}")
    print('\nForces of the NNP/MM context by force group (getState), ms per evaluation:')
    print(f"{'system':14s} {'MM alone':>9s} {'NNP alone':>10s} {'sum':>6s} {'alternating':>12s}")
    for name, t in split.items():
        print(f"{name:14s} {t['mm']:9.1f} {t['nnp']:10.1f} {t['mm'] + t['nnp']:6.1f} {t['both']:12.1f}")


def alternation(context, args):
    """Group 0 (MM) and group 1 (NNP) of a copy of the NNP/MM context's System, each repeated, and alternating."""
    system = openmm.XmlSerializer.clone(context.getSystem())
    for force in system.getForces():
        force.setForceGroup(1 if isinstance(force, openmm_nnp.NNPForce) else 0)
    copy = openmm.Context(system, openmm.VerletIntegrator(0.001), context.getPlatform(),
                          {'Threads': context.getPlatform().getPropertyValue(context, 'Threads')})
    copy.setState(context.getState(getPositions=True))

    def timed(groups_sequence):
        start = time.perf_counter()
        for _ in range(args.steps):
            for groups in groups_sequence:
                copy.getState(getForces=True, groups=groups)
        return (time.perf_counter() - start) / args.steps * 1e3
    times = {'mm': [], 'nnp': [], 'both': []}
    for _ in range(args.rounds):
        times['mm'].append(timed([{0}]))
        times['nnp'].append(timed([{1}]))
        times['both'].append(timed([{0}, {1}]))
    return {label: statistics.median(values) for label, values in times.items()}


if __name__ == '__main__':
    main()
