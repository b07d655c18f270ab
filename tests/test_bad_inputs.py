"""Bad inputs through the command line and the API: one line that names the problem and the fix, exit code 2
(the API: an InputError or ValueError), and outputs left as they were."""

import errno
import json
import os
import re
import shutil
from pathlib import Path

import numpy as np
import openmm
import openmm.app as app
import pytest

from openmm_nnp import cli
from openmm_nnp.run import simulation
from openmm_nnp.errors import InputError, InstabilityError

CB7_B2 = Path(__import__('openmmtools').__file__).parent / 'data' / 'cb7-b2'
GUEST = [str(CB7_B2 / 'ligand.prmtop'), str(CB7_B2 / 'ligand.inpcrd')]  # the B2 guest in vacuum, 30 atoms
FAST = ['--platform', 'Reference', '--threads', '1', '--no-progress', '--minimize-iterations', '20', '--seed', '3']
QUIET = ['--no-plots', '--no-progress']
RUN = ['--region', 'resname B2', '--report-interval', '2', '--checkpoint-interval', '2'] + QUIET + FAST


def run(capsys, argv):
    code = cli.main(argv)
    out = capsys.readouterr()
    return code, out.out, out.err


def snapshot(path):
    """The bytes of a file, or of every file under a folder; None where nothing is."""
    path = Path(path)
    if path.is_file():
        return path.read_bytes()
    if path.is_dir():
        return {p.relative_to(path).as_posix(): p.read_bytes() for p in sorted(path.rglob('*')) if p.is_file()}
    return None


def expectError(capsys, argv, *fragments, untouched=None):
    """Exit code 2, one line 'openmm-nnp <command>: error: ...' holding ``fragments``, ``untouched`` unchanged."""
    before = snapshot(untouched) if untouched is not None else None
    code, stdout, stderr = run(capsys, argv)
    assert code == 2, stderr
    lines = stderr.rstrip('\n').split('\n')
    assert len(lines) == 1 and lines[0].startswith(f'openmm-nnp {argv[0]}: error: '), stderr
    for fragment in fragments:
        assert fragment in stderr, stderr
    if untouched is not None:
        assert snapshot(untouched) == before, f'{untouched} was modified'
    return stderr


def expectAPIError(call, errorType, *fragments):
    with pytest.raises(errorType) as raised:
        call()
    message = str(raised.value)
    assert '\n' not in message, message
    for fragment in fragments:
        assert fragment in message, message
    return message


