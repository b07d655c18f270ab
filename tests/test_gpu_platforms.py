"""NNPForce on OpenMM's GPU platforms (the Common kernel: OpenCL, CUDA) against the Reference platform.

On these CPU machines OpenCL runs through PoCL (Debian pocl-opencl-icd, which `make test` installs when
it runs as root); where no OpenCL or CUDA device exists the tests skip and say why. PoCL is slow
(≈ 6 MD steps/s for 4,500 atoms), so the systems are small.

Tolerances, by the platform's precision (the model itself runs in float64 unless a test says otherwise):
* double: positions reach the model exactly, so energies and parameter derivatives equal Reference's
  to round-off (1e-12 relative); forces pass OpenMM's 64-bit fixed-point buffer (resolution
  2^-32 ≈ 2.3e-10 kJ/mol/nm), so 1e-9 absolute.
* mixed: positions are posq (float) plus its correction, i.e. double; energies as double. OpenMM returns
  forces as float32 in mixed precision: 1e-6 relative.
* single: positions are float32 (relative 6e-8, i.e. ≤ 2e-7 nm for coordinates ≤ 3 nm); energies and
  forces move by their derivatives times that: 1e-5 relative for energies, 1e-4 for forces
  (values here are O(1-100)).
"""

import functools
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import openmm
import pytest
import torch
from openmm import unit

import openmm_nnp
from openmm_nnp import NNPForce

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from test_nnp_force import (BOXES, ForcesModel, HarmonicRestraint, PairModel, PeriodicPairModel,  # noqa: E402
                            chain_positions, make_system, parameter_system, random_positions, state_of)

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / 'shared'
TOLUENE_DIR = SHARED / 'data' / 'toluene-water'

TOLERANCES = {  # see the module docstring
    'double': dict(energy=1e-12, force_rtol=1e-10, force_atol=1e-9),
    'mixed': dict(energy=1e-12, force_rtol=1e-6, force_atol=1e-6),
    'single': dict(energy=1e-5, force_rtol=1e-4, force_atol=1e-4),
}


@functools.lru_cache(maxsize=None)
def unavailable(platform_name):
    """Why `platform_name` cannot run NNPForce here, or None when it can."""
    names = [openmm.Platform.getPlatform(i).getName() for i in range(openmm.Platform.getNumPlatforms())]
    if platform_name not in names:
        failures = [f for f in openmm.Platform.getPluginLoadFailures() if platform_name in f]
        return f'OpenMM has no {platform_name} platform here' + (f' ({failures[0]})' if failures else '')
    platform = openmm.Platform.getPlatformByName(platform_name)
    if not platform.supportsKernels(['CalcNNPForce']):
        return f'openmm-nnp has no {platform_name} kernels here: {openmm_nnp.getPluginLoadFailures()}'
    try:
        openmm.Context(make_system(1), openmm.VerletIntegrator(0.001), platform)
    except Exception as e:
        return f'no {platform_name} device: {e}'
    return None


GPU_CASES = [pytest.param((name, precision), id=f'{name}-{precision}',
                          marks=pytest.mark.skipif(unavailable(name) is not None, reason=str(unavailable(name))))
             for name in ('OpenCL', 'CUDA') for precision in ('single', 'mixed', 'double')]


def make_context(system, platform, integrator=None):
    name, precision = platform
    return openmm.Context(system, integrator or openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName(name),
                          {'Precision': precision})


def assert_matches_reference(system, positions, platform, parameters=None, groups=-1, gpu_system=None):
    """Energy, forces and parameter derivatives of `system` on `platform` (or of `gpu_system` there) equal Reference's."""
    tolerance = TOLERANCES[platform[1]]
    expected = state_of(openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName('Reference')),
                        positions, parameters, groups)
    actual = state_of(make_context(gpu_system or system, platform), positions, parameters, groups)
    assert actual[0] == pytest.approx(expected[0], rel=tolerance['energy'], abs=tolerance['energy'])
    np.testing.assert_allclose(actual[1], expected[1], rtol=tolerance['force_rtol'], atol=tolerance['force_atol'])
    assert actual[2].keys() == expected[2].keys()
    for name in expected[2]:
        assert actual[2][name] == pytest.approx(expected[2][name], rel=tolerance['energy'], abs=tolerance['energy'])
    return expected, actual


