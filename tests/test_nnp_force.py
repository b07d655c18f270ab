"""NNPForce on the Reference and CPU platforms (tests/test_gpu_platforms.py: the GPU platforms against Reference):
energies, forces, parameters, periodicity, serialization
and bad input, checked against analytic models and finite differences.

The models here are written in float64 unless a test is about float32, so agreement is limited by
round-off: energies and forces are compared at 1e-9 relative, finite differences (central, h = 1e-5 nm,
error O(h^2 f''') ~ 1e-9) at 1e-6.
"""

import copy
import os
import pickle
import subprocess
import sys
import textwrap
from typing import List, Tuple

import numpy as np
import openmm
import pytest
import torch
from openmm import unit

import openmm_nnp
from openmm_nnp import NNPForce

PLATFORMS = ['Reference', 'CPU']


# ---------------------------------------------------------------- models

class HarmonicRestraint(torch.nn.Module):
    """E = sum_i k_i |r_i - r0_i|^2 over the region's atoms in the order the force passes them."""

    def __init__(self, k, r0):
        super().__init__()
        self.register_buffer('k', torch.tensor(k, dtype=torch.float64))
        self.register_buffer('r0', torch.tensor(r0, dtype=torch.float64))

    def forward(self, positions):
        return (self.k * ((positions - self.r0) ** 2).sum(dim=1)).sum()


def pair_energy(positions: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """A smooth, translation-invariant, many-body energy: sum over pairs of w_ij (exp(-r) + (r - 0.15)^2)
    plus a three-body cosine term. Used where analytic forces would be tedious."""
    delta = positions.unsqueeze(0) - positions.unsqueeze(1)
    r2 = (delta ** 2).sum(-1) + torch.eye(positions.shape[0], dtype=positions.dtype)
    r = torch.sqrt(r2)
    pair = (weights * (torch.exp(-r) + (r - 0.15) ** 2)).triu(1).sum()
    unit_vectors = delta / r.unsqueeze(-1)
    cosines = torch.einsum('ijk,ilk->ijl', unit_vectors, unit_vectors)
    return pair + 0.1 * (cosines ** 2).sum()


class PairModel(torch.nn.Module):
    def __init__(self, n, dtype=torch.float64):
        super().__init__()
        self.register_buffer('weights', torch.linspace(0.5, 1.5, n * n, dtype=dtype).reshape(n, n))

    def forward(self, positions):
        return pair_energy(positions, self.weights)


class PeriodicPairModel(PairModel):
    """PairModel taking the box, which adds trace(box) so we can see the box arrives."""

    def forward(self, positions, boxVectors):
        return pair_energy(positions, self.weights) + boxVectors.trace()


class ParameterModel(torch.nn.Module):
    """E = k sum|r|^2 + c^2 sum(x): two global parameters in the order (k, c)."""

    def forward(self, positions, k, c):
        return k * (positions ** 2).sum() + c * c * positions[:, 0].sum()


class ForcesModel(torch.nn.Module):
    """Returns (energy, forces) with forces that are deliberately not -dE/dx, to prove they are used as given."""

    def forward(self, positions):
        return (positions ** 2).sum(), 3.0 * positions + 1.0


class OwnForcesModel(torch.nn.Module):
    """forward: E = k sum|r|^2. energy_and_forces returns E + 1000 and forces that are not -dE/dx, so a test sees
    which of the two (and whether autograd) produced a result."""

    def forward(self, positions, k):
        return k * (positions ** 2).sum()

    @torch.jit.export
    def energy_and_forces(self, positions, k) -> Tuple[torch.Tensor, torch.Tensor]:
        return k * (positions ** 2).sum() + 1000.0, 3.0 * positions + 1.0


class BadEnergyAndForces(torch.nn.Module):
    def forward(self, positions):
        return (positions ** 2).sum()

    @torch.jit.export
    def energy_and_forces(self, positions):
        return (positions ** 2).sum()


def make_system(n, periodic_box=None, masses=None):
    system = openmm.System()
    for i in range(n):
        system.addParticle(1.0 if masses is None else masses[i])
    if periodic_box is not None:
        system.setDefaultPeriodicBoxVectors(*periodic_box)
    return system


def state_of(context, positions=None, parameters=None, groups=-1, box=None):
    """(energy kJ/mol, forces [n,3] kJ/mol/nm, parameter derivatives) of `context`, after setting what is given."""
    if box is not None:
        context.setPeriodicBoxVectors(*box)
    if positions is not None:
        context.setPositions(positions)
    for name, value in (parameters or {}).items():
        context.setParameter(name, value)
    state = context.getState(getEnergy=True, getForces=True, getParameterDerivatives=True, groups=groups)
    energy = state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
    forces = state.getForces(asNumpy=True).value_in_unit(unit.kilojoule_per_mole / unit.nanometer)
    return energy, np.array(forces), dict(state.getEnergyParameterDerivatives())


def evaluate(system, positions, platform, groups=-1, parameters=None, box=None):
    context = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName(platform))
    return state_of(context, positions, parameters, groups, box)


def random_positions(n, seed=0, scale=0.5):
    return np.random.default_rng(seed).uniform(-scale, scale, size=(n, 3))


