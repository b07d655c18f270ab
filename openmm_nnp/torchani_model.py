"""TorchANI's built-in ANI models as NNPForce models (positions in nm -> energy in kJ/mol).

This is the straightforward route: a scriptable module that calls TorchANI itself for a fixed list of
atomic numbers. openmm_nnp.models.ANI computes the same energies faster; this wrapper is the
fallback where that module is unavailable and the reference it is checked against.
"""

import os
from typing import Optional

import torch

from openmm_nnp.models._torchani_data import use_shared_torchani_data

ANI_MODELS = {'ani1x': 'ANI1x', 'ani1ccx': 'ANI1ccx', 'ani2x': 'ANI2x'}

# Elements the published ANI models were trained on.
ANI_ELEMENTS = {
    'ani1x': {'H', 'C', 'N', 'O'},
    'ani1ccx': {'H', 'C', 'N', 'O'},
    'ani2x': {'H', 'C', 'N', 'O', 'F', 'S', 'Cl'},
}


def canonicalANIName(name):
    """'ANI-2x', 'ani_2x', 'ani2x' -> 'ani2x'; None if the name is not an ANI model."""
    key = str(name).lower().replace('-', '').replace('_', '')
    return key if key in ANI_MODELS else None


def loadTorchANI(name, dtype=torch.float64):
    """TorchANI's model ``name`` (8-member ensemble, atomic numbers as species) in ``dtype``.

    Uses the weights in <repo>/../shared/models/torchani when that cache exists and TORCHANI_DATA_DIR
    is unset; otherwise TorchANI looks in its usual place and downloads them on first use.
    """
    use_shared_torchani_data()
    os.environ.setdefault('TORCHANI_NO_WARN_EXTENSIONS', '1')
    import torchani
    key = canonicalANIName(name)
    if key is None:
        raise ValueError(f"Unknown ANI model '{name}'; choose one of {', '.join(ANI_MODELS)}.")
    return getattr(torchani.models, ANI_MODELS[key])(periodic_table_index=True).to(dtype)


class TorchANIModel(torch.nn.Module):
    """forward(positions [n, 3] nm, boxVectors [3, 3] nm or None) -> ANI energy in kJ/mol.

    With box vectors, TorchANI applies periodic boundary conditions in all three directions.
    """

    def __init__(self, name, atomicNumbers, dtype=torch.float32):
        super().__init__()
        import torchani
        self.model = loadTorchANI(name, dtype)
        self.register_buffer('species', torch.tensor([list(atomicNumbers)], dtype=torch.long))
        self.register_buffer('pbc', torch.tensor([True, True, True]))
        self.dtype = dtype
        self.energyScale = float(torchani.units.hartree2kjoulepermol(1.0))

    def forward(self, positions: torch.Tensor, boxVectors: Optional[torch.Tensor] = None) -> torch.Tensor:
        coordinates = (10.0 * positions.to(self.dtype)).unsqueeze(0)  # nm -> Angstrom
        if boxVectors is None:
            energies = self.model((self.species, coordinates)).energies
        else:
            cell = 10.0 * boxVectors.to(self.dtype)
            energies = self.model((self.species, coordinates), cell=cell, pbc=self.pbc).energies
        return self.energyScale * energies.sum()
