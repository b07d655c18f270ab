"""ANI-1x / ANI-1ccx / ANI-2x as a fixed-region module for TorchScript and torch.export.

The physics is that of TorchANI's built-in models; every number (AEV constants, network weights, self
energies) is read at construction from the TorchANI model object (parameters.py). The model combines the
region's networks (networks.py) with a feature strategy (features.py): the compiled operators, or PyTorch
operations only. docs/models.md ("How openmm_nnp.models.ANI computes") explains both.

Units: positions and box in nm are multiplied by 10 (exact) to get Angstrom; energies in Hartree are
multiplied by TorchANI's ``torchani.units.HARTREE_TO_KJOULEPERMOL`` (CODATA 2014: 1 Hartree =
2625.4996387552483 kJ/mol), so results agree with TorchANI energies converted by
``torchani.units.hartree2kjoulepermol``.
"""

from typing import Final, Optional, Sequence, Tuple

import torch
from torch import Tensor

from openmm_nnp import _plugin

from .features import OperatorFeatures, PyTorchFeatures, operators_apply
from .networks import ANINetworks
from .parameters import ANIParameters

_plugin.loadLibraries()  # the compiled operators the model calls

NM_TO_ANGSTROM = 10.0


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
        Angular neighbour slots per atom (docs/models.md). Regions with at most
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
        Use openmm-nnp's compiled operators on CPU tensors (default; docs/models.md).
        False: PyTorch operations only, so a saved TorchScript file loads in any PyTorch.
    modelIndex : int, optional
        Use only this member of the ensemble (0 to 7), as openmm-ml's ``modelIndex``: about 8 times
        less network work, slightly less accurate. Default: the mean of all members.

    ``forward(positions, boxVectors=None)`` takes positions [n, 3] in nm and optionally
    OpenMM box vectors [3, 3] in nm (reduced triclinic form, rows a, b, c); with a box,
    displacements use the minimum image convention (exact for ANI as long as every box
    width is at least twice the 0.51 nm radial cutoff). Returns the ensemble-mean energy
    in kJ/mol as a 0-dim tensor. If ``positions.requires_grad``, forward() computes the gradient
    analytically in the same pass and returns ``energy + sum((positions - positions.detach()) * gradient)``,
    the same value, whose autograd gradient is the analytic one (positions only, not the box).

    ``energy_and_forces(positions, boxVectors=None)`` returns the energy and the forces [n, 3] in kJ/mol/nm
    (the same analytic gradient, without autograd); NNPForce calls it when it needs forces.

    ``energies_per_member(positions, boxVectors=None)`` returns the 8 members' energies
    (kJ/mol) and ``ensemble_std(...)`` their Bessel-corrected standard deviation (kJ/mol),
    a measure of the ensemble's disagreement; both are TorchScript-exported methods.
    """

    # A constant for TorchScript: with customOps=False the branch calling the compiled operators is
    # not compiled (and the model has no OperatorFeatures), so the saved model refers to nothing outside PyTorch.
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
        if dtype not in (torch.float32, torch.float64):
            raise ValueError(f"dtype must be torch.float32 or torch.float64, not {dtype}")
        parameters = ANIParameters.from_torchani(name, atomicNumbers, modelIndex)
        self.model_name = parameters.model_name
        self.num_members = len(parameters.members)
        self.self_energy = parameters.self_energy
        self.hartree_to_kj_per_mol = parameters.hartree_to_kj_per_mol
        self.nm_to_angstrom = NM_TO_ANGSTROM
        self.networks = ANINetworks(parameters, dtype)
        self.custom_ops = bool(customOps)
        if self.custom_ops:
            self.operator_features = OperatorFeatures(parameters, dtype)
        # The only strategy with customOps=False; with the operators, what runs on other devices and under
        # torch.export and torch.compile.
        self.pytorch_features = PyTorchFeatures(parameters, dtype, maxAngularNeighbors, maxAngularTriples)

    def _evaluate(self, positions: Tensor, boxVectors: Optional[Tensor], need_gradient: bool) -> Tuple[Tensor, Tensor]:
        """Member energies [members] in Hartree and, if need_gradient, d(mean energy)/d(positions)
        [n, 3] in Hartree/nm (else an empty tensor). With need_gradient the inputs must not
        require grad: the gradient is computed analytically, not by autograd."""
        network_parameters = self.networks.parameter_list()
        dtype = network_parameters[2].dtype  # the model's type (also after module.to(dtype))
        pos = positions.to(dtype) * self.nm_to_angstrom
        box: Optional[Tensor] = None
        if boxVectors is not None:
            box = boxVectors.to(dtype) * self.nm_to_angstrom
        if self.custom_ops:  # a constant: without the operators, TorchScript compiles none of this
            if operators_apply(positions):
                return self._finish(self.operator_features.evaluate(pos, box, network_parameters, need_gradient))
        return self._finish(self.pytorch_features.evaluate(pos, box, network_parameters, need_gradient))

    def _finish(self, result: Tuple[Tensor, Tensor]) -> Tuple[Tensor, Tensor]:
        """Self energies added, the gradient (if any) per nm."""
        energies, gradient = result
        # Self energies last, so the small network terms are summed at full precision.
        return energies + self.self_energy, gradient * self.nm_to_angstrom

    def forward(self, positions: Tensor, boxVectors: Optional[Tensor] = None) -> Tensor:
        if positions.requires_grad and torch.is_grad_enabled():
            energy, forces = self.energy_and_forces(positions, boxVectors)
            # Same value (the added term is exactly zero); its autograd gradient is -forces.
            return energy + ((positions - positions.detach()).to(forces.dtype) * -forces).sum()
        return self._energy_and_forces(positions, boxVectors, False)[0]

    @torch.jit.export
    def energy_and_forces(self, positions: Tensor, boxVectors: Optional[Tensor] = None) -> Tuple[Tensor, Tensor]:
        """The energy (kJ/mol, as forward()) and the forces [n, 3] in kJ/mol/nm, computed analytically in one
        pass without autograd. NNPForce calls this in place of forward() and autograd when it needs forces."""
        box: Optional[Tensor] = None
        if boxVectors is not None:
            box = boxVectors.detach()
        return self._energy_and_forces(positions.detach(), box, True)

    def _energy_and_forces(self, positions: Tensor, boxVectors: Optional[Tensor], need_forces: bool) -> Tuple[Tensor, Tensor]:
        """The ensemble-mean energy (kJ/mol) and, if need_forces, the forces (kJ/mol/nm; else an empty tensor),
        without autograd. With the compiled operators, one call of them does all of it, unit conversions
        included: an NNPForce evaluation then runs no other tensor operation in the model."""
        network_parameters = self.networks.parameter_list()
        if self.custom_ops:  # a constant: without the operators, TorchScript compiles none of this
            if operators_apply(positions):
                return self.operator_features.energy_and_forces(
                    positions, boxVectors, network_parameters, self.self_energy, self.hartree_to_kj_per_mol,
                    self.nm_to_angstrom, need_forces)
        energies, gradient = self._evaluate(positions, boxVectors, need_forces)
        return energies.mean() * self.hartree_to_kj_per_mol, gradient * -self.hartree_to_kj_per_mol

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
