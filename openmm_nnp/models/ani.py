"""ANI-1x / ANI-1ccx / ANI-2x as a fixed-region module for TorchScript and torch.export.

The physics is that of TorchANI's built-in models; every number (AEV constants, network
weights, self energies) is read at construction from the TorchANI model object. What
differs is the execution strategy, chosen for MD of one fixed set of atoms.

Two implementations of the same arithmetic:

* Compiled operators (default for CPU tensors in eager mode and TorchScript): one call of
  openmm_nnp::ani_energies computes the AEVs by loops over neighbour pairs and triples in C++
  (exact for any region size, no neighbour limit), the networks and their back-propagation
  by the same stacked matrix products as below, and the AEV chain rule, reusing the AEV's
  exponential and power terms. For a few tens of atoms, the cost of dispatching hundreds of
  small tensor operations is what this removes. (openmm_nnp::ani_aev, differentiable by
  autograd, serves energies_per_member when positions require grad.) A saved TorchScript
  model that uses the operators needs them registered: importing openmm_nnp.models (or
  openmm_nnp.force) and the NNPForce plugin do it.
* PyTorch operations only (``customOps=False``; also on other devices and whatever
  torch.export or torch.compile trace): a model file that any PyTorch can load, e.g.
  openmm-torch. It is built as follows.

* The species never change, so every index set (element groups, neighbour slots, the
  species/species-pair bin of every AEV term, the AEV features each element's networks
  can ever see as nonzero) is built once in ``__init__``.
* Neighbour handling is dense with masks: every atom sees every other atom, and the
  cosine cutoff is applied with ``r`` clamped at ``Rc``, which makes it exactly zero
  (with zero derivative) beyond the cutoff. This equals a neighbour-list computation,
  with static shapes.
* Angular candidates are, for each centre, all pairs of its neighbour "slots". For small
  regions the slots are all other atoms (exact, no assumption). For larger regions they
  are each atom's ``maxAngularNeighbors`` nearest atoms (``topk``, static size); this is
  exact as long as no atom has more neighbours than that inside the angular cutoff,
  which forward() asserts.
* Only candidates with both neighbours inside the angular cutoff contribute (a few
  thousand of the ~12,000 for a 30-atom molecule). In eager mode and TorchScript they
  are packed (cumsum + scatter) into a list whose length is the shortest of a few fixed
  sizes (40, 60, 90, ... triples per atom) that holds them, padded with zero-weight
  entries; a structure with more than ``maxAngularTriples`` is computed over all
  candidates instead (same result, slower). Under torch.export the all-candidates
  computation is captured, so the exported graph has no data-dependent control flow.
* Features that can never be nonzero (species or species pairs absent from the region)
  are dropped from each element's first layer; constant factors of the AEV terms are
  folded into those weights, and the angular features are section-major internally
  (the weights' rows are permuted to match).
* The 8 ensemble members are evaluated together: per element, the members' weights are
  stacked and applied with one matmul (first layer, shared input) and ``baddbmm``.
* Forces: when ``positions.requires_grad`` (how NNPForce asks for forces), forward()
  computes the gradient analytically in the same pass (network back-propagation by
  stacked matmuls, then the AEV chain rule) and returns
  ``energy + sum((positions - positions.detach()) * gradient)``: the same value, whose
  autograd gradient is the analytic one. This avoids autograd's per-op bookkeeping,
  which dominates for a few tens of atoms. Only first derivatives with respect to
  positions are provided this way (none with respect to the box). Without
  ``requires_grad`` (or with grad mode off) forward() is a plain differentiable
  computation of the energy, which is also what ``torch.export`` captures.

Units: positions and box in nm are multiplied by 10 (exact) to get Angstrom; energies in
Hartree are multiplied by TorchANI's ``torchani.units.HARTREE_TO_KJOULEPERMOL`` (CODATA
2014 Hartree energy and Avogadro constant: 1 Hartree = 2625.4996387552483 kJ/mol), so results agree with
TorchANI energies converted by ``torchani.units.hartree2kjoulepermol``.
"""

