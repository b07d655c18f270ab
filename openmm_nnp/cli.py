"""The ``openmm-nnp`` command line: prepare, run and endstate.

    openmm-nnp prepare --protein receptor.pdb --ligand ligand.sdf -o prepared
    openmm-nnp run prepared/complex --time 10 -o run1          (region from prepare: resname LIG)
    openmm-nnp run system.prmtop system.rst7 --region 'resname MBN' --steps 5000 -o run2
    openmm-nnp run -o run2 --resume
    openmm-nnp endstate prepared/solvent -o correction

Each subcommand is a thin layer over openmm_nnp.prepare, openmm_nnp.run and openmm_nnp.endstate.
Bad inputs end with one line 'openmm-nnp <command>: error: <problem and fix>' and exit code 2 (--debug shows
the traceback).
"""

import argparse
import errno
import inspect
import sys

from openmm_nnp.endstate import endstateCorrection
from openmm_nnp.errors import InputError
from openmm_nnp.run.settings import RunSettings

RUN = RunSettings.FIELDS  # the run's defaults; the end-state command's are endstateCorrection's own
ENDSTATE = {name: parameter.default for name, parameter in inspect.signature(endstateCorrection).parameters.items()}

_MODELS_HELP = ("NNP: 'ani2x' (default; H C N O F S Cl), 'ani1x' or 'ani1ccx' (H C N O), or a TorchScript file "
                '(positions in nm -> energy in kJ/mol). ANI models are for neutral molecules only.')


def _addModelOptions(parser):
    parser.add_argument('--region', help="NNP region: an MDTraj selection ('resname LIG') or atom indices "
                        "('0-14', '0,3,5'). Default: the region written by `prepare`.")
    parser.add_argument('--model', default=RUN['model'], help=_MODELS_HELP)
    parser.add_argument('--precision', default=RUN['precision'], choices=['single', 'double'],
                        help='floating point precision of the NNP (default single)')
    parser.add_argument('--platform', default=RUN['platform'], help='OpenMM platform: CPU, Reference, OpenCL or CUDA (where NNPForce has kernels for it; default %(default)s)')
    parser.add_argument('--threads', type=int, help='CPU threads for OpenMM and the NNP (default: all)')
    parser.add_argument('--cutoff', type=float, default=RUN['nonbondedCutoff'],
                        help='nonbonded cutoff in nm for Amber inputs (default %(default)s; PME when periodic)')


