"""Run NNP/MM molecular dynamics from files: load, embed the NNP region, minimize, equilibrate, produce.

``runSimulation`` is what ``openmm-nnp run`` calls. An output folder holds everything a run needs to continue:

    run.json          settings (checked on --resume), the region, the model
    system.xml        the NNP/MM System that is simulated (the NNP model is embedded in it)
    integrator.xml    the integrator
    topology.pickle   the input's Topology, pickled (lossless: a PDB merges atoms whose names repeat in a residue)
    topology.pdb      topology and starting positions, for viewers and MDTraj (never read back)
    checkpoint.chk    OpenMM checkpoint (positions, velocities, box, integrator and RNG state), written atomically;
                      the one before it is kept as checkpoint.previous.chk
    checkpoint.json   step, size and SHA-256 of the checkpoint (and of the previous one), and the sizes of the
                      output files at that moment
    trajectory.dcd|xtc, energies.csv, final.pdb, summary.json, energies.png, ensemble_std.png

``--resume`` loads system.xml, integrator.xml and the checkpoint, cuts the trajectory and energy log back
to what they held at the checkpoint, and continues; on the Reference platform the result is bit-for-bit the
run that never stopped. A checkpoint whose size or checksum differs from checkpoint.json is not used: the
run resumes from the previous checkpoint, or, if that one is damaged too, --resume refuses.

A run that blows up (non-finite energies, or a temperature far above the target at a report or checkpoint)
stops with an InstabilityError; its outputs are cut back to the last good checkpoint.

Multiple time steps (``mts=N``): the full MM force field (including the region's own MM terms) is force
group 0, integrated with the inner step; the NNP correction U_NNP(region) - U_MM(region) is force group 1,
evaluated once per outer step of N inner steps by MTSLangevinIntegrator.
"""

import base64
import hashlib
import json
import math
import os
import pickle
import random
import sys
import time
from pathlib import Path

import numpy as np
import openmm
import openmm.app as app
import openmm.unit as unit

from openmm_nnp.errors import InputError, InstabilityError

RUN_FILE = 'run.json'
TOPOLOGY = 'topology.pickle'
CHECKPOINT = 'checkpoint.chk'
PREVIOUS_CHECKPOINT = 'checkpoint.previous.chk'
CHECKPOINT_INFO = 'checkpoint.json'
ENERGY_LOG = 'energies.csv'
MTS_MM_PARAMETER = 'nnp_mts_mm'
MTS_CORRECTION_PARAMETER = 'nnp_mts_correction'
_PRMTOP = ('.prmtop', '.parm7', '.prm7', '.top')
_INPCRD = ('.inpcrd', '.rst7', '.rst', '.crd', '.ncrst')
_STRUCTURE = ('.pdb', '.cif', '.pdbx')


# Inputs -----------------------------------------------------------------------------------------------------

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


def readJSON(path, fix):
    """The content of a JSON file; a damaged one raises an InputError that names it and says ``fix``."""
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise InputError(f"'{path}' is damaged (not valid JSON: {e}). {fix}.") from None


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


def createNNPSystem(loaded, region, model='ani2x', precision='single', mts=None, threads=None):
    """The NNP/MM System for ``loaded`` (a LoadedInput) and the region's particle indices.

    With ``mts`` (an integer N > 1) the forces are laid out for MTSLangevinIntegrator: group 0 is the
    complete MM force field, group 1 the NNP correction U_NNP(region) - U_MM(region).
    A System that already holds an NNPForce is used as it is (its region is the force's atoms).
    """
    from openmm_nnp import NNPotential, embedding, region as _region
    existing = findNNPForces(loaded.system)
    if existing:
        if mts:
            raise InputError('The input System already contains an NNPForce, so --mts cannot lay out the force '
                             'groups; pass the MM System instead (openmm-nnp adds the NNP itself).')
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
    indices = _region.selectRegion(loaded.topology, parseRegion(region))
    system = potential.createMixedSystem(loaded.topology, loaded.system, indices, forceGroup=1 if mts else 0)
    if mts:
        for force in system.getForces():
            if not _isNNPForce(force):
                force.setForceGroup(0)
        # +U_MM(region) in the inner group and -U_MM(region) in the outer one: the embedding's (1 - lambda)
        # copies of the region's MM terms with lambda fixed at 0 and at 2.
        for name, default, group in ((MTS_MM_PARAMETER, 0.0, 0), (MTS_CORRECTION_PARAMETER, 2.0, 1)):
            copies = embedding.embedRegion(loaded.system, indices, True, name, default)
            for force in copies.getForces():
                if force.getName().startswith('NNPInterpolation'):
                    clone = openmm.XmlSerializer.clone(force)
                    clone.setForceGroup(group)
                    clone.setName(f'{force.getName()}{"MM" if group == 0 else "Correction"}')
                    system.addForce(clone)
    if threads:
        for force in findNNPForces(system):
            force.setProperty('numThreads', str(threads))
    return system, indices, potential