import math
import numbers
from typing import Final, List, Optional, Sequence, Tuple

import torch
from torch import Tensor

from openmm_nnp import _plugin

from .torchani_models import ANI_MODELS, canonicalANIName, load_torchani_model  # noqa: F401 (re-exported)

_plugin.loadLibraries()  # the compiled operators the model calls

NM_TO_ANGSTROM = 10.0

# Default number of angular neighbour slots per atom for large regions. Dense organic
# matter has ~15-25 atoms within the 3.5 Angstrom angular cutoff; 40 leaves a wide
# margin. Regions with at most this many atoms + 1 use all pairs (no assumption at all).
DEFAULT_MAX_ANGULAR_NEIGHBORS = 40

def _canonical_model_name(name: str) -> str:
    key = canonicalANIName(name)
    if key is None:
        raise ValueError(f"Unknown ANI model {name!r}; supported models are: {', '.join(ANI_MODELS)}")
    return key


def _element_symbol(atomic_number: int) -> str:
    from torchani.utils import PERIODIC_TABLE

    if 0 < atomic_number < len(PERIODIC_TABLE):
        return PERIODIC_TABLE[atomic_number]
    return f"Z={atomic_number}"


def _celu(x: Tensor) -> Tensor:
    # ANI's activation: CELU with alpha = 0.1
    return torch.nn.functional.celu(x, alpha=0.1)


def _exp_clamped(x: Tensor) -> Tensor:
    # exp(max(x, -80)). CPU exp takes a ~10x slower path where the result underflows
    # float32 (x < -87), which happens for most distant pairs. exp(-80) = 1.8e-35, so a
    # Gaussian term changes by at most that (against terms of order 1; beyond the cutoff
    # it is multiplied by an exact zero anyway).
    return torch.exp(torch.clamp(x, min=-80.0))


def _celu_derivative(activation: Tensor) -> Tensor:
    # d celu(z)/dz from celu(z) itself: 1 for z > 0, exp(z/alpha) = 1 + celu(z)/alpha otherwise.
    return 1.0 + torch.clamp(activation, max=0.0) / 0.1


