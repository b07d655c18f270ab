"""openmm_nnp.run and openmm_nnp.inputs: --resume continues bit-for-bit, the MTS force-group layout, region parsing."""

import json
from pathlib import Path

import numpy as np
import openmm
import openmm.app as app
import openmm.unit as unit
import pytest

from openmm_nnp import cli
from openmm_nnp.errors import InputError
from openmm_nnp.inputs import LoadedInput, createNNPSystem, loadInput
from openmm_nnp.region import Region

CB7_B2 = Path(__import__('openmmtools').__file__).parent / 'data' / 'cb7-b2'
GUEST = [str(CB7_B2 / 'ligand.prmtop'), str(CB7_B2 / 'ligand.inpcrd')]


def _run(argv):
    assert cli.main(argv) == 0


def _compare(a, b, exactFrames=None):
    """Identical positions (final frame and every trajectory frame) and identical energy log columns.

    exactFrames: compare only that many first frames exactly, the rest to 1e-5 nm / 1e-4 relative."""
    import mdtraj
    ta = mdtraj.load(str(next(a.glob('trajectory.*'))), top=str(a / 'topology.pdb'))
    tb = mdtraj.load(str(next(b.glob('trajectory.*'))), top=str(b / 'topology.pdb'))
    assert ta.n_frames == tb.n_frames > 0
    ea = np.genfromtxt(a / 'energies.csv', delimiter=',', names=True)
    eb = np.genfromtxt(b / 'energies.csv', delimiter=',', names=True)
    columns = ['step', 'potential_kJ_mol', 'kinetic_kJ_mol', 'temperature_K', 'ensemble_std_kJ_mol']
    if exactFrames is None:
        assert (a / 'final.pdb').read_text().split('\n')[1:] == (b / 'final.pdb').read_text().split('\n')[1:]
        assert np.array_equal(ta.xyz, tb.xyz)
        for column in columns:
            assert np.array_equal(ea[column], eb[column]), column
    else:
        assert np.array_equal(ta.xyz[:exactFrames], tb.xyz[:exactFrames])
        assert np.allclose(ta.xyz, tb.xyz, rtol=0, atol=1e-5)
        for column in columns:
            assert np.array_equal(ea[column][:exactFrames], eb[column][:exactFrames]), column
            assert np.allclose(ea[column], eb[column], rtol=1e-4, atol=1e-4), column


@pytest.mark.parametrize('mts', [None, 2])
def test_resume_is_bit_for_bit_on_reference(tmp_path, mts):
    common = GUEST + ['--region', 'resname B2', '--platform', 'Reference', '--threads', '1', '--seed', '11',
                      '--report-interval', '2', '--checkpoint-interval', '4', '--no-plots', '--no-progress',
                      '--minimize-iterations', '10', '--equilibration-steps', '2']
    if mts:
        common += ['--mts', str(mts)]
    _run(['run', *common, '--steps', '8', '-o', str(tmp_path / 'straight')])
    _run(['run', *common, '--steps', '4', '-o', str(tmp_path / 'split')])
    _run(['run', '--resume', '--steps', '8', '--no-plots', '--no-progress', '-o', str(tmp_path / 'split')])
    _compare(tmp_path / 'straight', tmp_path / 'split')


def test_resume_with_mts_refuses_an_integrator_without_the_mts_scheme(tmp_path, capsys):
    """With --mts, an integrator.xml that holds another integrator (e.g. the CompoundIntegrator an older openmm-nnp
    wrote, which would step without the slow impulse) is refused, not silently used."""
    output = tmp_path / 'run'
    _run(['run', *GUEST, '--region', 'resname B2', '--platform', 'Reference', '--threads', '1', '--seed', '3',
          '--report-interval', '2', '--checkpoint-interval', '2', '--no-plots', '--no-progress',
          '--minimize-iterations', '5', '--equilibration-steps', '0', '--mts', '2', '--steps', '2', '-o', str(output)])
    compound = openmm.CompoundIntegrator()
    compound.addIntegrator(openmm.LangevinMiddleIntegrator(300, 1, 0.001))
    (output / 'integrator.xml').write_text(openmm.XmlSerializer.serialize(compound))
    assert cli.main(['run', '--resume', '--steps', '4', '--no-plots', '--no-progress', '-o', str(output)]) == 2
    assert 'holds a CompoundIntegrator, not the NNPMTSLangevinMiddleIntegrator' in capsys.readouterr().err