def _isNNPForce(force):
    from openmm_nnp.nnp_swig import NNPForce
    return NNPForce.isinstance(force)


def parseRegion(region):
    """'resname LIG' -> the string (MDTraj selection); '0-14,20' or '0 1 2' -> indices; a list stays a list."""
    if not isinstance(region, str):
        return region
    text = region.strip()
    tokens = text.replace(',', ' ').split()
    if tokens and all(_isIndexToken(t) for t in tokens):
        indices = []
        for token in tokens:
            if '-' in token:
                first, last = token.split('-')
                if int(last) < int(first):
                    raise InputError(f"The index range '{token}' is empty (its end is before its start).")
                indices.extend(range(int(first), int(last) + 1))
            else:
                indices.append(int(token))
        return indices
    return text


def _isIndexToken(token):
    parts = token.split('-')
    return (len(parts) == 1 and parts[0].isdigit()) or (len(parts) == 2 and parts[0].isdigit() and parts[1].isdigit())


def regionAtomicNumbers(topology, indices):
    atoms = list(topology.atoms())
    return [atoms[i].element.atomic_number for i in indices]


# Reporting --------------------------------------------------------------------------------------------------

class Progress:
    """A one-line progress bar with ns/day and ETA (a line per 10% when the stream is not a terminal)."""

    def __init__(self, totalSteps, stepTimePs, stream=None, enabled=True):
        self.total = totalSteps
        self.stepTimePs = stepTimePs
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = enabled
        self.isatty = hasattr(self.stream, 'isatty') and self.stream.isatty()
        self.startStep = None
        self.startTime = None
        self.lastDecile = -1
        self.lastDraw = 0.0

    def start(self, step):
        self.startStep, self.startTime = step, time.perf_counter()

    def nsPerDay(self, step):
        elapsed = time.perf_counter() - self.startTime
        done = step - self.startStep
        if elapsed <= 0 or done <= 0:
            return float('nan')
        return done * self.stepTimePs * 1e-3 / elapsed * 86400

    def update(self, step, phase='', force=False):
        if not self.enabled:
            return
        now = time.perf_counter()
        fraction = step / self.total if self.total else 1.0
        speed = self.nsPerDay(step)
        done = step - self.startStep
        eta = (now - self.startTime) / done * (self.total - step) if done > 0 else float('nan')
        etaText = _formatDuration(eta) if math.isfinite(eta) else '--:--'
        speedText = f'{speed:.2f} ns/day' if math.isfinite(speed) else '-- ns/day'
        if self.isatty:
            if not force and now - self.lastDraw < 0.5 and step < self.total:
                return
            width = 30
            filled = int(round(width * fraction))
            line = (f'\r{phase:<13}[{"#" * filled}{"." * (width - filled)}] {100 * fraction:5.1f}%  '
                    f'{step}/{self.total} steps  {speedText}  ETA {etaText}   ')
            self.stream.write(line)
            if step >= self.total:
                self.stream.write('\n')
            self.lastDraw = now
        else:
            decile = int(10 * fraction + 1e-9)
            if decile > self.lastDecile or force:
                self.stream.write(f'{phase:<13}{100 * fraction:5.1f}%  {step}/{self.total} steps  {speedText}  '
                                  f'ETA {etaText}\n')
                self.lastDecile = decile
        self.stream.flush()


def _formatDuration(seconds):
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f'{hours}:{minutes:02d}:{secs:02d}' if hours else f'{minutes}:{secs:02d}'


class EnsembleDisagreement:
    """Standard deviation of the ANI ensemble members' energies (kJ/mol) for the region, on saved frames."""

    def __init__(self, modelName, atomicNumbers, indices, periodic):
        import torch
        from openmm_nnp.models import ANI
        self.torch = torch
        self.model = ANI(modelName, atomicNumbers, dtype=torch.float64)
        self.indices = np.asarray(indices)
        self.periodic = periodic

    def __call__(self, positionsNm, boxNm):
        torch = self.torch
        with torch.no_grad():
            x = torch.tensor(positionsNm[self.indices], dtype=torch.float64)
            box = torch.tensor(boxNm, dtype=torch.float64) if self.periodic else None
            return float(self.model.ensemble_std(x, box))


def ensembleDisagreementFor(model, atomicNumbers, indices, periodic):
    """An EnsembleDisagreement when ``model`` is an ANI ensemble that openmm_nnp.models.ANI provides, else None."""
    from openmm_nnp.models.torchani_models import canonicalANIName
    name = canonicalANIName(model) if isinstance(model, str) else None
    if name is None:
        return None
    try:
        return EnsembleDisagreement(name, atomicNumbers, indices, periodic)
    except ImportError:
        return None


ENERGY_COLUMNS = ['step', 'time_ps', 'potential_kJ_mol', 'kinetic_kJ_mol', 'total_kJ_mol', 'temperature_K',
                  'volume_nm3', 'ensemble_std_kJ_mol', 'speed_ns_day']


