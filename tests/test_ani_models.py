"""openmm_nnp.models.ANI against TorchANI, TorchScript/torch.export, and through NNPForce.

Reference values come from TorchANI's own models (torchani.models.ANI1x/ANI1ccx/ANI2x, atomic
numbers as species) in float64, energies converted with torchani.units.HARTREE_TO_KJOULEPERMOL
and forces from autograd.

Tolerances:
* float64 energies: 1e-6 kJ/mol absolute (totals are ~1e6 kJ/mol; observed differences are
  0 to ~2e-10, summation-order round-off).
* float64 forces, our analytic gradient: 1e-7 of the largest force component. PyTorch's CELU
  backward uses single-precision coefficients even for float64 tensors, so TorchANI's autograd
  forces deviate from the exact derivative of its own energy by ~1e-8 relative; ours is the exact
  derivative. Forces from autograd through our module (energies_per_member) match TorchANI's to
  1e-10 relative, since they share that backward.
* float32: energy relative error 1e-6 (float32 spacing at 1e6 kJ/mol is 0.06-0.125 kJ/mol),
  forces 1e-3 of the largest component (observed ~1e-4).

The model has two implementations of the same arithmetic: compiled operators (the default on
the CPU: AEVs and networks in C++) and PyTorch operations only (customOps=False, also what
torch.export captures). The comparisons with TorchANI run on both (fixture `custom_ops`).
"""

import copy
import functools
import io
import math
import os
from pathlib import Path

import subprocess
import sys

import numpy as np
import pytest
import torch

from openmm_nnp.models import ANI
from openmm_nnp.models.ani.parameters import ANIParameters
from openmm_nnp.models.torchani_models import load_torchani_model

REPO_ROOT = Path(__file__).resolve().parents[1]
TOLUENE_PDB = REPO_ROOT.parent / "shared" / "data" / "toluene-water" / "toluene.pdb"


# ---------------------------------------------------------------------------------------------
# Molecules: (atomic numbers, positions [n, 3] in nm as float64 numpy arrays)


def _cb7_b2_pdb():
    import openmmtools

    return os.path.join(os.path.dirname(openmmtools.__file__), "data", "cb7-b2", "complex-vacuum.pdb")


@functools.lru_cache(maxsize=None)
def _pdb_residue(path, residue_name):
    import openmm.app as app
    import openmm.unit as unit

    pdb = app.PDBFile(str(path))
    positions = np.asarray(pdb.getPositions(asNumpy=True).value_in_unit(unit.nanometer))
    atoms = [a for a in pdb.topology.atoms() if a.residue.name == residue_name]
    assert atoms, f"no residue {residue_name} in {path}"
    return [a.element.atomic_number for a in atoms], positions[[a.index for a in atoms]]


def _halobenzene():
    """2-chloro-4-fluoro-5-nitrobenzenethiol built from standard bond lengths (H C N O F S Cl)."""
    ring_radius = 1.39
    atoms, coordinates = [], []

    def add(z, xyz):
        atoms.append(z)
        coordinates.append(xyz)

    def radial(angle_deg, distance):
        a = math.radians(angle_deg)
        return np.array([math.cos(a), math.sin(a), 0.0]) * distance

    for k in range(6):
        add(6, radial(60 * k, ring_radius))
    sulfur = radial(0, ring_radius + 1.77)
    add(16, sulfur)
    add(1, sulfur + radial(-84, 1.34))  # C-S-H 96 degrees
    add(17, radial(60, ring_radius + 1.74))
    add(1, radial(120, ring_radius + 1.08))
    add(9, radial(180, ring_radius + 1.35))
    nitrogen = radial(240, ring_radius + 1.47)
    add(7, nitrogen)
    add(8, nitrogen + radial(240 + 62, 1.22))  # O-N-O 124 degrees
    add(8, nitrogen + radial(240 - 62, 1.22))
    add(1, radial(300, ring_radius + 1.08))
    coordinates = np.array(coordinates)
    # A small deterministic distortion so that no symmetry hides errors.
    coordinates += np.random.default_rng(7).normal(scale=0.03, size=coordinates.shape)
    return atoms, coordinates / 10.0


def molecule(name):
    if name == "b2":  # the 30-atom guest of openmmtools' CB7:B2 host-guest system
        return _pdb_residue(_cb7_b2_pdb(), "B2")
    if name == "cb7":  # the 126-atom host: exercises the nearest-neighbour-slot path
        return _pdb_residue(_cb7_b2_pdb(), "CUC")
    if name == "toluene":
        if not TOLUENE_PDB.exists():
            pytest.skip(f"{TOLUENE_PDB} not found (shared test data)")
        return _pdb_residue(TOLUENE_PDB, "MBN")
    if name == "halobenzene":
        return _halobenzene()
    raise KeyError(name)


# ---------------------------------------------------------------------------------------------
# TorchANI reference


@functools.lru_cache(maxsize=None)
def _reference_cached(model_name, atomic_numbers, positions_bytes, box_bytes):
    import torchani

    reference = load_torchani_model(model_name)  # float64, cached per process
    positions = torch.tensor(np.frombuffer(positions_bytes).reshape(-1, 3))
    coordinates = (positions * 10).unsqueeze(0).requires_grad_()
    species = torch.tensor([list(atomic_numbers)])
    if box_bytes is None:
        output = reference((species, coordinates))
        members = reference((species, coordinates.detach()), ensemble_values=True).energies[:, 0]
    else:
        cell = torch.tensor(np.frombuffer(box_bytes).reshape(3, 3)) * 10
        pbc = torch.tensor([True, True, True])
        output = reference((species, coordinates), cell=cell, pbc=pbc)
        members = reference((species, coordinates.detach()), cell=cell, pbc=pbc, ensemble_values=True).energies[:, 0]
    to_kj = torchani.units.HARTREE_TO_KJOULEPERMOL
    energy = output.energies[0] * to_kj
    (gradient,) = torch.autograd.grad(energy, coordinates)
    energy = energy.detach()
    forces = -gradient[0] * 10  # kJ/mol/nm
    return energy.item(), forces.numpy(), (members.detach() * to_kj).numpy()


