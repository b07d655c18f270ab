"""TorchScript-ready machine-learning potentials for NNPForce (positions in nm -> energy in kJ/mol), and the
registry that maps model names to them (openmm_nnp.models.registry)."""

from .ani import ANI
from .registry import ModelSpec, findModel, registerModel, registeredModels

__all__ = ["ANI", "ModelSpec", "findModel", "registerModel", "registeredModels"]
