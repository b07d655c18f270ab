"""MD speed of NNP/MM on every platform that runs NNPForce here, against MM-only on the same platform.

Run:  .venv/bin/python benchmarks/bench_platforms.py [--steps 40] [--rounds 3]

System: toluene in water from ../shared/data/toluene-water (6,495 atoms, PME 0.9 nm, HBonds,
LangevinMiddle 2 fs); NNP/MM puts ANI-2x (openmm_nnp.models.ANI, float32) on the toluene with
NNPotential('ani2x').createMixedSystem. For each platform (CPU; OpenCL, CUDA where present, in single
precision) MM-only and NNP/MM contexts are stepped in alternating rounds so that load changes affect both
alike; the script prints the median ms/step of each and their ratio. On a machine without a GPU, OpenCL
runs on the CPU through PoCL: its numbers say what the kernel costs there, not what a GPU does.
ANI weights come from TORCHANI_DATA_DIR (the Makefile exports ../shared/models/torchani; without it TorchANI
downloads them).
"""

import argparse
import statistics
import time
from pathlib import Path

import openmm
from openmm import app, unit

REPO = Path(__file__).resolve().parents[1]
TOLUENE = REPO.parent / 'shared' / 'data' / 'toluene-water'


def systems():
    from openmm_nnp import NNPotential
    prmtop = app.AmberPrmtopFile(str(TOLUENE / 'toluene-explicit.prm7'))
    inpcrd = app.AmberInpcrdFile(str(TOLUENE / 'toluene-explicit.rst7'))
    mm = prmtop.createSystem(nonbondedMethod=app.PME, nonbondedCutoff=0.9 * unit.nanometer, constraints=app.HBonds)
    mm.setDefaultPeriodicBoxVectors(*inpcrd.boxVectors)
    mixed = NNPotential('ani2x').createMixedSystem(prmtop.topology, mm, 'resname MBN')
    return mm, mixed, inpcrd.positions


def platforms():
    names = [openmm.Platform.getPlatform(i).getName() for i in range(openmm.Platform.getNumPlatforms())]
    for name, properties in (('CPU', {}), ('OpenCL', {'Precision': 'single'}), ('CUDA', {'Precision': 'single'})):
        if name in names and openmm.Platform.getPlatformByName(name).supportsKernels(['CalcNNPForce']):
            yield name, properties


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--steps', type=int, default=40, help='steps per timed round')
    parser.add_argument('--rounds', type=int, default=3, help='alternating rounds per system')
    args = parser.parse_args()
    mm, mixed, positions = systems()
    print(f'{"platform":8s} {"MM ms/step":>11s} {"NNP/MM ms/step":>15s} {"ratio":>6s}')
    for name, properties in platforms():
        contexts = {}
        for label, system in (('mm', mm), ('nnp', mixed)):
            integrator = openmm.LangevinMiddleIntegrator(300 * unit.kelvin, 1 / unit.picosecond, 0.002 * unit.picoseconds)
            try:
                context = openmm.Context(system, integrator, openmm.Platform.getPlatformByName(name), properties)
            except openmm.OpenMMException as e:
                print(f'{name:8s} skipped: {e}')
                break
            context.setPositions(positions)
            context.setVelocitiesToTemperature(300 * unit.kelvin, 1)
            integrator.step(5)  # compile kernels, warm up
            contexts[label] = context
        if len(contexts) < 2:
            continue
        times = {'mm': [], 'nnp': []}
        for _ in range(args.rounds):
            for label, context in contexts.items():
                start = time.perf_counter()
                context.getIntegrator().step(args.steps)
                context.getState(getEnergy=True)  # waits for the device
                times[label].append((time.perf_counter() - start) / args.steps * 1000)
        mm_ms, nnp_ms = statistics.median(times['mm']), statistics.median(times['nnp'])
        print(f'{name:8s} {mm_ms:11.1f} {nnp_ms:15.1f} {nnp_ms / mm_ms:6.2f}')


if __name__ == '__main__':
    main()