def test_resume_after_a_crash_discards_output_past_the_checkpoint(tmp_path):
    common = GUEST + ['--region', 'resname B2', '--platform', 'Reference', '--threads', '1', '--seed', '5',
                      '--report-interval', '2', '--checkpoint-interval', '4', '--no-plots', '--no-progress',
                      '--minimize-iterations', '10']
    _run(['run', *common, '--steps', '8', '-o', str(tmp_path / 'straight')])
    _run(['run', *common, '--steps', '4', '-o', str(tmp_path / 'crashed')])
    # Simulate a run that went on writing after its last checkpoint and was then killed.
    crashed = tmp_path / 'crashed'
    with open(crashed / 'energies.csv', 'a') as f:
        f.write('6,0.006,1,2,3,4,nan,5,6\n')
    with open(crashed / 'trajectory.dcd', 'ab') as f:
        f.write(b'\0' * 400)
    _run(['run', '--resume', '--steps', '8', '--no-plots', '--no-progress', '-o', str(crashed)])
    _compare(tmp_path / 'straight', crashed)
    summary = json.loads((crashed / 'summary.json').read_text())
    assert summary['resumed_from_step'] == 4 and summary['steps_this_session'] == 4


def test_truncated_checkpoint_falls_back_to_the_previous_one(tmp_path, capsys):
    """A checkpoint.chk that does not match the size and checksum in checkpoint.json is not loaded: the run
    continues from the checkpoint before it, bit for bit the run that never stopped."""
    common = GUEST + ['--region', 'resname B2', '--platform', 'Reference', '--threads', '1', '--seed', '7',
                      '--report-interval', '2', '--checkpoint-interval', '2', '--no-plots', '--no-progress',
                      '--minimize-iterations', '10']
    _run(['run', *common, '--steps', '8', '-o', str(tmp_path / 'straight')])
    _run(['run', *common, '--steps', '4', '-o', str(tmp_path / 'split')])
    checkpoint = tmp_path / 'split' / 'checkpoint.chk'
    checkpoint.write_bytes(checkpoint.read_bytes()[:-100])
    capsys.readouterr()
    _run(['run', '--resume', '--steps', '8', '--no-plots', '--no-progress', '-o', str(tmp_path / 'split')])
    assert 'resuming from the previous checkpoint, at step 2' in capsys.readouterr().out
    _compare(tmp_path / 'straight', tmp_path / 'split')
    summary = json.loads((tmp_path / 'split' / 'summary.json').read_text())
    assert summary['resumed_from_step'] == 2


def test_resume_on_cpu_with_pme(tmp_path):
    """CPU platform, periodic water box with PME, one thread.

    OpenMM's CPU platform does not promise deterministic forces: two straight runs from the same inputs
    usually agree bit for bit, but not always (seen here: the last float32 bit differs already in the
    first frame, on a quiet machine; with two threads such differences are common). So --resume on CPU
    continues the same trajectory to rounding (1e-5 nm, 1e-4 relative in the log), not bit for bit; the
    Reference platform is bit for bit (test above)."""
    pytest.importorskip('pdbfixer')
    from test_prepare import ETHANOL_SDF
    (tmp_path / 'ethanol.sdf').write_text(ETHANOL_SDF)
    _run(['prepare', '--ligand', str(tmp_path / 'ethanol.sdf'), '-o', str(tmp_path / 'prep'), '--charge-method', 'gas',
          '--padding', '0.5', '--ionic-strength', '0'])
    common = [str(tmp_path / 'prep' / 'solvent'), '--platform', 'CPU', '--threads', '1', '--seed', '9',
              '--report-interval', '3', '--checkpoint-interval', '3', '--no-plots', '--no-progress',
              '--minimize-iterations', '10']
    _run(['run', *common, '--steps', '9', '-o', str(tmp_path / 'straight')])
    _run(['run', *common, '--steps', '3', '-o', str(tmp_path / 'split')])
    _run(['run', '--resume', '--steps', '9', '--no-plots', '--no-progress', '-o', str(tmp_path / 'split')])
    _compare(tmp_path / 'straight', tmp_path / 'split', exactFrames=0)


