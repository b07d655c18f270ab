"""Benchmark openmm_nnp.models.ANI against TorchScript-compiled TorchANI, and NNP/MM MD speed.

Run:  .venv/bin/python benchmarks/bench_ani.py [--threads 2] [--calls 100] [--no-md]

1. Energy + forces (one forward + backward) of ANI-2x, float32, CPU, for
   * the 30-atom B2 guest of openmmtools' HostGuestExplicit (CB7:B2 in water),
   * the guest plus its 15 nearest water molecules (75 atoms, a typical solvated region),
   by TorchANI (torch.jit.script of torchani.models.ANI2x), by openmm_nnp.models.ANI (the
   default: compiled operators) and by the same model with customOps=False (PyTorch
   operations only). All see the same inputs; calls are interleaved round by round so that
   load from other processes affects all alike; medians and minima are reported, and the
   speed-ups are TorchANI's time divided by ours.
2. MD steps/s of HostGuestExplicit on the CPU platform, MM only and NNP/MM (guest described
   by ANI-2x through NNPForce, system from NNPotential('ani2x').createMixedSystem).
openmm_nnp is imported before torch, so torch's threads wait as in an NNP/MM run (openmm_nnp/__init__.py;
before 2026-11-30 this script ran with libgomp's default spin).
"""

import argparse
import os
import time

os.environ.setdefault("TORCHANI_NO_WARN_EXTENSIONS", "1")

import openmm_nnp  # noqa: E402  (before torch: its OpenMP wait settings, as in an NNP/MM run)
import numpy as np  # noqa: E402
import torch  # noqa: E402


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2, help="torch and OpenMM CPU threads")
    parser.add_argument("--calls", type=int, default=100, help="timed calls per implementation")
    parser.add_argument("--warmup", type=int, default=20, help="untimed calls first (TorchScript profiling runs)")
    parser.add_argument("--md-steps", type=int, default=200, help="timed MD steps per system (in rounds of 20)")
    parser.add_argument("--no-md", action="store_true", help="skip the MD part")
    return parser.parse_args()


def host_guest():
    import openmmtools.testsystems

    testsystem = openmmtools.testsystems.HostGuestExplicit()
    residues = list(testsystem.topology.residues())
    guest = [residue for residue in residues if residue.name == "B2"]
    assert len(guest) == 1, "expected one B2 guest residue"
    guest_atoms = [atom.index for atom in guest[0].atoms()]
    return testsystem, guest_atoms


def nearest_waters(testsystem, center_atoms, count):
    """Atom indices of the `count` water molecules closest (minimum image) to center_atoms."""
    from openmm import unit

    positions = testsystem.positions.value_in_unit(unit.nanometer)
    positions = np.asarray(positions)
    box = np.array(
        [v.value_in_unit(unit.nanometer) for v in testsystem.system.getDefaultPeriodicBoxVectors()]
    )
    lengths = np.diag(box)  # HostGuestExplicit has a rectangular box
    waters = [r for r in testsystem.topology.residues() if r.name == "HOH"]
    center = positions[center_atoms]
    distances = []
    for water in waters:
        oxygen = [a.index for a in water.atoms() if a.element.symbol == "O"][0]
        delta = center - positions[oxygen]
        delta -= lengths * np.round(delta / lengths)
        distances.append(np.min(np.linalg.norm(delta, axis=1)))
    chosen = [waters[i] for i in np.argsort(distances)[:count]]
    return [a.index for w in chosen for a in w.atoms()]


def interleaved_times_ms(functions, calls, warmup, untimed_before=0):
    """Median and minimum wall time (ms) of each function, calls interleaved round by round; with
    `untimed_before`, each timed call follows that many untimed calls of the same function."""
    for f in functions.values():
        for _ in range(warmup):
            f()
    times = {name: [] for name in functions}
    for _ in range(calls):
        for name, f in functions.items():
            for _ in range(untimed_before):
                f()
            start = time.perf_counter()
            f()
            times[name].append(time.perf_counter() - start)
    return {name: (1e3 * float(np.median(t)), 1e3 * float(np.min(t))) for name, t in times.items()}


