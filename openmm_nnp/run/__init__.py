"""NNP/MM molecular dynamics from files: ``simulate`` is what ``openmm-nnp run`` does.

    settings.py     RunSettings (stored in run.json) and their checks
    simulation.py   the run loop: Simulation (set up, checkpoints, --resume), runSimulation, simulate
    reporting.py    progress bar, energy log columns, ANI ensemble disagreement, the printed summary
    plots.py        energies.png and ensemble_std.png from energies.csv
"""

from openmm_nnp.run.settings import RunSettings
from openmm_nnp.run.simulation import Simulation, runSimulation, simulate

__all__ = ['RunSettings', 'Simulation', 'runSimulation', 'simulate']
