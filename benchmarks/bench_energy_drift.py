"""NVE energy drift of toluene + 200 waters, MM and NNP/MM (ANI-2x on the toluene), per degree of freedom.

Run:  .venv/bin/python benchmarks/bench_energy_drift.py [--nve-ps 2] [--starts 2] [--threads 2]

The system is cut from ../shared/data/toluene-water with AmberTools' cpptraj (`closest 200 :MBN`): toluene
(GAFF) and the 200 TIP3P waters nearest to it, a droplet without periodic boundaries or cutoff, rigid water.
Everything is double precision on the Reference platform (NNPotential precision='double'). For each setting
and start: minimize (MM, once), draw velocities at 300 K, 0.5 ps of Langevin dynamics (1/ps) with the same
time step and constraints, then --nve-ps of NVE: VerletIntegrator, or for MTS with the force groups of
`openmm-nnp run --mts` either OpenMM's MTSIntegrator (velocity-Verlet RESPA; MTSLangevinIntegrator before)
or openmm_nnp's NNPMTSLangevinMiddleIntegrator (what `run --mts` uses; without friction for NVE; its kinetic
energy from the velocities it stores half an inner step behind, brought forward by half the next kick to the
positions' time, as velocity-Verlet MTSIntegrator has them; until 2026-11-29 the half-step velocities
themselves, whose kinetic energy carries the impulse: over the same 12 starts its mean |drift| was 0.296
against 0.121 now). The drift is the slope of a
straight-line fit of the total energy (sampled every 10 fs) against time, divided by the number of degrees
of freedom (3 N - constraints; no centre-of-mass motion remover).

Settings: MM only (toluene X-H bonds constrained at 2 fs; unconstrained at 1 fs); NNP/MM with the region
unconstrained (what `openmm-nnp run` does) at 0.5 and 1 fs; NNP/MM with the region's X-H bonds constrained
(createMixedSystem(removeConstraints=False)) at 2 fs; NNP/MM with `--mts 2 --timestep 1` (MM every 1 fs, NNP
correction every 2 fs), with each MTS integrator. Prints a Markdown table; --only TEXT runs the settings
whose label contains TEXT.
ANI weights come from TORCHANI_DATA_DIR (the Makefile exports ../shared/models/torchani; without it TorchANI
downloads them).
"""

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault('TORCHANI_NO_WARN_EXTENSIONS', '1')

import numpy as np
import openmm
import openmm.app as app
import openmm.unit as unit

REPO = Path(__file__).resolve().parents[1]
TOLUENE_WATER = REPO.parent / 'shared' / 'data' / 'toluene-water'
sys.path.insert(0, str(REPO))

from openmm_nnp import NNPotential  # noqa: E402
from openmm_nnp.inputs import LoadedInput, createNNPSystem  # noqa: E402
from openmm_nnp.integrators import NNPMTSLangevinMiddleIntegrator  # noqa: E402
from openmm_nnp.run.reporting import degreesOfFreedom  # noqa: E402

TEMPERATURE = 300 * unit.kelvin
REGION = 'resname MBN'
# (label, NNP, toluene constraints, time step fs, MTS factor)
SETTINGS = [
    ('MM only, toluene X-H constrained', False, True, 2.0, None),
    ('MM only, toluene unconstrained', False, False, 1.0, None),
    ('NNP/MM, region unconstrained', True, False, 0.5, None),
    ('NNP/MM, region unconstrained', True, False, 1.0, None),
    ('NNP/MM, region X-H constrained', True, True, 2.0, None),
    ('NNP/MM, MTS: MM 1 fs, NNP every 2 fs (OpenMM MTSIntegrator)', True, False, 1.0, 2),
    ('NNP/MM, MTS: MM 1 fs, NNP every 2 fs (NNPMTSLangevinMiddleIntegrator)', True, False, 1.0, 2),
]


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    for name, kind, default, text in (('--nve-ps', float, 2.0, 'NVE length per start in ps'),
                                      ('--starts', int, 2, 'independent starts (velocity seeds) per setting'),
                                      ('--waters', int, 200, 'waters kept around the toluene'),
                                      ('--threads', int, 2, 'torch threads for the NNP')):
        parser.add_argument(name, type=kind, default=default, help=f'{text} (default {default:g})')
    parser.add_argument('--only', default='', help='run only the settings whose label contains this text')
    return parser.parse_args()


