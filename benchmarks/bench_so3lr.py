"""Benchmark openmm_nnp.models.so3lr against the so3krates-torch package's own calculator, and our ANI-2x.

Run:  .venv/bin/python benchmarks/bench_so3lr.py [--threads 2] [--calls 30]

Energy + forces of the 30-atom B2 guest of openmmtools' HostGuestExplicit, float32, CPU, in one process:
* the package: its ASE calculator (TorchkratesCalculator with the wheel's SO3LR weights; it builds the graph
  with its neighbour list on every call), calculator reset before each call so that it recomputes;
* ours: openmm_nnp.models.so3lr (TorchScript, fixed region), forward + backward: the whole network in one
  operator call (so3lr_network, the default), and the same module through its separate operators
  (SO3LR(fusedNetwork=False)) for the gain of the single call;
* our ANI-2x (openmm_nnp.models.ANI, compiled operators), forward + backward, for scale.
Calls are interleaved round by round (load from other processes affects all alike); medians and minima.
openmm_nnp is imported first, so torch's OpenMP threads wait as in an NNP/MM run (openmm_nnp/__init__.py);
`GOMP_SPINCOUNT=0 python benchmarks/bench_so3lr.py` shows purely passive waiting (openmm_nnp's setting before
e777879).
"""

import argparse
import os
import sys

import openmm_nnp  # noqa: F401  (before torch: its OpenMP wait settings (openmm_nnp/__init__.py), as in an NNP/MM run)
import numpy as np  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_ani import host_guest, interleaved_times_ms  # noqa: E402


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    parser.add_argument("--calls", type=int, default=30, help="timed calls per implementation")
    parser.add_argument("--warmup", type=int, default=10, help="untimed calls first (TorchScript profiling runs)")
    return parser.parse_args()


def main():
    args = parse_args()
    torch.set_num_threads(args.threads)
    import ase
    from openmm import unit
    from so3krates_torch.calculator.so3 import TorchkratesCalculator
    from openmm_nnp.models import ANI, so3lr

    testsystem, guest = host_guest()
    atoms = list(testsystem.topology.atoms())
    numbers = [atoms[i].element.atomic_number for i in guest]
    positions_nm = np.asarray(testsystem.positions.value_in_unit(unit.nanometer))[guest]
    positions = torch.tensor(positions_nm, dtype=torch.float32)

    ours = so3lr.createSO3LRModel(numbers, charge=0, dtype=torch.float32)
    separate = torch.jit.script(so3lr.SO3LR(numbers, charge=0, dtype=torch.float32, fusedNetwork=False))
    ani = torch.jit.script(ANI("ani2x", numbers))
    default = torch.get_default_dtype()
    calculator = TorchkratesCalculator(models=[so3lr.loadPackageModel(torch.float32)], default_dtype="float32",
                                       r_max_lr=so3lr.LONG_RANGE_CUTOFF,
                                       dispersion_energy_cutoff_lr_damping=so3lr.DISPERSION_DAMPING)
    torch.set_default_dtype(default)
    molecule = ase.Atoms(numbers=numbers, positions=positions_nm * 10.0)
    molecule.info["charge"] = 0
    molecule.calc = calculator

    def energy_and_forces(model):
        def run():
            x = positions.clone().requires_grad_()
            model(x).backward()
        return run

    def run_package():
        calculator.reset()
        molecule.get_forces()

    # Agreement in this float32 setting (the float64 comparison is in tests/test_so3lr.py).
    x = positions.clone().requires_grad_()
    energy = ours(x)
    energy.backward()
    run_package()
    reference_forces = calculator.results["forces"] * so3lr.EV_TO_KJ_PER_MOL * 10.0
    print(f"float32 agreement: energy {energy.item():.2f} vs package "
          f"{calculator.results['energy'] * so3lr.EV_TO_KJ_PER_MOL:.2f} kJ/mol, largest force difference "
          f"{np.abs(-x.grad.numpy() - reference_forces).max():.2e} kJ/mol/nm")

    functions = {"package": run_package, "ours": energy_and_forces(ours), "separate": energy_and_forces(separate),
                 "ani2x": energy_and_forces(ani)}
    result = interleaved_times_ms(functions, args.calls, args.warmup)
    print(f"Energy + forces, B2 guest ({len(guest)} atoms), float32, {torch.get_num_threads()} threads, "
          f"{args.calls} calls each (load average {os.getloadavg()[0]:.1f}); median [minimum] in ms; OpenMP waiting: "
          f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')}, GOMP_SPINCOUNT={os.environ.get('GOMP_SPINCOUNT')}")
    for name, label in (("package", "so3krates-torch calculator"), ("ours", "openmm_nnp SO3LR"),
                        ("separate", "  separate operators"), ("ani2x", "openmm_nnp ANI-2x")):
        median, minimum = result[name]
        print(f"  {label:<28}{median:9.2f} [{minimum:7.2f}]")
    package, ours_time, ani_time = result["package"][0], result["ours"][0], result["ani2x"][0]
    print(f"SO3LR speed-up over the package: {package / ours_time:.1f}x (medians); "
          f"SO3LR / ANI-2x time: {ours_time / ani_time:.1f}x; "
          f"one operator call against the separate operators: {result['separate'][0] / ours_time:.2f}x")


if __name__ == "__main__":
    main()