def buildParser():
    parser = argparse.ArgumentParser(prog='openmm-nnp', description='Hybrid NNP/MM molecular dynamics with OpenMM.')
    parser.add_argument('--debug', action='store_true', help='show tracebacks for errors')
    commands = parser.add_subparsers(dest='command', metavar='{prepare,run,endstate}')
    commands.required = True

    p = commands.add_parser('prepare', help='build a solvated protein-ligand complex and/or ligand-in-water system',
                            description='Fix the protein (PDBFixer), parameterize the ligand (GAFF2 + AM1-BCC with '
                            'AmberTools), build with amber14 + TIP3P, solvate, and write system.xml, system.pdb, '
                            'region.txt and prepared.json for each leg (OUTPUT/complex, OUTPUT/solvent).')
    p.add_argument('--ligand', required=True, help='ligand SDF or MOL2 with 3D coordinates and all hydrogens')
    p.add_argument('--protein', help='protein PDB/mmCIF (without it only the ligand-in-water leg is built)')
    p.add_argument('-o', '--output', required=True, help='output folder')
    p.add_argument('--ph', type=float, default=7.0, help='pH for protein hydrogens (default 7.0)')
    p.add_argument('--padding', type=float, default=1.0,
                   help='solvent padding in nm: box edge = solute diameter + padding (default 1.0)')
    p.add_argument('--ionic-strength', type=float, default=0.15, help='NaCl in mol/L, plus neutralizing ions '
                   '(default 0.15)')
    p.add_argument('--box-shape', default='cube', choices=['cube', 'dodecahedron', 'octahedron'])
    p.add_argument('--ligand-charge', type=int, help='net charge of the ligand (default: from its formal charges)')
    p.add_argument('--ligand-resname', default='LIG', help='residue name of the ligand (default LIG)')
    p.add_argument('--forcefield', nargs='+', default=['amber14-all.xml', 'amber14/tip3p.xml'],
                   help='OpenMM force field files for protein, water and ions (default amber14-all.xml '
                   'amber14/tip3p.xml)')
    p.add_argument('--hydrogen-mass', type=float, help='repartition hydrogen masses to this value in amu')
    p.add_argument('--no-solvent-leg', action='store_true', help='with --protein, skip the ligand-in-water leg')
    p.add_argument('--charge-method', default='bcc', choices=['bcc', 'gas'],
                   help="antechamber charges: 'bcc' = AM1-BCC (default), 'gas' = Gasteiger (fast, for testing)")

    r = commands.add_parser('run', help='minimize, equilibrate and run NNP/MM Langevin dynamics',
                            description='Load a system, put the NNP region under the NNP, minimize, equilibrate and '
                            'run Langevin dynamics with a DCD/XTC trajectory, a CSV energy log, checkpoints, plots '
                            'and a summary. Inputs: a folder from `prepare`, a System XML + PDB, or an Amber '
                            'prmtop + inpcrd.')
    r.add_argument('inputs', nargs='*', help='prepared folder, or system.xml + structure.pdb, or prmtop + inpcrd')
    r.add_argument('-o', '--output', default='nnp-run', help='output folder (default nnp-run)')
    _addModelOptions(r)
    length = r.add_mutually_exclusive_group()
    length.add_argument('--time', type=float, help='production length in ps')
    length.add_argument('--steps', type=int, help=f"production length in steps (default {RUN['steps']})")
    equilibration = r.add_mutually_exclusive_group()
    equilibration.add_argument('--equilibration', type=float, help='equilibration in ps before production (default 0)')
    equilibration.add_argument('--equilibration-steps', type=int, help='equilibration in steps')
    r.add_argument('--timestep', type=float, default=RUN['timestep'], help='time step in fs (default %(default)s: the NNP region is '
                   'unconstrained)')
    r.add_argument('--temperature', type=float, default=RUN['temperature'], help='K (default %(default)s)')
    r.add_argument('--friction', type=float, default=RUN['friction'], help='Langevin friction in 1/ps (default %(default)s)')
    r.add_argument('--pressure', type=float, help='bar: add a Monte Carlo barostat (default: NVT)')
    r.add_argument('--no-minimize', action='store_true', help='skip energy minimization')
    r.add_argument('--minimize-iterations', type=int, default=RUN['minimizeIterations'], help='(default %(default)s)')
    r.add_argument('--report-interval', type=int, default=RUN['reportInterval'],
                   help='steps between trajectory frames and energy log lines (default %(default)s)')
    r.add_argument('--checkpoint-interval', type=int, default=RUN['checkpointInterval'], help='steps between checkpoints (default %(default)s)')
    r.add_argument('--trajectory-format', default=RUN['trajectoryFormat'], choices=['dcd', 'xtc'])
    r.add_argument('--mts', type=int, metavar='N', help='multiple time steps: MM every step, the NNP correction '
                   'U_NNP - U_MM(region) every N steps (NNPMTSLangevinMiddleIntegrator)')
    r.add_argument('--seed', type=int, help='random seed for velocities and the integrator (default: random)')
    r.add_argument('--resume', action='store_true', help='continue the run in --output from its last checkpoint '
                   '(--steps/--time then set a new production length)')
    r.add_argument('--no-plots', action='store_true', help='do not write energies.png / ensemble_std.png')
    r.add_argument('--no-progress', action='store_true', help='no progress bar')

    e = commands.add_parser('endstate', help='free-energy correction from MM to NNP/MM for the region',
                            description='Compute the free energy of switching the region from MM (lambda = 0) to '
                            'NNP/MM (lambda = 1): equilibrium lambda windows with MBAR/TI, or nonequilibrium '
                            'switching with BAR. Results, plots and resumable task files go to --output.')
    e.add_argument('inputs', nargs='+', help='prepared folder, or system.xml + structure.pdb, or prmtop + inpcrd')
    e.add_argument('-o', '--output', default='nnp-endstate', help='output folder (default nnp-endstate); a rerun '
                   'with the same settings resumes')
    _addModelOptions(e)
    e.add_argument('--method', default=ENDSTATE['method'], choices=['equilibrium', 'nonequilibrium'])
    e.add_argument('--lambdas', type=int, default=ENDSTATE['lambdas'], help='equilibrium: number of lambda windows (default %(default)s)')
    e.add_argument('--samples', type=int, default=ENDSTATE['samples'], help='equilibrium: samples per window (default %(default)s)')
    e.add_argument('--steps-per-sample', type=int, default=ENDSTATE['stepsPerSample'], help='equilibrium: steps between samples (default %(default)s)')
    e.add_argument('--switches', type=int, default=ENDSTATE['switches'], help='nonequilibrium: switches per direction (default %(default)s)')
    e.add_argument('--switching-steps', type=int, default=ENDSTATE['switchingSteps'], help='nonequilibrium: steps per switch (default %(default)s)')
    e.add_argument('--equilibration-steps', type=int, default=ENDSTATE['equilibrationSteps'], help='steps before sampling (default %(default)s)')
    e.add_argument('--timestep', type=float, default=ENDSTATE['timestep'], help='fs (default %(default)s)')
    e.add_argument('--temperature', type=float, default=ENDSTATE['temperature'], help='K (default %(default)s)')
    e.add_argument('--seed', type=int, default=ENDSTATE['seed'])
    e.add_argument('--no-plots', action='store_true')
    return parser