def reference(model_name, atomic_numbers, positions, box=None):
    """TorchANI float64: (energy kJ/mol, forces kJ/mol/nm [n, 3], member energies kJ/mol [8])."""
    positions = np.ascontiguousarray(positions, dtype=np.float64)
    box_bytes = None if box is None else np.ascontiguousarray(box, dtype=np.float64).tobytes()
    return _reference_cached(model_name, tuple(atomic_numbers), positions.tobytes(), box_bytes)


def energy_and_forces(model, positions, box=None, dtype=torch.float64):
    """Energy and forces from forward() with positions that require grad (the NNPForce way)."""
    x = torch.tensor(positions, dtype=dtype, requires_grad=True)
    b = None if box is None else torch.tensor(box, dtype=dtype)
    energy = model(x, b)
    (gradient,) = torch.autograd.grad(energy, x)
    return energy.item(), -gradient.double().numpy()


def autograd_energy_and_forces(model, positions, box=None, dtype=torch.float64):
    """Energy and forces by plain autograd through the energy-only computation."""
    x = torch.tensor(positions, dtype=dtype, requires_grad=True)
    b = None if box is None else torch.tensor(box, dtype=dtype)
    energy = model.energies_per_member(x, b).mean()
    (gradient,) = torch.autograd.grad(energy, x)
    return energy.item(), -gradient.double().numpy()


def max_relative_force_error(forces, reference_forces):
    return np.abs(forces - reference_forces).max() / np.abs(reference_forces).max()


# ---------------------------------------------------------------------------------------------
# Agreement with TorchANI

CASES = [
    ("ani2x", "b2"),
    ("ani2x", "toluene"),
    ("ani2x", "halobenzene"),
    ("ani2x", "cb7"),
    ("ani1x", "b2"),
    ("ani1x", "toluene"),
    ("ani1ccx", "b2"),
    ("ani1ccx", "toluene"),
]


@pytest.fixture(params=[True, False], ids=["custom-ops", "pytorch"])
def custom_ops(request):
    return request.param


def test_molecules_cover_every_ani2x_element():
    elements = set()
    for name in ("b2", "toluene", "halobenzene", "cb7"):
        elements |= set(molecule(name)[0])
    assert elements == {1, 6, 7, 8, 9, 16, 17}


@pytest.mark.parametrize("model_name, molecule_name", CASES)
def test_float64_matches_torchani(model_name, molecule_name, custom_ops):
    numbers, positions = molecule(molecule_name)
    ref_energy, ref_forces, _ = reference(model_name, numbers, positions)
    model = ANI(model_name, numbers, dtype=torch.float64, customOps=custom_ops)

    energy, forces = energy_and_forces(model, positions)
    assert abs(energy - ref_energy) <= 1e-6
    assert max_relative_force_error(forces, ref_forces) <= 1e-7

    energy, forces = autograd_energy_and_forces(model, positions)
    assert abs(energy - ref_energy) <= 1e-6
    assert max_relative_force_error(forces, ref_forces) <= 1e-10


@pytest.mark.parametrize("model_name, molecule_name", CASES)
def test_float32_matches_torchani(model_name, molecule_name, custom_ops):
    numbers, positions = molecule(molecule_name)
    ref_energy, ref_forces, _ = reference(model_name, numbers, positions)
    model = ANI(model_name, numbers, customOps=custom_ops)  # float32 by default
    energy, forces = energy_and_forces(model, positions, dtype=torch.float32)
    assert model(torch.tensor(positions, dtype=torch.float32)).dtype == torch.float32
    assert abs(energy - ref_energy) <= 1e-6 * abs(ref_energy)
    assert max_relative_force_error(forces, ref_forces) <= 1e-3


def _wrapped(positions, box):
    """Positions with every atom put into the unit cell (molecules end up split)."""
    fractional = positions @ np.linalg.inv(box)
    return (fractional - np.floor(fractional)) @ box


PERIODIC_CASES = {
    # Cubic box just over twice the 0.51 nm cutoff; the guest (~1.1 nm long) is centred on a
    # corner (see the test), so it is split over all faces and also sees its own images.
    "cubic": ("b2", np.eye(3) * 1.05),
    # Reduced triclinic box (a, b, c rows with bx <= ax/2, cx <= ax/2, cy <= by/2).
    "triclinic": ("halobenzene", np.array([[1.1, 0.0, 0.0], [0.45, 1.05, 0.0], [-0.4, 0.45, 1.05]])),
}


@pytest.mark.parametrize("case", sorted(PERIODIC_CASES))
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_periodic_matches_torchani(case, dtype, custom_ops):
    molecule_name, box = PERIODIC_CASES[case]
    numbers, positions = molecule(molecule_name)
    positions = _wrapped(positions - positions.mean(axis=0), box)
    ref_energy, ref_forces, _ = reference("ani2x", numbers, positions, box)
    model = ANI("ani2x", numbers, dtype=dtype, customOps=custom_ops)
    energy, forces = energy_and_forces(model, positions, box, dtype=dtype)
    if dtype == torch.float64:
        assert abs(energy - ref_energy) <= 1e-6
        assert max_relative_force_error(forces, ref_forces) <= 1e-7
    else:
        assert abs(energy - ref_energy) <= 1e-6 * abs(ref_energy)
        assert max_relative_force_error(forces, ref_forces) <= 1e-3
    # The box matters: the split molecule without periodicity is a different (absurd) energy.
    unwrapped_energy, _ = energy_and_forces(model, positions, None, dtype=dtype)
    assert abs(unwrapped_energy - energy) > 100.0


def test_periodic_images_within_cutoff_are_seen(custom_ops):
    # Small cubic box: the guest interacts with its own images, so the periodic energy differs
    # from the isolated molecule's even though every atom keeps its whole-molecule position.
    numbers, positions = molecule("b2")
    box = np.eye(3) * 1.05
    model = ANI("ani2x", numbers, dtype=torch.float64, customOps=custom_ops)
    periodic, _ = energy_and_forces(model, positions, box)
    isolated, _ = energy_and_forces(model, positions)
    ref_energy, _, _ = reference("ani2x", numbers, positions, box)
    assert abs(periodic - ref_energy) <= 1e-6
    assert abs(periodic - isolated) > 0.1  # 0.196 kJ/mol: a weak contact with the images


