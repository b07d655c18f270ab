"""The atomic networks of an ANI ensemble, stacked over members, for the elements of one region.

``ANINetworks`` holds, per element present, ten tensors (``ElementNetworks.parameter_list``): the element's
atoms and the AEV features its networks can see, and the members' stacked layers. Both feature strategies
(features.py) take the networks as that list: the compiled operators in C++ (plugin_cpp/torch_ops/
ANINetworks.h describes the same layout), the PyTorch strategy through ``evaluate_networks`` below, the same
arithmetic in PyTorch operations.
"""

from typing import List, Tuple

import torch
from torch import Tensor

from .parameters import ANIParameters

PARAMETERS_PER_ELEMENT = 10


def _celu(x: Tensor) -> Tensor:
    # ANI's activation: CELU with alpha = 0.1
    return torch.nn.functional.celu(x, alpha=0.1)


def _celu_derivative(activation: Tensor) -> Tensor:
    # d celu(z)/dz from celu(z) itself: 1 for z > 0, exp(z/alpha) = 1 + celu(z)/alpha otherwise.
    return 1.0 + torch.clamp(activation, max=0.0) / 0.1


class ElementNetworks(torch.nn.Module):
    """All ensemble members' networks for one element (first layer, two hidden layers, one output),
    stacked over members ([members, in, out] per layer) so that the members run together (``baddbmm``)."""

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
        self.register_buffer("atom_indices", torch.tensor(atom_indices, dtype=torch.long))
        self.register_buffer("feature_indices", torch.tensor(feature_indices, dtype=torch.long))

        def stacked(layer: int):
            # [members, in, out] and [members, out], in float64 until stored
            weight = torch.stack([linears[m][layer].weight.detach().t().to(torch.float64) for m in range(num_members)])
            bias = torch.stack([linears[m][layer].bias.detach().to(torch.float64) for m in range(num_members)])
            return weight, bias

        # First layer, [members, features, out]: the input rows in our AEV order, only those that can be nonzero.
        weight, bias = stacked(0)
        weight = (weight * feature_scales.to(torch.float64).view(1, -1, 1))[:, feature_order, :][:, feature_indices, :]
        self.register_buffer("weight1", weight.to(dtype).contiguous())
        self.register_buffer("bias1", bias.unsqueeze(1).to(dtype).contiguous())
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
        """Index sets and weights, in the order evaluate_networks and the compiled operators take them."""
        return [
            self.atom_indices, self.feature_indices, self.weight1, self.bias1, self.weight2, self.bias2,
            self.weight3, self.bias3, self.weight4, self.bias4_sum,
        ]


class ANINetworks(torch.nn.Module):
    """The networks of every element present in the region, for TorchANI's members ``parameters.members``."""

    def __init__(self, parameters: ANIParameters, dtype: torch.dtype):
        super().__init__()
        import torchani

        self.num_members = len(parameters.members)
        feature_scales = parameters.feature_scales()
        feature_order = parameters.feature_order()
        elements = []
        for element, symbol in enumerate(parameters.symbols):
            atoms = [i for i, s in enumerate(parameters.species) if s == element]
            if not atoms:
                continue
            linears = []
            for member in parameters.members:
                net = member.atomics[symbol]
                if not isinstance(net.activation, torchani.nn.TightCELU):
                    raise ValueError(f"unsupported activation {net.activation} in {parameters.model_name}")
                linears.append(list(net.layers) + [net.final_layer])
            elements.append(
                ElementNetworks(atoms, parameters.possible_features(element), feature_scales, feature_order,
                                linears, dtype)
            )
        self.elements = torch.nn.ModuleList(elements)

    @torch.jit.export
    def parameter_list(self) -> List[Tensor]:
        """PARAMETERS_PER_ELEMENT tensors per element present (see ElementNetworks.parameter_list)."""
        parameters: List[Tensor] = []
        for element in self.elements:
            parameters.extend(element.parameter_list())
        return parameters


def evaluate_networks(aev: Tensor, parameters: List[Tensor], need_gradient: bool) -> Tuple[Tensor, Tensor]:
    """Member energies [members] in Hartree (sums of the atomic outputs, no self energies) from the AEVs
    [n, aev_length], and, if need_gradient, d(mean energy)/d(AEV) [n, aev_length] (else an empty tensor)."""
    num_members = parameters[8].size(0)
    energies = torch.zeros(num_members, dtype=aev.dtype, device=aev.device)
    aev_gradient = torch.zeros(0, dtype=aev.dtype, device=aev.device)
    if need_gradient:
        aev_gradient = torch.zeros(aev.numel(), dtype=aev.dtype, device=aev.device)
    for first in range(0, len(parameters), 10):  # PARAMETERS_PER_ELEMENT (a literal for TorchScript)
        atoms, features = parameters[first], parameters[first + 1]
        weight1, bias1, weight2, bias2 = parameters[first + 2], parameters[first + 3], parameters[first + 4], parameters[first + 5]
        weight3, bias3, weight4, bias4_sum = parameters[first + 6], parameters[first + 7], parameters[first + 8], parameters[first + 9]
        num_atoms = atoms.size(0)
        x = aev.index_select(0, atoms).index_select(1, features)
        h1 = _celu(torch.baddbmm(bias1, x.unsqueeze(0).expand(num_members, num_atoms, x.size(1)), weight1))
        h2 = _celu(torch.baddbmm(bias2, h1, weight2))
        h3 = _celu(torch.baddbmm(bias3, h2, weight3))
        energies = energies + ((h3.sum(dim=1) * weight4).sum(dim=1) + bias4_sum)
        if need_gradient:
            # Back-propagate d(mean over members)/d(outputs) = 1/members.
            grad = (weight4 * (1.0 / num_members)).unsqueeze(1) * _celu_derivative(h3)
            grad = torch.bmm(grad, weight3.transpose(1, 2)) * _celu_derivative(h2)
            grad = torch.bmm(grad, weight2.transpose(1, 2)) * _celu_derivative(h1)
            grad = torch.bmm(grad, weight1.transpose(1, 2)).sum(dim=0)
            # Where this element's [atoms, features] block goes in the flattened AEV gradient.
            index = (atoms.unsqueeze(1) * aev.size(1) + features.unsqueeze(0)).reshape(-1)
            aev_gradient = aev_gradient.index_add(0, index, grad.reshape(-1))
    if need_gradient:
        aev_gradient = aev_gradient.view(aev.shape)
    return energies, aev_gradient