def finite_difference_forces(system, positions, platform, atoms, h=1e-5):
    """Central differences of the energy, for the listed atoms."""
    integrator = openmm.VerletIntegrator(0.001)
    context = openmm.Context(system, integrator, openmm.Platform.getPlatformByName(platform))
    forces = np.zeros((len(atoms), 3))
    for a, atom in enumerate(atoms):
        for d in range(3):
            energies = []
            for sign in (1, -1):
                displaced = positions.copy()
                displaced[atom, d] += sign * h
                context.setPositions(displaced)
                energies.append(context.getState(getEnergy=True).getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole))
            forces[a, d] = -(energies[0] - energies[1]) / (2 * h)
    return forces


# ---------------------------------------------------------------- energies and forces

@pytest.mark.parametrize('platform', PLATFORMS)
def test_harmonic_restraint_on_subset_in_arbitrary_order(platform):
    n = 10
    region = [7, 2, 9, 0]
    k = [1.0, 20.0, 300.0, 4000.0]
    r0 = [[0.1 * i, -0.2, 0.3 * i] for i in range(len(region))]
    system = make_system(n)
    system.addForce(NNPForce(HarmonicRestraint(k, r0), region))
    positions = random_positions(n)
    energy, forces, _ = evaluate(system, positions, platform)

    expected_forces = np.zeros((n, 3))
    expected_energy = 0.0
    for i, atom in enumerate(region):
        d = positions[atom] - np.array(r0[i])
        expected_energy += k[i] * d @ d
        expected_forces[atom] = -2 * k[i] * d
    assert energy == pytest.approx(expected_energy, rel=1e-12)
    np.testing.assert_allclose(forces, expected_forces, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize('platform', PLATFORMS)
def test_forces_match_finite_differences(platform):
    n, region = 8, [5, 1, 3, 6, 0]
    system = make_system(n)
    system.addForce(NNPForce(PairModel(len(region)), region))
    positions = random_positions(n, seed=1)
    _, forces, _ = evaluate(system, positions, platform)
    numeric = finite_difference_forces(system, positions, platform, region)
    np.testing.assert_allclose(forces[region], numeric, rtol=1e-6, atol=1e-6)
    assert np.all(forces[[2, 4, 7]] == 0.0)


def test_all_particles_when_atoms_is_none_or_empty():
    n = 5
    positions = random_positions(n, seed=2)
    energies = []
    for atoms in (None, [], list(range(n))):
        system = make_system(n)
        system.addForce(NNPForce(PairModel(n), atoms))
        energies.append(evaluate(system, positions, 'Reference')[0])
    assert energies[0] == energies[1] == energies[2]


class DtypeProbe(torch.nn.Module):
    """Energy 1 for float32 input, 2 for float64 (plus a zero term so autograd has a graph)."""

    def __init__(self, dtype):
        super().__init__()
        self.register_buffer('scale', torch.ones((), dtype=dtype))

    def forward(self, positions):
        marker = 1.0 if positions.dtype == torch.float32 else 2.0
        return (positions * 0.0).sum() * self.scale + marker


@pytest.mark.parametrize('dtype,expected', [(torch.float32, 1.0), (torch.float64, 2.0)])
def test_positions_are_cast_to_the_model_dtype(dtype, expected):
    system = make_system(3)
    system.addForce(NNPForce(DtypeProbe(dtype)))
    assert evaluate(system, random_positions(3), 'CPU')[0] == expected


def test_dtype_property_overrides_model_dtype():
    system = make_system(3)
    force = NNPForce(DtypeProbe(torch.float64))
    force.setProperty('dtype', 'float32')
    system.addForce(force)
    assert evaluate(system, random_positions(3), 'Reference')[0] == 1.0


@pytest.mark.parametrize('platform', PLATFORMS)
def test_float32_model_agrees_with_float64(platform):
    n = 6
    positions = random_positions(n, seed=3)
    results = {}
    for dtype in (torch.float32, torch.float64):
        system = make_system(n)
        system.addForce(NNPForce(PairModel(n, dtype=dtype)))
        results[dtype] = evaluate(system, positions, platform)
    # float32 round-off: ~1e-7 relative per operation, a few hundred operations.
    assert results[torch.float32][0] == pytest.approx(results[torch.float64][0], rel=1e-5)
    np.testing.assert_allclose(results[torch.float32][1], results[torch.float64][1], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize('platform', PLATFORMS)
def test_model_that_outputs_forces(platform):
    n = 4
    system = make_system(n)
    force = NNPForce(ForcesModel(), [3, 1])
    force.setOutputsForces(True)
    system.addForce(force)
    positions = random_positions(n, seed=4)
    energy, forces, _ = evaluate(system, positions, platform)
    assert energy == pytest.approx((positions[[3, 1]] ** 2).sum(), rel=1e-12)
    np.testing.assert_allclose(forces[[3, 1]], 3.0 * positions[[3, 1]] + 1.0, rtol=1e-12)
    assert np.all(forces[[0, 2]] == 0.0)


@pytest.mark.parametrize('platform', PLATFORMS)
def test_energy_and_forces_method_serves_force_evaluations(platform):
    # A model's energy_and_forces() replaces forward() + autograd when forces are needed and no parameter
    # derivative is; energy-only evaluations and parameter derivatives go through forward().
    n = 4
    system = make_system(n)
    force = NNPForce(OwnForcesModel(), [3, 1])
    force.addGlobalParameter('k', 2.0)
    system.addForce(force)
    positions = random_positions(n, seed=4)
    sub = positions[[3, 1]]
    context = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName(platform))
    context.setPositions(positions)
    state = context.getState(getEnergy=True, getForces=True)
    assert state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole) == pytest.approx(
        2.0 * (sub ** 2).sum() + 1000.0, rel=1e-12)
    forces = state.getForces(asNumpy=True).value_in_unit(unit.kilojoule_per_mole / unit.nanometer)
    np.testing.assert_allclose(forces[[3, 1]], 3.0 * sub + 1.0, rtol=1e-12)
    assert np.all(forces[[0, 2]] == 0.0)
    # Energy only (getState asks for forces too; a CustomIntegrator's `energy` does not).
    integrator = openmm.CustomIntegrator(0.001)
    integrator.addGlobalVariable('e', 0.0)
    integrator.addComputeGlobal('e', 'energy')
    context = openmm.Context(system, integrator, openmm.Platform.getPlatformByName(platform))
    context.setPositions(positions)
    integrator.step(1)
    assert integrator.getGlobalVariableByName('e') == pytest.approx(2.0 * (sub ** 2).sum(), rel=1e-12)
    # With dE/dk requested the force needs autograd anyway: forward() and -dE/dx.
    force.addEnergyParameterDerivative('k')
    energy, forces, derivatives = evaluate(system, positions, platform)
    assert energy == pytest.approx(2.0 * (sub ** 2).sum(), rel=1e-12)
    np.testing.assert_allclose(forces[[3, 1]], -4.0 * sub, rtol=1e-12)
    assert derivatives['k'] == pytest.approx((sub ** 2).sum(), rel=1e-12)


