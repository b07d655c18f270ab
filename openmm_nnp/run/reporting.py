"""What a run reports: the progress bar, the energy log's columns, the ANI ensemble disagreement, the summary."""

import math
import sys
import time

import numpy as np
import openmm
import openmm.unit as unit


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