@pytest.mark.parametrize("model_name, molecule_name", [("ani2x", "halobenzene"), ("ani1x", "b2")])
def test_ensemble_members_and_std_match_torchani(model_name, molecule_name, custom_ops):
    numbers, positions = molecule(molecule_name)
    _, _, ref_members = reference(model_name, numbers, positions)
    model = ANI(model_name, numbers, dtype=torch.float64, customOps=custom_ops)
    x = torch.tensor(positions)
    members = model.energies_per_member(x).numpy()
    assert members.shape == (8,)
    assert np.abs(members - ref_members).max() <= 1e-6
    expected_std = float(torch.tensor(ref_members).std())  # Bessel-corrected, as TorchANI's QBC
    assert expected_std > 1e-3  # the members do disagree
    assert abs(model.ensemble_std(x).item() - expected_std) <= 1e-6
    scripted = torch.jit.script(model)
    assert abs(scripted.ensemble_std(x).item() - expected_std) <= 1e-6
    assert np.abs(scripted.energies_per_member(x).numpy() - ref_members).max() <= 1e-6


# ---------------------------------------------------------------------------------------------
# The PyTorch path's nearest-neighbour slots (regions larger than maxAngularNeighbors + 1) and
# compacted triple lists (the compiled operators need neither: they loop over the neighbours)


def test_neighbour_slots_equal_all_pairs_when_large_enough():
    numbers, positions = molecule("b2")  # up to 24 atoms within 3.5 A of one atom
    dense = ANI("ani2x", numbers, dtype=torch.float64, customOps=False)
    slots = ANI("ani2x", numbers, dtype=torch.float64, maxAngularNeighbors=26, customOps=False)
    assert not dense.pytorch_features.select_nearest and slots.pytorch_features.select_nearest
    e_dense, f_dense = energy_and_forces(dense, positions)
    e_slots, f_slots = energy_and_forces(slots, positions)
    assert abs(e_dense - e_slots) <= 1e-8
    assert np.abs(f_dense - f_slots).max() <= 1e-9 * np.abs(f_dense).max()


@pytest.mark.parametrize("molecule_name", ["b2", "cb7"])
def test_compacted_triples_and_all_candidates_agree(molecule_name):
    numbers, positions = molecule(molecule_name)
    # Default: the triples inside the cutoff (b2: 3440, cb7: 12028) are packed into a short
    # list. maxAngularTriples=1 cannot hold them, so every call uses all candidates.
    compacted = ANI("ani2x", numbers, dtype=torch.float64, customOps=False)
    all_candidates = ANI("ani2x", numbers, dtype=torch.float64, maxAngularTriples=1, customOps=False)
    packing, unpacked = compacted.pytorch_features, all_candidates.pytorch_features
    assert packing.triple_tiers and max(packing.triple_tiers) < packing.num_candidates
    assert unpacked.triple_tiers == [1]
    energy, forces = energy_and_forces(compacted, positions)
    expected_energy, expected_forces = energy_and_forces(all_candidates, positions)
    assert abs(energy - expected_energy) <= 1e-8
    assert max_relative_force_error(forces, expected_forces) <= 1e-10


def test_too_few_neighbour_slots_is_an_error():
    numbers, positions = molecule("b2")
    model = ANI("ani2x", numbers, maxAngularNeighbors=10, customOps=False)
    with pytest.raises(RuntimeError, match="maxAngularNeighbors"):
        model(torch.tensor(positions, dtype=torch.float32))
    # The compiled operators have no such limit.
    exact = ANI("ani2x", numbers, maxAngularNeighbors=10)
    energy, _ = energy_and_forces(exact, positions, dtype=torch.float32)
    assert abs(energy - reference("ani2x", numbers, positions)[0]) <= 1e-6 * abs(energy)


# ---------------------------------------------------------------------------------------------
# The compiled operators on their own


def _aev_operator_case(case):
    """halobenzene (every ANI-2x element) isolated, or wrapped into the triclinic test box; the float64
    model's ANIFeatures object, positions and box in Angstrom."""
    numbers, positions = molecule("halobenzene")
    box = None
    if case == "triclinic":
        box = PERIODIC_CASES["triclinic"][1]
        positions = _wrapped(positions - positions.mean(axis=0), box)
    model = ANI("ani2x", numbers, dtype=torch.float64)
    pos = torch.tensor(positions) * 10.0
    cell = None if box is None else torch.tensor(box) * 10.0
    return numbers, ANIParameters.from_torchani("ani2x", numbers), model.operator_features.operators, pos, cell


@pytest.mark.parametrize("case", ["isolated", "triclinic"])
def test_aev_operator_gradient_matches_finite_differences(case):
    # gradcheck compares the AEV's backward (through autograd) with central differences of the AEV
    # for random output weights, in float64 (step 1e-6 Angstrom; agreement to ~1e-7 relative).
    numbers, parameters, features, pos, cell = _aev_operator_case(case)
    aev = features.aev(pos, cell)
    assert aev.shape == (len(numbers), parameters.aev_length)
    weights = torch.randn_like(aev, generator=torch.Generator().manual_seed(3)) / (1.0 + aev.abs())

    def weighted_sum(p):
        return (features.aev(p, cell) * weights).sum()

    assert torch.autograd.gradcheck(weighted_sum, (pos.clone().requires_grad_(True),), eps=1e-6, atol=1e-7, rtol=1e-6)


@pytest.mark.parametrize("case", ["isolated", "triclinic"])
def test_aev_operator_equals_torchani_aev(case):
    # The operator's AEV, scaled and reordered to TorchANI's layout (the layout is described in
    # plugin_cpp/torch_ops/ANIFeatures.h), equals TorchANI's own AEV computer's.
    numbers, parameters, features, pos, cell = _aev_operator_case(case)
    aev = features.aev(pos, cell)

    species = parameters.species_tensor()
    aev_computer = load_torchani_model("ani2x").potentials["nnp"].aev_computer
    if cell is None:
        expected = aev_computer(species.unsqueeze(0), pos.unsqueeze(0))[0]
    else:
        expected = aev_computer(species.unsqueeze(0), pos.unsqueeze(0), cell=cell,
                                pbc=torch.tensor([True, True, True]))[0]
    radial, sections, shifts = parameters.radial_length, parameters.num_sections, parameters.num_shifts
    converted = torch.empty_like(aev)
    converted[:, :radial] = 0.25 * aev[:, :radial]
    # Ours: [pair][section][shift]; TorchANI's: [pair][shift][section], times 2^(1 - zeta).
    angular = aev[:, radial:].reshape(len(numbers), -1, sections, shifts).transpose(2, 3)
    converted[:, radial:] = 2.0 ** (1.0 - parameters.angular_zeta) * angular.reshape(len(numbers), -1)
    assert torch.count_nonzero(expected) > 1000
    assert torch.allclose(converted, expected, rtol=1e-12, atol=1e-14)