# ---------------------------------------------------------------- the NNPForce suite against Reference

@pytest.mark.parametrize('platform', GPU_CASES)
def test_analytic_model_on_a_subset_in_arbitrary_order(platform):
    region = [7, 2, 9, 0]
    system = make_system(10)
    system.addForce(NNPForce(HarmonicRestraint([1.0, 20.0, 300.0, 4000.0], [[0.1 * i, -0.2, 0.3 * i] for i in range(4)]), region))
    expected, actual = assert_matches_reference(system, random_positions(10), platform)
    assert np.all(actual[1][[1, 3, 4, 5, 6, 8]] == 0.0)


@pytest.mark.parametrize('platform', GPU_CASES)
@pytest.mark.parametrize('dtype', [torch.float64, torch.float32])
def test_many_body_model(platform, dtype):
    system = make_system(8)
    system.addForce(NNPForce(PairModel(5, dtype=dtype), [5, 1, 3, 6, 0]))
    positions = random_positions(8, seed=1)
    if dtype == torch.float64:
        assert_matches_reference(system, positions, platform)
    else:  # float32 model: both platforms hand it float32 positions; its own round-off dominates
        expected = state_of(openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName('Reference')), positions)
        actual = state_of(make_context(system, platform), positions)
        assert actual[0] == pytest.approx(expected[0], rel=1e-5)
        np.testing.assert_allclose(actual[1], expected[1], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize('platform', GPU_CASES)
def test_model_that_outputs_forces(platform):
    system = make_system(4)
    force = NNPForce(ForcesModel(), [3, 1])
    force.setOutputsForces(True)
    system.addForce(force)
    assert_matches_reference(system, random_positions(4, seed=4), platform)


def torn_region(box, n, region, start, step):
    """Positions where the region is a chain through the box faces and every atom is wrapped on its own."""
    box_array = np.array([[v[0], v[1], v[2]] for v in box])
    whole = np.zeros((n, 3))
    whole[region] = chain_positions(len(region), start=start, step=step)
    others = [i for i in range(n) if i not in region]
    whole[others] = np.random.default_rng(5).uniform(0.2, 1.8, size=(len(others), 3))
    wrapped = whole.copy()
    for i in range(n):
        for axis in (2, 1, 0):
            wrapped[i] -= np.floor(wrapped[i, axis] / box_array[axis, axis]) * box_array[axis]
    assert np.abs(wrapped - whole).max() > 1.0  # the region really is torn apart
    return wrapped


@pytest.mark.parametrize('platform', GPU_CASES)
@pytest.mark.parametrize('box_name', list(BOXES))
def test_region_straddling_the_box_is_made_whole(platform, box_name):
    box = BOXES[box_name]
    region = [8, 3, 5, 0, 6, 1]
    system = make_system(9, periodic_box=box)
    force = NNPForce(PeriodicPairModel(len(region)), region)
    force.setUsesPeriodicBoundaryConditions(True)
    system.addForce(force)
    assert_matches_reference(system, torn_region(box, 9, region, [1.85, 2.05, 2.2], [0.09, 0.08, 0.07]), platform)


@pytest.mark.parametrize('platform', GPU_CASES)
def test_bonded_region_longer_than_half_the_box(platform):
    """Whole-making follows the bonds (the same plan as Reference), so a chain of 1.6 nm in a 2 nm box stays whole."""
    n = 12
    box = BOXES['rectangular']
    whole = chain_positions(n, start=[0.1, 0.2, 0.3], step=[0.14, 0.0, 0.0])
    wrapped = whole.copy()
    wrapped[:, 0] -= 2.0 * np.floor(wrapped[:, 0] / 2.0)
    system = make_system(n, periodic_box=box)
    force = NNPForce(PeriodicPairModel(n))
    force.setUsesPeriodicBoundaryConditions(True)
    force.setBonds([(i, i + 1) for i in range(n - 1)])
    system.addForce(force)
    expected, actual = assert_matches_reference(system, wrapped, platform)
    intact = PairModel(n)(torch.tensor(whole)).item() + 6.6
    assert actual[0] == pytest.approx(intact, rel=TOLERANCES[platform[1]]['energy'])


@pytest.mark.parametrize('platform', GPU_CASES)
def test_global_parameters_and_derivatives(platform):
    system = parameter_system(4)
    for k, c in [(2.0, 0.5), (-1.5, 3.0)]:
        assert_matches_reference(system, random_positions(4, seed=6), platform, parameters={'k': k, 'c': c})


@pytest.mark.parametrize('platform', GPU_CASES)
@pytest.mark.parametrize('scale', [0.0, 0.3, 1.0])
def test_scale_parameter_and_its_derivative(platform, scale):
    region = [4, 0, 5, 2]
    system = make_system(6)
    force = NNPForce(PairModel(len(region)), region)
    force.setScaleParameter('lambda_interpolate', 1.0)
    force.addEnergyParameterDerivative('lambda_interpolate')
    system.addForce(force)
    expected, actual = assert_matches_reference(system, random_positions(6, seed=7), platform, parameters={'lambda_interpolate': scale})
    assert actual[2]['lambda_interpolate'] != 0.0
    if scale == 0.0:
        assert actual[0] == 0.0 and np.all(actual[1] == 0.0)


@pytest.mark.parametrize('platform', GPU_CASES)
def test_inside_custom_cv_force(platform):
    system = make_system(4)
    cv = openmm.CustomCVForce('2*nnp + 1')
    cv.addCollectiveVariable('nnp', NNPForce(PairModel(4)))
    system.addForce(cv)
    assert_matches_reference(system, random_positions(4, seed=11), platform)


@pytest.mark.parametrize('platform', GPU_CASES)
def test_two_forces_and_force_groups(platform):
    positions = random_positions(7, seed=10)
    system = make_system(7)
    force_a = NNPForce(PairModel(3), [0, 1, 2])
    force_a.setForceGroup(1)
    force_b = NNPForce(HarmonicRestraint([1.0, 2.0, 3.0], [[0.0, 0.0, 0.0]] * 3), [6, 4, 5])
    force_b.setForceGroup(2)
    system.addForce(force_a)
    system.addForce(force_b)
    for groups in ({1}, {2}, {1, 2}):
        expected, actual = assert_matches_reference(system, positions, platform, groups=groups)
        assert actual[0] != 0.0


@pytest.mark.parametrize('platform', GPU_CASES)
def test_serialized_system_reloads(platform):
    region = [4, 1, 3, 0]
    system = make_system(5, periodic_box=BOXES['triclinic'])
    force = NNPForce(PeriodicPairModel(len(region)), region)
    force.setUsesPeriodicBoundaryConditions(True)
    force.setScaleParameter('lambda_interpolate', 0.6)
    force.addEnergyParameterDerivative('lambda_interpolate')
    system.addForce(force)
    reloaded = openmm.XmlSerializer.deserialize(openmm.XmlSerializer.serialize(system))
    assert_matches_reference(system, random_positions(5, seed=13), platform, gpu_system=reloaded)


# ---------------------------------------------------------------- reordering and dynamics

@pytest.mark.parametrize('platform', [case for case in GPU_CASES if case.values[0][1] == 'single'])
def test_region_survives_atom_reordering(platform):
    """Three waters of a PME water box as the region, with a model that is not symmetric under swapping them.
    OpenMM reorders atoms every 250 steps and may swap identical molecules; after 300 steps of dynamics the
    region's energy and forces still equal Reference's at the same positions (they would not if the kernel
    read the wrong slots, or if a region water had been swapped with another water)."""
    from openmmtools.testsystems import WaterBox
    water = WaterBox(box_edge=1.8 * unit.nanometer, cutoff=0.8 * unit.nanometer)
    system = water.system
    region = [30, 31, 32, 3, 4, 5, 301, 302, 303]
    force = NNPForce(PeriodicPairModel(len(region)), region)
    force.setUsesPeriodicBoundaryConditions(True)
    force.setForceGroup(1)
    system.addForce(force)
    integrator = openmm.LangevinMiddleIntegrator(300 * unit.kelvin, 1 / unit.picosecond, 0.002 * unit.picoseconds)
    integrator.setRandomNumberSeed(1)
    context = make_context(system, platform, integrator)
    context.setPositions(water.positions)
    context.setVelocitiesToTemperature(300 * unit.kelvin, 1)
    integrator.step(300)
    state = context.getState(getPositions=True)
    positions = state.getPositions(asNumpy=True).value_in_unit(unit.nanometer)
    box = state.getPeriodicBoxVectors()
    actual = state_of(context, groups={1})
    reference = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName('Reference'))
    reference.setPeriodicBoxVectors(*box)
    expected = state_of(reference, positions, groups={1})
    assert actual[0] == pytest.approx(expected[0], rel=TOLERANCES['single']['energy'])
    np.testing.assert_allclose(actual[1], expected[1], rtol=TOLERANCES['single']['force_rtol'], atol=TOLERANCES['single']['force_atol'])


