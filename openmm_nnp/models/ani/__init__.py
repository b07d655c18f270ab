"""openmm_nnp.models.ANI: TorchANI's ANI-1x, ANI-1ccx and ANI-2x as fixed-region TorchScript modules.

* parameters.py: what the model is made of, read once from TorchANI (species, AEV constants, networks,
  self energies) and the layout of our AEVs;
* features.py: the AEVs by two interchangeable strategies, the compiled operators or PyTorch operations;
* networks.py: the ensemble's atomic networks, stacked over members;
* model.py: the ``ANI`` module (units, forces, the ensemble's spread).

docs/models.md, "How openmm_nnp.models.ANI computes", describes the computation.
"""

from .model import ANI

__all__ = ["ANI"]
