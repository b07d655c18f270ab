"""Free energies between MM (λ = 0) and NNP/MM (λ = 1) with an interpolating mixed System.

- ``run_equilibrium``: λ windows, MBAR (+ overlap matrix) and TI from the dU/dλ profile.
- ``run_nonequilibrium``: switching 0 → 1 and 1 → 0, BAR with bootstrap errors; forward Jarzynski.
- ``corrected_relative_free_energy`` / ``corrected_binding_free_energy``: MM results + corrections.
- ``NNPAlchemicalState``: openmmtools state that reads and sets ``lambda_interpolate``.
- ``TaskRunner``: serial or Dask distributed execution with resumable, atomically stored results.

See docs/free_energy.md.
"""

from openmm_nnp.freeenergy.analysis import FreeEnergy
from openmm_nnp.freeenergy.equilibrium import EquilibriumResult, run_equilibrium
from openmm_nnp.freeenergy.nonequilibrium import NonequilibriumResult, run_nonequilibrium
from openmm_nnp.freeenergy.parallel import ResultStore, TaskFailed, TaskRunner
from openmm_nnp.freeenergy.rbfe import Estimate, corrected_binding_free_energy, corrected_relative_free_energy
from openmm_nnp.freeenergy.states import (NNPAlchemicalState, alchemical_state_class, check_lambda_system,
                                          lambda_states)
from openmm_nnp.freeenergy.systems import extract_subsystem

__all__ = ['FreeEnergy', 'EquilibriumResult', 'run_equilibrium', 'NonequilibriumResult', 'run_nonequilibrium',
           'ResultStore', 'TaskFailed', 'TaskRunner', 'Estimate', 'corrected_binding_free_energy',
           'corrected_relative_free_energy', 'NNPAlchemicalState', 'alchemical_state_class', 'check_lambda_system',
           'lambda_states', 'extract_subsystem']