def test_aev_operator_rejects_bad_input():
    numbers, positions = molecule("toluene")
    model = ANI("ani2x", numbers, dtype=torch.float64)
    features = model.operator_features.operators
    pos = torch.tensor(positions) * 10.0
    with pytest.raises(RuntimeError, match=r"positions must have shape \[atoms, 3\]"):
        features.aev(pos.reshape(-1), None)
    with pytest.raises(RuntimeError, match="positions for 14 atoms, the species for 15"):
        features.aev(pos[1:], None)
    with pytest.raises(RuntimeError, match="reduced form"):
        features.aev(pos, torch.ones(3, 3, dtype=torch.float64))
    # Network parameters that do not fit the AEV are refused, not read out of bounds.
    parameters = [t.clone() for t in model.networks.parameter_list()]
    parameters[0][0] = len(numbers)  # first element's first atom index
    with pytest.raises(RuntimeError, match=f"atom index {len(numbers)} out of range"):
        features.energies(pos, None, parameters, True)
    with pytest.raises(RuntimeError, match="parameter tensors per element"):
        features.energies(pos, None, parameters[:-1], True)


def _random_networks(model, widths, members, seed):
    """Network parameters in the layout of ``model.networks.parameter_list()`` (its atoms and AEV columns per
    element) with random weights of other widths and member counts, as TorchANI's models never have."""
    generator = torch.Generator().manual_seed(seed)
    w1, w2, w3 = widths
    parameters = []
    reference = model.networks.parameter_list()
    for first in range(0, len(reference), 10):
        atoms, features = reference[first], reference[first + 1]

        def random(*shape, scale):
            return scale * torch.randn(*shape, generator=generator, dtype=torch.float64)

        parameters += [atoms, features, random(members, features.numel(), w1, scale=0.3), random(members, 1, w1, scale=1.0),
                       random(members, w1, w2, scale=0.3), random(members, 1, w2, scale=1.0),
                       random(members, w2, w3, scale=0.3), random(members, 1, w3, scale=1.0),
                       random(members, w3, scale=0.3), random(members, scale=1.0)]
    return parameters


def _networks_by_pytorch(features, pos, parameters):
    """Member energies and d(mean)/d(positions) through the AEV operator's autograd and the networks' PyTorch
    path (openmm_nnp.models.ani.networks.evaluate_networks), the reference of the compiled networks."""
    from openmm_nnp.models.ani.networks import evaluate_networks

    # The networks' own back-propagation (CELU's derivative from its value, as the compiled one; autograd
    # through CELU differs by up to ~4e-9 relative where exp(z / alpha) is tiny), then the AEV's autograd.
    x = pos.clone().requires_grad_(True)
    aev = features.aev(x, None)
    energies, aev_gradient = evaluate_networks(aev.detach(), parameters, True)
    (gradient,) = torch.autograd.grad(aev, x, aev_gradient)
    return energies, gradient


@pytest.mark.parametrize("networks", ["ani2x", "odd widths", "first layer side by side"])
def test_network_operator_matches_pytorch_networks(networks):
    # The compiled networks (plugin_cpp/torch_ops/ANINetworks.cpp: hand-written vector loops, one network at a
    # time) against the PyTorch path, float64, on halobenzene (H C N O F S Cl; five elements with one or two
    # atoms, so every tail of the loops' atom tiles runs). "odd widths": random networks of widths 37, 21, 19
    # and 3 members, which no lane count divides (the scalar column tails). "first layer side by side": ANI-2x's
    # weights with the first layer laid out [features, members * width] as in models saved before 2026-11-30,
    # which the operator still reads. Tolerance 1e-12 relative (measured <= 2e-14); the result is the same for
    # 1, 2 and 3 threads bit for bit (each network's sums are taken in a fixed order).
    numbers, positions = molecule("halobenzene")
    model = ANI("ani2x", numbers, dtype=torch.float64)
    features = model.operator_features.operators
    pos = torch.tensor(positions) * 10.0
    parameters = [t.clone() for t in model.networks.parameter_list()]
    if networks == "odd widths":
        parameters = _random_networks(model, (37, 21, 19), 3, seed=5)
    expected_energies, expected_gradient = _networks_by_pytorch(features, pos, parameters)
    if networks == "first layer side by side":
        for first in range(0, len(parameters), 10):
            weight1, bias1 = parameters[first + 2], parameters[first + 3]
            parameters[first + 2] = weight1.permute(1, 0, 2).reshape(weight1.size(1), -1).contiguous()
            parameters[first + 3] = bias1.reshape(-1)
    threads = torch.get_num_threads()
    results = []
    try:
        for count in (1, 2, 3):
            torch.set_num_threads(count)
            results.append(features.energies(pos, None, parameters, True))
    finally:
        torch.set_num_threads(threads)
    energies, gradient = results[0]
    scale = expected_energies.abs().max()
    assert torch.allclose(energies, expected_energies, rtol=0, atol=1e-12 * scale)
    assert torch.allclose(gradient, expected_gradient, rtol=0, atol=1e-12 * expected_gradient.abs().max())
    for other_energies, other_gradient in results[1:]:
        assert torch.equal(other_energies, energies) and torch.equal(other_gradient, gradient)
    # Energies alone: the same numbers.
    assert torch.equal(features.energies(pos, None, parameters, False)[0], energies)


@pytest.mark.parametrize("name", ["b2", "cb7"])
def test_model_results_do_not_depend_on_the_thread_count(name):
    # The whole float32 model (AEVs, networks, gradient) as NNPForce calls it, with 1, 2 and 3 torch threads:
    # the same energy and forces bit for bit (the overlap kernel's worker and the sequential kernel may run it on
    # different thread counts). cb7 (126 atoms) has many atoms per element: several atom tiles per network, and
    # more AEV work to share among threads.
    numbers, positions = molecule(name)
    model = torch.jit.script(ANI("ani2x", numbers))
    threads = torch.get_num_threads()
    results = []
    try:
        for count in (1, 2, 3):
            torch.set_num_threads(count)
            results.append(_energy_and_forces_exactly(model, torch.tensor(positions, dtype=torch.float32)))
    finally:
        torch.set_num_threads(threads)
    assert results[1] == results[0] and results[2] == results[0]