def test_energy_and_forces_method_with_the_wrong_signature():
    system = make_system(3)
    system.addForce(NNPForce(BadEnergyAndForces()))
    message = context_error(system)
    assert 'energy_and_forces() must take the arguments of forward() and return (energy, forces)' in message


def test_model_from_file_and_bytes_give_the_same_energy(tmp_path):
    n = 5
    model = torch.jit.script(PairModel(n))
    path = tmp_path / 'model.pt'
    model.save(str(path))
    positions = random_positions(n, seed=5)
    energies = []
    for source in (str(path), path, path.read_bytes(), model, PairModel(n)):
        system = make_system(n)
        system.addForce(NNPForce(source))
        energies.append(evaluate(system, positions, 'Reference')[0])
    assert len(set(energies)) == 1
    # getModel() returns a working copy of the stored module.
    copy_energy = NNPForce(str(path)).getModel()(torch.tensor(positions)).item()
    assert copy_energy == pytest.approx(energies[0], rel=1e-12)


# ---------------------------------------------------------------- periodic boundary conditions

BOXES = {
    'rectangular': [openmm.Vec3(2.0, 0, 0), openmm.Vec3(0, 2.2, 0), openmm.Vec3(0, 0, 2.4)],
    'triclinic': [openmm.Vec3(2.0, 0, 0), openmm.Vec3(0.6, 2.1, 0), openmm.Vec3(-0.5, 0.7, 2.3)],
}


def chain_positions(n, start, step):
    """A zig-zag chain of n atoms from `start`, bond vectors alternating around `step`."""
    positions = [np.array(start, dtype=float)]
    for i in range(1, n):
        wiggle = np.array([0.0, 0.05, -0.04]) * (1 if i % 2 else -1)
        positions.append(positions[-1] + np.array(step) + wiggle)
    return np.array(positions)


@pytest.mark.parametrize('platform', PLATFORMS)
@pytest.mark.parametrize('box_name', list(BOXES))
def test_region_straddling_the_boundary_is_made_whole(platform, box_name):
    box = BOXES[box_name]
    box_array = np.array([[v[0], v[1], v[2]] for v in box])
    n_region, n = 6, 9
    region = [8, 3, 5, 0, 6, 1]
    whole = np.zeros((n, 3))
    # Start near a corner so the chain crosses the box faces.
    whole[region] = chain_positions(n_region, start=[1.85, 2.05, 2.2], step=[0.09, 0.08, 0.07])
    whole[[2, 4, 7]] = [[1.0, 1.0, 1.0], [0.5, 0.5, 0.5], [1.5, 1.2, 0.3]]
    # Wrap every atom into the box independently, tearing the chain apart.
    wrapped = whole.copy()
    for i in range(n):
        for axis in (2, 1, 0):
            shift = np.floor(wrapped[i, axis] / box_array[axis, axis])
            wrapped[i] -= shift * box_array[axis]
    assert np.abs(wrapped - whole).max() > 1.0  # the test really tears the region

    system = make_system(n, periodic_box=box)
    force = NNPForce(PeriodicPairModel(n_region), region)
    force.setUsesPeriodicBoundaryConditions(True)
    system.addForce(force)
    energy, forces, _ = evaluate(system, wrapped, platform)
    reference = PairModel(n_region)(torch.tensor(whole[region])).item() + np.trace(box_array)
    assert energy == pytest.approx(reference, rel=1e-12)
    numeric = finite_difference_forces(system, wrapped, platform, region)
    np.testing.assert_allclose(forces[region], numeric, rtol=1e-6, atol=1e-6)


def test_bonds_keep_a_region_longer_than_half_the_box_whole():
    """A chain longer than half the box: imaging each atom against its bonded neighbour keeps it whole,
    imaging against the first atom alone could not."""
    box = BOXES['rectangular']
    n = 12
    whole = chain_positions(n, start=[0.1, 0.2, 0.3], step=[0.14, 0.0, 0.0])  # 1.6 nm long in a 2 nm box
    wrapped = whole.copy()
    wrapped[:, 0] -= 2.0 * np.floor(wrapped[:, 0] / 2.0)
    bonds = [(i, i + 1) for i in range(n - 1)]
    system = make_system(n, periodic_box=box)
    force = NNPForce(PeriodicPairModel(n))
    force.setUsesPeriodicBoundaryConditions(True)
    force.setBonds(bonds)
    system.addForce(force)
    energy = evaluate(system, wrapped, 'Reference')[0]
    reference = PairModel(n)(torch.tensor(whole)).item() + 6.6
    assert energy == pytest.approx(reference, rel=1e-12)


