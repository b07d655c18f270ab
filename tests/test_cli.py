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


# Bad inputs: one line on stderr that names the problem and the fix, exit code 2.

def expectError(capsys, argv, *fragments):
    code, stdout, stderr = run(capsys, argv)
    assert code == 2, stderr
    command = argv[0]
    assert stderr.startswith(f'openmm-nnp {command}: error: '), stderr
    for fragment in fragments:
        assert fragment in stderr, stderr
    return stderr


def test_missing_input_file(tmp_path, capsys):
    expectError(capsys, ['run', str(tmp_path / 'x.prmtop'), GUEST[1], '-o', str(tmp_path / 'o')],
                'does not exist', 'x.prmtop')


def test_input_folder_without_manifest(tmp_path, capsys):
    expectError(capsys, ['run', str(tmp_path), '-o', str(tmp_path / 'o')], 'prepared.json')


def test_selection_matching_nothing(tmp_path, capsys):
    expectError(capsys, ['run', *GUEST, '--region', 'resname XYZ', '-o', str(tmp_path / 'o')] + FAST,
                "'resname XYZ' matches no atoms", 'residue')


def test_invalid_selection(tmp_path, capsys):
    expectError(capsys, ['run', *GUEST, '--region', 'resname B2 and and', '-o', str(tmp_path / 'o')] + FAST,
                'could not be evaluated')


def test_no_region(tmp_path, capsys):
    expectError(capsys, ['run', *GUEST, '-o', str(tmp_path / 'o')] + FAST, 'No NNP region', '--region')


def test_cut_bonds(tmp_path, capsys):
    # A TorchScript model file (no neutrality requirement) so that the cut bonds are what is wrong.
    import torch

    class Harmonic(torch.nn.Module):
        def forward(self, positions):
            return (positions ** 2).sum()

    torch.jit.save(torch.jit.script(Harmonic()), str(tmp_path / 'model.pt'))
    expectError(capsys, ['run', *GUEST, '--region', '0-9', '--model', str(tmp_path / 'model.pt'),
                         '-o', str(tmp_path / 'o')] + FAST, 'cuts', 'whole molecules')


def test_unknown_model(tmp_path, capsys):
    expectError(capsys, ['run', *GUEST, '--region', '0-29', '--model', 'ani9z', '-o', str(tmp_path / 'o')] + FAST,
                "ani9z", 'ani2x')


def test_element_the_model_cannot_handle(tmp_path, capsys):
    pytest.importorskip('pdbfixer')
    from test_prepare import BROMOMETHANE_SDF
    (tmp_path / 'bromomethane.sdf').write_text(BROMOMETHANE_SDF)
    assert cli.main(['prepare', '--ligand', str(tmp_path / 'bromomethane.sdf'), '-o', str(tmp_path / 'prep'),
                     '--charge-method', 'gas', '--padding', '0.5', '--ionic-strength', '0']) == 0
    capsys.readouterr()
    expectError(capsys, ['run', str(tmp_path / 'prep' / 'solvent'), '-o', str(tmp_path / 'o')] + FAST,
                'does not support the element(s) Br', 'supports C, Cl, F, H, N, O, S', 'Choose a region')
    # ANI-1x lacks Br too, and says which elements it has.
    expectError(capsys, ['run', str(tmp_path / 'prep' / 'solvent'), '--model', 'ani1x', '-o', str(tmp_path / 'o')]
                + FAST, 'Br', 'supports C, H, N, O')


def test_charged_ligand_with_neutral_only_model(tmp_path, capsys):
    pytest.importorskip('pdbfixer')
    from test_prepare import ACETATE_SDF
    (tmp_path / 'acetate.sdf').write_text(ACETATE_SDF)
    assert cli.main(['prepare', '--ligand', str(tmp_path / 'acetate.sdf'), '-o', str(tmp_path / 'prep'),
                     '--charge-method', 'gas', '--padding', '0.5', '--ionic-strength', '0']) == 0
    stdout = capsys.readouterr().out
    assert 'charged (-1)' in stdout  # prepare warns already
    expectError(capsys, ['run', str(tmp_path / 'prep' / 'solvent'), '-o', str(tmp_path / 'o')] + FAST,
                'net MM charge of -1.0000 e', 'neutral molecules only', 'model for charged')


def test_resume_without_a_run(tmp_path, capsys):
    expectError(capsys, ['run', '--resume', '-o', str(tmp_path / 'none')], 'no run to resume', 'without --resume')


def test_output_folder_already_used(tmp_path, capsys):
    out = tmp_path / 'o'
    assert cli.main(['run', *GUEST, '--region', '0-29', '-o', str(out), '--steps', '2', '--report-interval', '2',
                     '--no-plots'] + FAST) == 0
    capsys.readouterr()
    expectError(capsys, ['run', *GUEST, '--region', '0-29', '-o', str(out), '--steps', '2'] + FAST,
                'already holds a run', '--resume')


def test_bad_numbers(tmp_path, capsys):
    expectError(capsys, ['run', *GUEST, '--region', '0-29', '--timestep', '-1', '-o', str(tmp_path / 'o')] + FAST,
                '--timestep must be positive')
    expectError(capsys, ['run', *GUEST, '--region', '0-29', '--mts', '3', '--steps', '10', '-o', str(tmp_path / 'o')]
                + FAST, 'multiple of 3')
    expectError(capsys, ['run', *GUEST, '--region', '0-29', '--platform', 'Quantum', '-o', str(tmp_path / 'o')],
                "Unknown OpenMM platform 'Quantum'")


def test_mismatched_xml_and_pdb(tmp_path, capsys):
    import openmm
    (tmp_path / 'system.xml').write_text(openmm.XmlSerializer.serialize(openmm.System()))
    (tmp_path / 'one.pdb').write_text('HETATM    1  C1  LIG A   1       0.000   0.000   0.000  1.00  0.00           C\nEND\n')
    expectError(capsys, ['run', str(tmp_path / 'system.xml'), str(tmp_path / 'one.pdb'), '-o', str(tmp_path / 'o')],
                '0 particles', '1 atoms')
