"""openmm-nnp run / endstate end to end on tiny inputs, and the command line's errors for bad inputs."""

import json
from pathlib import Path

import numpy as np
import pytest

from openmm_nnp import cli

CB7_B2 = Path(__import__('openmmtools').__file__).parent / 'data' / 'cb7-b2'
GUEST = [str(CB7_B2 / 'ligand.prmtop'), str(CB7_B2 / 'ligand.inpcrd')]  # the B2 guest in vacuum, 30 atoms
FAST = ['--platform', 'Reference', '--threads', '1', '--no-progress', '--minimize-iterations', '20', '--seed', '3']


def run(capsys, argv):
    code = cli.main(argv)
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture(scope='module')
def solvated(tmp_path_factory):
    """Ethanol in a small water box from `openmm-nnp prepare` (Gasteiger charges: fast)."""
    pytest.importorskip('pdbfixer')
    from test_prepare import ETHANOL_SDF
    folder = tmp_path_factory.mktemp('solvated')
    (folder / 'ethanol.sdf').write_text(ETHANOL_SDF)
    assert cli.main(['prepare', '--ligand', str(folder / 'ethanol.sdf'), '-o', str(folder / 'prep'),
                     '--charge-method', 'gas', '--padding', '0.5', '--ionic-strength', '0.2']) == 0
    return folder / 'prep' / 'solvent'


def test_run_prepared_folder_end_to_end(solvated, tmp_path, capsys):
    out = tmp_path / 'run'
    code, stdout, stderr = run(capsys, ['run', str(solvated), '-o', str(out), '--steps', '8', '--equilibration-steps',
                                        '4', '--report-interval', '4', '--checkpoint-interval', '4',
                                        '--trajectory-format', 'xtc'] + FAST + ['--platform', 'CPU'])
    assert code == 0, stderr
    for name in ['trajectory.xtc', 'energies.csv', 'final.pdb', 'summary.json', 'energies.png', 'ensemble_std.png',
                 'checkpoint.chk', 'system.xml', 'run.json']:
        assert (out / name).is_file(), name
    summary = json.loads((out / 'summary.json').read_text())
    assert summary['region'] == "'resname LIG'" and summary['region_size'] == 9  # region from prepared.json
    assert summary['region_size'] == 9 and summary['steps_this_session'] == 12
    assert summary['ns_per_day'] > 0
    assert 'Summary' in stdout and 'ns/day' in stdout
    rows = np.genfromtxt(out / 'energies.csv', delimiter=',', names=True)
    assert list(rows['step']) == [8, 12]  # production only: after 4 equilibration steps
    assert np.all(np.isfinite(rows['volume_nm3'])) and np.all(rows['ensemble_std_kJ_mol'] > 0)
    import mdtraj
    trajectory = mdtraj.load(str(out / 'trajectory.xtc'), top=str(out / 'topology.pdb'))
    assert trajectory.n_frames == 2


def test_run_amber_files_with_indices(tmp_path, capsys):
    out = tmp_path / 'run'
    code, stdout, stderr = run(capsys, ['run', *GUEST, '--region', '0-29', '-o', str(out), '--steps', '4',
                                        '--report-interval', '2', '--no-plots'] + FAST)
    assert code == 0, stderr
    rows = np.genfromtxt(out / 'energies.csv', delimiter=',', names=True)
    assert len(rows) == 2 and np.all(np.isfinite(rows['potential_kJ_mol']))
    assert 'progress' not in stderr


def test_endstate_command(tmp_path, capsys):
    out = tmp_path / 'endstate'
    code, stdout, stderr = run(capsys, ['endstate', *GUEST, '--region', 'resname B2', '-o', str(out),
                                        '--lambdas', '2', '--samples', '4', '--steps-per-sample', '2',
                                        '--equilibration-steps', '2', '--platform', 'Reference', '--threads', '1'])
    assert code == 0, stderr
    result = json.loads((out / 'endstate.json').read_text())
    assert np.isfinite(result['delta_g_kJ_mol']) and result['estimator'] == 'MBAR'
    assert 'ΔG(MM -> NNP/MM)' in stdout
    assert (out / 'equilibrium.json').is_file()


TOLUENE_WATER = Path(__file__).resolve().parents[2] / 'shared' / 'data' / 'toluene-water'


@pytest.mark.skipif(not TOLUENE_WATER.is_dir(), reason=f'shared test data {TOLUENE_WATER} not found')
def test_readme_command_on_toluene_water(tmp_path, capsys):
    """The README's `run` command (shortened): the prmtop names every toluene atom C or H, which a PDB round
    trip would merge; the run and its --resume keep all 6,495 atoms."""
    out = tmp_path / 'run'
    code, stdout, stderr = run(capsys, ['run', str(TOLUENE_WATER / 'toluene-explicit.prm7'),
                                        str(TOLUENE_WATER / 'toluene-explicit.rst7'), '--region', 'resname MBN',
                                        '--steps', '20', '--minimize-iterations', '10', '--report-interval', '10',
                                        '--checkpoint-interval', '10', '--no-plots', '--no-progress', '-o', str(out)])
    assert code == 0, stderr
    code, stdout, stderr = run(capsys, ['run', '--resume', '--steps', '30', '--no-plots', '--no-progress',
                                        '-o', str(out)])
    assert code == 0, stderr
    import mdtraj
    trajectory = mdtraj.load(str(out / 'trajectory.dcd'), top=str(out / 'topology.pdb'))
    assert trajectory.n_frames == 3 and trajectory.n_atoms == 6495
    assert len(np.genfromtxt(out / 'energies.csv', delimiter=',', names=True)) == 3