def test_bonds_are_reported_to_openmm_as_one_molecule():
    system = make_system(4, periodic_box=BOXES['rectangular'])
    force = NNPForce(PeriodicPairModel(3), [0, 2, 3])
    force.setUsesPeriodicBoundaryConditions(True)
    force.setBonds([(0, 2), (2, 3)])
    system.addForce(force)
    context = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName('Reference'))
    molecules = sorted(sorted(m) for m in context.getMolecules())
    assert molecules == [[0, 2, 3], [1]]


# ---------------------------------------------------------------- global parameters and scaling

def parameter_system(n=4):
    """ParameterModel on atoms [0, 2, 3] with global parameters k = 2, c = 0.5 and both derivatives requested."""
    system = make_system(n)
    force = NNPForce(ParameterModel(), [0, 2, 3])
    force.addGlobalParameter('k', 2.0)
    force.addGlobalParameter('c', 0.5)
    force.addEnergyParameterDerivative('k')
    force.addEnergyParameterDerivative('c')
    system.addForce(force)
    return system


@pytest.mark.parametrize('platform', PLATFORMS)
def test_global_parameters_and_their_derivatives(platform):
    n = 4
    system = parameter_system(n)
    positions = random_positions(n, seed=6)
    sub = positions[[0, 2, 3]]
    for k, c in [(2.0, 0.5), (-1.5, 3.0)]:
        energy, forces, derivatives = evaluate(system, positions, platform, parameters={'k': k, 'c': c})
        assert energy == pytest.approx(k * (sub ** 2).sum() + c * c * sub[:, 0].sum(), rel=1e-12)
        assert derivatives['k'] == pytest.approx((sub ** 2).sum(), rel=1e-12)
        assert derivatives['c'] == pytest.approx(2 * c * sub[:, 0].sum(), rel=1e-12)
        # ... and against finite differences of the energy in the parameter.
        h = 1e-6
        for name in ('k', 'c'):
            values = {'k': k, 'c': c}
            plus = evaluate(system, positions, platform, parameters={**values, name: values[name] + h})[0]
            minus = evaluate(system, positions, platform, parameters={**values, name: values[name] - h})[0]
            assert derivatives[name] == pytest.approx((plus - minus) / (2 * h), rel=1e-6, abs=1e-6)


@pytest.mark.parametrize('platform', PLATFORMS)
@pytest.mark.parametrize('scale', [0.0, 0.3, 1.0])
def test_scale_parameter(platform, scale):
    n = 6
    region = [4, 0, 5, 2]
    positions = random_positions(n, seed=7)
    unscaled_system = make_system(n)
    unscaled_system.addForce(NNPForce(PairModel(len(region)), region))
    unscaled_energy, unscaled_forces, _ = evaluate(unscaled_system, positions, platform)

    system = make_system(n)
    force = NNPForce(PairModel(len(region)), region)
    force.setScaleParameter('lambda_interpolate', 1.0)
    force.addEnergyParameterDerivative('lambda_interpolate')
    system.addForce(force)
    energy, forces, derivatives = evaluate(system, positions, platform, parameters={'lambda_interpolate': scale})
    assert energy == pytest.approx(scale * unscaled_energy, rel=1e-12, abs=1e-12)
    np.testing.assert_allclose(forces, scale * unscaled_forces, rtol=1e-12, atol=1e-12)
    assert derivatives['lambda_interpolate'] == pytest.approx(unscaled_energy, rel=1e-12)


def test_scale_multiplies_parameter_derivatives():
    system = make_system(3)
    force = NNPForce(ParameterModel())
    force.addGlobalParameter('k', 2.0)
    force.addGlobalParameter('c', 0.5)
    force.setScaleParameter('lam', 0.25)
    force.addEnergyParameterDerivative('k')
    force.addEnergyParameterDerivative('lam')
    system.addForce(force)
    positions = random_positions(3, seed=8)
    energy, _, derivatives = evaluate(system, positions, 'Reference')
    unscaled = 2.0 * (positions ** 2).sum() + 0.25 * positions[:, 0].sum()
    assert energy == pytest.approx(0.25 * unscaled, rel=1e-12)
    assert derivatives['k'] == pytest.approx(0.25 * (positions ** 2).sum(), rel=1e-12)
    assert derivatives['lam'] == pytest.approx(unscaled, rel=1e-12)


def test_scale_parameter_is_a_global_parameter_not_passed_to_the_model():
    """The scale parameter is listed with the global parameters (tools such as openmmtools set defaults
    through that list) but the model receives only the others, in order."""
    force = NNPForce(ParameterModel())
    force.addGlobalParameter('k', 2.0)
    force.setScaleParameter('lam', 0.5)
    force.addGlobalParameter('c', 0.5)
    names = [force.getGlobalParameterName(i) for i in range(force.getNumGlobalParameters())]
    assert names == ['k', 'lam', 'c']
    force.setGlobalParameterDefaultValue(1, 0.25)
    assert force.getScaleParameterDefaultValue() == 0.25
    system = make_system(3)
    system.addForce(force)
    positions = random_positions(3, seed=14)
    unscaled = 2.0 * (positions ** 2).sum() + 0.25 * positions[:, 0].sum()
    assert evaluate(system, positions, 'Reference')[0] == pytest.approx(0.25 * unscaled, rel=1e-12)
    # A new scale parameter replaces the old one; an empty name removes scaling.
    force.setScaleParameter('mu', 1.0)
    assert [force.getGlobalParameterName(i) for i in range(force.getNumGlobalParameters())] == ['k', 'c', 'mu']
    force.setScaleParameter('')
    assert [force.getGlobalParameterName(i) for i in range(force.getNumGlobalParameters())] == ['k', 'c']