class _ElementEnsemble(torch.nn.Module):
    """All ensemble members' networks for one element, applied to that element's atoms.

    ANI-1x/1ccx/2x atomic networks are: first layer, two hidden layers, one output.
    ``forward(aev, need_gradient)`` returns the per-member sums over the element's atoms
    of the network outputs (Hartree, shape [members]) and, if requested, the gradient of
    the members' mean with respect to the selected AEV features ([atoms, features]).
    """

    def __init__(
        self,
        atom_indices: List[int],
        feature_indices: List[int],
        feature_scales: Tensor,
        feature_order: Tensor,
        linears: List[List[torch.nn.Linear]],
        dtype: torch.dtype,
    ):
        # linears[m][l] is layer l of member m (nn.Linear with weight [out, in]).
        # feature_indices: the AEV features that can be nonzero for these atoms; the
        # first layer only keeps the matching input rows (the others multiply zeros).
        # feature_scales: constant factors of the AEV features that the AEV code leaves
        # out; they are folded into the first layer's input rows instead.
        # feature_order[j]: TorchANI's index of our AEV feature j (layouts differ).
        super().__init__()
        num_members = len(linears)
        if any(len(layers) != 4 for layers in linears):
            raise ValueError("expected ANI atomic networks with three hidden layers")
        self.num_members = num_members
        self.num_atoms = len(atom_indices)
        self.register_buffer("atom_indices", torch.tensor(atom_indices, dtype=torch.long))
        self.register_buffer("feature_indices", torch.tensor(feature_indices, dtype=torch.long))
        # Where this element's [atoms, features] gradient goes in the flattened [n, aev_length] AEV gradient.
        aev_length = feature_order.numel()
        atoms_t = torch.tensor(atom_indices).unsqueeze(1)
        features_t = torch.tensor(feature_indices).unsqueeze(0)
        self.register_buffer("gradient_index", (atoms_t * aev_length + features_t).reshape(-1))

        def stacked(layer: int):
            # [members, in, out] and [members, out], in float64 until stored
            weight = torch.stack([linears[m][layer].weight.detach().t().to(torch.float64) for m in range(num_members)])
            bias = torch.stack([linears[m][layer].bias.detach().to(torch.float64) for m in range(num_members)])
            return weight, bias

        # First layer: all members read the same AEVs, so it is one [in, members*out] matmul.
        weight, bias = stacked(0)
        weight = (weight * feature_scales.to(torch.float64).view(1, -1, 1))[:, feature_order, :][:, feature_indices, :]
        self.first_width = int(weight.shape[2])
        self.register_buffer("weight1", weight.permute(1, 0, 2).reshape(weight.shape[1], -1).to(dtype).contiguous())
        self.register_buffer("bias1", bias.reshape(-1).to(dtype).contiguous())
        weight, bias = stacked(1)
        self.register_buffer("weight2", weight.to(dtype).contiguous())
        self.register_buffer("bias2", bias.unsqueeze(1).to(dtype).contiguous())
        weight, bias = stacked(2)
        self.register_buffer("weight3", weight.to(dtype).contiguous())
        self.register_buffer("bias3", bias.unsqueeze(1).to(dtype).contiguous())
        # Output layer; sum over atoms first: sum_a (h_a . w + b) = (sum_a h_a) . w + n b
        weight, bias = stacked(3)
        self.register_buffer("weight4", weight[:, :, 0].to(dtype).contiguous())  # [members, in]
        self.register_buffer("bias4_sum", (bias[:, 0] * len(atom_indices)).to(dtype))  # [members]

    @torch.jit.export
    def parameter_list(self) -> List[Tensor]:
        """Index sets and weights in the order the openmm_nnp::ani_energies operator takes them."""
        return [
            self.atom_indices, self.feature_indices, self.weight1, self.bias1, self.weight2, self.bias2,
            self.weight3, self.bias3, self.weight4, self.bias4_sum,
        ]

    def forward(self, aev: Tensor, need_gradient: bool) -> Tuple[Tensor, Tensor]:
        x = aev.index_select(0, self.atom_indices).index_select(1, self.feature_indices)
        h1 = _celu(torch.addmm(self.bias1, x, self.weight1))
        h1 = h1.view(self.num_atoms, self.num_members, self.first_width).transpose(0, 1)
        h2 = _celu(torch.baddbmm(self.bias2, h1, self.weight2))
        h3 = _celu(torch.baddbmm(self.bias3, h2, self.weight3))
        energies = (h3.sum(dim=1) * self.weight4).sum(dim=1) + self.bias4_sum
        if not need_gradient:
            return energies, torch.zeros(0, dtype=aev.dtype, device=aev.device)
        # Back-propagate d(mean over members)/d(outputs) = 1/members.
        grad = (self.weight4 * (1.0 / self.num_members)).unsqueeze(1) * _celu_derivative(h3)
        grad = torch.bmm(grad, self.weight3.transpose(1, 2)) * _celu_derivative(h2)
        grad = torch.bmm(grad, self.weight2.transpose(1, 2)) * _celu_derivative(h1)
        grad = torch.mm(grad.transpose(0, 1).reshape(self.num_atoms, -1), self.weight1.t())
        return energies, grad