def degreesOfFreedom(system):
    dof = sum(3 for i in range(system.getNumParticles()) if system.getParticleMass(i) > 0 * unit.dalton)
    dof -= system.getNumConstraints()
    if any(isinstance(f, openmm.CMMotionRemover) for f in system.getForces()):
        dof -= 3
    return dof


# The run ----------------------------------------------------------------------------------------------------

class RunSettings:
    """Everything that defines a run (stored in run.json)."""
    FIELDS = dict(inputs=None, region=None, model='ani2x', precision='single', platform='CPU', temperature=300.0,
                  friction=1.0, timestep=1.0, steps=1000, equilibrationSteps=0, minimize=True,
                  minimizeIterations=500, reportInterval=100, checkpointInterval=1000, trajectoryFormat='dcd',
                  mts=None, pressure=None, seed=None, threads=None, nonbondedCutoff=1.0)

    def __init__(self, **kwargs):
        unknown = set(kwargs) - set(self.FIELDS)
        if unknown:
            raise TypeError(f'Unknown run settings: {", ".join(sorted(unknown))}')
        for key, default in self.FIELDS.items():
            setattr(self, key, kwargs.get(key, default))

    def to_dict(self):
        return {key: getattr(self, key) for key in self.FIELDS}

    def validate(self):
        requirePositive('timestep', self.timestep)
        requirePositive('temperature', self.temperature)
        requirePositive('reportInterval', self.reportInterval, True)
        requirePositive('checkpointInterval', self.checkpointInterval, True)
        if self.threads is not None:
            requirePositive('threads', self.threads, True)
        if self.steps is None or self.steps < 0:
            raise InputError(f'--steps must be zero or positive, not {self.steps}.')
        if self.equilibrationSteps < 0:
            raise InputError(f'--equilibration-steps must be zero or positive, not {self.equilibrationSteps}.')
        if self.friction < 0:
            raise InputError(f'--friction must be zero or positive, not {self.friction}.')
        if self.trajectoryFormat not in ('dcd', 'xtc'):
            raise InputError(f"--trajectory-format must be 'dcd' or 'xtc', not {self.trajectoryFormat!r}.")
        if self.precision not in ('single', 'double'):
            raise InputError(f"--precision must be 'single' or 'double', not {self.precision!r}.")
        if self.mts is not None:
            if int(self.mts) != self.mts or self.mts < 2:
                raise InputError(f'--mts must be an integer of at least 2 (NNP correction every N steps), not {self.mts}.')
            for name in ('steps', 'equilibrationSteps', 'reportInterval', 'checkpointInterval'):
                value = getattr(self, name)
                if value % self.mts:
                    raise InputError(f'With --mts {self.mts}, --{_option(name)} ({value}) must be a multiple of '
                                     f'{self.mts} (the NNP correction is applied once per {self.mts} steps).')
        if self.pressure is not None and self.pressure <= 0:
            raise InputError(f'--pressure must be positive (bar), not {self.pressure}.')
        names = [p.getName() for p in (openmm.Platform.getPlatform(i) for i in range(openmm.Platform.getNumPlatforms()))]
        if self.platform not in names:
            raise InputError(f"Unknown OpenMM platform '{self.platform}'; available here: {', '.join(names)}. "
                             'NNPForce runs on Reference and CPU.')


def _option(name):
    return ''.join('-' + c.lower() if c.isupper() else c for c in name)


def requirePositive(name, value, integer=False):
    """InputError naming the option (``name`` in camelCase) unless ``value`` is positive (an integer)."""
    if value is None or value <= 0 or (integer and int(value) != value):
        kind = 'a positive integer' if integer else 'positive'
        raise InputError(f'--{_option(name)} must be {kind}, not {value}.')


def _createIntegrator(settings):
    dt = settings.timestep * unit.femtosecond
    T = settings.temperature * unit.kelvin
    friction = settings.friction / unit.picosecond
    if settings.mts:
        integrator = openmm.MTSLangevinIntegrator(T, friction, dt * settings.mts, [(1, 1), (0, settings.mts)])
    else:
        integrator = openmm.LangevinMiddleIntegrator(T, friction, dt)
    integrator.setRandomNumberSeed(settings.seed)
    return integrator


