#!/usr/bin/env python
"""NNP/MM of a charged ligand in water: acetate (-1 e) described by SO3LR, GAFF2 + TIP3P for the rest.

    python examples/charged_ligand_so3lr.py --steps 1000

ANI was trained on neutral molecules only, so it refuses a charged region; SO3LR takes the total charge as an
input. The script prepares acetate in water with `openmm-nnp prepare` (GAFF2/AM1-BCC, PME, a neutralizing Na+),
takes the region's net charge from its MM partial charges (openmm_nnp.region.regionCharge), builds the SO3LR
module for the region (weights from the so3krates-torch wheel), replaces the region's internal MM interactions
by it (mechanical embedding: region-water Coulomb and Lennard-Jones stay MM), minimizes and runs Langevin
dynamics, printing energies and ns/day.
"""

import argparse
import tempfile
import time
from pathlib import Path

import openmm
import openmm.app as app
import openmm.unit as unit
import torch

ACETATE_SDF = '''acetate
     openmm-nnp example

  7  6  0  0  0  0  0  0  0  0999 V2000
   -0.6404   -0.0155   -0.0154 C   0  0  0  0  0  0  0  0  0  0  0  0
    0.8777    0.0148    0.0199 C   0  0  0  0  0  0  0  0  0  0  0  0
    1.3796    1.1515    0.2461 O   0  0  0  0  0  0  0  0  0  0  0  0
    1.4438   -1.0954   -0.1805 O   0  0  0  0  0  0  0  0  0  0  0  0
   -1.0061    0.6510   -0.8023 H   0  0  0  0  0  0  0  0  0  0  0  0
   -1.0401    0.3178    0.9470 H   0  0  0  0  0  0  0  0  0  0  0  0
   -1.0146   -1.0242   -0.2148 H   0  0  0  0  0  0  0  0  0  0  0  0
  1  2  1  0
  2  3  2  0
  2  4  1  0
  1  5  1  0
  1  6  1  0
  1  7  1  0
M  CHG  1   4  -1
M  END
$$$$
'''


def parseArguments():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--steps', type=int, default=1000, help='MD steps of 1 fs (default 1000)')
    parser.add_argument('--platform', default='CPU', help='OpenMM platform (default CPU)')
    parser.add_argument('--padding', type=float, default=1.0, help='solvent padding in nm (default 1.0)')
    parser.add_argument('--work-dir', default=None, help='where the prepared system goes (default: a temporary '
                        'folder)')
    return parser.parse_args()


def main():
    args = parseArguments()
    from openmm_nnp import cli, embedding, region as _region
    from openmm_nnp.models import so3lr
    from openmm_nnp.nnp_swig import NNPForce

    work = Path(args.work_dir or tempfile.mkdtemp(prefix='acetate-'))
    work.mkdir(parents=True, exist_ok=True)
    (work / 'acetate.sdf').write_text(ACETATE_SDF)
    code = cli.main(['prepare', '--ligand', str(work / 'acetate.sdf'), '-o', str(work / 'prepared'),
                     '--padding', str(args.padding), '--ionic-strength', '0'])
    if code != 0:
        raise SystemExit(code)
    leg = work / 'prepared' / 'solvent'
    system = openmm.XmlSerializer.deserialize((leg / 'system.xml').read_text())
    pdb = app.PDBFile(str(leg / 'system.pdb'))

    region = _region.selectRegion(pdb.topology, 'resname LIG')
    charge = _region.regionCharge(system, region)
    atoms = list(pdb.topology.atoms())
    print(f'Region: {len(region)} atoms of the ligand, net charge {charge:+d} e (from the MM partial charges)')
    module = so3lr.createSO3LRModel([atoms[i].element.atomic_number for i in region], charge=charge,
                                    dtype=torch.float32)
    mixed = embedding.embedRegion(system, region)
    force = NNPForce(module, region)
    force.setBonds(_region.regionBonds(pdb.topology, region))
    force.setUsesPeriodicBoundaryConditions(True)
    mixed.addForce(force)

    integrator = openmm.LangevinMiddleIntegrator(300 * unit.kelvin, 1 / unit.picosecond, 0.001 * unit.picoseconds)
    simulation = app.Simulation(pdb.topology, mixed, integrator, openmm.Platform.getPlatformByName(args.platform))
    simulation.context.setPositions(pdb.positions)
    simulation.minimizeEnergy(maxIterations=200)
    simulation.context.setVelocitiesToTemperature(300 * unit.kelvin)
    start = time.perf_counter()
    for done in range(0, args.steps, 100):
        simulation.step(min(100, args.steps - done))
        state = simulation.context.getState(getEnergy=True)
        print(f'step {done + 100:6d}  potential {state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole):14.2f} '
              f'kJ/mol  kinetic {state.getKineticEnergy().value_in_unit(unit.kilojoule_per_mole):10.2f} kJ/mol')
    elapsed = time.perf_counter() - start
    print(f'{args.steps} steps in {elapsed:.1f} s: {args.steps * 0.001 / 1000 / (elapsed / 86400):.3f} ns/day')


if __name__ == '__main__':
    main()