# Positions after 12 MTS steps against Reference, nm: double to rounding (measured 2.5e-12 with PoCL); mixed and
# single carry the forces' float32 arithmetic and, in single, float32 positions (measured 5.2e-8 and 5.1e-7).
MTS_POSITION_TOLERANCE = {'double': 1e-9, 'mixed': 1e-6, 'single': 1e-5}


@pytest.mark.parametrize('platform', GPU_CASES)
def test_mts_integrator_matches_reference(platform):
    """NNPMTSLangevinMiddleIntegrator (the platform's LangevinMiddleIntegrator kernel on group 0, the NNPForce's
    impulse added by this plugin's force-combining kernel every third step) without friction: the same positions
    as on Reference after 12 steps, to MTS_POSITION_TOLERANCE (1e-9 nm in double precision; the atoms move
    ~0.02 nm)."""
    from openmm_nnp.integrators import NNPMTSLangevinMiddleIntegrator
    from test_overlap import fluid
    system, positions = fluid(mts=True)
    finals = []
    reference = openmm.Platform.getPlatformByName('Reference')
    for context_of in (lambda integrator: openmm.Context(system, integrator, reference),
                       lambda integrator: make_context(system, platform, integrator)):
        integrator = NNPMTSLangevinMiddleIntegrator(300 * unit.kelvin, 0 / unit.picosecond, 0.002 * unit.picoseconds,
                                                    3)
        context = context_of(integrator)
        context.setPositions(positions)
        context.setVelocitiesToTemperature(300 * unit.kelvin, 11)
        integrator.step(12)
        assert context.getStepCount() == 12
        finals.append(context.getState(getPositions=True).getPositions(asNumpy=True)._value)
    assert np.abs(finals[1] - finals[0]).max() < MTS_POSITION_TOLERANCE[platform[1]]
    assert np.abs(finals[0] - positions).max() > 0.005