class Simulation:
    """One NNP/MM run in an output folder; see the module docstring for the files it writes."""

    def __init__(self, outputDir, log=print, progress=True, progressStream=None):
        self.outputDir = Path(outputDir)
        self.log = log
        self.showProgress = progress
        self.progressStream = progressStream
        self._checkpoint = None  # checkpoint.json's content for the last checkpoint written or resumed from

    # -- setup --
    def _path(self, name):
        return self.outputDir / name

    def hasRun(self):
        return self._path(RUN_FILE).is_file()

    def setUp(self, settings, loaded=None):
        """A fresh run: build the System, minimize, assign velocities and write the first checkpoint."""
        settings.validate()
        if self.outputDir.exists() and not self.outputDir.is_dir():
            raise InputError(f"The output '{self.outputDir}' is a file, not a folder. Choose another --output.")
        if self.hasRun():
            raise InputError(f"'{self.outputDir}' already holds a run. Continue it with --resume, or choose another "
                             '--output folder.')
        if loaded is None:
            loaded = loadInput(settings.inputs, settings.nonbondedCutoff)
        if settings.seed is None:
            settings.seed = random.SystemRandom().randint(1, 2 ** 30)
        system, indices, potential = createNNPSystem(loaded, settings.region, settings.model, settings.precision,
                                                     settings.mts, settings.threads)
        if settings.pressure:
            barostat = openmm.MonteCarloBarostat(settings.pressure * unit.bar, settings.temperature * unit.kelvin, 25)
            barostat.setRandomNumberSeed(settings.seed)
            if not system.usesPeriodicBoundaryConditions():
                raise InputError('--pressure needs a periodic System (a solvated box); this one is not periodic.')
            system.addForce(barostat)
        self.outputDir.mkdir(parents=True, exist_ok=True)
        self.system, self.topology = system, loaded.topology
        integrator = _createIntegrator(settings)
        self._path('system.xml').write_text(openmm.XmlSerializer.serialize(system))
        self._path('integrator.xml').write_text(openmm.XmlSerializer.serialize(integrator))
        with open(self._path('topology.pdb'), 'w') as f:
            app.PDBFile.writeFile(loaded.topology, loaded.positions, f)
        _atomicWrite(self._path(TOPOLOGY), pickle.dumps(loaded.topology))
        numbers = regionAtomicNumbers(loaded.topology, indices)
        self.info = {'settings': settings.to_dict(), 'region_indices': indices, 'region_atomic_numbers': numbers,
                     'region_description': _regionText(settings.region or loaded.region, indices),
                     'model_description': str(potential) if potential else 'NNPForce from the input System',
                     'num_atoms': system.getNumParticles(), 'input_description': loaded.description,
                     'periodic': system.usesPeriodicBoundaryConditions()}
        self.settings = settings
        self._createContext(integrator)
        context = self.context
        context.setPositions(loaded.positions)
        if loaded.boxVectors is not None:
            context.setPeriodicBoxVectors(*loaded.boxVectors)
        self.log(f'{system.getNumParticles()} atoms, {len(indices)} in the NNP region '
                 f'({_regionText(settings.region or loaded.region, indices)}), {self.info["model_description"]}, '
                 f'platform {context.getPlatform().getName()}')
        if settings.mts:
            self.log(f'Multiple time steps: MM every {settings.timestep:g} fs, NNP correction every '
                     f'{settings.mts * settings.timestep:g} fs (MTSLangevinIntegrator)')
        if settings.minimize:
            before = context.getState(getEnergy=True).getPotentialEnergy()
            openmm.LocalEnergyMinimizer.minimize(context, 10.0, settings.minimizeIterations)
            after = context.getState(getEnergy=True).getPotentialEnergy()
            self.log(f'Minimized: potential energy {before.value_in_unit(unit.kilojoule_per_mole):.1f} -> '
                     f'{after.value_in_unit(unit.kilojoule_per_mole):.1f} kJ/mol')
        context.setVelocitiesToTemperature(settings.temperature * unit.kelvin, settings.seed)
        self.info['created'] = time.strftime('%Y-%m-%d %H:%M:%S')
        self._writeRunFile()
        self._openOutputs(append=False)
        self._saveCheckpoint(0)

    def resume(self, steps=None):
        """Continue the run in the output folder from its last checkpoint (``steps``: a new production length)."""
        if not self.hasRun() or not self._path(CHECKPOINT_INFO).is_file():
            raise InputError(f"'{self.outputDir}' holds no run to resume (no {RUN_FILE} and {CHECKPOINT_INFO}). Start "
                             'it without --resume.')
        self.info = readJSON(self._path(RUN_FILE), 'Start the run again in a new --output folder')
        self.settings = RunSettings(**self.info['settings'])
        checkpoint, data = self._readCheckpoint()
        if steps is not None:
            if self.settings.mts and steps % self.settings.mts:
                raise InputError(f'With --mts {self.settings.mts}, --steps must be a multiple of {self.settings.mts}.')
            done = checkpoint['step'] - self.settings.equilibrationSteps
            if steps < done:
                raise InputError(f'--steps {steps} is fewer production steps than this run has already done ({done}, '
                                 f'checkpoint at step {checkpoint["step"]}). Pass at least --steps {done}, or more to '
                                 'extend the run.')
            self.settings.steps = steps
            self.info['settings'] = self.settings.to_dict()
            self._writeRunFile()
        self.system = openmm.XmlSerializer.deserialize(self._path('system.xml').read_text())
        self.topology = pickle.loads(self._path(TOPOLOGY).read_bytes())
        integrator = openmm.XmlSerializer.deserialize(self._path('integrator.xml').read_text())
        self._createContext(integrator)
        self.context.loadCheckpoint(data)
        self._restoreOutputs(checkpoint)
        self._checkpoint = checkpoint
        self._openOutputs(append=True)
        self.log(f'Resuming {self.outputDir} at step {checkpoint["step"]} of '
                 f'{self.settings.equilibrationSteps + self.settings.steps}')
        return checkpoint['step']

    def _createContext(self, integrator):
        settings = self.settings
        platform = openmm.Platform.getPlatformByName(settings.platform)
        properties = {}
        if settings.platform == 'CPU' and settings.threads:
            properties['Threads'] = str(settings.threads)
        self.context = openmm.Context(self.system, integrator, platform, properties)
        self.integrator = integrator
        self.periodic = self.system.usesPeriodicBoundaryConditions()
        self.stepsPerIntegratorStep = settings.mts or 1
        self.stepTimePs = settings.timestep * 1e-3
        self.dof = degreesOfFreedom(self.system)
        self.ensemble = ensembleDisagreementFor(settings.model, self.info['region_atomic_numbers'],
                                                self.info['region_indices'], self.periodic)

    def _writeRunFile(self):
        _atomicWrite(self._path(RUN_FILE), json.dumps(self.info, indent=2).encode())

    # -- outputs --
    def _trajectoryPath(self):
        return self._path(f'trajectory.{self.settings.trajectoryFormat}')

    def _openOutputs(self, append):
        settings = self.settings
        interval = settings.reportInterval
        firstStep = settings.equilibrationSteps + interval
        dt = settings.timestep * unit.femtosecond
        path = self._trajectoryPath()
        if settings.trajectoryFormat == 'dcd':
            self._dcdHandle = open(path, 'r+b' if append else 'wb')
            self.trajectory = app.DCDFile(self._dcdHandle, self.topology, dt, firstStep, interval, append)
        else:
            if not append and path.exists():
                path.unlink()
            self._dcdHandle = None
            self.trajectory = app.XTCFile(str(path), self.topology, dt, firstStep, interval, append)
        self.energyLog = open(self._path(ENERGY_LOG), 'a' if append else 'w')
        if not append:
            self.energyLog.write(','.join(ENERGY_COLUMNS) + '\n')
            self.energyLog.flush()

    def _closeOutputs(self):
        if self._dcdHandle is not None:
            self._dcdHandle.close()
        self.energyLog.close()

    def _restoreOutputs(self, checkpoint):
        """Cut the trajectory and energy log back to their state at the checkpoint (a run may have gone on
        writing after it before it stopped)."""
        for name, size in checkpoint['file_sizes'].items():
            path = self._path(name)
            if not path.exists():
                raise InputError(f"Cannot resume: '{path}' is missing (it existed at the checkpoint).")
            if path.stat().st_size < size:
                raise InputError(f"Cannot resume: '{path}' is shorter than at the checkpoint; it was modified.")
            with open(path, 'r+b') as f:
                f.truncate(size)
                if name.endswith('.dcd') and checkpoint.get('dcd_header'):
                    f.seek(0)
                    f.write(base64.b64decode(checkpoint['dcd_header']))

    def _saveCheckpoint(self, step):
        """Write checkpoint.chk and checkpoint.json atomically, flushing the outputs first; the checkpoint
        before becomes checkpoint.previous.chk. checkpoint.json describes both (step, output sizes, checkpoint
        size and SHA-256), so that a crash between the writes leaves a pair that _readCheckpoint can match."""
        if self._dcdHandle is not None:
            self._dcdHandle.flush()
        self.energyLog.flush()
        data = self.context.createCheckpoint()
        if self._path(CHECKPOINT).exists():
            os.replace(self._path(CHECKPOINT), self._path(PREVIOUS_CHECKPOINT))
        _atomicWrite(self._path(CHECKPOINT), data)
        trajectory = self._trajectoryPath()
        info = {'step': step, 'time': time.strftime('%Y-%m-%d %H:%M:%S'),
                'checkpoint_size': len(data), 'checkpoint_sha256': hashlib.sha256(data).hexdigest(),
                'file_sizes': {ENERGY_LOG: self._path(ENERGY_LOG).stat().st_size,
                               trajectory.name: trajectory.stat().st_size if trajectory.exists() else 0}}
        if trajectory.suffix == '.dcd':
            with open(trajectory, 'rb') as f:
                info['dcd_header'] = base64.b64encode(f.read(24)).decode()
        if self._checkpoint is not None:
            info['previous'] = {key: value for key, value in self._checkpoint.items() if key != 'previous'}
        _atomicWrite(self._path(CHECKPOINT_INFO), json.dumps(info, indent=2).encode())
        self._checkpoint = info

    def _readCheckpoint(self):
        """(checkpoint.json's entry, checkpoint bytes) of the newest checkpoint whose size and SHA-256 match."""
        info = readJSON(self._path(CHECKPOINT_INFO), 'Start the run again in a new --output folder')
        files = {}
        for name in (CHECKPOINT, PREVIOUS_CHECKPOINT):
            if self._path(name).is_file():
                data = self._path(name).read_bytes()
                files[hashlib.sha256(data).hexdigest()] = data
        for entry in (info, info.get('previous')):
            if entry is None:
                continue
            data = files.get(entry.get('checkpoint_sha256'))
            if data is not None and len(data) == entry.get('checkpoint_size'):
                if entry is not info:
                    self.log(f"Warning: {CHECKPOINT} does not match the size and checksum in {CHECKPOINT_INFO} (it is "
                             f"truncated or damaged); resuming from the previous checkpoint, at step {entry['step']}.")
                return entry, data
        sizes = ', '.join(f'{len(d)} bytes' for d in files.values()) or 'none found'
        raise InputError(f"Cannot resume: '{self._path(CHECKPOINT)}' is truncated or damaged: its size and SHA-256 "
                         f"({sizes}) do not match those recorded in {CHECKPOINT_INFO} ({info.get('checkpoint_size')} "
                         'bytes), and no earlier checkpoint does. Start the run again in a new --output folder.')

    def _checkedEnergies(self, step, state):
        """(potential, kinetic, temperature) of ``state``; InstabilityError when the run has blown up."""
        potential = state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
        kinetic = state.getKineticEnergy().value_in_unit(unit.kilojoule_per_mole)
        temperature = 2 * kinetic / (self.dof * unit.MOLAR_GAS_CONSTANT_R.value_in_unit(
            unit.kilojoule_per_mole / unit.kelvin)) if self.dof > 0 else float('nan')
        target = self.settings.temperature
        # Far beyond the thermal fluctuations of even a few atoms (their relative width is sqrt(2 / dof)).
        limit = target * max(5.0, 1 + 12 * math.sqrt(2 / max(self.dof, 1)))
        seen = None
        if not (math.isfinite(potential) and math.isfinite(kinetic)):
            seen = f'potential energy {potential:g} kJ/mol, kinetic energy {kinetic:g} kJ/mol'
        elif temperature > limit:
            seen = f'temperature {temperature:.0f} K (target {target:g} K)'
        if seen:
            raise InstabilityError(self._blowUpMessage(f'at step {step}', seen))
        return potential, kinetic, temperature

    def _blowUpMessage(self, where, seen):
        mts = f', NNP every {self.settings.mts} steps' if self.settings.mts else ''
        return (f'The simulation blew up {where}: {seen}. Unless the structure has clashes, the time step '
                f'({self.settings.timestep:g} fs{mts}) is too large: run again with a smaller --timestep (1 fs or '
                'less for an unconstrained NNP region). The outputs are kept up to the last good checkpoint, at step '
                f'{self._checkpoint["step"]}.')

    def _report(self, step, speed):
        state = self.context.getState(getPositions=True, getEnergy=True)
        potential, kinetic, temperature = self._checkedEnergies(step, state)
        positions = state.getPositions(asNumpy=True).value_in_unit(unit.nanometer)
        boxVectors = state.getPeriodicBoxVectors()
        box = np.array(boxVectors.value_in_unit(unit.nanometer))
        self.trajectory.writeModel(state.getPositions(), periodicBoxVectors=boxVectors if self.periodic else None)
        volume = float(np.linalg.det(box)) if self.periodic else float('nan')
        std = self.ensemble(positions, box) if self.ensemble is not None else float('nan')
        row = [step, step * self.stepTimePs, potential, kinetic, potential + kinetic, temperature, volume, std, speed]
        self.energyLog.write(','.join(str(step) if i == 0 else f'{v:.6f}' if i in (1,) else f'{v:.10g}'
                                      for i, v in enumerate(row)) + '\n')

    # -- dynamics --
    def run(self, startStep=0):
        """Run from ``startStep`` (user steps) to the end; returns the summary dict."""
        settings = self.settings
        n = self.stepsPerIntegratorStep
        equilibration = settings.equilibrationSteps
        total = equilibration + settings.steps
        progress = Progress(total, self.stepTimePs, self.progressStream, self.showProgress)
        progress.start(startStep)
        step = startStep
        wallStart = time.perf_counter()
        while step < total:
            boundaries = [total, _nextMultiple(step, settings.checkpointInterval),
                          _nextMultiple(step, max(n, (total // 100) // n * n or n))]
            if step < equilibration:
                boundaries.append(equilibration)
            else:
                boundaries.append(equilibration + _nextMultiple(step - equilibration, settings.reportInterval))
            target, previous = min(b for b in boundaries if b > step), step
            try:
                self.integrator.step((target - step) // n)
                step = target
                reported = step > equilibration and (step - equilibration) % settings.reportInterval == 0
                if reported:
                    self._report(step, progress.nsPerDay(step))
                if step % settings.checkpointInterval == 0 or step == total:
                    if not reported:
                        self._checkedEnergies(step, self.context.getState(getEnergy=True))
                    self._saveCheckpoint(step)
            except (InstabilityError, openmm.OpenMMException) as e:
                self._closeOutputs()
                self._restoreOutputs(self._checkpoint)
                if isinstance(e, InstabilityError):
                    raise
                seen = 'OpenMM: ' + ' '.join(str(e).split())
                raise InstabilityError(self._blowUpMessage(f'between steps {previous} and {target}', seen)) from None
            progress.update(step, 'equilibration' if step <= equilibration and equilibration else 'production')
        wall = time.perf_counter() - wallStart
        state = self.context.getState(getPositions=True, enforcePeriodicBox=self.periodic)
        with open(self._path('final.pdb'), 'w') as f:
            topology = self.topology
            if self.periodic:
                topology.setPeriodicBoxVectors(state.getPeriodicBoxVectors())
            app.PDBFile.writeFile(topology, state.getPositions(), f)
        self._closeOutputs()
        return self._summarize(startStep, step, wall)

    def _summarize(self, startStep, endStep, wall):
        settings = self.settings
        done = endStep - startStep
        speed = done * self.stepTimePs * 1e-3 / wall * 86400 if wall > 0 and done > 0 else float('nan')
        files = [f.name for f in sorted(self.outputDir.iterdir()) if f.is_file()]
        summary = {
            'input': self.info['input_description'], 'num_atoms': self.info['num_atoms'],
            'region': self.info.get('region_description', settings.region), 'region_size': len(self.info['region_indices']),
            'model': self.info['model_description'], 'platform': settings.platform,
            'timestep_fs': settings.timestep, 'mts': settings.mts, 'temperature_K': settings.temperature,
            'pressure_bar': settings.pressure, 'equilibration_ps': settings.equilibrationSteps * self.stepTimePs,
            'production_ps': settings.steps * self.stepTimePs, 'steps_this_session': done,
            'simulated_ps_this_session': done * self.stepTimePs, 'wall_s_this_session': wall, 'ns_per_day': speed,
            'resumed_from_step': startStep if startStep else None, 'seed': settings.seed, 'files': files,
        }
        _atomicWrite(self._path('summary.json'), json.dumps(summary, indent=2).encode())
        return summary


def _regionText(region, indices):
    if isinstance(region, str) and isinstance(parseRegion(region), str):
        return f"'{region}'"
    return f'atoms {indices[0]}..{indices[-1]}' if indices == list(range(indices[0], indices[-1] + 1)) else 'atom list'


def _nextMultiple(step, interval):
    return (step // interval + 1) * interval


def _atomicWrite(path, data):
    tmp = Path(str(path) + '.tmp')
    with open(tmp, 'wb') as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def formatSummary(summary, outputDir):
    """The human-readable summary printed at the end of a run."""
    lines = ['', 'Summary', '-------',
             f'System:      {summary["input"]}: {summary["num_atoms"]} atoms',
             f'NNP region:  {summary["region_size"]} atoms ({summary["region"]}), {summary["model"]}',
             f'Dynamics:    Langevin at {summary["temperature_K"]:g} K'
             + (f', {summary["pressure_bar"]:g} bar' if summary['pressure_bar'] else ', NVT')
             + f', {summary["timestep_fs"]:g} fs step'
             + (f', NNP correction every {summary["mts"]} steps (MTS)' if summary['mts'] else ''),
             f'Length:      {summary["equilibration_ps"]:g} ps equilibration + {summary["production_ps"]:g} ps production',
             f'This session: {summary["simulated_ps_this_session"]:g} ps in {summary["wall_s_this_session"]:.1f} s '
             f'on {summary["platform"]}: {summary["ns_per_day"]:.3g} ns/day'
             + (f' (resumed at step {summary["resumed_from_step"]})' if summary['resumed_from_step'] else ''),
             f'Output:      {outputDir}/ ({", ".join(summary["files"])})']
    return '\n'.join(lines)


def runSimulation(settings, outputDir, resume=False, plots=True, log=print, progress=True, progressStream=None):
    """Set up (or resume) and run; writes plots; returns the summary dict."""
    simulation = Simulation(outputDir, log, progress, progressStream)
    if resume:
        start = simulation.resume(settings.steps if settings is not None else None)
    else:
        simulation.setUp(settings)
        start = 0
    summary = simulation.run(start)
    if plots:
        from openmm_nnp import plots as _plots
        made = _plots.plotRun(Path(outputDir) / ENERGY_LOG, outputDir)
        summary['files'] = sorted(set(summary['files']) | {Path(p).name for p in made})
        _atomicWrite(Path(outputDir) / 'summary.json', json.dumps(summary, indent=2).encode())
    log(formatSummary(summary, outputDir))
    return summary


# End-state correction ---------------------------------------------------------------------------------------

def endstateCorrection(inputs, outputDir, region=None, model='ani2x', precision='single', platform='CPU',
                       threads=None, nonbondedCutoff=1.0, method='equilibrium', lambdas=11, samples=500,
                       stepsPerSample=250, switches=50, switchingSteps=1000, equilibrationSteps=5000, timestep=1.0,
                       temperature=300.0, seed=2024, plots=True, log=print):
    """ΔG of switching the region from MM (λ = 0) to NNP/MM (λ = 1) with openmm_nnp.freeenergy.

    method 'equilibrium': ``lambdas`` windows with MBAR (and TI); 'nonequilibrium': ``switches`` switches each
    way of ``switchingSteps`` steps, BAR. Finished tasks are stored in ``outputDir``; a rerun resumes.
    Returns the freeenergy result object; writes endstate.json (ΔG in kJ/mol and kcal/mol) next to its files.
    """
    from openmm_nnp import NNPotential, region as _region
    from openmm_nnp import freeenergy
    loaded = loadInput(inputs, nonbondedCutoff)
    if findNNPForces(loaded.system):
        raise InputError('The input System already contains an NNPForce; pass the MM System: the end-state '
                         'protocol builds the interpolating NNP/MM System itself.')
    region = region if region is not None else loaded.region
    if region is None:
        raise InputError("No NNP region given: pass --region with an MDTraj selection (e.g. 'resname LIG') or atom "
                         'indices.')
    for name, value in (('samples', samples), ('switches', switches), ('lambdas', lambdas)):
        if value < 2:
            raise InputError(f'--{name} must be at least 2, not {value}.')
    if threads is not None:
        requirePositive('threads', threads, True)
    try:
        potential = NNPotential(model, precision=precision)
    except (ValueError, TypeError) as e:
        raise InputError(f'{e} Built-in models: ani2x (default), ani1x, ani1ccx; or a TorchScript file.') from None
    indices = _region.selectRegion(loaded.topology, parseRegion(region))
    system = potential.createMixedSystem(loaded.topology, loaded.system, indices, interpolate=True)
    if threads:
        for force in findNNPForces(system):
            force.setProperty('numThreads', str(threads))
    properties = {'Threads': str(threads)} if threads and platform == 'CPU' else None
    common = dict(topology=loaded.topology, temperature=temperature * unit.kelvin,
                  timestep=timestep * unit.femtosecond, box_vectors=loaded.boxVectors, platform=platform,
                  platform_properties=properties, seed=seed, output_dir=str(outputDir), plots=plots,
                  n_equilibration_steps=equilibrationSteps)
    log(f'End-state correction MM -> NNP/MM for {len(indices)} region atoms with {potential} '
        f'({method}, {loaded.description})')
    start = time.perf_counter()
    if method == 'equilibrium':
        result = freeenergy.run_equilibrium(system, loaded.positions, lambdas, n_samples=samples,
                                            steps_per_sample=stepsPerSample, **common)
    elif method == 'nonequilibrium':
        common.pop('topology')
        result = freeenergy.run_nonequilibrium(system, loaded.positions, n_switches=switches,
                                               switching_steps=switchingSteps, **common)
    else:
        raise InputError(f"--method must be 'equilibrium' or 'nonequilibrium', not {method!r}.")
    wall = time.perf_counter() - start
    dg = result.delta_g
    summary = {'method': method, 'estimator': result.to_dict()['estimator'], 'delta_g_kJ_mol': dg.kJ_per_mol,
               'error_kJ_mol': dg.error_kJ_per_mol, 'delta_g_kcal_mol': dg.kcal_per_mol,
               'error_kcal_mol': dg.error_kcal_per_mol, 'region_size': len(indices), 'model': str(potential),
               'input': loaded.description, 'wall_s': wall}
    if method == 'equilibrium':
        summary['ti_kJ_mol'] = result.ti.kJ_per_mol
        summary['ti_error_kJ_mol'] = result.ti.error_kJ_per_mol
    Path(outputDir).mkdir(parents=True, exist_ok=True)
    _atomicWrite(Path(outputDir) / 'endstate.json', json.dumps(summary, indent=2).encode())
    log('')
    log(f'ΔG(MM -> NNP/MM) = {dg.kJ_per_mol:.2f} ± {dg.error_kJ_per_mol:.2f} kJ/mol '
        f'({dg.kcal_per_mol:.2f} ± {dg.error_kcal_per_mol:.2f} kcal/mol, {summary["estimator"]})'
        + (f'; TI {result.ti.kJ_per_mol:.2f} ± {result.ti.error_kJ_per_mol:.2f} kJ/mol' if method == 'equilibrium' else ''))
    log(f'Wall time {wall:.1f} s. Results and plots in {outputDir}/')
    return result