def commandPrepare(args):
    from openmm_nnp.prepare import prepare
    legs = prepare(args.ligand, args.output, protein=args.protein, solventLeg=not args.no_solvent_leg, pH=args.ph,
                   padding=args.padding, ionicStrength=args.ionic_strength, ligandCharge=args.ligand_charge,
                   residueName=args.ligand_resname, forcefields=tuple(args.forcefield), boxShape=args.box_shape,
                   hydrogenMass=args.hydrogen_mass, chargeMethod=args.charge_method)
    return 0 if legs else 1


def commandRun(args):
    from openmm_nnp.run import simulate
    options = dict(plots=not args.no_plots, progress=not args.no_progress)
    if args.resume:
        simulate(args.inputs, args.output, resume=True, steps=args.steps, time=args.time, **options)
        return 0
    simulate(args.inputs, args.output, time=args.time, equilibration=args.equilibration, region=args.region,
             model=args.model, precision=args.precision, platform=args.platform, temperature=args.temperature,
             friction=args.friction, timestep=args.timestep, steps=args.steps,
             equilibrationSteps=args.equilibration_steps, minimize=not args.no_minimize,
             minimizeIterations=args.minimize_iterations, reportInterval=args.report_interval,
             checkpointInterval=args.checkpoint_interval, trajectoryFormat=args.trajectory_format, mts=args.mts,
             pressure=args.pressure, seed=args.seed, threads=args.threads, nonbondedCutoff=args.cutoff, **options)
    return 0


def commandEndstate(args):
    endstateCorrection(args.inputs, args.output, region=args.region, model=args.model, precision=args.precision,
                       platform=args.platform, threads=args.threads, nonbondedCutoff=args.cutoff,
                       method=args.method, lambdas=args.lambdas, samples=args.samples,
                       stepsPerSample=args.steps_per_sample, switches=args.switches,
                       switchingSteps=args.switching_steps, equilibrationSteps=args.equilibration_steps,
                       timestep=args.timestep, temperature=args.temperature, seed=args.seed, plots=not args.no_plots)
    return 0


def main(argv=None):
    parser = buildParser()
    args = parser.parse_args(argv)
    handlers = {'prepare': commandPrepare, 'run': commandRun, 'endstate': commandEndstate}
    import openmm
    try:
        return handlers[args.command](args)
    except (InputError, ValueError, OSError, openmm.OpenMMException) as e:
        # ValueError: the library's validation (region, elements, charge) explains the problem and the fix.
        if args.debug:
            raise
        print(f'openmm-nnp {args.command}: error: {_oneLine(e)}', file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f'\nopenmm-nnp {args.command}: interrupted. A run continues from its last checkpoint with --resume.',
              file=sys.stderr)
        return 130


_OS_ERROR_FIXES = {
    errno.ENOSPC: 'The disk is full: free space, then continue a run with --resume.',
    errno.EACCES: 'Check the permissions, or choose another --output folder.',
    errno.EROFS: 'The file system is read-only: choose another --output folder.',
    errno.EEXIST: 'Choose another --output folder.',
    errno.ENOTDIR: 'A path names a file where a folder is needed: choose another --output folder.',
}


def _oneLine(error):
    """The error as one line; OpenMM's and the operating system's errors get what they concern and a fix."""
    import openmm
    text = ' '.join(str(error).split())
    if isinstance(error, openmm.OpenMMException):
        return f'OpenMM: {text}'
    if isinstance(error, OSError) and not isinstance(error, FileNotFoundError):
        fix = _OS_ERROR_FIXES.get(error.errno, 'Check the path and the disk.')
        return f'{text} {fix}'
    return text


if __name__ == '__main__':
    sys.exit(main())
