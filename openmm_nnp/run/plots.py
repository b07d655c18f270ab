"""PNG plots of a run's energy log: energies and temperature over time, and the ANI ensemble disagreement."""

import csv
import math
from pathlib import Path


def _pyplot():
    import matplotlib
    matplotlib.use('Agg')  # files only, no display
    import matplotlib.pyplot as plt
    return plt


def readEnergyLog(path):
    """The columns of an energies.csv as {name: list of floats}."""
    with open(path) as f:
        rows = list(csv.DictReader(f))
    columns = {}
    for row in rows:
        for key, value in row.items():
            columns.setdefault(key, []).append(float(value) if value not in ('', None) else math.nan)
    return columns


def plotRun(energyLog, outputDir):
    """energies.png (potential, total energy, temperature vs time) and, when the log has it, ensemble_std.png.
    Returns the paths written (none when the log has no rows)."""
    data = readEnergyLog(energyLog)
    if not data.get('time_ps'):
        return []
    plt = _pyplot()
    outputDir = Path(outputDir)
    time = data['time_ps']
    written = []
    figure, axes = plt.subplots(3, 1, figsize=(7, 7.5), sharex=True)
    axes[0].plot(time, data['potential_kJ_mol'], color='tab:blue')
    axes[0].set_ylabel('potential energy\n(kJ/mol)')
    axes[1].plot(time, data['total_kJ_mol'], color='tab:purple')
    axes[1].set_ylabel('total energy\n(kJ/mol)')
    axes[2].plot(time, data['temperature_K'], color='tab:red')
    axes[2].set_ylabel('temperature (K)')
    axes[2].set_xlabel('time (ps)')
    for axis in axes:
        axis.grid(alpha=0.3)
        axis.ticklabel_format(axis='y', useOffset=False)
    figure.suptitle('NNP/MM run: energies and temperature')
    figure.tight_layout()
    path = outputDir / 'energies.png'
    figure.savefig(path, dpi=110)
    plt.close(figure)
    written.append(path)
    std = data.get('ensemble_std_kJ_mol', [])
    if std and not all(math.isnan(v) for v in std):
        figure, axis = plt.subplots(figsize=(7, 3.5))
        axis.plot(time, std, color='tab:green', marker='.' if len(time) < 60 else None)
        axis.set_xlabel('time (ps)')
        axis.set_ylabel('std of member energies\n(kJ/mol)')
        axis.set_title('ANI ensemble disagreement on the NNP region (saved frames)')
        axis.grid(alpha=0.3)
        figure.tight_layout()
        path = outputDir / 'ensemble_std.png'
        figure.savefig(path, dpi=110)
        plt.close(figure)
        written.append(path)
    return written