def test_network_operator_rejects_networks_that_do_not_fit():
    # The compiled networks read raw pointers: weights of another type than the AEVs, non-contiguous weights,
    # layer shapes that do not chain and an element without atoms are refused with a message, not read wrongly.
    numbers, positions = molecule("toluene")
    model = ANI("ani2x", numbers, dtype=torch.float64)
    features = model.operator_features.operators
    pos = torch.tensor(positions) * 10.0

    def changed(index, value):
        parameters = [t.clone() for t in model.networks.parameter_list()]
        parameters[index] = value(parameters[index])
        return parameters

    cases = [
        (changed(4, lambda w: w.float()), "contiguous CPU tensors of the AEV's type"),
        (changed(4, lambda w: w.transpose(1, 2).contiguous().transpose(1, 2)), "contiguous CPU tensors"),
        (changed(6, lambda w: w[:, :-1, :].contiguous()), "inconsistent parameter shapes for element 0"),
        (changed(2, lambda w: w[:, :-1, :].contiguous()), "inconsistent parameter shapes for element 0"),
        (changed(0, lambda atoms: atoms[:0]), "an element without atoms"),
    ]
    for parameters, message in cases:
        with pytest.raises(RuntimeError, match=message):
            features.energies(pos, None, parameters, True)


def test_network_operator_float32_matches_float64():
    # The float32 loops (16 lanes where the float64 ones have 8, a shorter exp series) against float64 on the
    # B2 guest (18 H, 10 C, 2 O), next to the float32 PyTorch path: the compiled float32 networks are no further
    # from float64 than twice that path's own float32 rounding (measured 1.5e-6 relative in the member energies,
    # sums of atomic outputs that largely cancel, and 6.1e-5 of the largest gradient entry; the compiled ones 1.7e-6
    # and 6.1e-5), and within 1e-5 and 2e-4.
    numbers, positions = molecule("b2")
    compiled, pytorch = {}, {}
    for dtype in (torch.float32, torch.float64):
        model = ANI("ani2x", numbers, dtype=dtype)
        pos = torch.tensor(positions, dtype=dtype) * 10.0
        features, parameters = model.operator_features.operators, model.networks.parameter_list()
        compiled[dtype] = [t.double() for t in features.energies(pos, None, parameters, True)]
        pytorch[dtype] = [t.double() for t in _networks_by_pytorch(features, pos, parameters)]

    def errors(results):
        (e32, g32), (e64, g64) = results[torch.float32], results[torch.float64]
        return ((e32 - e64).abs() / e64.abs()).max().item(), ((g32 - g64).abs().max() / g64.abs().max()).item()

    energy_error, gradient_error = errors(compiled)
    pytorch_energy_error, pytorch_gradient_error = errors(pytorch)
    assert energy_error <= min(1e-5, 2 * pytorch_energy_error + 1e-7)
    assert gradient_error <= min(2e-4, 2 * pytorch_gradient_error + 1e-6)


def _constants(**changes):
    """ANI-2x's AEV constants for toluene, as ANIFeatures takes them, with some replaced."""
    numbers, _ = molecule("toluene")
    parameters = ANIParameters.from_torchani("ani2x", numbers)
    constants = dict(
        species=parameters.species_tensor(), pair_index=parameters.pair_index,
        radial_shifts=parameters.radial_shifts, angular_shifts=parameters.angular_shifts,
        sections=parameters.section_matrix(), radial_cutoff=parameters.radial_cutoff,
        radial_eta=parameters.radial_eta, angular_cutoff=parameters.angular_cutoff,
        angular_eta=parameters.angular_eta, angular_zeta=parameters.angular_zeta,
    )
    constants.update(changes)
    return list(constants.values())


@pytest.mark.parametrize("changes, message", [
    (dict(species=torch.full((15,), 9)), r"species index 9 outside \[0, 7\)"),
    (dict(species=torch.zeros(15)), "species must be an integer tensor"),
    (dict(species=torch.zeros(0, dtype=torch.long)), "species must list one species per atom"),
    (dict(pair_index=torch.zeros(7, 6, dtype=torch.long)), r"pair_index must be a square \[species, species\]"),
    (dict(pair_index=torch.arange(49).reshape(7, 7)), "pair_index must be symmetric"),
    (dict(pair_index=-torch.ones(7, 7, dtype=torch.long)), "pair_index entries must be non-negative"),
    (dict(radial_shifts=torch.tensor([1.0, float("nan")])), "radial_shifts must be finite"),
    (dict(angular_shifts=torch.ones(2, 2)), "angular_shifts must be a non-empty 1-dimensional floating-point"),
    (dict(sections=torch.ones(3, 4)), "sections must hold the rows cos"),
    (dict(radial_cutoff=0.0), "radial_cutoff must be positive and finite"),
    (dict(angular_cutoff=float("inf")), "angular_cutoff must be positive and finite"),
    (dict(angular_eta=-8.0), "angular_eta must be positive and finite"),
    (dict(angular_zeta=0.5), "angular_zeta must be at least 1"),
])
def test_aev_constants_are_checked_at_construction(changes, message):
    ANIFeatures = torch.classes.openmm_nnp.ANIFeatures
    ANIFeatures(*_constants())  # the unchanged constants are fine
    with pytest.raises(RuntimeError, match=message):
        ANIFeatures(*_constants(**changes))