@pytest.mark.skipif(not TOLUENE_DIR.exists(), reason=f'shared test data {TOLUENE_DIR} not found')
@pytest.mark.parametrize('platform', [case for case in GPU_CASES if case.values[0][1] == 'single'])
def test_ani2x_nnp_mm_matches_cpu_and_runs(platform):
    """ANI-2x on the toluene of toluene in water (6,495 atoms): the NNP force group on OpenCL (single) equals
    the CPU platform's. Both hand float32 positions to the float32 model (the CPU platform rounds its double
    positions; OpenCL stores float): ANI energies are ~1e6 kJ/mol, so float32 agrees to ~0.1 kJ/mol and the
    forces to ~0.05 kJ/mol/nm. Then 20 steps of Langevin dynamics stay finite and do not heat up (a blow-up
    reaches thousands of K; velocities drawn at 300 K from this structure first lose kinetic energy to the
    potential, to ~160 K here, so the window is wide)."""
    from openmm import app
    from openmm_nnp import NNPotential
    prmtop = app.AmberPrmtopFile(str(TOLUENE_DIR / 'toluene-explicit.prm7'))
    inpcrd = app.AmberInpcrdFile(str(TOLUENE_DIR / 'toluene-explicit.rst7'))
    mm = prmtop.createSystem(nonbondedMethod=app.PME, nonbondedCutoff=0.9 * unit.nanometer, constraints=app.HBonds)
    mm.setDefaultPeriodicBoxVectors(*inpcrd.boxVectors)
    system = NNPotential('ani2x').createMixedSystem(prmtop.topology, mm, 'resname MBN', forceGroup=1)
    cpu = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName('CPU'))
    expected = state_of(cpu, inpcrd.positions, groups={1})
    integrator = openmm.LangevinMiddleIntegrator(300 * unit.kelvin, 1 / unit.picosecond, 0.002 * unit.picoseconds)
    context = make_context(system, platform, integrator)
    actual = state_of(context, inpcrd.positions, groups={1})
    region = [atom.index for atom in prmtop.topology.atoms() if atom.residue.name == 'MBN']
    assert actual[0] == pytest.approx(expected[0], abs=0.1)
    np.testing.assert_allclose(actual[1][region], expected[1][region], atol=0.05)
    assert np.all(actual[1][[i for i in range(system.getNumParticles()) if i not in region]] == 0.0)

    context.setVelocitiesToTemperature(300 * unit.kelvin, 2)
    integrator.step(20)
    state = context.getState(getEnergy=True)
    kinetic = state.getKineticEnergy().value_in_unit(unit.kilojoule_per_mole)
    dof = 3 * system.getNumParticles() - system.getNumConstraints() - 3
    temperature = 2 * kinetic / (dof * unit.MOLAR_GAS_CONSTANT_R.value_in_unit(unit.kilojoule_per_mole / unit.kelvin))
    assert np.isfinite(state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole))
    assert 100 < temperature < 400


