"""What an ANI model is made of, read once from TorchANI's model object for one region.

``ANIParameters.from_torchani`` checks the region's elements against the model, maps them to the model's
species, and reads the AEV constants, the ensemble members' atomic networks and the self energies. It also
describes our AEV layout (docs/models.md, "How openmm_nnp.models.ANI computes"): which features can be
nonzero for an element in this region, the constant factors our AEV terms leave out, and how our features
map to TorchANI's.
"""

import numbers
from dataclasses import dataclass
from typing import List, Optional, Sequence

import torch
from torch import Tensor

from ..torchani_models import ANI_MODELS, canonicalANIName, load_torchani_model


def _element_symbol(atomic_number: int) -> str:
    from torchani.utils import PERIODIC_TABLE

    if 0 < atomic_number < len(PERIODIC_TABLE):
        return PERIODIC_TABLE[atomic_number]
    return f"Z={atomic_number}"


def canonical_model_name(name: str) -> str:
    """The registry's name of an ANI model ('ANI-2x' -> 'ani2x'); ValueError naming the models otherwise."""
    key = canonicalANIName(name)
    if key is None:
        raise ValueError(f"Unknown ANI model {name!r}; supported models are: {', '.join(ANI_MODELS)}")
    return key


@dataclass
class ANIParameters:
    """One region's ANI model: species, AEV constants (TorchANI's values, float64), networks, self energies."""

    model_name: str
    species: List[int]  # the model's species index of each atom, in region order
    atomic_numbers: List[int]  # of the model's species, in its order
    symbols: List[str]  # of the model's species
    radial_cutoff: float  # Angstrom
    radial_eta: float
    angular_cutoff: float
    angular_eta: float
    angular_zeta: float
    radial_shifts: Tensor  # [R]
    angular_shifts: Tensor  # [K]
    sections: Tensor  # [Z] angles
    pair_index: Tensor  # [S, S] long: species pair -> angular block
    members: list  # TorchANI's ensemble members used (all, or the one of modelIndex)
    self_energy: float  # Hartree, summed over the region
    hartree_to_kj_per_mol: float

    @classmethod
    def from_torchani(cls, name: str, atomicNumbers: Sequence[int], modelIndex: Optional[int] = None) -> "ANIParameters":
        model_name = canonical_model_name(name)
        atomic_numbers = [int(z) for z in atomicNumbers]
        if len(atomic_numbers) == 0:
            raise ValueError("atomicNumbers must contain at least one atom")
        reference = load_torchani_model(model_name)
        import torchani

        # Elements, in the model's internal order.
        model_numbers = [int(z) for z in reference.atomic_numbers]
        unsupported = sorted(set(atomic_numbers) - set(model_numbers))
        if unsupported:
            raise ValueError(
                f"ANI model {model_name!r} does not support element(s) "
                f"{', '.join(_element_symbol(z) for z in unsupported)}; it supports "
                f"{', '.join(_element_symbol(z) for z in model_numbers)}"
            )
        element_index = {z: i for i, z in enumerate(model_numbers)}
        species = [element_index[z] for z in atomic_numbers]

        aev_computer = reference.potentials["nnp"].aev_computer
        radial, angular = aev_computer.radial, aev_computer.angular
        for term in (radial, angular):
            if not isinstance(term.cutoff_fn, torchani.cutoffs.CutoffCosine):
                raise ValueError(f"unsupported cutoff function {term.cutoff_fn} in {model_name}")

        members = list(reference.potentials["nnp"].neural_networks.members)
        if modelIndex is not None:
            if isinstance(modelIndex, bool) or not isinstance(modelIndex, numbers.Integral) \
                    or not 0 <= modelIndex < len(members):
                raise ValueError(f"modelIndex must be an integer from 0 to {len(members) - 1} (one member of the "
                                 f"{model_name} ensemble), not {modelIndex!r}")
            members = members[int(modelIndex):int(modelIndex) + 1]

        # Self energies (Hartree), summed over the region, as TorchANI adds them.
        self_energies = reference.energy_shifter.self_energies.detach().to(torch.float64)
        return cls(
            model_name=model_name,
            species=species,
            atomic_numbers=model_numbers,
            symbols=list(reference.symbols),
            radial_cutoff=float(radial.cutoff),
            radial_eta=float(radial.eta),
            angular_cutoff=float(angular.cutoff),
            angular_eta=float(angular.eta),
            angular_zeta=float(angular.zeta),
            radial_shifts=radial.shifts.detach().reshape(-1),
            angular_shifts=angular.shifts.detach().reshape(-1),
            sections=angular.sections.detach().to(torch.float64).reshape(-1),
            pair_index=aev_computer.triu_index.detach().to(torch.long).contiguous(),
            members=members,
            self_energy=float(sum(float(self_energies[s]) for s in species)),
            hartree_to_kj_per_mol=float(torchani.units.HARTREE_TO_KJOULEPERMOL),
        )

    # Sizes of the AEV: radial [species][shift], angular [species pair][section][shift].

    @property
    def num_atoms(self) -> int:
        return len(self.species)

    @property
    def num_species(self) -> int:
        return len(self.atomic_numbers)

    @property
    def num_species_pairs(self) -> int:
        return int(self.pair_index.max()) + 1

    @property
    def num_radial(self) -> int:
        return int(self.radial_shifts.numel())

    @property
    def num_shifts(self) -> int:
        return int(self.angular_shifts.numel())

    @property
    def num_sections(self) -> int:
        return int(self.sections.numel())

    @property
    def num_angular(self) -> int:
        return self.num_shifts * self.num_sections

    @property
    def radial_length(self) -> int:
        return self.num_species * self.num_radial

    @property
    def aev_length(self) -> int:
        return self.radial_length + self.num_species_pairs * self.num_angular

    def section_matrix(self) -> Tensor:
        """Rows cos(section), sin(section) [2, Z] (float64): cos(theta' - section) from cos(theta'), sin(theta')."""
        return torch.stack([torch.cos(self.sections), torch.sin(self.sections)])

    def species_tensor(self) -> Tensor:
        return torch.tensor(self.species, dtype=torch.long)

    def feature_scales(self) -> Tensor:
        """Per feature of our AEV (float64), the constant factor its term leaves out: radial 0.25 exp(...),
        angular 2 ((1 + cos)/2)^zeta = 2^(1 - zeta) (1 + cos)^zeta. The networks' first layers carry them."""
        scales = torch.full((self.aev_length,), 2.0 ** (1.0 - self.angular_zeta), dtype=torch.float64)
        scales[: self.radial_length] = 0.25
        return scales

    def feature_order(self) -> Tensor:
        """feature_order[j]: TorchANI's index of our AEV feature j. Our angular features are section-major
        within each species-pair block (cheaper gradient contractions); TorchANI's are shift-major."""
        num_shifts, num_sections = self.num_shifts, self.num_sections
        shift_index = torch.arange(num_shifts).repeat(num_sections)  # ours: section * shifts + shift
        section_index = torch.arange(num_sections).repeat_interleave(num_shifts)
        within_block = shift_index * num_sections + section_index
        return torch.cat(
            [torch.arange(self.radial_length)]
            + [self.radial_length + p * self.num_angular + within_block for p in range(self.num_species_pairs)]
        )

    def possible_features(self, element: int) -> List[int]:
        """AEV features that can be nonzero for an atom of species ``element`` in this region.

        A radial block needs a neighbour of that species; an angular block for the species pair (a, b)
        needs two distinct neighbours with those species. The centre atom is not its own neighbour.
        """
        counts = [self.species.count(s) for s in range(self.num_species)]
        available = [c - (1 if s == element else 0) for s, c in enumerate(counts)]
        features: List[int] = []
        for s in range(self.num_species):
            if available[s] >= 1:
                features.extend(range(s * self.num_radial, (s + 1) * self.num_radial))
        pairs = set()
        for a in range(self.num_species):
            for b in range(a, self.num_species):
                if (a != b and available[a] >= 1 and available[b] >= 1) or (a == b and available[a] >= 2):
                    pairs.add(int(self.pair_index[a, b]))
        for p in sorted(pairs):
            start = self.radial_length + p * self.num_angular
            features.extend(range(start, start + self.num_angular))
        return features