def test_scale_parameter_shared_with_other_forces_accumulates_derivative():
    """dU/dlambda of a system sums the contributions of every force that depends on lambda."""
    n = 4
    positions = random_positions(n, seed=9)
    system = make_system(n)
    nnp = NNPForce(PairModel(n))
    nnp.setScaleParameter('lam', 0.5)
    nnp.addEnergyParameterDerivative('lam')
    system.addForce(nnp)
    bond = openmm.CustomBondForce('(1-lam)*r^2')
    bond.addGlobalParameter('lam', 0.5)
    bond.addEnergyParameterDerivative('lam')
    bond.addBond(0, 1)
    system.addForce(bond)
    _, _, derivatives = evaluate(system, positions, 'Reference')
    r2 = ((positions[0] - positions[1]) ** 2).sum()
    expected = PairModel(n)(torch.tensor(positions)).item() - r2
    assert derivatives['lam'] == pytest.approx(expected, rel=1e-12)


# ---------------------------------------------------------------- composition with OpenMM

@pytest.mark.parametrize('platform', PLATFORMS)
def test_two_nnp_forces_in_different_force_groups(platform):
    n = 7
    positions = random_positions(n, seed=10)
    region_a, region_b = [0, 1, 2], [6, 4, 5]
    system = make_system(n)
    force_a = NNPForce(PairModel(3), region_a)
    force_a.setForceGroup(1)
    force_b = NNPForce(HarmonicRestraint([1.0, 2.0, 3.0], [[0.0, 0.0, 0.0]] * 3), region_b)
    force_b.setForceGroup(2)
    system.addForce(force_a)
    system.addForce(force_b)
    expected_a = PairModel(3)(torch.tensor(positions[region_a])).item()
    expected_b = sum(w * (positions[i] ** 2).sum() for w, i in zip([1.0, 2.0, 3.0], region_b))
    assert evaluate(system, positions, platform, groups={1})[0] == pytest.approx(expected_a, rel=1e-12)
    assert evaluate(system, positions, platform, groups={2})[0] == pytest.approx(expected_b, rel=1e-12)
    assert evaluate(system, positions, platform)[0] == pytest.approx(expected_a + expected_b, rel=1e-12)
    forces_b = evaluate(system, positions, platform, groups={2})[1]
    assert np.all(forces_b[region_a] == 0.0)


def test_inside_custom_cv_force():
    n = 4
    positions = random_positions(n, seed=11)
    system = make_system(n)
    cv = openmm.CustomCVForce('2*nnp + 1')
    cv.addCollectiveVariable('nnp', NNPForce(PairModel(n)))
    system.addForce(cv)
    energy, forces, _ = evaluate(system, positions, 'Reference')
    direct = make_system(n)
    direct.addForce(NNPForce(PairModel(n)))
    direct_energy, direct_forces, _ = evaluate(direct, positions, 'Reference')
    assert energy == pytest.approx(2 * direct_energy + 1, rel=1e-12)
    np.testing.assert_allclose(forces, 2 * direct_forces, rtol=1e-12)
    assert isinstance(system.getForce(0).getCollectiveVariable(0), NNPForce)


def test_dynamics_conserve_energy():
    """Velocity Verlet on a pure-NNPForce system: total energy drift stays small (checks force/energy consistency)."""
    n = 5
    system = make_system(n, masses=[12.0] * n)
    system.addForce(NNPForce(HarmonicRestraint([500.0] * n, [[0.1 * i, 0.0, 0.0] for i in range(n)])))
    integrator = openmm.VerletIntegrator(0.0005)
    context = openmm.Context(system, integrator, openmm.Platform.getPlatformByName('CPU'))
    context.setPositions(random_positions(n, seed=12, scale=0.1))
    context.setVelocitiesToTemperature(300)
    totals = []
    for _ in range(50):
        integrator.step(10)
        state = context.getState(getEnergy=True)
        totals.append((state.getPotentialEnergy() + state.getKineticEnergy()).value_in_unit(unit.kilojoule_per_mole))
    assert np.all(np.isfinite(totals))
    assert np.ptp(totals) < 1e-3 * np.abs(totals).max()


def test_num_threads_property_sets_torch_threads():
    before = torch.get_num_threads()
    try:
        system = make_system(2)
        force = NNPForce(PairModel(2))
        force.setProperty('numThreads', '1')
        system.addForce(force)
        evaluate(system, random_positions(2), 'CPU')
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


# ---------------------------------------------------------------- serialization

def configured_force():
    force = NNPForce(ParameterModel(), [3, 0, 2])
    force.addGlobalParameter('k', 2.0)
    force.addGlobalParameter('c', -0.5)
    force.addEnergyParameterDerivative('c')
    force.setScaleParameter('lambda_interpolate', 0.7)
    force.addEnergyParameterDerivative('lambda_interpolate')
    force.setBonds([(3, 0), (0, 2)])
    force.setProperty('numThreads', '2')
    force.setForceGroup(5)
    force.setName('ligand')
    return force