def test_mts_layout_splits_mm_and_nnp_correction():
    """Group 0 = complete MM System, group 1 = NNP - MM(region); together the plain NNP/MM System."""
    loaded = loadInput(GUEST)
    plain, indices, _ = createNNPSystem(loaded, 'resname B2', 'ani2x', 'double')
    mts, indicesMTS, _ = createNNPSystem(loaded, 'resname B2', 'ani2x', 'double', mts=2)
    assert indices == indicesMTS == list(range(30))
    nnpOnly = openmm.System()
    for i in range(loaded.system.getNumParticles()):
        nnpOnly.addParticle(loaded.system.getParticleMass(i))
    for force in plain.getForces():
        if force.getName() == 'NNPForce':
            nnpOnly.addForce(openmm.XmlSerializer.clone(force))

    def energy(system, groups=-1):
        context = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName('Reference'))
        context.setPositions(loaded.positions)
        state = context.getState(getEnergy=True, getForces=True, groups=groups)
        return (state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole),
                state.getForces(asNumpy=True).value_in_unit(unit.kilojoule_per_mole / unit.nanometer))

    total, forces = energy(plain)
    totalMTS, forcesMTS = energy(mts)
    fast, _ = energy(mts, {0})
    slow, _ = energy(mts, {1})
    mm, _ = energy(loaded.system)
    nnp, _ = energy(nnpOnly)
    assert totalMTS == pytest.approx(total, abs=1e-6)
    assert np.abs(forces - forcesMTS).max() < 1e-6
    assert fast == pytest.approx(mm, abs=1e-6)  # the whole MM force field, region included
    # The MM region energy of the guest in vacuum is all of mm.
    assert slow == pytest.approx(nnp - mm, abs=1e-6)


def parseRegion(text):
    region = Region.parse(text)
    return region.selection if region.selection is not None else region.indices


def test_parse_region():
    assert parseRegion('resname LIG') == 'resname LIG'
    assert parseRegion('0-3, 7') == [0, 1, 2, 3, 7]
    assert parseRegion('5 6') == [5, 6]
    assert parseRegion('index 0 to 4') == 'index 0 to 4'
    with pytest.raises(InputError, match='empty'):
        parseRegion('4-2')


def test_region_is_selected_once_and_describes_itself(monkeypatch):
    loaded = loadInput(GUEST)
    region = Region.parse('resname B2')
    assert region.select(loaded.topology) == list(range(30))
    import mdtraj
    monkeypatch.setattr(mdtraj.Topology, 'from_openmm', lambda *args: pytest.fail('the selection ran again'))
    assert region.select(loaded.topology) == list(range(30))
    assert region.describe() == "'resname B2'"
    assert Region.parse('0-29').describe() == 'atoms 0..29'
    assert Region.parse('3, 1').describe() == 'atom list'
    assert Region.of({2, 0, 1}).select(loaded.topology) == [0, 1, 2]


def test_nnp_system_is_used_as_is():
    loaded = loadInput(GUEST)
    mixed, indices, _ = createNNPSystem(loaded, '0-29', 'ani2x')
    again, regionAgain, potential = createNNPSystem(
        LoadedInput(loaded.topology, mixed, loaded.positions, None), None)
    assert regionAgain == indices and potential is None
    assert sum(f.getName() == 'NNPForce' for f in again.getForces()) == 1
