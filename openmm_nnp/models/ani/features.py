"""The AEVs of one region, by one of two interchangeable strategies.

Both take positions [n, 3] and an optional box [3, 3] in Angstrom, in the model's floating-point type, and
the networks as ``ANINetworks.parameter_list()``; ``evaluate(positions, box, network_parameters,
need_gradient)`` returns the members' energies [members] in Hartree (without self energies) and, if
need_gradient, d(mean energy)/d(positions) [n, 3] in Hartree/Angstrom, computed analytically (else an
empty tensor; the energies are then differentiable by autograd).

* ``OperatorFeatures``: the compiled operators. It holds a ``torch.classes.openmm_nnp.ANIFeatures``, which
  checks and parses the AEV constants once, when the model is built; each call passes only positions, box
  and networks. CPU tensors, eager mode and TorchScript (``operators_apply``).
* ``PyTorchFeatures``: PyTorch operations only (dense neighbour handling with masks, angular slots, packed
  triples; docs/models.md describes it), for any device, torch.export and torch.compile.
"""

import math
from typing import List, Optional, Tuple

import torch
from torch import Tensor

from .networks import evaluate_networks
from .parameters import ANIParameters

# Default number of angular neighbour slots per atom for large regions. Dense organic
# matter has ~15-25 atoms within the 3.5 Angstrom angular cutoff; 40 leaves a wide
# margin. Regions with at most this many atoms + 1 use all pairs (no assumption at all).
DEFAULT_MAX_ANGULAR_NEIGHBORS = 40


def _exp_clamped(x: Tensor) -> Tensor:
    # exp(max(x, -80)). CPU exp takes a ~10x slower path where the result underflows
    # float32 (x < -87), which happens for most distant pairs. exp(-80) = 1.8e-35, so a
    # Gaussian term changes by at most that (against terms of order 1; beyond the cutoff
    # it is multiplied by an exact zero anyway).
    return torch.exp(torch.clamp(x, min=-80.0))


def operators_apply(positions: Tensor) -> bool:
    """The compiled operators serve CPU tensors in eager mode and TorchScript; torch.export
    and torch.compile trace the PyTorch computation instead."""
    if positions.device.type != "cpu":
        return False
    if not torch.jit.is_scripting():
        if torch.compiler.is_compiling():
            return False
    return True


class OperatorFeatures(torch.nn.Module):
    """AEVs, networks and the analytic gradient in one call of the compiled operators."""

    def __init__(self, parameters: ANIParameters, dtype: torch.dtype):
        super().__init__()
        from openmm_nnp import _plugin

        _plugin.loadTorchOperators()
        # The constants in the model's type, as the PyTorch strategy's buffers hold them.
        self.operators = torch.classes.openmm_nnp.ANIFeatures(
            parameters.species_tensor(), parameters.pair_index, parameters.radial_shifts.to(dtype),
            parameters.angular_shifts.to(dtype), parameters.section_matrix().to(dtype), parameters.radial_cutoff,
            parameters.radial_eta, parameters.angular_cutoff, parameters.angular_eta, parameters.angular_zeta,
        )

    def evaluate(self, positions: Tensor, box: Optional[Tensor], network_parameters: List[Tensor],
                 need_gradient: bool) -> Tuple[Tensor, Tensor]:
        if not need_gradient and positions.requires_grad and torch.is_grad_enabled():
            # energies_per_member with positions that require grad: autograd through the AEVs
            # (first order, the class's backward) and the networks' PyTorch operations.
            energies, _ = evaluate_networks(self.operators.aev(positions, box), network_parameters, False)
            return energies, torch.zeros(0, dtype=positions.dtype, device=positions.device)
        return self.operators.energies(positions, box, network_parameters, need_gradient)

    def energy_and_forces(self, positions: Tensor, box: Optional[Tensor], network_parameters: List[Tensor],
                          self_energy: float, hartree_to_kj_per_mol: float, nm_to_angstrom: float,
                          need_forces: bool) -> Tuple[Tensor, Tensor]:
        """The ANI model's energy (kJ/mol) and forces (kJ/mol/nm) from positions and box in nm, in one call."""
        return self.operators.energy_and_forces(positions, box, network_parameters, self_energy,
                                                hartree_to_kj_per_mol, nm_to_angstrom, need_forces)


