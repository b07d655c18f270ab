"""From input files to the NNP/MM System: what `openmm-nnp run` and `openmm-nnp endstate` read and simulate.

``loadInput`` reads a folder written by `openmm-nnp prepare`, a System XML with a PDB/PDBx file, or Amber
files; ``createNNPSystem`` puts the region under the NNP: plainly, laid out for multiple time steps, or
interpolating between MM and NNP/MM for the end-state correction.
"""

import os
from pathlib import Path

import openmm
import openmm.app as app
import openmm.unit as unit

from openmm_nnp.errors import InputError
from openmm_nnp.files import readJSON
from openmm_nnp.region import Region

_PRMTOP = ('.prmtop', '.parm7', '.prm7', '.top')
_INPCRD = ('.inpcrd', '.rst7', '.rst', '.crd', '.ncrst')
_STRUCTURE = ('.pdb', '.cif', '.pdbx')


class LoadedInput:
    """Topology, MM System, positions and box from input files, with a default region if the inputs name one."""

    def __init__(self, topology, system, positions, boxVectors, region=None, description=''):
        self.topology = topology
        self.system = system
        self.positions = positions
        self.boxVectors = boxVectors
        self.region = region
        self.description = description


def _requireFile(path, what):
    path = Path(path)
    if not path.exists():
        raise InputError(f"The {what} '{path}' does not exist. Check the path (relative paths are taken from "
                         f"{os.getcwd()}).")
    if path.is_dir():
        raise InputError(f"The {what} '{path}' is a folder, not a file.")
    return path

def loadInput(paths, nonbondedCutoff=1.0):
    """Load what ``openmm-nnp run`` accepts.

    - a folder written by ``openmm-nnp prepare`` (or its prepared.json): system.xml + system.pdb + region;
    - a System XML and a PDB/PDBx file (any order);
    - an Amber prmtop and inpcrd/rst7 (any order): the MM System is created with PME (periodic inputs) or
      no cutoff, ``nonbondedCutoff`` nm, HBonds constraints and rigid water.
    """
    paths = [Path(p) for p in ([paths] if isinstance(paths, (str, os.PathLike)) else paths)]
    if not paths:
        raise InputError('No input given: pass a folder from `openmm-nnp prepare`, a system XML and a PDB, or an '
                         'Amber prmtop and inpcrd.')
    if len(paths) == 1:
        path = paths[0]
        if not path.exists():
            raise InputError(f"The input '{path}' does not exist. Pass a folder written by `openmm-nnp prepare`, a "
                             'system XML and a PDB, or an Amber prmtop and inpcrd.')
        manifest = path / 'prepared.json' if path.is_dir() else path
        if manifest.name != 'prepared.json' or not manifest.is_file():
            raise InputError(f"'{path}' is neither a folder written by `openmm-nnp prepare` (with prepared.json) nor "
                             'a pair of files. Pass a system XML and a PDB, or an Amber prmtop and inpcrd.')
        data = readJSON(manifest, 'Run `openmm-nnp prepare` again')
        folder = manifest.parent
        loaded = _loadXMLAndStructure(folder / data['system'], folder / data['pdb'])
        loaded.region = data.get('region')
        loaded.description = f'{folder} (prepared {data.get("leg", "system")})'
        return loaded
    if len(paths) != 2:
        raise InputError(f'Expected one folder or two files as input, got {len(paths)}: '
                         f'{", ".join(map(str, paths))}.')
    suffixes = [p.suffix.lower() for p in paths]
    if '.xml' in suffixes:
        xml = paths[suffixes.index('.xml')]
        other = paths[1 - suffixes.index('.xml')]
        if other.suffix.lower() not in _STRUCTURE:
            raise InputError(f"With the System XML '{xml}', pass a PDB or PDBx/mmCIF file for the topology and "
                             f"positions, not '{other}'.")
        return _loadXMLAndStructure(xml, other)
    prmtop = [p for p in paths if p.suffix.lower() in _PRMTOP]
    inpcrd = [p for p in paths if p.suffix.lower() in _INPCRD]
    if len(prmtop) == 1 and len(inpcrd) == 1:
        return _loadAmber(prmtop[0], inpcrd[0], nonbondedCutoff)
    raise InputError(f'Cannot tell what {paths[0]} and {paths[1]} are. Pass a System XML (.xml) with a PDB (.pdb/.cif), '
                     f'or an Amber topology ({"/".join(_PRMTOP)}) with coordinates ({"/".join(_INPCRD)}).')


def _readStructure(path):
    path = _requireFile(path, 'structure file')
    try:
        if path.suffix.lower() in ('.cif', '.pdbx'):
            return app.PDBxFile(str(path))
        return app.PDBFile(str(path))
    except Exception as e:
        raise InputError(f"Could not read the structure file '{path}': {e}") from None