def _energy_and_forces_exactly(module, x):
    positions = x.clone().requires_grad_(True)
    energy = module(positions)
    (gradient,) = torch.autograd.grad(energy, positions)
    return energy.item(), (-gradient).tolist()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_saved_operator_model_round_trip_is_exact(dtype):
    # A scripted model holding the ANIFeatures object survives torch.jit.save/load and deepcopy with its
    # pickled constants unchanged; energies and forces are bitwise those of the eager model.
    numbers, positions = molecule("b2")
    model = ANI("ani2x", numbers, dtype=dtype)
    x = torch.tensor(positions, dtype=dtype)
    expected = _energy_and_forces_exactly(model, x)
    scripted = torch.jit.script(model)
    buffer = io.BytesIO()
    torch.jit.save(scripted, buffer)
    buffer.seek(0)
    loaded = torch.jit.load(buffer)
    def pickled_state(module):  # what the class's __getstate__ (def_pickle) returns
        return module.operator_features.operators._get_method("__getstate__")()

    state = pickled_state(model)
    for module in (scripted, loaded, copy.deepcopy(loaded)):
        assert _energy_and_forces_exactly(module, x) == expected
        restored = pickled_state(module)
        assert len(restored) == len(state) == 10
        for original, saved in zip(state, restored):
            if isinstance(original, torch.Tensor):
                assert original.dtype == saved.dtype and torch.equal(original, saved)
            else:
                assert original == saved
    assert state[2].dtype == dtype  # the shifts in the model's type


_EXACT_LOAD_SCRIPT = """
import sys, torch
import openmm_nnp
torch.set_num_threads(1)
model = torch.jit.load(sys.argv[1])
x = torch.load(sys.argv[2]).requires_grad_(True)
energy = model(x)
(gradient,) = torch.autograd.grad(energy, x)
print(repr(energy.item()), repr(gradient.abs().sum().item()))
"""