# ---------------------------------------------------------------- bad input

def test_platform_without_nnp_kernels_is_named(tmp_path):
    """A Context on a platform for which no NNPForce kernels were registered says so, naming NNPForce and
    the platforms that have them. Run in a fresh process that registers only the Reference/CPU kernels."""
    if unavailable('OpenCL') is not None and 'no OpenCL platform' in unavailable('OpenCL'):
        pytest.skip(unavailable('OpenCL'))
    library_dir = os.path.dirname(openmm_nnp.__file__)
    script = textwrap.dedent(f"""
        import os, openmm, torch
        openmm.Platform._openmm_nnp_kernels_loaded = True  # keep the package from loading every kernel library
        torch.ops.load_library(os.path.join({library_dir!r}, 'libOpenMMNNPTorchOps.so'))
        openmm.Platform.loadPluginLibrary(os.path.join({library_dir!r}, 'libOpenMMNNPReference.so'))
        import openmm_nnp
        system = openmm.System()
        system.addParticle(1.0)
        system.addForce(openmm_nnp.NNPForce({str(tmp_path / 'model.pt')!r}))
        try:
            openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName('OpenCL'))
        except openmm.OpenMMException as e:
            print(e)
    """)

    class Sum(torch.nn.Module):
        def forward(self, positions):
            return positions.sum()

    torch.jit.script(Sum()).save(str(tmp_path / 'model.pt'))
    result = subprocess.run([sys.executable, '-c', script], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    message = result.stdout.strip().splitlines()[-1]
    assert message.startswith('NNPForce has no kernels for the OpenCL platform; it runs on Reference, CPU.'), message


def test_gpu_kernel_library_failures_are_recorded_not_raised():
    """`import openmm_nnp` never fails for a GPU kernel library that cannot load; the failure is listed."""
    failures = openmm_nnp.getPluginLoadFailures()
    assert isinstance(failures, list)
    for platform, library in (('OpenCL', 'libOpenMMNNPOpenCL.so'), ('CUDA', 'libOpenMMNNPCUDA.so')):
        built = os.path.exists(os.path.join(os.path.dirname(openmm_nnp.__file__), library))
        registered = platform in [openmm.Platform.getPlatform(i).getName() for i in range(openmm.Platform.getNumPlatforms())] and \
            openmm.Platform.getPlatformByName(platform).supportsKernels(['CalcNNPForce'])
        if built and not registered:
            assert any(library in failure for failure in failures), (platform, failures)