def modelFile(folder, factor=1.0):
    """A TorchScript model file (no element or charge limits): sum of squared positions times ``factor``."""
    import torch

    class Model(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.factor = factor

        def forward(self, positions):
            return (positions ** 2).sum() * self.factor

    path = Path(folder) / f'model{factor}.pt'
    torch.jit.save(torch.jit.script(Model()), str(path))
    return str(path)


@pytest.fixture(scope='module')
def finishedRun(tmp_path_factory):
    """A finished 8-step run of the guest with checkpoints every 2 steps."""
    out = tmp_path_factory.mktemp('finished') / 'run'
    assert cli.main(['run', *GUEST, *RUN, '--steps', '8', '-o', str(out)]) == 0
    return out


@pytest.fixture
def runCopy(finishedRun, tmp_path):
    shutil.copytree(finishedRun, tmp_path / 'run')
    return tmp_path / 'run'


# Inputs and options -----------------------------------------------------------------------------------------

def test_missing_input_file(tmp_path, capsys):
    expectError(capsys, ['run', str(tmp_path / 'x.prmtop'), GUEST[1], '-o', str(tmp_path / 'o')],
                'does not exist', 'x.prmtop')


def test_input_folder_without_manifest(tmp_path, capsys):
    expectError(capsys, ['run', str(tmp_path), '-o', str(tmp_path / 'o')], 'prepared.json')


def test_damaged_prepared_manifest(tmp_path, capsys):
    (tmp_path / 'prepared.json').write_text('{"system": "system.xml", ')
    expectError(capsys, ['run', str(tmp_path), '-o', str(tmp_path / 'o')], 'prepared.json', 'damaged',
                untouched=tmp_path)


def test_mismatched_xml_and_pdb(tmp_path, capsys):
    (tmp_path / 'system.xml').write_text(openmm.XmlSerializer.serialize(openmm.System()))
    (tmp_path / 'one.pdb').write_text('HETATM    1  C1  LIG A   1       0.000   0.000   0.000  1.00  0.00           C\nEND\n')
    expectError(capsys, ['run', str(tmp_path / 'system.xml'), str(tmp_path / 'one.pdb'), '-o', str(tmp_path / 'o')],
                '0 particles', '1 atoms')


def test_bad_numbers(tmp_path, capsys):
    out = str(tmp_path / 'o')
    expectError(capsys, ['run', *GUEST, '--region', '0-29', '--timestep', '-1', '-o', out] + FAST,
                '--timestep must be positive')
    expectError(capsys, ['run', *GUEST, '--region', '0-29', '--mts', '3', '--steps', '10', '-o', out] + FAST,
                'multiple of 3')
    expectError(capsys, ['run', *GUEST, '--region', '0-29', '--platform', 'Quantum', '-o', out],
                "Unknown OpenMM platform 'Quantum'")
    # Reported as errors of the options given, not of the step counts they are turned into.
    expectError(capsys, ['run', *GUEST, '--region', '0-29', '--time', '-5', '-o', out], '--time must be positive')
    expectError(capsys, ['run', *GUEST, '--region', '0-29', '--equilibration', '-1', '-o', out],
                '--equilibration must be zero or positive')
    expectError(capsys, ['run', *GUEST, '--region', '0-29', '-o', out] + FAST + ['--threads', '-2'],
                '--threads must be a positive integer, not -2')
    expectError(capsys, ['endstate', *GUEST, '--region', '0-29', '-o', out, '--threads', '-2'],
                '--threads must be a positive integer, not -2')
    assert not (tmp_path / 'o').exists()


def test_bad_numbers_through_the_api(tmp_path):
    settings = simulation.RunSettings(inputs=GUEST, region='0-29', platform='Reference', threads=-2)
    expectAPIError(lambda: simulation.runSimulation(settings, tmp_path / 'o', plots=False, progress=False),
                   InputError, '--threads must be a positive integer')
    assert not (tmp_path / 'o').exists()


# Regions ----------------------------------------------------------------------------------------------------

def test_selection_matching_nothing(tmp_path, capsys):
    expectError(capsys, ['run', *GUEST, '--region', 'resname XYZ', '-o', str(tmp_path / 'o')] + FAST,
                "'resname XYZ' matches no atoms", 'residue')


def test_selection_syntax_error_says_where(tmp_path, capsys):
    stderr = expectError(capsys, ['run', *GUEST, '--region', 'resname B2 and and', '-o', str(tmp_path / 'o')] + FAST,
                         'could not be evaluated', "syntax error at character 15", "after 'resname B2 and'")
    assert len(stderr) < 400, stderr  # not the parser's grammar


def test_no_region(tmp_path, capsys):
    expectError(capsys, ['run', *GUEST, '-o', str(tmp_path / 'o')] + FAST, 'No NNP region', '--region')


def test_cut_bonds(tmp_path, capsys):
    # A TorchScript model (no neutrality requirement) so that the cut bonds are what is wrong.
    expectError(capsys, ['run', *GUEST, '--region', '0-9', '--model', modelFile(tmp_path), '-o', str(tmp_path / 'o')]
                + FAST, 'cuts', 'whole molecules')


def guestWithoutConect(folder):
    """The guest's System XML and a PDB without CONECT records (so its Topology has no bonds)."""
    prmtop, inpcrd = app.AmberPrmtopFile(GUEST[0]), app.AmberInpcrdFile(GUEST[1])
    (folder / 'system.xml').write_text(openmm.XmlSerializer.serialize(prmtop.createSystem()))
    with open(folder / 'guest.pdb', 'w') as f:
        app.PDBFile.writeFile(prmtop.topology, inpcrd.positions, f)
    lines = (folder / 'guest.pdb').read_text().splitlines()
    (folder / 'guest.pdb').write_text('\n'.join(line for line in lines if not line.startswith('CONECT')) + '\n')
    return folder / 'system.xml', folder / 'guest.pdb'


def test_cut_bonds_found_from_the_system_bonds(tmp_path, capsys):
    xml, pdb = guestWithoutConect(tmp_path)
    expectError(capsys, ['run', str(xml), str(pdb), '--region', '0-9', '--model', modelFile(tmp_path),
                         '-o', str(tmp_path / 'o')] + FAST, 'cuts', 'whole molecules')
    from openmm_nnp import NNPotential
    topology = app.PDBFile(str(pdb)).topology
    assert topology.getNumBonds() == 0
    system = openmm.XmlSerializer.deserialize(xml.read_text())
    potential = NNPotential(modelFile(tmp_path))
    expectAPIError(lambda: potential.createMixedSystem(topology, system, list(range(10))), ValueError, 'cuts')
    # Without a System to tell, a region that splits a residue without bonds is refused.
    from openmm_nnp.region import cutBonds
    expectAPIError(lambda: cutBonds(topology, list(range(10))), ValueError, 'bonds are unknown', 'whole residues')
    assert cutBonds(topology, list(range(30))) == []
    potential.createMixedSystem(topology, system, list(range(30)))  # the whole guest is fine


def test_unknown_model(tmp_path, capsys):
    expectError(capsys, ['run', *GUEST, '--region', '0-29', '--model', 'ani9z', '-o', str(tmp_path / 'o')] + FAST,
                "ani9z", 'ani2x')


def test_model_returning_nan(tmp_path, capsys):
    expectError(capsys, ['run', *GUEST, '--region', '0-29', '--model', modelFile(tmp_path, float('nan')),
                         '-o', str(tmp_path / 'o')] + FAST, 'OpenMM: ', 'non-finite energy')


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


# Output folders ---------------------------------------------------------------------------------------------

def test_resume_without_a_run(tmp_path, capsys):
    expectError(capsys, ['run', '--resume', '-o', str(tmp_path / 'none')], 'no run to resume', 'without --resume')


def test_output_folder_already_used(runCopy, capsys):
    expectError(capsys, ['run', *GUEST, '--region', '0-29', '-o', str(runCopy), '--steps', '2'] + FAST,
                'already holds a run', '--resume', untouched=runCopy)


def test_output_is_a_file(tmp_path, capsys):
    (tmp_path / 'notes.txt').write_text('mine\n')
    expectError(capsys, ['run', *GUEST, *RUN, '-o', str(tmp_path / 'notes.txt')], 'is a file, not a folder',
                '--output', untouched=tmp_path)
    settings = simulation.RunSettings(inputs=GUEST, region='0-29', platform='Reference')
    expectAPIError(lambda: simulation.runSimulation(settings, tmp_path / 'notes.txt'), InputError, 'is a file')
    assert (tmp_path / 'notes.txt').read_text() == 'mine\n'


@pytest.mark.parametrize('code, fix', [(errno.ENOSPC, 'free space'), (errno.EACCES, 'permissions')])
def test_os_error_while_running(tmp_path, capsys, monkeypatch, code, fix):
    """A full disk or a folder that became read-only: one line, and the run continues with --resume."""
    out = tmp_path / 'run'
    write = simulation.atomicWrite

    def failing(path, data):
        if Path(path).name == simulation.CHECKPOINT and (out / simulation.PREVIOUS_CHECKPOINT).exists():
            raise OSError(code, 'simulated', str(path))
        write(path, data)

    monkeypatch.setattr(simulation, 'atomicWrite', failing)
    expectError(capsys, ['run', *GUEST, *RUN, '--steps', '8', '-o', str(out)], 'simulated', fix)
    monkeypatch.setattr(simulation, 'atomicWrite', write)
    code, stdout, stderr = run(capsys, ['run', '--resume', '-o', str(out)] + QUIET)
    assert code == 0, stderr
    assert list(np.genfromtxt(out / 'energies.csv', delimiter=',', names=True)['step']) == [2, 4, 6, 8]


def test_read_only_run_folder(runCopy, capsys):
    paths = [runCopy, *runCopy.iterdir()]
    for path in paths:
        path.chmod(0o555 if path.is_dir() else 0o444)
    try:
        if os.access(runCopy, os.W_OK):
            pytest.skip('permissions do not apply here (root with CAP_DAC_OVERRIDE)')
        expectError(capsys, ['run', '--resume', '--steps', '10', '-o', str(runCopy)] + QUIET, 'Permission denied',
                    'permissions', untouched=runCopy)
    finally:
        for path in paths:
            path.chmod(0o755 if path.is_dir() else 0o644)


@pytest.mark.parametrize('name', [simulation.RUN_FILE, simulation.CHECKPOINT_INFO])
def test_damaged_run_files(runCopy, capsys, name):
    (runCopy / name).write_text((runCopy / name).read_text()[:40])
    expectError(capsys, ['run', '--resume', '--steps', '10', '-o', str(runCopy)] + QUIET, name, 'damaged',
                untouched=runCopy)
    expectAPIError(lambda: simulation.Simulation(runCopy, log=lambda *a: None).resume(), InputError, name)


def test_damaged_checkpoints(runCopy, capsys):
    """checkpoint.chk and the one before it truncated: --resume refuses and changes nothing."""
    for name in (simulation.CHECKPOINT, simulation.PREVIOUS_CHECKPOINT):
        data = (runCopy / name).read_bytes()
        (runCopy / name).write_bytes(data[:len(data) // 2])
    expectError(capsys, ['run', '--resume', '--steps', '10', '-o', str(runCopy)] + QUIET, 'truncated or damaged',
                'checkpoint.chk', untouched=runCopy)
    before = snapshot(runCopy)
    expectAPIError(lambda: simulation.runSimulation(None, runCopy, resume=True), InputError, 'truncated or damaged')
    assert snapshot(runCopy) == before


def test_resume_with_fewer_steps_than_done(runCopy, capsys):
    expectError(capsys, ['run', '--resume', '--steps', '4', '-o', str(runCopy)] + QUIET,
                '--steps 4 is fewer production steps than this run has already done (8', untouched=runCopy)
    before = snapshot(runCopy)
    expectAPIError(lambda: simulation.runSimulation(simulation.RunSettings(steps=6), runCopy, resume=True), InputError,
                   'already done (8')
    assert snapshot(runCopy) == before
    info = json.loads((runCopy / simulation.RUN_FILE).read_text())
    expectError(capsys, ['run', '--resume', '--time', str(4 * info['settings']['timestep'] / 1000), '-o',
                         str(runCopy)] + QUIET, 'already done (8', untouched=runCopy)


# Dynamics ---------------------------------------------------------------------------------------------------

def test_blow_up_stops_with_outputs_at_the_last_good_checkpoint(tmp_path, capsys):
    """2.5 fs with unconstrained hydrogens blows up within a few reports; the run stops, says where and what,
    and cuts its outputs back to the last checkpoint, which --resume could continue from."""
    out = tmp_path / 'run'
    stderr = expectError(capsys, ['run', *GUEST, '--region', '0-29', '--timestep', '2.5', '--steps', '200',
                                  '--report-interval', '5', '--checkpoint-interval', '10', '-o', str(out)]
                         + QUIET + FAST, 'blew up at step', 'temperature', 'smaller --timestep')
    step = int(re.search(r'blew up at step (\d+)', stderr).group(1))
    checkpoint = json.loads((out / simulation.CHECKPOINT_INFO).read_text())
    assert checkpoint['step'] < step and f'last good checkpoint, at step {checkpoint["step"]}' in stderr
    rows = np.atleast_1d(np.genfromtxt(out / 'energies.csv', delimiter=',', names=True))
    assert list(rows['step']) == list(range(5, checkpoint['step'] + 1, 5))
    assert np.all(rows['temperature_K'] < 1500)
    import mdtraj
    assert len(mdtraj.load(str(out / 'trajectory.dcd'), top=str(out / 'topology.pdb'))) == len(rows)
    assert not (out / 'summary.json').exists()
    # The API raises the same error.
    settings = simulation.RunSettings(inputs=GUEST, region='0-29', platform='Reference', timestep=20.0, steps=40,
                                    reportInterval=10, minimizeIterations=5, seed=3)
    expectAPIError(lambda: simulation.runSimulation(settings, tmp_path / 'api', plots=False, progress=False,
                                                  log=lambda *a: None), InstabilityError, 'blew up', '--timestep')


# Every Context names its platform ---------------------------------------------------------------------------

@pytest.fixture
def contextsMustNamePlatform(monkeypatch):
    """openmm.Context refuses to be created without a Platform (OpenMM's own pick may be OpenCL)."""
    import openmm.app.modeller

    class Context(openmm.Context):
        def __init__(self, system, integrator, *rest):
            assert rest, 'a Context created without naming its platform'
            super().__init__(system, integrator, *rest)

    monkeypatch.setattr(openmm, 'Context', Context)
    monkeypatch.setattr(openmm.app.modeller, 'Context', Context)


def test_contexts_name_their_platform(tmp_path, capsys, contextsMustNamePlatform):
    pytest.importorskip('pdbfixer')
    from test_prepare import writeTripeptide
    from openmm_nnp.prepare import fixProtein
    topology, positions, notes = fixProtein(writeTripeptide(tmp_path / 'tripeptide.pdb'))  # adds MET CE, hydrogens
    assert any('missing heavy atoms' in note for note in notes)
    code, stdout, stderr = run(capsys, ['run', *GUEST, *RUN, '--steps', '2', '-o', str(tmp_path / 'run')])
    assert code == 0, stderr