def cutDroplet(waters, folder):
    """(prmtop, inpcrd) of the toluene and its ``waters`` nearest waters, written by cpptraj into ``folder``."""
    script = (f'parm {TOLUENE_WATER / "toluene-explicit.prm7"}\ntrajin {TOLUENE_WATER / "toluene-explicit.rst7"}\n'
              f'closest {waters} :MBN noimage outprefix droplet\ntrajout droplet.rst7 restart\nrun\n')
    subprocess.run(['cpptraj'], input=script, text=True, cwd=folder, check=True, capture_output=True)
    return app.AmberPrmtopFile(str(folder / 'droplet.toluene-explicit.prm7')), \
        app.AmberInpcrdFile(str(folder / 'droplet.rst7'))


def buildSystem(prmtop, positions, nnp, constrained, mts):
    mm = prmtop.createSystem(nonbondedMethod=app.NoCutoff, constraints=app.HBonds if constrained else None,
                             rigidWater=True, flexibleConstraints=True, removeCMMotion=False)
    if not nnp:
        return mm
    if constrained:
        return NNPotential('ani2x', precision='double').createMixedSystem(prmtop.topology, mm, REGION,
                                                                         removeConstraints=False)
    system, _, _ = createNNPSystem(LoadedInput(prmtop.topology, mm, positions, None), REGION, 'ani2x', 'double',
                                   mts=mts)
    return system


def integrators(dt, mts, ours):
    """(Langevin for equilibration, NVE) integrators for time step ``dt`` fs (MTS: the inner step), and the fs
    one integrator step advances."""
    step = dt * unit.femtosecond
    if mts and ours:
        langevin = NNPMTSLangevinMiddleIntegrator(TEMPERATURE, 1 / unit.picosecond, step, mts)
        nve = NNPMTSLangevinMiddleIntegrator(TEMPERATURE, 0 / unit.picosecond, step, mts)
        for integrator in (langevin, nve):
            integrator.setConstraintTolerance(1e-10)
        return langevin, nve, dt  # step() counts inner steps
    elif mts:
        langevin = openmm.MTSLangevinIntegrator(TEMPERATURE, 1 / unit.picosecond, step * mts, [(1, 1), (0, mts)])
        nve = openmm.MTSIntegrator(step * mts, [(1, 1), (0, mts)])
    else:
        langevin = openmm.LangevinMiddleIntegrator(TEMPERATURE, 1 / unit.picosecond, step)
        nve = openmm.VerletIntegrator(step)
    for integrator in (langevin, nve):
        integrator.setConstraintTolerance(1e-10)
    return langevin, nve, dt * (mts or 1)


class SynchronousKineticEnergy:
    """Kinetic energy of NNPMTSLangevinMiddleIntegrator's velocities brought to the time of the positions, at the
    start of an outer step. It stores the velocities half an inner step behind, before the next kick
    dt (F_fast + N F_slow) / m; half that kick and the velocity constraints give r-RESPA's synchronous velocities
    (what velocity-Verlet MTSIntegrator stores there). Without this the leapfrog velocities' kinetic energy
    fluctuates by the impulse, and the fitted slope scatters more than the dynamics drift."""

    def __init__(self, system, dt, mts):
        self.scratch = openmm.Context(system, openmm.LangevinMiddleIntegrator(0, 0, dt),
                                      openmm.Platform.getPlatformByName('Reference'))
        masses = np.array([system.getParticleMass(i).value_in_unit(unit.dalton)
                           for i in range(system.getNumParticles())])
        self.halfKick = 0.5 * dt.value_in_unit(unit.picosecond) / masses[:, None]
        self.mts = mts

    def __call__(self, context):
        state = context.getState(getPositions=True, getVelocities=True)
        fast, slow = (context.getState(getForces=True, groups={group}).getForces(asNumpy=True)._value
                      for group in (0, 1))
        self.scratch.setPositions(state.getPositions())
        self.scratch.setVelocities(state.getVelocities(asNumpy=True)._value + self.halfKick * (fast + self.mts * slow))
        self.scratch.applyVelocityConstraints(1e-10)
        return self.scratch.getState(getEnergy=True).getKineticEnergy()


