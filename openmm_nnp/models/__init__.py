"""TorchScript-ready machine-learning potentials for NNPForce (positions in nm -> energy in kJ/mol)."""

from .ani import ANI

__all__ = ["ANI"]