def _loadXMLAndStructure(xmlPath, structurePath):
    xmlPath = _requireFile(xmlPath, 'System XML file')
    structure = _readStructure(structurePath)
    try:
        system = openmm.XmlSerializer.deserialize(xmlPath.read_text())
    except Exception as e:
        raise InputError(f"'{xmlPath}' is not a serialized OpenMM System ({e}). Write one with "
                         'openmm.XmlSerializer.serialize(system).') from None
    if not isinstance(system, openmm.System):
        raise InputError(f"'{xmlPath}' holds a serialized {type(system).__name__}, not a System.")
    if system.getNumParticles() != structure.topology.getNumAtoms():
        raise InputError(f"The System in '{xmlPath}' has {system.getNumParticles()} particles but '{structurePath}' "
                         f'has {structure.topology.getNumAtoms()} atoms; pass the structure the System was built for.')
    box = structure.topology.getPeriodicBoxVectors()
    if box is None and system.usesPeriodicBoundaryConditions():
        box = system.getDefaultPeriodicBoxVectors()
    return LoadedInput(structure.topology, system, structure.getPositions(), box,
                       description=f'{xmlPath} + {structurePath}')


def _loadAmber(prmtopPath, inpcrdPath, nonbondedCutoff):
    prmtopPath = _requireFile(prmtopPath, 'Amber topology file')
    inpcrdPath = _requireFile(inpcrdPath, 'Amber coordinate file')
    try:
        prmtop = app.AmberPrmtopFile(str(prmtopPath))
        inpcrd = app.AmberInpcrdFile(str(inpcrdPath))
    except Exception as e:
        raise InputError(f"Could not read the Amber files '{prmtopPath}' and '{inpcrdPath}': {e}") from None
    if len(inpcrd.positions) != prmtop.topology.getNumAtoms():
        raise InputError(f"'{inpcrdPath}' has {len(inpcrd.positions)} atoms but '{prmtopPath}' has "
                         f'{prmtop.topology.getNumAtoms()}; pass matching files.')
    periodic = inpcrd.boxVectors is not None
    method = app.PME if periodic else app.NoCutoff
    options = {'nonbondedCutoff': nonbondedCutoff * unit.nanometer} if periodic else {}
    # flexibleConstraints keeps bond terms for constrained bonds: the region's MM terms stay complete when its
    # constraints are removed (end-state protocol at lambda = 0, MTS layout).
    system = prmtop.createSystem(nonbondedMethod=method, constraints=app.HBonds, rigidWater=True,
                                 flexibleConstraints=True, **options)
    if periodic:
        system.setDefaultPeriodicBoxVectors(*inpcrd.boxVectors)
        prmtop.topology.setPeriodicBoxVectors(inpcrd.boxVectors)
    return LoadedInput(prmtop.topology, system, inpcrd.positions, inpcrd.boxVectors,
                       description=f'{prmtopPath} + {inpcrdPath}')

# The NNP/MM System ------------------------------------------------------------------------------------------

def findNNPForces(system):
    from openmm_nnp.nnp_swig import NNPForce
    return [f for f in system.getForces() if NNPForce.isinstance(f)]


def createNNPSystem(loaded, region=None, model='ani2x', precision='single', mts=None, threads=None,
                    interpolate=False):
    """The NNP/MM System for ``loaded`` (a LoadedInput): (System, the region's particle indices, NNPotential).

    region : a Region, command-line text ('resname LIG', '0-14,20'), indices, or None for the input's region.
    mts : an integer N > 1 lays out the forces for NNPMTSLangevinMiddleIntegrator (NNPotential.createMTSSystem).
    interpolate : the System interpolates between MM (lambda = 0) and NNP/MM (lambda = 1), for the end-state
        correction (NNPotential.createMixedSystem(interpolate=True)).
    threads : CPU threads of the NNP.
    A System that already holds an NNPForce is used as it is (its region is the force's atoms, the potential
    None), unless mts or interpolate ask to build one.
    """
    from openmm_nnp import NNPotential
    existing = findNNPForces(loaded.system)
    if existing:
        if mts:
            raise InputError('The input System already contains an NNPForce, so --mts cannot lay out the force '
                             'groups; pass the MM System instead (openmm-nnp adds the NNP itself).')
        if interpolate:
            raise InputError('The input System already contains an NNPForce; pass the MM System: the end-state '
                             'protocol builds the interpolating NNP/MM System itself.')
        system = openmm.XmlSerializer.clone(loaded.system)
        return system, [int(i) for i in existing[0].getAtoms()], None
    if region is None:
        region = loaded.region
    if region is None or (isinstance(region, str) and not region.strip()):
        raise InputError("No NNP region given: pass --region with an MDTraj selection (e.g. 'resname LIG') or atom "
                         "indices (e.g. '0-14' or '0,1,2').")
    try:
        potential = NNPotential(model, precision=precision)
    except (ValueError, TypeError) as e:
        raise InputError(f'{e} Built-in models: ani2x (default), ani1x, ani1ccx; or a TorchScript file.') from None
    indices = Region.parse(region).select(loaded.topology)
    if mts:
        system = potential.createMTSSystem(loaded.topology, loaded.system, indices)
    else:
        system = potential.createMixedSystem(loaded.topology, loaded.system, indices, interpolate=interpolate)
    if threads:
        for force in findNNPForces(system):
            force.setProperty('numThreads', str(threads))
    return system, indices, potential


def regionAtomicNumbers(topology, indices):
    atoms = list(topology.atoms())
    return [atoms[i].element.atomic_number for i in indices]
