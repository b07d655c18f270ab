"""Run NNP/MM molecular dynamics from files: load, embed the NNP region, minimize, equilibrate, produce.

``simulate`` is what ``openmm-nnp run`` calls. An output folder holds everything a run needs to continue:

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
group 0, integrated every inner step; the NNP correction U_NNP(region) - U_MM(region) is force group 1,
evaluated every N-th inner step by openmm_nnp.integrators.NNPMTSLangevinMiddleIntegrator (LangevinMiddle
inner steps, the correction as an impulse), which integrator.xml holds like any other integrator.
"""

import base64
import hashlib
import json
import math
import os
import pickle
import random
import time
from pathlib import Path

import numpy as np
import openmm
import openmm.app as app
import openmm.unit as unit

from openmm_nnp.errors import InputError, InstabilityError
from openmm_nnp.files import atomicWrite, readJSON
from openmm_nnp.inputs import createNNPSystem, loadInput, regionAtomicNumbers
from openmm_nnp.integrators import NNPMTSLangevinMiddleIntegrator
from openmm_nnp.region import Region
from openmm_nnp.run.reporting import (ENERGY_COLUMNS, Progress, degreesOfFreedom, ensembleDisagreementFor,
                                      formatSummary)
from openmm_nnp.run.settings import RunSettings, stepsFromTime

RUN_FILE = 'run.json'
TOPOLOGY = 'topology.pickle'
CHECKPOINT = 'checkpoint.chk'
PREVIOUS_CHECKPOINT = 'checkpoint.previous.chk'
CHECKPOINT_INFO = 'checkpoint.json'
ENERGY_LOG = 'energies.csv'


def _createIntegrator(settings):
    dt = settings.timestep * unit.femtosecond
    T = settings.temperature * unit.kelvin
    friction = settings.friction / unit.picosecond
    if settings.mts:
        integrator = NNPMTSLangevinMiddleIntegrator(T, friction, dt, settings.mts)
    else:
        integrator = openmm.LangevinMiddleIntegrator(T, friction, dt)
    integrator.setRandomNumberSeed(settings.seed)
    return integrator


class Simulation:
    """One NNP/MM run in an output folder; see the module docstring for the files it writes."""

    def __init__(self, outputDir, *, log=print, progress=True, progressStream=None):
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
        region = settings.region if settings.region is not None else loaded.region
        if isinstance(region, str) and region.strip():
            region = Region.parse(region)  # parsed once: createNNPSystem selects it, the log describes it
        system, indices, potential = createNNPSystem(loaded, region, settings.model, settings.precision,
                                                     mts=settings.mts, threads=settings.threads)
        region = region if isinstance(region, Region) and potential else Region(indices=indices)
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
        atomicWrite(self._path(TOPOLOGY), pickle.dumps(loaded.topology))
        numbers = regionAtomicNumbers(loaded.topology, indices)
        self.info = {'settings': settings.to_dict(), 'region_indices': indices, 'region_atomic_numbers': numbers,
                     'region_description': region.describe(),
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
                 f'({region.describe()}), {self.info["model_description"]}, '
                 f'platform {context.getPlatform().getName()}')
        if settings.mts:
            self.log(f'Multiple time steps: MM every {settings.timestep:g} fs, NNP correction every '
                     f'{settings.mts * settings.timestep:g} fs (NNPMTSLangevinMiddleIntegrator)')
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

    def resume(self, steps=None, time=None):
        """Continue the run in the output folder from its last checkpoint. ``steps`` or ``time`` (ps): a new
        production length."""
        if not self.hasRun() or not self._path(CHECKPOINT_INFO).is_file():
            raise InputError(f"'{self.outputDir}' holds no run to resume (no {RUN_FILE} and {CHECKPOINT_INFO}). Start "
                             'it without --resume.')
        self.info = readJSON(self._path(RUN_FILE), 'Start the run again in a new --output folder')
        self.settings = RunSettings(**self.info['settings'])
        checkpoint, data = self._readCheckpoint()
        if time is not None:
            steps = stepsFromTime(time, self.settings.timestep, self.settings.mts)
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
        if self.settings.mts and not isinstance(integrator, NNPMTSLangevinMiddleIntegrator):
            raise InputError(f"{self._path('integrator.xml')} holds a {type(integrator).__name__}, not the "
                             f'NNPMTSLangevinMiddleIntegrator that --mts {self.settings.mts} needs (an older '
                             'openmm-nnp wrote it?): start the run again in a new --output folder.')
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
        self.stepTimePs = settings.timestep * 1e-3
        self.dof = degreesOfFreedom(self.system)
        self.ensemble = ensembleDisagreementFor(settings.model, self.info['region_atomic_numbers'],
                                                self.info['region_indices'], self.periodic)

    def _writeRunFile(self):
        atomicWrite(self._path(RUN_FILE), json.dumps(self.info, indent=2).encode())

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
        atomicWrite(self._path(CHECKPOINT), data)
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
        atomicWrite(self._path(CHECKPOINT_INFO), json.dumps(info, indent=2).encode())
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
        n = settings.mts or 1  # reports and checkpoints at the ends of outer steps
        equilibration = settings.equilibrationSteps
        total = equilibration + settings.steps
        progress = Progress(total, self.stepTimePs, self.progressStream, enabled=self.showProgress)
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
                self.integrator.step(target - step)
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
        atomicWrite(self._path('summary.json'), json.dumps(summary, indent=2).encode())
        return summary