def bench_models(testsystem, regions, args):
    import torchani
    from openmm import unit
    from openmm_nnp.models import ANI
    from openmm_nnp.models.torchani_models import load_torchani_model

    load_torchani_model("ani2x")  # TorchANI's weights, from TORCHANI_DATA_DIR when set
    torchani_model = torch.jit.script(torchani.models.ANI2x(periodic_table_index=True))
    all_positions = np.asarray(testsystem.positions.value_in_unit(unit.nanometer))
    numbers = [atom.element.atomic_number for atom in testsystem.topology.atoms()]
    print(f"Energy + forces, ANI-2x float32, {torch.get_num_threads()} threads, {args.calls} calls each "
          f"(load average {os.getloadavg()[0]:.1f}); median [minimum] in ms; speed-up = TorchANI time / ours")
    print(f"{'region':<30}{'atoms':>6}{'TorchANI':>16}{'ours':>16}{'speed-up':>12}"
          f"{'ours, PyTorch ops':>20}{'speed-up':>12}")
    for label, atoms in regions:
        positions = torch.tensor(all_positions[atoms], dtype=torch.float32)
        species = torch.tensor([[numbers[i] for i in atoms]])
        region_numbers = [numbers[i] for i in atoms]
        # ours: the default model (compiled operators); PyTorch ops: the same model with customOps=False
        ours = torch.jit.script(ANI("ani2x", region_numbers))
        ours_pytorch = torch.jit.script(ANI("ani2x", region_numbers, customOps=False))

        def energy_and_forces(model):
            def run():
                x = positions.clone().requires_grad_()
                model(x).backward()
            return run

        def run_torchani():
            x = (positions * 10).unsqueeze(0).requires_grad_()
            torchani_model((species, x)).energies.sum().backward()

        functions = {"torchani": run_torchani, "ours": energy_and_forces(ours),
                     "pytorch": energy_and_forces(ours_pytorch)}
        result = interleaved_times_ms(functions, args.calls, args.warmup)
        ref_median, ref_min = result["torchani"]
        line = f"{label:<30}{len(atoms):>6}{ref_median:>8.2f} [{ref_min:5.2f}]"
        for name, width in (("ours", 16), ("pytorch", 20)):
            median, minimum = result[name]
            line += f"{median:>{width - 8}.2f} [{minimum:5.2f}]{ref_median / median:>6.1f}x [{ref_min / minimum:3.1f}x]"
        print(line)


def bench_md(testsystem, guest_atoms, args):
    import openmm
    from openmm import unit

    # The package's builder (openmm_nnp.models.ANI, float32). Keep the guest's X-H constraints so
    # that both systems run with the same 2 fs step.
    potential = openmm_nnp.NNPotential("ani2x")
    nnp_system = potential.createMixedSystem(testsystem.topology, testsystem.system, guest_atoms, removeConstraints=False)

    platform = openmm.Platform.getPlatformByName("CPU")
    properties = {"Threads": str(args.threads)}
    systems = {"MM only": testsystem.system, "NNP/MM (guest ANI-2x)": nnp_system}
    contexts = {}
    for label, system in systems.items():
        integrator = openmm.LangevinMiddleIntegrator(300 * unit.kelvin, 1 / unit.picosecond, 2 * unit.femtosecond)
        context = openmm.Context(system, integrator, platform, properties)
        context.setPositions(testsystem.positions)
        context.setVelocitiesToTemperature(300 * unit.kelvin, 1)
        integrator.step(20)  # warm-up (TorchScript profiling runs, neighbour lists)
        context.getState(getEnergy=True)
        contexts[label] = (context, integrator)
    # Rounds of a few steps, alternating between the systems, so that load from other processes
    # affects both alike; the median step time over rounds is reported.
    steps_per_round = 20
    rounds = max(1, args.md_steps // steps_per_round)
    step_times = {label: [] for label in systems}
    for _ in range(rounds):
        for label, (context, integrator) in contexts.items():
            start = time.perf_counter()
            integrator.step(steps_per_round)
            context.getState(getEnergy=True)  # make sure all steps are done
            step_times[label].append((time.perf_counter() - start) / steps_per_round)
    print(f"\nMD of HostGuestExplicit ({testsystem.system.getNumParticles()} atoms), CPU platform, "
          f"{args.threads} threads, {rounds} alternating rounds of {steps_per_round} steps of 2 fs per system "
          f"(load average {os.getloadavg()[0]:.1f}); NNP/MM system from NNPotential('ani2x').createMixedSystem")
    medians = {label: float(np.median(times)) for label, times in step_times.items()}
    for label, step_time in medians.items():
        print(f"{label:<28}{1 / step_time:10.1f} steps/s  ({1e3 * step_time:7.2f} ms/step, median over rounds)")
    print(f"NNP/MM step time / MM-only step time: {medians['NNP/MM (guest ANI-2x)'] / medians['MM only']:.2f}")


def main():
    args = parse_args()
    torch.set_num_threads(args.threads)
    testsystem, guest_atoms = host_guest()
    solvated = guest_atoms + nearest_waters(testsystem, guest_atoms, 15)
    bench_models(testsystem, [("B2 guest", guest_atoms), ("B2 guest + 15 nearest waters", solvated)], args)
    if not args.no_md:
        bench_md(testsystem, guest_atoms, args)


if __name__ == "__main__":
    main()