class ANI(torch.nn.Module):
    """TorchANI's ANI-1x, ANI-1ccx or ANI-2x (the 8-member ensemble, or one member) for a fixed set of atoms.

    Parameters
    ----------
    name : str
        ``'ani1x'``, ``'ani1ccx'`` or ``'ani2x'`` (case, '-' and '_' are ignored).
    atomicNumbers : sequence of int
        Atomic numbers of the region's atoms, in the order forward() receives positions.
    dtype : torch.dtype
        ``torch.float32`` (default) or ``torch.float64``; all computation is in this type.
    maxAngularNeighbors : int, optional
        Angular neighbour slots per atom (see module docstring). Regions with at most
        ``maxAngularNeighbors + 1`` atoms use all atom pairs. Default 40.
    maxAngularTriples : int, optional
        Size of the compacted list of angular triples (centre, neighbour pair) inside the
        cutoff. Default ``200 * n`` (as if every atom had 20 neighbours inside 3.5 A;
        molecules have ~50-120 triples per atom). Each call packs its triples into the
        shortest of the lengths 40 n, 60 n, 90 n, ... (x1.5) up to this maximum that holds
        them; a structure with more uses all candidate triples: same result, slower.
        (torch.export always captures the all-candidates computation.)
        maxAngularNeighbors and maxAngularTriples only concern the PyTorch implementation.
    customOps : bool
        Use openmm-nnp's compiled operators on CPU tensors (default; see module docstring).
        False: PyTorch operations only, so a saved TorchScript file loads in any PyTorch.
    modelIndex : int, optional
        Use only this member of the ensemble (0 to 7), as openmm-ml's ``modelIndex``: about 8 times
        less network work, slightly less accurate. Default: the mean of all members.

    ``forward(positions, boxVectors=None)`` takes positions [n, 3] in nm and optionally
    OpenMM box vectors [3, 3] in nm (reduced triclinic form, rows a, b, c); with a box,
    displacements use the minimum image convention (exact for ANI as long as every box
    width is at least twice the 0.51 nm radial cutoff). Returns the ensemble-mean energy
    in kJ/mol as a 0-dim tensor. If ``positions.requires_grad``, backward() yields the
    analytic gradient (see module docstring).

    ``energies_per_member(positions, boxVectors=None)`` returns the 8 members' energies
    (kJ/mol) and ``ensemble_std(...)`` their Bessel-corrected standard deviation (kJ/mol),
    a measure of the ensemble's disagreement; both are TorchScript-exported methods.
    """

    # Declared for TorchScript, which cannot infer the element type of an empty list (small regions).
    triple_tiers: List[int]
    # A constant for TorchScript: with customOps=False the branch calling the compiled operators is
    # not compiled, so the saved model refers to no operator outside PyTorch.
    custom_ops: Final[bool]

    def __init__(
        self,
        name: str,
        atomicNumbers: Sequence[int],
        dtype: torch.dtype = torch.float32,
        maxAngularNeighbors: Optional[int] = None,
        maxAngularTriples: Optional[int] = None,
        customOps: bool = True,
        modelIndex: Optional[int] = None,
    ):
        super().__init__()
        self.custom_ops = bool(customOps)
        if dtype not in (torch.float32, torch.float64):
            raise ValueError(f"dtype must be torch.float32 or torch.float64, not {dtype}")
        self.model_name = _canonical_model_name(name)
        atomic_numbers = [int(z) for z in atomicNumbers]
        if len(atomic_numbers) == 0:
            raise ValueError("atomicNumbers must contain at least one atom")
        reference = load_torchani_model(self.model_name)

        # Elements, in the model's internal order.
        model_numbers = [int(z) for z in reference.atomic_numbers]
        unsupported = sorted(set(atomic_numbers) - set(model_numbers))
        if unsupported:
            raise ValueError(
                f"ANI model {self.model_name!r} does not support element(s) "
                f"{', '.join(_element_symbol(z) for z in unsupported)}; it supports "
                f"{', '.join(_element_symbol(z) for z in model_numbers)}"
            )
        element_index = {z: i for i, z in enumerate(model_numbers)}
        species = [element_index[z] for z in atomic_numbers]
        num_species = len(model_numbers)
        num_atoms = len(atomic_numbers)

        # AEV constants.
        aev_computer = reference.potentials["nnp"].aev_computer
        radial, angular = aev_computer.radial, aev_computer.angular
        import torchani

        for term in (radial, angular):
            if not isinstance(term.cutoff_fn, torchani.cutoffs.CutoffCosine):
                raise ValueError(f"unsupported cutoff function {term.cutoff_fn} in {self.model_name}")
        self.radial_cutoff = float(radial.cutoff)
        self.angular_cutoff = float(angular.cutoff)
        self.radial_eta = float(radial.eta)
        self.angular_eta = float(angular.eta)
        self.angular_zeta = float(angular.zeta)
        self.register_buffer("radial_shifts", radial.shifts.detach().to(dtype).reshape(-1))
        self.register_buffer("angular_shifts", angular.shifts.detach().to(dtype).reshape(-1))
        sections = angular.sections.detach().to(torch.float64).reshape(-1)
        num_shifts, num_sections = int(self.angular_shifts.numel()), int(sections.numel())
        # Rows cos(section), sin(section): cos(theta' - section) from cos(theta'), sin(theta').
        section_matrix = torch.stack([torch.cos(sections), torch.sin(sections)])
        self.register_buffer("section_matrix", section_matrix.to(dtype))
        self.num_shifts = num_shifts
        self.num_sections = num_sections
        num_radial = int(self.radial_shifts.numel())
        num_angular = num_shifts * num_sections
        triu_index = aev_computer.triu_index.detach().to(torch.long)
        num_species_pairs = int(triu_index.max()) + 1
        self.register_buffer("species", torch.tensor(species, dtype=torch.long))
        self.register_buffer("pair_index", triu_index.contiguous())
        self.num_atoms = num_atoms
        self.num_species = num_species
        self.num_species_pairs = num_species_pairs
        self.num_radial = num_radial
        self.num_angular = num_angular
        self.radial_length = num_species * num_radial
        self.aev_length = self.radial_length + num_species_pairs * num_angular
        self.hartree_to_kj_per_mol = float(torchani.units.HARTREE_TO_KJOULEPERMOL)
        self.nm_to_angstrom = NM_TO_ANGSTROM

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

        # Networks: one stacked ensemble per element present.
        ensemble = reference.potentials["nnp"].neural_networks
        members = list(ensemble.members)
        if modelIndex is not None:
            if isinstance(modelIndex, bool) or not isinstance(modelIndex, numbers.Integral) \
                    or not 0 <= modelIndex < len(members):
                raise ValueError(f"modelIndex must be an integer from 0 to {len(members) - 1} (one member of the "
                                 f"{self.model_name} ensemble), not {modelIndex!r}")
            members = members[int(modelIndex):int(modelIndex) + 1]
        self.num_members = len(members)
        symbols = list(reference.symbols)
        species_counts = [species.count(s) for s in range(num_species)]
        # Constant factors left out of the AEV terms (see _evaluate), per feature:
        # radial 0.25 exp(...) and angular 2 ((1 + cos)/2)^zeta = 2^(1 - zeta) (1 + cos)^zeta.
        radial_length = num_species * num_radial
        feature_scales = torch.full((radial_length + num_species_pairs * num_angular,), 2.0 ** (1.0 - self.angular_zeta), dtype=torch.float64)
        feature_scales[:radial_length] = 0.25
        # Our angular features are section-major within each species-pair block (cheaper
        # gradient contractions); TorchANI's are shift-major. Map ours to theirs.
        shift_index = torch.arange(num_shifts).repeat(num_sections)  # ours: section * shifts + shift
        section_index = torch.arange(num_sections).repeat_interleave(num_shifts)
        within_block = shift_index * num_sections + section_index
        feature_order = torch.cat(
            [torch.arange(radial_length)]
            + [radial_length + p * num_angular + within_block for p in range(num_species_pairs)]
        )
        networks = []
        for element, z in enumerate(model_numbers):
            atoms = [i for i, s in enumerate(species) if s == element]
            if not atoms:
                continue
            features = self._possible_features(element, species_counts, triu_index)
            linears = []
            for member in members:
                net = member.atomics[symbols[element]]
                if not isinstance(net.activation, torchani.nn.TightCELU):
                    raise ValueError(f"unsupported activation {net.activation} in {self.model_name}")
                linears.append(list(net.layers) + [net.final_layer])
            networks.append(
                _ElementEnsemble(atoms, features, feature_scales, feature_order, linears, dtype)
            )
        self.networks = torch.nn.ModuleList(networks)

        # Self energies (Hartree), summed over the region, as TorchANI adds them.
        self_energies = reference.energy_shifter.self_energies.detach().to(torch.float64)
        self.self_energy = float(sum(float(self_energies[s]) for s in species))

    def _possible_features(self, element: int, species_counts: List[int], triu_index: Tensor) -> List[int]:
        """AEV features that can be nonzero for an atom of ``element`` in this region.

        A radial block needs a neighbour of that species; an angular block for the species
        pair (a, b) needs two distinct neighbours with those species. The centre atom is
        not its own neighbour.
        """
        available = [c - (1 if s == element else 0) for s, c in enumerate(species_counts)]
        features: List[int] = []
        for s in range(self.num_species):
            if available[s] >= 1:
                features.extend(range(s * self.num_radial, (s + 1) * self.num_radial))
        radial_length = self.num_species * self.num_radial
        pairs = set()
        for a in range(self.num_species):
            for b in range(a, self.num_species):
                if (a != b and available[a] >= 1 and available[b] >= 1) or (a == b and available[a] >= 2):
                    pairs.add(int(triu_index[a, b]))
        for p in sorted(pairs):
            start = radial_length + p * self.num_angular
            features.extend(range(start, start + self.num_angular))
        return features

    def _displacements(self, positions: Tensor, boxVectors: Optional[Tensor]) -> Tensor:
        """Vectors from each atom to every other atom, [n, n-1, 3], in Angstrom."""
        pos = positions.to(self.radial_shifts.dtype) * self.nm_to_angstrom
        vectors = pos.index_select(0, self.others_flat).view(self.num_atoms, self.num_others, 3) - pos.unsqueeze(1)
        if boxVectors is not None:
            box = boxVectors.to(self.radial_shifts.dtype) * self.nm_to_angstrom
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

    def _custom_ops_apply(self, positions: Tensor) -> bool:
        """The compiled operators serve CPU tensors in eager mode and TorchScript; torch.export
        and torch.compile trace the PyTorch computation instead."""
        if positions.device.type != "cpu":
            return False
        if not torch.jit.is_scripting():
            if torch.compiler.is_compiling():
                return False
        return True

    def _networks(self, aev: Tensor, need_gradient: bool) -> Tuple[Tensor, Tensor]:
        """Member energies [members] in Hartree from the AEVs [n, aev_length] and, if need_gradient,
        d(mean energy)/d(AEV) flattened to [n * aev_length] (else an empty tensor)."""
        energies = torch.zeros(self.num_members, dtype=aev.dtype, device=aev.device)
        aev_gradient = torch.zeros(0, dtype=aev.dtype, device=aev.device)
        if need_gradient:
            aev_gradient = torch.zeros(aev.numel(), dtype=aev.dtype, device=aev.device)
        for network in self.networks:
            network_energies, feature_gradient = network(aev, need_gradient)
            energies = energies + network_energies
            if need_gradient:
                aev_gradient = aev_gradient.index_add(0, network.gradient_index, feature_gradient.reshape(-1))
        # Self energies last, so the small network terms are summed at full precision.
        return energies + self.self_energy, aev_gradient

    def _evaluate(self, positions: Tensor, boxVectors: Optional[Tensor], need_gradient: bool) -> Tuple[Tensor, Tensor]:
        """Member energies [members] in Hartree and, if need_gradient, d(mean energy)/d(positions)
        [n, 3] in Hartree/nm (else an empty tensor). With need_gradient the inputs must not
        require grad: the gradient is computed analytically, not by autograd."""
        if self.custom_ops:
            if self._custom_ops_apply(positions):
                return self._evaluate_custom_ops(positions, boxVectors, need_gradient)
        return self._evaluate_pytorch(positions, boxVectors, need_gradient)

    def _evaluate_custom_ops(self, positions: Tensor, boxVectors: Optional[Tensor], need_gradient: bool) -> Tuple[Tensor, Tensor]:
        """_evaluate with the compiled operators (openmm_nnp::ani_energies, or ani_aev when autograd
        must differentiate the energies)."""
        dtype = self.radial_shifts.dtype
        pos = positions.to(dtype) * self.nm_to_angstrom
        box: Optional[Tensor] = None
        if boxVectors is not None:
            box = boxVectors.to(dtype) * self.nm_to_angstrom
        if not need_gradient and pos.requires_grad and torch.is_grad_enabled():
            # energies_per_member with positions that require grad: autograd through the AEV
            # operator and the networks' PyTorch operations.
            aev = torch.ops.openmm_nnp.ani_aev(
                pos, box, self.species, self.pair_index, self.radial_shifts, self.angular_shifts, self.section_matrix,
                self.radial_cutoff, self.radial_eta, self.angular_cutoff, self.angular_eta, self.angular_zeta,
            )
            energies, _ = self._networks(aev, False)
            return energies, torch.zeros(0, dtype=dtype, device=positions.device)
        parameters: List[Tensor] = []
        for network in self.networks:
            parameters.extend(network.parameter_list())
        energies, gradient = torch.ops.openmm_nnp.ani_energies(
            pos, box, self.species, self.pair_index, self.radial_shifts, self.angular_shifts, self.section_matrix,
            self.radial_cutoff, self.radial_eta, self.angular_cutoff, self.angular_eta, self.angular_zeta,
            parameters, need_gradient,
        )
        # Self energies last, so the small network terms are summed at full precision.
        energies = energies + self.self_energy
        if not need_gradient:
            return energies, gradient
        return energies, gradient * self.nm_to_angstrom

    def _evaluate_pytorch(self, positions: Tensor, boxVectors: Optional[Tensor], need_gradient: bool) -> Tuple[Tensor, Tensor]:
        """_evaluate with PyTorch operations only (no compiled operator)."""
        n = self.num_atoms
        vectors = self._displacements(positions, boxVectors)  # [n, n-1, 3], Angstrom
        dtype = vectors.dtype  # the buffers' type (also after module.to(dtype))
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

        energies, aev_gradient = self._networks(aev, need_gradient)
        if not need_gradient:
            return energies, aev_gradient
        aev_gradient = aev_gradient.view(n, self.aev_length)

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
        return energies, gradient * self.nm_to_angstrom

    def forward(self, positions: Tensor, boxVectors: Optional[Tensor] = None) -> Tensor:
        if positions.requires_grad and torch.is_grad_enabled():
            box: Optional[Tensor] = None
            if boxVectors is not None:
                box = boxVectors.detach()
            energies, gradient = self._evaluate(positions.detach(), box, True)
            energy = energies.mean() * self.hartree_to_kj_per_mol
            gradient = gradient * self.hartree_to_kj_per_mol
            # Same value (the added term is exactly zero); its autograd gradient is `gradient`.
            return energy + ((positions - positions.detach()).to(gradient.dtype) * gradient).sum()
        energies, _ = self._evaluate(positions, boxVectors, False)
        return energies.mean() * self.hartree_to_kj_per_mol

    @torch.jit.export
    def energies_per_member(self, positions: Tensor, boxVectors: Optional[Tensor] = None) -> Tensor:
        """Energy of each ensemble member in kJ/mol, shape [members] (differentiable by autograd)."""
        energies, _ = self._evaluate(positions, boxVectors, False)
        return energies * self.hartree_to_kj_per_mol

    @torch.jit.export
    def ensemble_std(self, positions: Tensor, boxVectors: Optional[Tensor] = None) -> Tensor:
        """Standard deviation (Bessel-corrected, N-1) of the member energies in kJ/mol.

        This is TorchANI's QBC value before its division by sqrt(number of atoms).
        """
        return torch.std(self.energies_per_member(positions, boxVectors))
