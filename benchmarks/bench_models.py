"""Cost of every model family on the same region: energy + forces of the 30-atom B2 guest of CB7:B2.

Run:  TORCHANI_DATA_DIR=... .venv/bin/python benchmarks/bench_models.py [--threads 2] [--calls 30]

Each model is the TorchScript module openmm_nnp builds for the region (what NNPForce runs), float32, CPU,
forward + backward, models interleaved round by round in one process (load from other processes affects all
alike), each timed call after two untimed ones of the same model (weights in the caches, as in a run of
steps); medians and minima, and each median over ANI-2x's.

The cost of a network depends on its architecture, not on the values of its weights. Where the published
weights cannot be downloaded here, the model is built with its package's own code and random weights at the
published size:
* AIMNet2: a v2 file written by aimnet's exporter from its aimnet2_dftd3_wb97m.yaml architecture (the wB97M-D3
  model), loaded through openmm_nnp with the Coulomb and DFT-D3 terms the file leaves to the calculator.
* MACE-OFF23 small / medium: ScaleShiftMACE with the hyperparameters reported for MACE-OFF23 (Kovács et al.
  2023; 2 interactions, correlation order 3, max_ell 3, 8 Bessel functions, radial MLP 64-64-64; small: 96
  channels, L = 0, 4.5 Å; medium: 128 channels, L = 1, 5 Å), loaded from a saved file through openmm_nnp.
ANI-2x and ANI-1x (TorchANI's weights; ANI-1ccx has ANI-1x's networks) and SO3LR (the so3krates-torch wheel's) are the published models.
openmm_nnp is imported before torch, so torch's threads wait as in an NNP/MM run (before 2026-11-30 this script
ran with libgomp's default spin).
"""

import argparse
import os
import sys
import tempfile
import warnings
from pathlib import Path

import openmm_nnp  # noqa: F401  (before torch: its OpenMP wait settings, as in an NNP/MM run)
import numpy as np  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests"))
from bench_ani import host_guest, interleaved_times_ms  # noqa: E402

MACE_OFF23_SIZES = {"small": ("96x0e", 4.5), "medium": ("128x0e+128x1o", 5.0)}


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    parser.add_argument("--calls", type=int, default=30, help="timed calls per model")
    parser.add_argument("--warmup", type=int, default=10, help="untimed calls first (TorchScript profiling runs)")
    return parser.parse_args()


def mace_off23_sized_file(folder, size, numbers):
    """A mace-torch model file of MACE-OFF23's published size with random weights, for the region's elements."""
    from openmm_nnp.models import mace
    mace._importMACE()
    from e3nn import o3
    from mace import modules
    hidden, cutoff = MACE_OFF23_SIZES[size]
    elements = sorted(set(numbers))
    default = torch.get_default_dtype()
    torch.manual_seed(0)
    try:
        block = modules.interaction_classes["RealAgnosticResidualInteractionBlock"]
        model = modules.ScaleShiftMACE(
            r_max=cutoff, num_bessel=8, num_polynomial_cutoff=5, max_ell=3, interaction_cls=block,
            interaction_cls_first=block, num_interactions=2, num_elements=len(elements),
            hidden_irreps=o3.Irreps(hidden), MLP_irreps=o3.Irreps("16x0e"),
            atomic_energies=np.full(len(elements), -100.0), avg_num_neighbors=10.0, atomic_numbers=elements,
            correlation=3, gate=torch.nn.functional.silu, radial_MLP=[64, 64, 64], atomic_inter_scale=1.0,
            atomic_inter_shift=0.0)
    finally:
        torch.set_default_dtype(default)
    path = Path(folder) / f"mace-off23-{size}-sized.model"
    torch.save(model, path)
    return path


def main():
    args = parse_args()
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore", category=UserWarning)  # TorchScript's notes while compiling the packages' code
    from openmm import unit
    from model_reference import exportRandomAIMNet2File
    from openmm_nnp.models import ANI, aimnet2, mace, so3lr

    testsystem, guest = host_guest()
    atoms = list(testsystem.topology.atoms())
    numbers = [atoms[i].element.atomic_number for i in guest]
    positions = torch.tensor(np.asarray(testsystem.positions.value_in_unit(unit.nanometer))[guest],
                             dtype=torch.float32)
    folder = tempfile.mkdtemp(prefix="bench_models_")
    models = {
        "ANI-2x": torch.jit.script(ANI("ani2x", numbers)),
        "ANI-1x": torch.jit.script(ANI("ani1x", numbers)),
        "SO3LR": so3lr.createSO3LRModel(numbers, dtype=torch.float32),
        "AIMNet2 (wB97M-D3 size)": aimnet2.createAIMNet2Model(
            numbers, dtype=torch.float32, modelPath=exportRandomAIMNet2File(Path(folder))),
    }
    for size in MACE_OFF23_SIZES:
        models[f"MACE-OFF23-{size} size"] = mace.createMACEModel(
            numbers, dtype=torch.float32, modelPath=mace_off23_sized_file(folder, size, numbers))

    def energy_and_forces(model):
        def run():
            x = positions.clone().requires_grad_()
            model(x).backward()
        return run

    # Each timed call follows two untimed calls of the same model: the cost of a model whose weights are in the
    # caches, as in a run of steps; interleaved with the others, the largest models' weights would evict the
    # smaller ones' (ANI-2x took 9.7 instead of 4 ms that way on 2026-11-29).
    result = interleaved_times_ms({name: energy_and_forces(m) for name, m in models.items()}, args.calls,
                                  args.warmup, untimed_before=2)
    print(f"Energy + forces, B2 guest ({len(guest)} atoms), float32, {torch.get_num_threads()} threads, "
          f"{args.calls} calls each (load average {os.getloadavg()[0]:.1f}); median [minimum] in ms, median / ANI-2x")
    ani = result["ANI-2x"][0]
    for name, (median, minimum) in result.items():
        print(f"  {name:<26}{median:9.2f} [{minimum:7.2f}]  {median / ani:6.1f}x")


if __name__ == "__main__":
    main()