def assert_same_force(a, b):
    assert isinstance(b, NNPForce)
    assert a.getModelBytes() == b.getModelBytes()
    assert list(a.getAtoms()) == list(b.getAtoms())
    assert [tuple(x) for x in a.getBonds()] == [tuple(x) for x in b.getBonds()]
    assert a.usesPeriodicBoundaryConditions() == b.usesPeriodicBoundaryConditions()
    assert a.getOutputsForces() == b.getOutputsForces()
    assert [(a.getGlobalParameterName(i), a.getGlobalParameterDefaultValue(i)) for i in range(a.getNumGlobalParameters())] == \
           [(b.getGlobalParameterName(i), b.getGlobalParameterDefaultValue(i)) for i in range(b.getNumGlobalParameters())]
    assert [a.getEnergyParameterDerivativeName(i) for i in range(a.getNumEnergyParameterDerivatives())] == \
           [b.getEnergyParameterDerivativeName(i) for i in range(b.getNumEnergyParameterDerivatives())]
    assert (a.getScaleParameter(), a.getScaleParameterDefaultValue()) == (b.getScaleParameter(), b.getScaleParameterDefaultValue())
    assert dict(a.getProperties()) == dict(b.getProperties())
    assert (a.getForceGroup(), a.getName()) == (b.getForceGroup(), b.getName())


def test_force_serialization_round_trip():
    force = configured_force()
    xml = openmm.XmlSerializer.serialize(force)
    assert 'encoding="base64"' in xml and 'version="1"' in xml
    assert_same_force(force, openmm.XmlSerializer.deserialize(xml))
    assert_same_force(force, copy.deepcopy(force))
    assert_same_force(force, pickle.loads(pickle.dumps(force)))


def test_system_from_xml_runs_in_a_fresh_process(tmp_path):
    n = 5
    positions = random_positions(n, seed=13)
    system = make_system(n, periodic_box=BOXES['triclinic'])
    force = NNPForce(PeriodicPairModel(4), [4, 1, 3, 0])
    force.setUsesPeriodicBoundaryConditions(True)
    force.setScaleParameter('lambda_interpolate', 0.6)
    force.addEnergyParameterDerivative('lambda_interpolate')
    system.addForce(force)
    energy, forces, derivatives = evaluate(system, positions, 'CPU')
    (tmp_path / 'system.xml').write_text(openmm.XmlSerializer.serialize(system))
    np.save(tmp_path / 'positions.npy', positions)
    script = textwrap.dedent(f"""
        import json, numpy as np, openmm, openmm_nnp
        system = openmm.XmlSerializer.deserialize(open({str(tmp_path / 'system.xml')!r}).read())
        assert isinstance(system.getForce(0), openmm_nnp.NNPForce), type(system.getForce(0))
        context = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName('CPU'))
        context.setPositions(np.load({str(tmp_path / 'positions.npy')!r}))
        state = context.getState(getEnergy=True, getForces=True, getParameterDerivatives=True)
        print(json.dumps({{'energy': state.getPotentialEnergy()._value,
                          'forces': state.getForces(asNumpy=True)._value.tolist(),
                          'dlambda': state.getEnergyParameterDerivatives()['lambda_interpolate']}}))
    """)
    result = subprocess.run([sys.executable, '-c', script], capture_output=True, text=True, check=True)
    import json
    loaded = json.loads(result.stdout.strip().splitlines()[-1])
    assert loaded['energy'] == pytest.approx(energy, rel=1e-12)
    np.testing.assert_allclose(loaded['forces'], forces, rtol=1e-12)
    assert loaded['dlambda'] == pytest.approx(derivatives['lambda_interpolate'], rel=1e-12)


def test_get_force_returns_nnp_force():
    system = make_system(3)
    system.addForce(openmm.HarmonicBondForce())
    system.addForce(NNPForce(PairModel(3)))
    assert type(system.getForce(0)) is openmm.HarmonicBondForce
    assert isinstance(system.getForce(1), NNPForce)
    assert isinstance(system.getForce(1), openmm.Force)
    forces = system.getForces()
    assert isinstance(forces[1], NNPForce)
    # Changes through the returned object reach the force the System holds.
    system.getForce(1).setForceGroup(4)
    assert system.getForce(1).getForceGroup() == 4


# ---------------------------------------------------------------- bad input

def context_error(system, positions=None, platform='Reference'):
    with pytest.raises(openmm.OpenMMException) as info:
        context = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName(platform))
        context.setPositions(positions if positions is not None else random_positions(system.getNumParticles()))
        context.getState(getEnergy=True, getForces=True)
    return str(info.value)


def test_atom_index_out_of_range():
    system = make_system(3)
    system.addForce(NNPForce(PairModel(2), [0, 3]))
    message = context_error(system)
    assert 'atom index 3 is out of range' in message and '3 particles' in message


def test_duplicated_or_negative_atom_index():
    with pytest.raises(openmm.OpenMMException, match='more than once'):
        NNPForce(PairModel(2), [1, 1])
    with pytest.raises(openmm.OpenMMException, match='negative'):
        NNPForce(PairModel(2), [-1, 0])


def test_missing_model_file():
    with pytest.raises(FileNotFoundError, match='does not exist'):
        NNPForce('/nonexistent/model.pt')


def test_file_that_is_not_torchscript(tmp_path):
    path = tmp_path / 'not_a_model.pt'
    path.write_text('hello')
    with pytest.raises(ValueError, match='not a TorchScript module'):
        NNPForce(str(path))
    with pytest.raises(ValueError, match='not a TorchScript module'):
        NNPForce(b'\x00\x01 junk')