def test_saved_operator_model_in_a_fresh_process_is_exact(tmp_path):
    numbers, positions = molecule("b2")
    model = ANI("ani2x", numbers)
    x = torch.tensor(positions, dtype=torch.float32)
    torch.jit.script(model).save(str(tmp_path / "model.pt"))
    torch.save(x, tmp_path / "x.pt")
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        positions_grad = x.clone().requires_grad_(True)
        energy = model(positions_grad)
        (gradient,) = torch.autograd.grad(energy, positions_grad)
    finally:
        torch.set_num_threads(previous)
    result = subprocess.run([sys.executable, "-c", _EXACT_LOAD_SCRIPT, str(tmp_path / "model.pt"), str(tmp_path / "x.pt")],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [repr(energy.item()), repr(gradient.abs().sum().item())]


_LOAD_SCRIPT = """
import sys, torch
model = torch.jit.load(sys.argv[1])
print(model(torch.load(sys.argv[2])).item())
"""


@pytest.mark.parametrize("custom_ops_model", [True, False], ids=["custom-ops", "pytorch"])
def test_saved_model_in_a_fresh_process(tmp_path, custom_ops_model):
    # A model that calls the compiled operators needs them registered (import openmm_nnp, or
    # the NNPForce plugin); one built with customOps=False loads in any PyTorch.
    numbers, positions = molecule("toluene")
    model = ANI("ani2x", numbers, customOps=custom_ops_model)
    x = torch.tensor(positions, dtype=torch.float32)
    torch.jit.script(model).save(str(tmp_path / "model.pt"))
    torch.save(x, tmp_path / "x.pt")
    expected = model(x).item()
    arguments = [str(tmp_path / "model.pt"), str(tmp_path / "x.pt")]
    plain = subprocess.run([sys.executable, "-c", _LOAD_SCRIPT] + arguments, capture_output=True, text=True)
    if custom_ops_model:
        assert plain.returncode != 0 and "openmm_nnp.ANIFeatures" in plain.stderr
    else:
        assert plain.returncode == 0, plain.stderr
        assert abs(float(plain.stdout.split()[-1]) - expected) <= 1e-6 * abs(expected)
    with_package = subprocess.run(
        [sys.executable, "-c", "import openmm_nnp" + _LOAD_SCRIPT] + arguments, capture_output=True, text=True
    )
    assert with_package.returncode == 0, with_package.stderr
    assert abs(float(with_package.stdout.split()[-1]) - expected) <= 1e-6 * abs(expected)


# ---------------------------------------------------------------------------------------------
# TorchScript and torch.export


@pytest.mark.parametrize("molecule_name, periodic", [("b2", False), ("cb7", True)])
def test_script_export_and_eager_agree(molecule_name, periodic):
    # b2: all-pairs slots, no box; cb7 (126 atoms): nearest-neighbour slots, with a box.
    numbers, positions = molecule(molecule_name)
    model = ANI("ani2x", numbers)
    x = torch.tensor(positions, dtype=torch.float32)
    inputs = (x, torch.eye(3) * 4.0) if periodic else (x,)
    eager = model(*inputs).item()

    scripted = torch.jit.script(model)
    buffer = io.BytesIO()
    torch.jit.save(scripted, buffer)
    buffer.seek(0)
    loaded = torch.jit.load(buffer)
    exported = torch.export.export(model, inputs).module()

    tolerance = 1e-6 * abs(eager)
    for module in (scripted, loaded, exported):
        assert abs(module(*inputs).item() - eager) <= tolerance

    # Forces through the saved TorchScript module equal the eager module's.
    box = inputs[1].numpy() if periodic else None
    _, eager_forces = energy_and_forces(model, positions, box, dtype=torch.float32)
    _, loaded_forces = energy_and_forces(loaded, positions, box, dtype=torch.float32)
    assert max_relative_force_error(loaded_forces, eager_forces) <= 1e-5


def test_value_does_not_depend_on_requires_grad():
    numbers, positions = molecule("halobenzene")
    model = ANI("ani2x", numbers, dtype=torch.float64)
    plain = model(torch.tensor(positions)).item()
    with_grad = model(torch.tensor(positions, requires_grad=True)).item()
    assert plain == with_grad


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("periodic", [False, True])
def test_energy_and_forces_method_equals_forward_and_autograd(dtype, periodic, custom_ops):
    # NNPForce calls energy_and_forces() instead of forward() + autograd: the same numbers, bit for bit
    # (both are the one analytic gradient; autograd only multiplies it by 1), scripted as NNPForce runs it.
    molecule_name, box = PERIODIC_CASES["triclinic"] if periodic else ("cb7", None)
    numbers, positions = molecule(molecule_name)
    model = torch.jit.script(ANI("ani2x", numbers, dtype=dtype, customOps=custom_ops))
    energy, forces = energy_and_forces(model, positions, box, dtype=dtype)
    b = None if box is None else torch.tensor(box, dtype=dtype)
    method_energy, method_forces = model.energy_and_forces(torch.tensor(positions, dtype=dtype), b)
    assert method_energy.item() == energy
    assert np.array_equal(method_forces.double().numpy(), forces)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("periodic", [False, True])
def test_operator_energy_and_forces_equals_its_steps(dtype, periodic):
    # ANIFeatures.energy_and_forces (what ANI.energy_and_forces calls on the CPU) against its steps done
    # by PyTorch: units to Angstrom, ANIFeatures.energies, the self energy, the members' mean, units back.
    # The forces are the same arithmetic in the same type: bit for bit. The energy is averaged in double and
    # rounded once, where mean() sums in the model's type: equal to within one rounding of that type.
    molecule_name, box = PERIODIC_CASES["triclinic"] if periodic else ("cb7", None)
    numbers, positions = molecule(molecule_name)
    model = ANI("ani2x", numbers, dtype=dtype)
    pos = torch.tensor(positions, dtype=torch.float64)  # as NNPForce holds them; converted inside
    b = None if box is None else torch.tensor(box, dtype=torch.float64)
    parameters = model.networks.parameter_list()
    features = model.operator_features.operators
    energy, forces = features.energy_and_forces(pos, b, parameters, model.self_energy, model.hartree_to_kj_per_mol,
                                                model.nm_to_angstrom, True)
    angstrom_box = None if b is None else b.to(dtype) * 10.0
    members, gradient = features.energies(pos.to(dtype) * 10.0, angstrom_box, parameters, True)
    assert energy.dtype == dtype and energy.dim() == 0 and forces.dtype == dtype
    assert torch.equal(forces, gradient * 10.0 * -model.hartree_to_kj_per_mol)
    exact = (members + model.self_energy).double().mean().item() * model.hartree_to_kj_per_mol
    assert abs(energy.item() - exact) <= torch.finfo(dtype).eps * abs(exact)
    stepwise = ((members + model.self_energy).mean() * model.hartree_to_kj_per_mol).item()
    assert abs(energy.item() - stepwise) <= 2 * torch.finfo(dtype).eps * abs(exact)
    # Energy only: the same energy, no forces.
    energy_only, no_forces = features.energy_and_forces(pos, b, parameters, model.self_energy,
                                                        model.hartree_to_kj_per_mol, model.nm_to_angstrom, False)
    assert torch.equal(energy_only, energy) and no_forces.numel() == 0
    # float32 positions give what float64 positions converted to the model's type give.
    if dtype == torch.float32:
        again = features.energy_and_forces(pos.float(), None if b is None else b.float(), parameters,
                                           model.self_energy, model.hartree_to_kj_per_mol, model.nm_to_angstrom,
                                           True)
        assert torch.equal(again[0], energy) and torch.equal(again[1], forces)


def test_operator_energy_and_forces_rejects_bad_input():
    numbers, positions = molecule("cb7")
    model = ANI("ani2x", numbers)
    features = model.operator_features.operators
    parameters = model.networks.parameter_list()
    pos = torch.tensor(positions)
    units = (model.self_energy, model.hartree_to_kj_per_mol, model.nm_to_angstrom, True)
    with pytest.raises(RuntimeError, match="the box must be a floating-point \\[3, 3\\] tensor"):
        features.energy_and_forces(pos, torch.eye(2, dtype=torch.float64), parameters, *units)
    with pytest.raises(RuntimeError, match="positions for 3 atoms"):
        features.energy_and_forces(pos[:3], None, parameters, *units)
    with pytest.raises(RuntimeError, match="no network parameters"):
        features.energy_and_forces(pos, None, [], *units)


def test_module_to_float64_after_construction():
    numbers, positions = molecule("toluene")
    ref_energy, ref_forces, _ = reference("ani2x", numbers, positions)
    model = ANI("ani2x", numbers).to(torch.float64)
    energy, forces = energy_and_forces(model, positions)
    assert model(torch.tensor(positions)).dtype == torch.float64
    # The weights went through float32 once (with AEV constants folded in): ~1e-7 relative.
    assert abs(energy - ref_energy) <= 1e-6 * abs(ref_energy)
    assert max_relative_force_error(forces, ref_forces) <= 1e-5


# ---------------------------------------------------------------------------------------------
# Errors


def test_unsupported_elements_are_named():
    with pytest.raises(ValueError, match=r"'ani1x'.*\bS\b.*Cl.*supports H, C, N, O"):
        ANI("ani1x", [6, 1, 16, 17])
    with pytest.raises(ValueError, match=r"Fe.*H, C, N, O, S, F, Cl"):
        ANI("ani2x", [6, 26])


def test_unknown_model_name():
    with pytest.raises(ValueError, match=r"Unknown ANI model 'ani3x'.*ani1x, ani1ccx, ani2x"):
        ANI("ani3x", [1, 1])


def test_model_name_spellings():
    numbers, positions = molecule("toluene")
    x = torch.tensor(positions)
    energies = {name: ANI(name, numbers, dtype=torch.float64)(x).item() for name in ("ani2x", "ANI-2x", "ANI2x")}
    assert len(set(energies.values())) == 1


def test_bad_dtype():
    with pytest.raises(ValueError, match="dtype"):
        ANI("ani2x", [1, 1], dtype=torch.float16)


# ---------------------------------------------------------------------------------------------
# Through the plugin's NNPForce


def _openmm_nnp():
    try:
        import openmm_nnp

        openmm_nnp.NNPForce
    except Exception as error:  # the compiled plugin is not built
        pytest.skip(f"openmm_nnp (compiled plugin) not importable: {error}")
    return openmm_nnp


def _nnp_state(system, positions, platform_name, box=None):
    import openmm
    import openmm.unit as unit

    platform = openmm.Platform.getPlatformByName(platform_name)
    properties = {"Threads": "2"} if platform_name == "CPU" else {}
    context = openmm.Context(system, openmm.VerletIntegrator(0.001), platform, properties)
    if box is not None:
        context.setPeriodicBoxVectors(*[openmm.Vec3(*row) for row in box])
    context.setPositions(positions)
    state = context.getState(getEnergy=True, getForces=True)
    energy = state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
    forces = state.getForces(asNumpy=True).value_in_unit(unit.kilojoule_per_mole / unit.nanometer)
    return energy, np.asarray(forces)


@pytest.mark.parametrize(
    "platform_name, dtype, energy_tolerance, force_tolerance",
    [
        # Reference passes float64 positions to a float64 model: identical computation.
        ("Reference", torch.float64, 1e-8, 1e-10),
        # CPU with a float32 model: same float32 computation; positions may be rounded differently.
        ("CPU", torch.float32, 1e-6, 1e-4),
    ],
)
@pytest.mark.parametrize("periodic", [False, True])
def test_nnp_force_matches_model(platform_name, dtype, energy_tolerance, force_tolerance, periodic):
    openmm_nnp = _openmm_nnp()
    import openmm

    # Host + guest; the guest is the NNP region, listed in reverse order.
    host_numbers, host_positions = molecule("cb7")
    guest_numbers, guest_positions = molecule("b2")
    positions = np.concatenate([host_positions, guest_positions])
    numbers = host_numbers + guest_numbers
    region = list(range(len(numbers) - 1, len(host_numbers) - 1, -1))
    box = None
    if periodic:
        # A box where the guest sees its images; its atoms are wrapped into the box (split).
        box = np.eye(3) * 1.05
        positions[len(host_numbers):] = _wrapped(guest_positions, box)

    model = ANI("ani2x", [numbers[i] for i in region], dtype=dtype)
    system = openmm.System()
    for _ in numbers:
        system.addParticle(12.0)
    force = openmm_nnp.NNPForce(torch.jit.script(model), region)
    if periodic:
        system.setDefaultPeriodicBoxVectors(*[openmm.Vec3(*row) for row in box])
        force.setUsesPeriodicBoundaryConditions(True)
    system.addForce(force)
    energy, forces = _nnp_state(system, positions, platform_name, box)

    expected_energy, expected_forces = energy_and_forces(model, positions[region], box, dtype=dtype)
    assert abs(energy - expected_energy) <= energy_tolerance * abs(expected_energy)
    assert max_relative_force_error(forces[region], expected_forces) <= force_tolerance
    assert np.all(forces[: len(host_numbers)] == 0.0)
    if periodic and dtype == torch.float64:
        whole_isolated_energy, _ = energy_and_forces(model, guest_positions[::-1].copy(), None, dtype=dtype)
        assert abs(energy - whole_isolated_energy) > 0.1


def test_nnp_force_with_operator_model_survives_xml_exactly():
    # The model inside the NNPForce holds the ANIFeatures object; the System's XML carries it (pickled
    # constants) and the deserialized force computes bitwise the same energy and forces.
    openmm_nnp = _openmm_nnp()
    import openmm

    numbers, positions = molecule("b2")
    system = openmm.System()
    for _ in numbers:
        system.addParticle(12.0)
    system.addForce(openmm_nnp.NNPForce(torch.jit.script(ANI("ani2x", numbers)), list(range(len(numbers)))))
    reloaded = openmm.XmlSerializer.deserialize(openmm.XmlSerializer.serialize(system))
    energy, forces = _nnp_state(system, positions, "Reference", None)
    reloaded_energy, reloaded_forces = _nnp_state(reloaded, positions, "Reference", None)
    assert reloaded_energy == energy and np.array_equal(reloaded_forces, forces)


@pytest.mark.parametrize("atomic_numbers,positions", [
    ([8, 1, 1], [[0.0, 0.0, 0.0], [0.0957, 0.0, 0.0], [-0.024, 0.0927, 0.0]]),  # water
    ([6, 8, 1, 1, 1, 1], [[0.0, 0.0, 0.0], [0.143, 0.0, 0.0], [0.172, 0.09, 0.0],  # methanol
                          [-0.036, -0.103, 0.0], [-0.036, 0.051, 0.089], [-0.036, 0.051, -0.089]]),
])
def test_small_regions_script_and_match_torchani(atomic_numbers, positions):
    """Regions so small that some precomputed index lists are empty still compile with torch.jit.script."""
    positions = np.array(positions)
    scripted = torch.jit.script(ANI("ani2x", atomic_numbers, dtype=torch.float64))
    energy, forces = energy_and_forces(scripted, positions)
    ref_energy, ref_forces, _ = reference("ani2x", atomic_numbers, positions)
    assert abs(energy - ref_energy) < 1e-6
    assert max_relative_force_error(forces, ref_forces) < 1e-7


def test_model_file_in_a_cpp_program(tmp_path):
    # The default model calls openmm-nnp's operators; a C++ program that only loads the NNPForce
    # kernel library (no Python) must find them registered. Reference platform, float64 model:
    # the same computation as in Python, so agreement to round-off.
    openmm_nnp = _openmm_nnp()
    from test_nnp_force import run_cpp_test
    import openmm

    numbers, positions = molecule("b2")
    model = ANI("ani2x", numbers, dtype=torch.float64)
    torch.jit.script(model).save(str(tmp_path / "ani.pt"))
    energy, forces = energy_and_forces(model, positions)
    lines = [str(len(numbers))] + [" ".join(repr(float(v)) for v in row) for row in positions]
    lines += [f"{energy!r} 1e-10"] + [" ".join(repr(float(v)) for v in row) for row in forces] + ["1e-8"]
    (tmp_path / "expected.txt").write_text("\n".join(lines) + "\n")
    plugins = os.path.join(openmm.version.openmm_library_path, "plugins")
    kernels = os.path.join(os.path.dirname(openmm_nnp.__file__), "libOpenMMNNPReference.so")
    run_cpp_test("TestNNPForceModelFile", kernels, plugins, str(tmp_path / "ani.pt"), str(tmp_path / "expected.txt"))


@pytest.mark.parametrize("threads", [1, 3])
def test_thread_count_does_not_change_results(threads):
    # The operators split centres and ensemble members over PyTorch's threads (3 threads: uneven
    # groups of 8 members); results equal TorchANI's at any thread count.
    numbers, positions = molecule("halobenzene")
    ref_energy, ref_forces, ref_members = reference("ani2x", numbers, positions)
    model = ANI("ani2x", numbers, dtype=torch.float64)
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        energy, forces = energy_and_forces(model, positions)
        members = model.energies_per_member(torch.tensor(positions)).numpy()
    finally:
        torch.set_num_threads(previous)
    assert abs(energy - ref_energy) <= 1e-6
    assert max_relative_force_error(forces, ref_forces) <= 1e-7
    assert np.abs(members - ref_members).max() <= 1e-6