def _nextMultiple(step, interval):
    return (step // interval + 1) * interval

def runSimulation(settings, outputDir, *, resume=False, plots=True, log=print, progress=True, progressStream=None,
                  time=None):
    """Set up (or resume) and run; writes plots; returns the summary dict. On resume, ``settings.steps`` or
    ``time`` (ps) set a new production length."""
    simulation = Simulation(outputDir, log=log, progress=progress, progressStream=progressStream)
    if resume:
        start = simulation.resume(settings.steps if settings is not None else None, time)
    else:
        simulation.setUp(settings)
        start = 0
    summary = simulation.run(start)
    if plots:
        from openmm_nnp.run import plots as _plots
        made = _plots.plotRun(Path(outputDir) / ENERGY_LOG, outputDir)
        summary['files'] = sorted(set(summary['files']) | {Path(p).name for p in made})
        atomicWrite(Path(outputDir) / 'summary.json', json.dumps(summary, indent=2).encode())
    log(formatSummary(summary, outputDir))
    return summary


def simulate(inputs, outputDir, *, resume=False, time=None, equilibration=None, plots=True,
             progress=True, log=print, progressStream=None, **settings):
    """Run NNP/MM dynamics from files, or continue a run: what ``openmm-nnp run`` does, from Python.

    Parameters
    ----------
    inputs : path or list of paths
        A folder written by ``openmm-nnp prepare``, a System XML and a PDB/PDBx file, or an Amber prmtop and
        inpcrd (see openmm_nnp.inputs.loadInput). None with ``resume``.
    outputDir : path
        The run's folder (see this module's docstring for what it holds).
    resume : bool
        Continue the run in ``outputDir`` from its last checkpoint; only ``steps`` or ``time`` may be given
        (a new production length).
    time, equilibration : float
        Production and equilibration lengths in ps, instead of ``steps`` and ``equilibrationSteps``.
    settings
        RunSettings fields: region, model, precision, platform, temperature, friction, timestep (fs), steps,
        equilibrationSteps, minimize, minimizeIterations, reportInterval, checkpointInterval,
        trajectoryFormat, mts, pressure, seed, threads, nonbondedCutoff.

    Returns the summary dict (also in summary.json).
    """
    # Checked here: converted to steps, they would be reported as errors of --steps.
    if time is not None and time <= 0:
        raise InputError(f'--time must be positive (ps), not {time:g}.')
    if equilibration is not None and equilibration < 0:
        raise InputError(f'--equilibration must be zero or positive (ps), not {equilibration:g}.')
    for name, value, other in (('time', time, 'steps'), ('equilibration', equilibration, 'equilibrationSteps')):
        if value is not None and settings.get(other) is not None:
            raise InputError(f'Give the length as {name} (ps) or as {other}, not both.')
    options = dict(plots=plots, log=log, progress=progress, progressStream=progressStream)
    if resume:
        if inputs:
            raise InputError('With --resume, give only --output: the run folder holds the inputs it was started '
                             'with.')
        unexpected = sorted(set(settings) - {'steps'})
        if unexpected or equilibration is not None:
            raise InputError(f'A resumed run keeps its settings; only its production length (steps or time) can '
                             f'change, not {", ".join(unexpected or ["equilibration"])}.')
        steps = settings.get('steps')
        return runSimulation(RunSettings(steps=steps) if steps is not None else None, outputDir, resume=True,
                             time=time, **options)
    if not inputs:
        raise InputError('No input given: pass a folder from `openmm-nnp prepare`, a system XML and a PDB, or an '
                         'Amber prmtop and inpcrd (or --resume with --output to continue a run).')
    run = RunSettings(**{key: value for key, value in settings.items() if value is not None})
    inputs = [inputs] if isinstance(inputs, (str, os.PathLike)) else inputs
    run.inputs = [str(Path(p).resolve()) for p in inputs]
    if time is not None:
        run.steps = stepsFromTime(time, run.timestep, run.mts)
    if equilibration is not None:
        run.equilibrationSteps = stepsFromTime(equilibration, run.timestep, run.mts)
    return runSimulation(run, outputDir, **options)