class PyTorchFeatures(torch.nn.Module):
    """AEVs and their gradient by PyTorch operations only; every index set is built here, once.

    maxAngularNeighbors and maxAngularTriples: see the ANI class.
    """

    # Declared for TorchScript, which cannot infer the element type of an empty list (small regions).
    triple_tiers: List[int]

    def __init__(self, parameters: ANIParameters, dtype: torch.dtype, maxAngularNeighbors: Optional[int] = None,
                 maxAngularTriples: Optional[int] = None):
        super().__init__()
        species = parameters.species
        num_atoms, num_species = parameters.num_atoms, parameters.num_species
        num_species_pairs = parameters.num_species_pairs
        triu_index = parameters.pair_index
        self.radial_cutoff = parameters.radial_cutoff
        self.angular_cutoff = parameters.angular_cutoff
        self.radial_eta = parameters.radial_eta
        self.angular_eta = parameters.angular_eta
        self.angular_zeta = parameters.angular_zeta
        self.register_buffer("radial_shifts", parameters.radial_shifts.to(dtype))
        self.register_buffer("angular_shifts", parameters.angular_shifts.to(dtype))
        self.register_buffer("section_matrix", parameters.section_matrix().to(dtype))
        self.num_atoms = num_atoms
        self.num_species = num_species
        self.num_species_pairs = num_species_pairs
        self.num_radial = parameters.num_radial
        self.num_shifts = parameters.num_shifts
        self.num_sections = parameters.num_sections
        self.num_angular = parameters.num_angular
        self.radial_length = parameters.radial_length

        # Neighbour matrix: row i lists all other atoms, [n, n-1].
        others = [[j for j in range(num_atoms) if j != i] for i in range(num_atoms)]
        num_others = num_atoms - 1
        others_t = torch.tensor(others, dtype=torch.long).reshape(num_atoms, num_others)
        self.num_others = num_others
        self.register_buffer("others_flat", others_t.reshape(-1))
        species_t = torch.tensor(species, dtype=torch.long)
        other_species = species_t[others_t] if num_others > 0 else torch.zeros(num_atoms, 0, dtype=torch.long)
        # Radial AEV bin of each (atom, other atom): atom * num_species + species(other).
        self.register_buffer(
            "radial_bins", (torch.arange(num_atoms).unsqueeze(1) * num_species + other_species).reshape(-1)
        )

        # Angular slots: all others, or the nearest maxAngularNeighbors of them.
        max_slots = DEFAULT_MAX_ANGULAR_NEIGHBORS if maxAngularNeighbors is None else int(maxAngularNeighbors)
        if max_slots < 1:
            raise ValueError("maxAngularNeighbors must be positive")
        self.select_nearest = num_others > max_slots
        self.num_slots = max_slots if self.select_nearest else num_others
        slot_a, slot_b = torch.triu_indices(self.num_slots, self.num_slots, offset=1)
        self.num_slot_pairs = int(slot_a.numel())
        self.register_buffer("slot_a", slot_a.contiguous())
        self.register_buffer("slot_b", slot_b.contiguous())
        self.register_buffer("other_species", other_species.contiguous())
        self.register_buffer("triu_index_flat", triu_index.reshape(-1).contiguous())
        # Candidate triples: every (centre, slot pair), flattened centre-major. For each, the
        # flat [n * slots] index of its two slots.
        self.num_candidates = num_atoms * self.num_slot_pairs
        centres = torch.arange(num_atoms).repeat_interleave(self.num_slot_pairs)
        pairs = torch.arange(self.num_slot_pairs).repeat(num_atoms)
        self.register_buffer("candidate_index", torch.arange(self.num_candidates))
        self.register_buffer("candidate_a", centres * self.num_slots + slot_a[pairs])
        self.register_buffer("candidate_b", centres * self.num_slots + slot_b[pairs])
        self.register_buffer(
            "candidate_pair", (centres * self.num_slots + slot_a[pairs]) * self.num_slots + slot_b[pairs]
        )
        # Angular AEV bin of each candidate (centre * species pairs + species pair); static
        # unless the slots are chosen by distance.
        atom_offsets = torch.arange(num_atoms).unsqueeze(1) * num_species_pairs
        if not self.select_nearest and self.num_slot_pairs > 0:
            pair_species = triu_index[other_species[:, slot_a], other_species[:, slot_b]]
            static_bins = (atom_offsets + pair_species).reshape(-1)
        else:
            static_bins = torch.zeros(0, dtype=torch.long)
        self.register_buffer("static_angular_bins", static_bins)
        self.register_buffer("angular_bin_offsets", atom_offsets)
        budget = 200 * num_atoms if maxAngularTriples is None else int(maxAngularTriples)
        if budget < 1:
            raise ValueError("maxAngularTriples must be positive")
        self.triple_budget = min(budget, self.num_candidates)
        # Compacted list lengths on offer: 40 n, 60 n, 90 n, ... (x1.5) up to the budget.
        # A call uses the shortest that holds its triples (typically 50-120 per atom),
        # so padding stays below ~50 %.
        tiers: List[int] = []
        size = 40 * num_atoms
        while size < self.triple_budget:
            tiers.append(size)
            size = (size * 3) // 2
        if self.triple_budget < self.num_candidates:
            tiers.append(self.triple_budget)
        self.triple_tiers = tiers


    def _displacements(self, positions: Tensor, box: Optional[Tensor]) -> Tensor:
        """Vectors from each atom to every other atom, [n, n-1, 3], in Angstrom."""
        vectors = positions.index_select(0, self.others_flat).view(self.num_atoms, self.num_others, 3) - positions.unsqueeze(1)
        if box is not None:
            # Minimum image in OpenMM's reduced triclinic form: c, then b, then a.
            vectors = vectors - torch.round(vectors[:, :, 2:3] / box[2, 2]) * box[2]
            vectors = vectors - torch.round(vectors[:, :, 1:2] / box[1, 1]) * box[1]
            vectors = vectors - torch.round(vectors[:, :, 0:1] / box[0, 0]) * box[0]
        return vectors

    def _may_compact(self) -> bool:
        """Data-dependent triple compaction is fine in eager mode and TorchScript, not
        while torch.export / torch.compile trace the module."""
        if not torch.jit.is_scripting():
            if torch.compiler.is_compiling():
                return False
        return True

    def _cosine_cutoff(self, distances: Tensor, cutoff: float) -> Tensor:
        # 0.5 cos(pi r / Rc) + 0.5 for r < Rc, else 0. Clamping r at Rc gives cos(pi) = -1,
        # i.e. exactly 0 with zero autograd gradient beyond the cutoff.
        return 0.5 * torch.cos(torch.clamp(distances, max=cutoff) * (math.pi / cutoff)) + 0.5

    def _cosine_cutoff_derivative(self, distances: Tensor, cutoff: float) -> Tensor:
        derivative = torch.sin(torch.clamp(distances, max=cutoff) * (math.pi / cutoff)) * (-0.5 * math.pi / cutoff)
        return torch.where(distances < cutoff, derivative, torch.zeros_like(derivative))

    def evaluate(self, positions: Tensor, box: Optional[Tensor], network_parameters: List[Tensor],
                 need_gradient: bool) -> Tuple[Tensor, Tensor]:
        n = self.num_atoms
        vectors = self._displacements(positions, box)  # [n, n-1, 3], Angstrom
        dtype = vectors.dtype
        distances = torch.linalg.vector_norm(vectors, dim=2)  # [n, n-1]

        # Radial terms exp(-eta (r - shift)^2) fc(r) (TorchANI's factor 0.25 is folded into
        # the networks), binned by the neighbour's element.
        radial_delta = distances.unsqueeze(2) - self.radial_shifts
        radial_gauss = _exp_clamped(radial_delta * radial_delta * -self.radial_eta)  # [n, n-1, R]
        radial_fc = self._cosine_cutoff(distances, self.radial_cutoff)
        radial_terms = radial_gauss * radial_fc.unsqueeze(2)
        radial_aev = torch.zeros(n * self.num_species, self.num_radial, dtype=dtype, device=positions.device)
        radial_aev = radial_aev.index_add(0, self.radial_bins, radial_terms.reshape(-1, self.num_radial))

        # Angular terms for centre i and pairs (a, b) of its neighbour slots.
        slots = torch.zeros(0, dtype=torch.long, device=positions.device)
        if self.select_nearest:
            slots = torch.topk(distances, self.num_slots, dim=1, largest=False, sorted=False).indices
            # Every atom inside the angular cutoff must have a slot.
            overflow = (distances < self.angular_cutoff).sum(dim=1) > self.num_slots
            torch._assert_async(
                torch.logical_not(overflow.any()),
                "ANI: an atom has more neighbours within the angular cutoff than maxAngularNeighbors",
            )
            slot_vectors = vectors.gather(1, slots.unsqueeze(2).expand(n, self.num_slots, 3))
            slot_distances = distances.gather(1, slots)
            slot_species = self.other_species.gather(1, slots)
            pair_species = self.triu_index_flat.index_select(
                0,
                (slot_species.index_select(1, self.slot_a) * self.num_species
                 + slot_species.index_select(1, self.slot_b)).reshape(-1),
            ).view(n, self.num_slot_pairs)
            candidate_bins = (self.angular_bin_offsets + pair_species).reshape(-1)
        else:
            slot_vectors = vectors
            slot_distances = distances
            candidate_bins = self.static_angular_bins
        flat_vectors = slot_vectors.reshape(-1, 3)
        flat_distances = slot_distances.reshape(-1)
        flat_fc = self._cosine_cutoff(flat_distances, self.angular_cutoff)

        # Only triples with both slots inside the cutoff contribute. Pack them into the
        # shortest list length on offer that holds them (zero-weight padding); if none
        # does, use all candidates.
        selected = self.candidate_index
        present = torch.ones(self.num_candidates, dtype=dtype, device=positions.device)
        if len(self.triple_tiers) > 0 and self._may_compact():
            within = (flat_distances < self.angular_cutoff).to(torch.long)
            pair_within = within.index_select(0, self.candidate_a) * within.index_select(0, self.candidate_b)
            count = int(pair_within.sum())
            size = -1
            for tier in self.triple_tiers:
                if size < 0 and count <= tier:
                    size = tier
            if size > 0:
                position = torch.cumsum(pair_within, 0) - 1
                target = torch.where(pair_within > 0, position, torch.full_like(position, size))
                selected = torch.zeros(size + 1, dtype=torch.long, device=positions.device)
                selected = selected.scatter(0, target, self.candidate_index)[:size]
                present = (torch.arange(size, device=positions.device) < count).to(dtype)
        index_a = self.candidate_a.index_select(0, selected)
        index_b = self.candidate_b.index_select(0, selected)
        angular_bins = candidate_bins.index_select(0, selected)
        vector_a = flat_vectors.index_select(0, index_a)
        vector_b = flat_vectors.index_select(0, index_b)
        r_a = flat_distances.index_select(0, index_a)
        r_b = flat_distances.index_select(0, index_b)
        fc_a = flat_fc.index_select(0, index_a) * present  # padding entries get weight 0
        fc_b = flat_fc.index_select(0, index_b)
        fc_ab = fc_a * fc_b
        # ANI's angle is theta' = acos(0.95 cos(theta)); 1 + cos(theta' - section) =
        # 1 + cos(theta') cos(section) + sin(theta') sin(section), with sin(theta') >= 0.
        # (TorchANI's 2 ((1 + cos)/2)^zeta = 2^(1-zeta) (1 + cos)^zeta; the constant is in the networks.)
        cos_t = (vector_a * vector_b).sum(dim=1) * (0.95 / (r_a * r_b))
        sin_t = torch.sqrt(1.0 - cos_t * cos_t)
        angle_base = 1.0 + cos_t.unsqueeze(1) * self.section_matrix[0] + sin_t.unsqueeze(1) * self.section_matrix[1]
        angle_power = angle_base ** self.angular_zeta  # [triples, sections]
        angle_terms = angle_power * fc_ab.unsqueeze(1)
        mean_delta = (0.5 * (r_a + r_b)).unsqueeze(1) - self.angular_shifts
        distance_terms = _exp_clamped(mean_delta * mean_delta * -self.angular_eta)  # [triples, shifts]
        # Feature order: section-major, shift-minor (the networks' input rows are permuted to match).
        angular_terms = (angle_terms.unsqueeze(2) * distance_terms.unsqueeze(1)).reshape(-1, self.num_angular)
        angular_aev = torch.zeros(n * self.num_species_pairs, self.num_angular, dtype=dtype, device=positions.device)
        angular_aev = angular_aev.index_add(0, angular_bins, angular_terms)

        aev = torch.cat(
            [radial_aev.view(n, self.radial_length), angular_aev.view(n, self.num_species_pairs * self.num_angular)],
            dim=1,
        )

        energies, aev_gradient = evaluate_networks(aev, network_parameters, need_gradient)
        if not need_gradient:
            return energies, aev_gradient

        # Chain rule from d(energy)/d(AEV) to d(energy)/d(displacement vectors).
        # Radial: d/dr [g(r) fc(r)] with g = exp(-eta (r - s)^2).
        radial_gradient = aev_gradient[:, : self.radial_length].reshape(n * self.num_species, self.num_radial)
        radial_gradient = radial_gradient.index_select(0, self.radial_bins).view(n, self.num_others, self.num_radial)
        radial_gradient = radial_gradient * radial_gauss
        d_distances = (radial_gradient * radial_delta).sum(dim=2) * (-2.0 * self.radial_eta) * radial_fc
        d_distances = d_distances + radial_gradient.sum(dim=2) * self._cosine_cutoff_derivative(distances, self.radial_cutoff)

        # Angular: term[z, k] = A_z(cos) D_k(mean r) with A_z = base_z^zeta fc_a fc_b.
        angular_gradient = aev_gradient[:, self.radial_length :].reshape(n * self.num_species_pairs, self.num_angular)
        angular_gradient = angular_gradient.index_select(0, angular_bins).view(-1, self.num_sections, self.num_shifts)
        d_distance_terms = (angular_gradient * angle_terms.unsqueeze(2)).sum(dim=1)  # [triples, shifts]
        d_angle_terms = torch.bmm(angular_gradient, distance_terms.unsqueeze(2)).squeeze(2)  # [triples, sections]
        d_mean_r = (d_distance_terms * distance_terms * mean_delta).sum(dim=1) * (-2.0 * self.angular_eta)
        d_fc_ab = (d_angle_terms * angle_power).sum(dim=1)
        d_base = d_angle_terms * angle_power / angle_base * (self.angular_zeta * fc_ab).unsqueeze(1)
        # d base / d cos' = cos(section) - cos'/sin' sin(section)
        d_cos = (d_base * self.section_matrix[0]).sum(dim=1) - cos_t / sin_t * (d_base * self.section_matrix[1]).sum(dim=1)
        d_dots = d_cos * (0.95 / (r_a * r_b))
        flat_dfc = self._cosine_cutoff_derivative(flat_distances, self.angular_cutoff)
        d_r_a = 0.5 * d_mean_r - d_cos * cos_t / r_a + d_fc_ab * fc_b * flat_dfc.index_select(0, index_a) * present
        d_r_b = 0.5 * d_mean_r - d_cos * cos_t / r_b + d_fc_ab * fc_a * flat_dfc.index_select(0, index_b)
        # Back to the slots: their distances, and the dot products v_a . v_b.
        d_flat_distances = torch.zeros(n * self.num_slots, dtype=dtype, device=positions.device)
        d_flat_distances = d_flat_distances.index_add(0, index_a, d_r_a).index_add(0, index_b, d_r_b)
        # d/dv_a of sum_pairs w_ab v_a . v_b = sum_b (W + W^T)_ab v_b per centre, W [slots, slots].
        pair_index = self.candidate_pair.index_select(0, selected)
        d_dot_matrix = torch.zeros(n * self.num_slots * self.num_slots, dtype=dtype, device=positions.device)
        d_dot_matrix = d_dot_matrix.index_add(0, pair_index, d_dots).view(n, self.num_slots, self.num_slots)
        d_slot_vectors = torch.bmm(d_dot_matrix + d_dot_matrix.transpose(1, 2), slot_vectors)
        d_slot_vectors = d_slot_vectors + (d_flat_distances.view(n, self.num_slots) / slot_distances).unsqueeze(2) * slot_vectors
        if self.select_nearest:
            d_vectors = torch.zeros_like(vectors).scatter_add(1, slots.unsqueeze(2).expand(n, self.num_slots, 3), d_slot_vectors)
        else:
            d_vectors = d_slot_vectors
        d_vectors = d_vectors + (d_distances / distances).unsqueeze(2) * vectors

        # vectors[i, j] = x[others[i, j]] - x[i] (the minimum-image shift is constant).
        gradient = torch.zeros(n, 3, dtype=dtype, device=positions.device)
        gradient = gradient.index_add(0, self.others_flat, d_vectors.reshape(-1, 3)) - d_vectors.sum(dim=1)
        return energies, gradient

