"""MM → ANI-2x/MM end-state correction of the CB7:B2 guest in the host and in water.

    python examples/endstate_correction_cb7_b2.py [--output cb7_b2_correction] [--mm-dg -30.5 0.4] [--dask]

The guest (30 atoms) is the NNP region. Two environments: the host–guest complex in water
(openmmtools HostGuestExplicit, 4,491 atoms) and the guest in water (the same box with the host removed,
run NPT so the water fills the host's volume). In each, MBAR over λ windows and nonequilibrium BAR
give ΔG_corr = G(NNP/MM) − G(MM); the binding correction is ΔG_corr(complex) − ΔG_corr(water), added to an MM
binding free energy when one is given (--mm-dg value error, kcal/mol, from any tool).

The default lengths are reduced so that both environments finish on 2 CPU cores in under 30 minutes; their
errors are large. See docs/free_energy.md for production settings on a GPU. Rerunning with the same
--output resumes from the finished tasks. ANI weights come from TORCHANI_DATA_DIR (the Makefile exports
../shared/models/torchani) or are downloaded.
"""

import argparse
import json
import os
import time

import openmm
import openmm.unit as unit

from openmm_nnp import NNPotential
from openmm_nnp.freeenergy import (TaskRunner, corrected_binding_free_energy, extract_subsystem,
                                   run_equilibrium, run_nonequilibrium)
from openmm_nnp.freeenergy.rbfe import as_estimate

TEMPERATURE = 300 * unit.kelvin


def systems():
    from openmmtools.testsystems import HostGuestExplicit
    # Unconstrained solute bonds: the NNP region keeps its X-H bond terms at λ = 0.
    complex_ = HostGuestExplicit(constraints=None, rigid_water=True)
    guest = [a.index for a in complex_.topology.atoms() if a.residue.name == 'B2']
    solvent_atoms = [a.index for a in complex_.topology.atoms() if a.residue.name != 'CUC']
    mm, topology, positions = extract_subsystem(complex_.system, complex_.topology, complex_.positions,
                                                solvent_atoms)
    mm.addForce(openmm.MonteCarloBarostat(1 * unit.bar, TEMPERATURE, 25))
    # Removing the host renumbers the atoms after it: select the guest again in the solvent topology.
    solvent_guest = [a.index for a in topology.atoms() if a.residue.name == 'B2']
    return {'complex': (complex_.system, complex_.topology, complex_.positions, guest),
            'solvent': (mm, topology, positions, solvent_guest)}


def equilibrate_mm(mm, positions, steps):
    """MM equilibration (fills the volume the host left in the solvent box)."""
    integrator = openmm.LangevinMiddleIntegrator(TEMPERATURE, 1 / unit.picosecond, 1 * unit.femtosecond)
    context = openmm.Context(mm, integrator, openmm.Platform.getPlatformByName('CPU'))
    context.setPositions(positions)
    openmm.LocalEnergyMinimizer.minimize(context, 10.0, 500)
    context.setVelocitiesToTemperature(TEMPERATURE, 1)
    integrator.step(steps)
    state = context.getState(getPositions=True)
    return state.getPositions(), state.getPeriodicBoxVectors()


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--output', default='output/cb7_b2_correction')
    parser.add_argument('--mm-dg', type=float, nargs=2, metavar=('VALUE', 'ERROR'),
                        help='MM binding free energy and its error in kcal/mol, to be corrected')
    parser.add_argument('--windows', type=int, default=3)
    parser.add_argument('--samples', type=int, default=30)
    parser.add_argument('--switches', type=int, default=10)
    parser.add_argument('--switching-steps', type=int, default=20)
    parser.add_argument('--dask', action='store_true', help='run tasks on a local Dask cluster')
    parser.add_argument('--scheduler', help='address of a Dask scheduler (implies --dask)')
    args = parser.parse_args()
    runner = TaskRunner('dask', scheduler_address=args.scheduler, n_workers=2) if (args.dask or args.scheduler) \
        else TaskRunner('serial')
    potential = NNPotential('ani2x')
    start = time.time()
    corrections = {}
    for name, (mm, topology, positions, guest) in systems().items():
        t0 = time.time()
        box = None
        if name == 'solvent':
            cache = os.path.join(args.output, 'solvent-equilibrated.json')
            if not os.path.exists(cache):
                os.makedirs(args.output, exist_ok=True)
                positions, box = equilibrate_mm(mm, positions, 3000)
                with open(cache, 'w') as f:
                    json.dump({'positions': [list(p) for p in positions.value_in_unit(unit.nanometer)],
                               'box': [list(v) for v in box.value_in_unit(unit.nanometer)]}, f)
            with open(cache) as f:
                saved = json.load(f)
            positions = [openmm.Vec3(*p) for p in saved['positions']] * unit.nanometer
            box = [openmm.Vec3(*v) for v in saved['box']] * unit.nanometer
        mixed = potential.createMixedSystem(topology, mm, guest, interpolate=True)
        common = dict(temperature=TEMPERATURE, timestep=1 * unit.femtosecond, collision_rate=5 / unit.picosecond,
                      box_vectors=box, runner=runner, minimize=False)
        eq = run_equilibrium(mixed, positions, args.windows, topology=topology, n_samples=args.samples,
                             steps_per_sample=10, n_equilibration_steps=100, n_snapshots=args.switches,
                             output_dir=os.path.join(args.output, name, 'equilibrium'), **common)
        neq = run_nonequilibrium(mixed, equilibrium=eq, n_switches=args.switches,
                                 switching_steps=args.switching_steps,
                                 output_dir=os.path.join(args.output, name, 'nonequilibrium'), **common)
        corrections[name] = {'mbar': eq.mbar, 'ti': eq.ti, 'bar': neq.bar}
        print(f'\n{name}: ΔG_corr(MM → NNP/MM), {time.time() - t0:.0f} s')
        for key, value in corrections[name].items():
            print(f'  {key:4s} {value}')
        print(f'  (includes the arbitrary NNP−MM energy zero, offset {eq.offset_kT:.1f} kT; only complex − solvent '
              'is meaningful)')

    results = {}
    print('\nBinding correction ΔG_corr(complex) − ΔG_corr(solvent):')
    for method in ('mbar', 'bar'):
        zero = (0.0, 0.0)
        correction = corrected_binding_free_energy(zero, corrections['complex'][method],
                                                   corrections['solvent'][method])
        results[method] = {'correction': correction.to_dict()}
        print(f'  {method.upper():4s} {correction}')
        if args.mm_dg is not None:
            corrected = corrected_binding_free_energy(tuple(args.mm_dg), corrections['complex'][method],
                                                      corrections['solvent'][method], units='kcal/mol')
            results[method]['mm'] = as_estimate(tuple(args.mm_dg), 'kcal/mol').to_dict()
            results[method]['corrected'] = corrected.to_dict()
            print(f'       ΔG_bind: MM {args.mm_dg[0]:.2f} ± {args.mm_dg[1]:.2f} kcal/mol → NNP/MM {corrected}')
    results['corrections'] = {env: {k: v.to_dict() for k, v in c.items()} for env, c in corrections.items()}
    results['wall_time_s'] = time.time() - start
    with open(os.path.join(args.output, 'binding_correction.json'), 'w') as f:
        json.dump(results, f, indent=2)
    print(f'\nWrote {args.output}/binding_correction.json and the plots under {args.output}/*/ '
          f'({time.time() - start:.0f} s)')


if __name__ == '__main__':
    main()
