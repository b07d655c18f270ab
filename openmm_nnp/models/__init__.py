"""TorchScript-ready machine-learning potentials for NNPForce (positions in nm -> energy in kJ/mol), and the
registry that maps model names to them (openmm_nnp.models.registry).

Light to import: the registry needs no torch; `ANI` (torch and the compiled operators) is imported on first use.
"""

from .registry import ModelSpec, findModel, registerModel, registeredModels

__all__ = ["ANI", "ModelSpec", "findModel", "registerModel", "registeredModels"]


def __getattr__(name):
    if name == "ANI":
        from .ani import ANI
        return ANI
    raise AttributeError(f"module 'openmm_nnp.models' has no attribute '{name}'")
