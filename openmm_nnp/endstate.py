"""The end-state correction: the free energy of switching the NNP region from MM to NNP/MM.

What ``openmm-nnp endstate`` runs, with the protocols of openmm_nnp.freeenergy.
"""

import json
import time
from pathlib import Path

import openmm.unit as unit

from openmm_nnp.errors import InputError
from openmm_nnp.files import atomicWrite
from openmm_nnp.run.settings import RunSettings, requirePositive


_RUN = RunSettings.FIELDS  # what a run and the end-state correction share: model, precision, platform, ...


def endstateCorrection(inputs, outputDir, *, region=None, model=_RUN['model'], precision=_RUN['precision'],
                       platform=_RUN['platform'], threads=None, nonbondedCutoff=_RUN['nonbondedCutoff'],
                       method='equilibrium', lambdas=11, samples=500, stepsPerSample=250, switches=50,
                       switchingSteps=1000, equilibrationSteps=5000, timestep=_RUN['timestep'],
                       temperature=_RUN['temperature'], seed=2024, plots=True, log=print):
    """ΔG of switching the region from MM (λ = 0) to NNP/MM (λ = 1) with openmm_nnp.freeenergy.

    method 'equilibrium': ``lambdas`` windows with MBAR (and TI); 'nonequilibrium': ``switches`` switches each
    way of ``switchingSteps`` steps, BAR. Finished tasks are stored in ``outputDir``; a rerun resumes.
    Returns the freeenergy result object; writes endstate.json (ΔG in kJ/mol and kcal/mol) next to its files.
    """
    from openmm_nnp import freeenergy
    from openmm_nnp.inputs import createNNPSystem, loadInput
    for name, value in (('samples', samples), ('switches', switches), ('lambdas', lambdas)):
        if value < 2:
            raise InputError(f'--{name} must be at least 2, not {value}.')
    if threads is not None:
        requirePositive('threads', threads, integer=True)
    loaded = loadInput(inputs, nonbondedCutoff)
    system, indices, potential = createNNPSystem(loaded, region, model, precision, threads=threads, interpolate=True)
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
    atomicWrite(Path(outputDir) / 'endstate.json', json.dumps(summary, indent=2).encode())
    log('')
    log(f'ΔG(MM -> NNP/MM) = {dg.kJ_per_mol:.2f} ± {dg.error_kJ_per_mol:.2f} kJ/mol '
        f'({dg.kcal_per_mol:.2f} ± {dg.error_kcal_per_mol:.2f} kcal/mol, {summary["estimator"]})'
        + (f'; TI {result.ti.kJ_per_mol:.2f} ± {result.ti.error_kJ_per_mol:.2f} kJ/mol' if method == 'equilibrium' else ''))
    log(f'Wall time {wall:.1f} s. Results and plots in {outputDir}/')
    return result
