#!/usr/bin/env python
"""NNP/MM molecular dynamics of toluene in water: ANI-2x for the toluene, Amber/GAFF + TIP3P for the rest.

    python examples/toluene_water.py --steps 3000

Reads ../shared/data/toluene-water (next to the repository), builds the MM system with PME, replaces the
toluene's internal interactions by ANI (mechanical embedding), minimizes, and runs Langevin dynamics.
Writes a DCD trajectory and a CSV energy log to --output-dir and prints progress and ns/day.
ANI weights come from TORCHANI_DATA_DIR (`make example` exports ../shared/models/torchani) or are downloaded.
"""

import argparse
import sys
import time
from pathlib import Path

import openmm
import openmm.app as app
import openmm.unit as unit

REPOSITORY = Path(__file__).resolve().parents[1]
DATA_DIR = REPOSITORY.parent / 'shared' / 'data' / 'toluene-water'


def parseArguments():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--steps', type=int, default=3000, help='MD steps of 1 fs (default 3000)')
    parser.add_argument('--output-dir', default='output/toluene-water', help='where the trajectory and log go')
    parser.add_argument('--platform', default='CPU', help='OpenMM platform (default CPU)')
    parser.add_argument('--model', default='ani2x', help="NNP for the toluene: 'ani2x', 'ani1x', 'ani1ccx' or a "
                        'TorchScript file (default ani2x)')
    parser.add_argument('--precision', default='single', choices=['single', 'double'])
    parser.add_argument('--report-interval', type=int, default=100, help='steps between log lines and frames')
    # Torch's default (one thread per core) was fastest on an idle 2-core machine (CB7:B2: 31 vs 23 steps/s with
    # one thread); on a machine busy with other work, --threads 1 avoids torch's threads competing with OpenMM's.
    parser.add_argument('--threads', type=int, default=0, help='torch threads for the NNP (default 0: torch default, '
                        'one per core; 1 is faster on a busy machine)')
    return parser.parse_args()


def main():
    args = parseArguments()
    if not DATA_DIR.is_dir():
        sys.exit(f'error: the toluene-in-water input files are missing: expected {DATA_DIR} '
                 '(toluene-explicit.prm7 and .rst7, the shared data folder next to the repository).')
    from openmm_nnp import NNPotential

    prmtop = app.AmberPrmtopFile(str(DATA_DIR / 'toluene-explicit.prm7'))
    inpcrd = app.AmberInpcrdFile(str(DATA_DIR / 'toluene-explicit.rst7'))
    mmSystem = prmtop.createSystem(nonbondedMethod=app.PME, nonbondedCutoff=0.9 * unit.nanometer,
                                   constraints=app.HBonds, rigidWater=True)
    if inpcrd.boxVectors is not None:
        mmSystem.setDefaultPeriodicBoxVectors(*inpcrd.boxVectors)

    potential = NNPotential(args.model, precision=args.precision)
    # The toluene's bonds are unconstrained (the NNP describes them), hence the 1 fs time step.
    system = potential.createMixedSystem(prmtop.topology, mmSystem, 'resname MBN')
    if args.threads:
        for force in system.getForces():
            if force.getName() == 'NNPForce':
                force.setProperty('numThreads', str(args.threads))
    region = [a.index for a in prmtop.topology.atoms() if a.residue.name == 'MBN']
    print(f'{system.getNumParticles()} atoms, {len(region)} of them (toluene, MBN) described by {potential}')

    timestep = 1.0 * unit.femtosecond
    integrator = openmm.LangevinMiddleIntegrator(300 * unit.kelvin, 1.0 / unit.picosecond, timestep)
    platform = openmm.Platform.getPlatformByName(args.platform)
    simulation = app.Simulation(prmtop.topology, system, integrator, platform)
    simulation.context.setPositions(inpcrd.positions)
    print(f'platform: {platform.getName()}')

    energy = simulation.context.getState(getEnergy=True).getPotentialEnergy()
    print(f'initial potential energy: {energy}')
    simulation.minimizeEnergy(maxIterations=200)
    energy = simulation.context.getState(getEnergy=True).getPotentialEnergy()
    print(f'after minimization:       {energy}')
    simulation.context.setVelocitiesToTemperature(300 * unit.kelvin)

    output = Path(args.output_dir)
    output.mkdir(parents=True, exist_ok=True)
    interval = max(1, min(args.report_interval, args.steps))
    simulation.reporters.append(app.DCDReporter(str(output / 'trajectory.dcd'), interval))
    simulation.reporters.append(app.StateDataReporter(
        str(output / 'energies.csv'), interval, step=True, time=True, potentialEnergy=True, kineticEnergy=True,
        totalEnergy=True, temperature=True, speed=True))
    simulation.reporters.append(app.StateDataReporter(
        sys.stdout, interval, step=True, potentialEnergy=True, temperature=True, progress=True,
        remainingTime=True, speed=True, totalSteps=args.steps, separator='  '))

    start = time.perf_counter()
    simulation.step(args.steps)
    elapsed = time.perf_counter() - start
    nsPerDay = args.steps * timestep.value_in_unit(unit.nanosecond) / elapsed * 86400
    print(f'{args.steps} steps in {elapsed:.1f} s: {nsPerDay:.2f} ns/day ({args.steps / elapsed:.1f} steps/s)')
    with open(output / 'final.pdb', 'w') as f:
        state = simulation.context.getState(getPositions=True, enforcePeriodicBox=True)
        app.PDBFile.writeFile(prmtop.topology, state.getPositions(), f)
    print(f'wrote {output / "trajectory.dcd"}, {output / "energies.csv"} and {output / "final.pdb"}')


if __name__ == '__main__':
    main()