def test_corrupt_model_bytes_set_directly_fail_at_context_creation():
    force = NNPForce(PairModel(2))
    force.setModelBytes(b'junk')
    system = make_system(2)
    system.addForce(force)
    assert 'not a TorchScript module' in context_error(system)


class WrongShape(torch.nn.Module):
    def forward(self, positions):
        return (positions ** 2).sum(dim=0)  # [3], not a scalar


class IntegerEnergy(torch.nn.Module):
    def forward(self, positions):
        return (positions.shape[0] * torch.ones(1)).to(torch.int64)


class WrongForcesShape(torch.nn.Module):
    def forward(self, positions):
        return (positions ** 2).sum(), positions[:, :2]


class NaNEnergy(torch.nn.Module):
    def forward(self, positions):
        return (positions ** 2).sum() * float('nan')


class InfiniteForces(torch.nn.Module):
    def forward(self, positions):
        return (positions ** 2).sum(), positions * float('inf')


class Raises(torch.nn.Module):
    def forward(self, positions):
        if positions.shape[0] > 1:
            raise RuntimeError('this model only takes one atom')
        return positions.sum()


@pytest.mark.parametrize('model,outputs_forces,expected', [
    (WrongShape(), False, 'tensor with one element'),
    (IntegerEnergy(), False, 'floating-point tensor'),
    (WrongForcesShape(), True, 'of shape [3, 3]'),
    (ForcesModel(), False, 'returned a tuple; if it is (energy, forces), call setOutputsForces(True)'),
    (PairModel(3), True, 'must return a tuple (energy, forces)'),
    (NaNEnergy(), False, 'non-finite energy'),
    (InfiniteForces(), True, 'non-finite force on particle'),
    (Raises(), False, 'this model only takes one atom'),
])
@pytest.mark.parametrize('platform', PLATFORMS)
def test_bad_model_output(model, outputs_forces, expected, platform):
    system = make_system(3)
    force = NNPForce(model)
    force.setOutputsForces(outputs_forces)
    force.setName('my NNP')
    system.addForce(force)
    message = context_error(system, platform=platform)
    assert expected in message
    assert "NNPForce 'my NNP'" in message


class OneNaNForce(torch.nn.Module):
    """Zero energy; forces zero except row `row`, NaN in one component; in dtype; as a transposed view
    (not contiguous) if `transposed`."""

    def __init__(self, row: int, dtype: torch.dtype, transposed: bool):
        super().__init__()
        self.row = row
        self.dtype = dtype
        self.transposed = transposed

    def forward(self, positions):
        forces = torch.zeros(3, positions.shape[0], dtype=self.dtype)
        forces[2, self.row] = float('nan')
        forces = forces.t() if self.transposed else forces.t().contiguous()
        return (positions * 0.0).sum(), forces


@pytest.mark.parametrize('dtype,transposed', [(torch.float32, False), (torch.float64, False), (torch.float32, True)],
                         ids=['float32', 'float64', 'not contiguous'])
@pytest.mark.parametrize('platform', PLATFORMS)
def test_non_finite_force_names_its_particle(dtype, transposed, platform):
    # The region's row 1 is particle 2 of the System: the message names the System's particle.
    system = make_system(5)
    force = NNPForce(torch.jit.script(OneNaNForce(1, dtype, transposed)), [4, 2, 0])
    force.setOutputsForces(True)
    system.addForce(force)
    message = context_error(system, platform=platform)
    assert 'non-finite force on particle 2.' in message


class CountingModel(torch.nn.Module):
    """Energy = twice a counter it keeps in a 6 MB buffer (large enough for the kernel to move the model's tensors
    to huge pages), incremented in place on every call and read through two views of that buffer, one a buffer
    of its own and one in a list attribute; `grow` also resizes a third buffer on every call."""

    def __init__(self, grow: bool):
        super().__init__()
        self.register_buffer('state', torch.zeros(750_000, dtype=torch.float64))
        self.register_buffer('head', self.state[:4])
        self.views: List[torch.Tensor] = [self.state[1:5]]
        self.register_buffer('scratch', torch.zeros(1000, dtype=torch.float64))
        self.grow = grow

    def forward(self, positions):
        self.state[1] += 1.0
        counted = self.head[1] + self.views[0][0] + (positions * 0.0).sum()
        if self.grow:
            self.scratch.resize_(self.scratch.numel() + 100_000)
            self.scratch.fill_(1.0)
            return counted + self.scratch.sum() * 0.0
        return counted


@pytest.mark.parametrize('grow', [False, True], ids=['in place', 'resized'])
@pytest.mark.parametrize('platform', PLATFORMS)
def test_model_state_survives_the_move_to_huge_pages(grow, platform):
    # On the CPU the kernel moves a model's tensors into one block of memory (huge pages; property hugePages,
    # default true). The model must behave as without the move: tensors that shared a storage still share it
    # (the counter is written through one buffer and read through views in another and in a list), and a buffer
    # the model resizes does what it does without the move (torch 2.13 refuses to resize a loaded model's storage).
    def energies_or_error(huge_pages):
        system = make_system(2)
        force = NNPForce(torch.jit.script(CountingModel(grow)))
        force.setProperty('hugePages', huge_pages)
        system.addForce(force)
        context = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName(platform))
        context.setPositions(random_positions(2))
        try:
            return [context.getState(getEnergy=True).getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
                    for _ in range(3)]
        except openmm.OpenMMException as error:
            return str(error)

    moved = energies_or_error('true')
    assert moved == energies_or_error('false')
    if not grow:
        assert moved == [2.0, 4.0, 6.0]