def drift(system, positions, dt, mts, ours, seed, nvePs):
    """Drift in kJ/mol/ns of one start."""
    reference = openmm.Platform.getPlatformByName('Reference')
    langevin, nve, outer = integrators(dt, mts, ours)  # outer: fs per integrator step
    langevin.setRandomNumberSeed(seed)
    context = openmm.Context(system, langevin, reference)
    context.setPositions(positions)
    context.applyConstraints(1e-10)
    context.setVelocitiesToTemperature(TEMPERATURE, seed)
    langevin.step(int(round(500 / outer)))
    state = context.getState(getPositions=True, getVelocities=True)
    del context
    context = openmm.Context(system, nve, reference)
    context.setPositions(state.getPositions())
    context.setVelocities(state.getVelocities())
    stride = max(1, int(round(10 / outer)))  # for ours a multiple of mts: samples at the start of outer steps
    kinetic = SynchronousKineticEnergy(system, dt * unit.femtosecond, mts) if mts and ours else None
    times, energies = [], []
    for k in range(int(round(nvePs * 1000 / outer / stride)) + 1):
        if k:
            nve.step(stride)
        e = context.getState(getEnergy=True)
        times.append(k * stride * outer * 1e-6)  # ns
        energies.append((e.getPotentialEnergy() + (kinetic(context) if kinetic else e.getKineticEnergy()))
                        .value_in_unit(unit.kilojoule_per_mole))
    if not np.all(np.isfinite(energies)):
        return float('nan')
    return float(np.polyfit(times, energies, 1)[0])


def main():
    args = parse_args()
    import torch
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as folder:
        prmtop, inpcrd = cutDroplet(args.waters, Path(folder))
    mm = buildSystem(prmtop, inpcrd.positions, False, True, None)
    context = openmm.Context(mm, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName('Reference'))
    context.setPositions(inpcrd.positions)
    openmm.LocalEnergyMinimizer.minimize(context, 10.0, 200)
    positions = context.getState(getPositions=True).getPositions()
    del context
    print(f'# {prmtop.topology.getNumAtoms()} atoms (toluene + {args.waters} TIP3P waters, no cutoff), Reference '
          f'platform, double precision, {args.nve_ps:g} ps NVE after 0.5 ps Langevin per start, {args.starts} '
          f'starts, {os.cpu_count()} CPUs, {time.strftime("%Y-%m-%d")}', flush=True)
    print('| setting | time step | dof | drift per start (kJ/mol/ns/dof) | mean \\|drift\\| (kJ/mol/ns/dof) |')
    print('| --- | --- | --- | --- | --- |', flush=True)
    start = time.perf_counter()
    for label, nnp, constrained, dt, mts in SETTINGS:
        if args.only not in label:
            continue
        ours = 'NNPMTSLangevinMiddleIntegrator' in label
        system = buildSystem(prmtop, positions, nnp, constrained, mts)
        dof = degreesOfFreedom(system)
        perDof = [drift(system, positions, dt, mts, ours, seed, args.nve_ps) / dof
                  for seed in range(1, args.starts + 1)]
        step = f'{dt:g} fs' + (f' (NNP {dt * mts:g} fs)' if mts else '')
        print(f'| {label} | {step} | {dof} | {", ".join(f"{d:+.4f}" for d in perDof)} | '
              f'{np.mean(np.abs(perDof)):.4f} |', flush=True)
    print(f'# wall time {time.perf_counter() - start:.0f} s')


if __name__ == '__main__':
    main()