def test_global_parameter_the_model_does_not_accept():
    system = make_system(3)
    force = NNPForce(PairModel(3))
    force.addGlobalParameter('temperature', 300.0)
    system.addForce(force)
    message = context_error(system)
    assert "takes 1 argument(s) (positions)" in message and 'temperature' in message


def test_periodic_model_without_box():
    system = make_system(3, periodic_box=BOXES['rectangular'])
    system.addForce(NNPForce(PeriodicPairModel(3)))  # forward(positions, boxVectors) but PBC not set
    assert 'setUsesPeriodicBoundaryConditions' in context_error(system) or 'boxVectors' in context_error(system)


def test_derivative_of_an_unknown_parameter():
    system = make_system(3)
    force = NNPForce(PairModel(3))
    force.addEnergyParameterDerivative('nope')
    system.addForce(force)
    assert "'nope'" in context_error(system)


def test_bond_outside_the_region():
    system = make_system(3)
    force = NNPForce(PairModel(2), [0, 1])
    force.setBonds([(1, 2)])
    system.addForce(force)
    assert 'joins a particle outside the region' in context_error(system)


def test_bad_properties_and_parameter_names():
    force = NNPForce(PairModel(2))
    with pytest.raises(openmm.OpenMMException, match='unknown property'):
        force.setProperty('threads', '2')
    with pytest.raises(openmm.OpenMMException, match='dtype'):
        force.setProperty('dtype', 'float16')
    with pytest.raises(openmm.OpenMMException, match="hugePages must be 'true' or 'false', not 'yes'"):
        force.setProperty('hugePages', 'yes')
    force.setScaleParameter('lam')
    with pytest.raises(openmm.OpenMMException, match='it is the scale parameter'):
        force.addGlobalParameter('lam', 1.0)
    force.setProperty('numThreads', 'many')
    system = make_system(2)
    system.addForce(force)
    assert 'numThreads must be a non-negative integer' in context_error(system)


def test_wrong_model_type():
    with pytest.raises(TypeError, match='TorchScript file path'):
        NNPForce(42)


# ---------------------------------------------------------------- C++ tests

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUILD = os.environ.get('OPENMM_NNP_BUILD_DIR', os.path.join(REPO, 'build'))


def run_cpp_test(name, *args):
    executable = os.path.join(BUILD, name)
    assert os.path.exists(executable), f'{executable} is missing: build the project first (make build)'
    result = subprocess.run([executable, *args], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert 'Done' in result.stdout
    return result.stdout


def test_cpp_serialization():
    run_cpp_test('TestSerializeNNPForce')


def test_cpp_api_on_every_platform(tmp_path):
    model = HarmonicRestraint([1.0, 2.0, 3.0], [[0.1 * i, -0.2, 0.3] for i in range(3)])
    path = tmp_path / 'harmonic.pt'
    torch.jit.script(model).save(str(path))
    plugins = os.path.join(openmm.version.openmm_library_path, 'plugins')
    library_dir = os.path.dirname(openmm_nnp.__file__)
    kernels = os.path.join(library_dir, 'libOpenMMNNPReference.so')
    # The OpenCL kernels too, where they were built and OpenCL runs here (tests/test_gpu_platforms.py says why not).
    from test_gpu_platforms import unavailable
    opencl = os.path.join(library_dir, 'libOpenMMNNPOpenCL.so')
    extra = [opencl] if os.path.exists(opencl) and unavailable('OpenCL') is None else []
    output = run_cpp_test('TestNNPForcePlatforms', kernels, plugins, str(path), *extra)
    for platform in ['Reference', 'CPU'] + (['OpenCL'] if extra else []):
        assert f'tested {platform}' in output


_SAVE_WITH_OPERATOR_SCRIPT = textwrap.dedent('''
    import sys, torch
    # An operator in openmm-nnp's namespace that exists only in this process, as removed operators existed
    # only in older versions.
    library = torch.library.Library('openmm_nnp', 'FRAGMENT')
    library.define('removed_for_test(Tensor x) -> Tensor')
    library.impl('removed_for_test', lambda x: x, 'CompositeExplicitAutograd')

    class Model(torch.nn.Module):
        def forward(self, positions):
            return torch.ops.openmm_nnp.removed_for_test(positions).sum()

    torch.jit.save(torch.jit.script(Model()), sys.argv[1])
''')


def test_model_saved_with_an_operator_this_version_lacks(tmp_path):
    """A model (or a run folder's system.xml) saved by an older version whose operators are gone: the error names
    the operator and says to create the model again, from Python and from C++ (XML deserialization)."""
    path, script = tmp_path / 'old.pt', tmp_path / 'save_old.py'
    script.write_text(_SAVE_WITH_OPERATOR_SCRIPT)  # TorchScript compiles from source files, not from -c
    subprocess.run([sys.executable, str(script), str(path)], check=True)
    with pytest.raises(ValueError, match='calls the operator openmm_nnp::removed_for_test, which this version of '
                                         'openmm-nnp does not have: it was saved by an older version'):
        NNPForce(str(path))
    force = NNPForce(PairModel(2))
    force.setModelBytes(path.read_bytes())
    system = make_system(2)
    system.addForce(force)
    message = context_error(system)
    assert 'calls the operator openmm_nnp::removed_for_test, which this version' in message
    assert 'Create the model again' in message
