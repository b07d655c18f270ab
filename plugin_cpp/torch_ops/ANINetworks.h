#ifndef OPENMM_NNP_ANI_NETWORKS_H_
#define OPENMM_NNP_ANI_NETWORKS_H_

// The atomic networks of an ANI ensemble (all members of every element present), applied to the
// AEVs, with their gradient by back-propagation.
//
//   aev         [atoms, features]
//   parameters  ten tensors per element present in the region (members M, widths w1 w2 w3):
//                 atom_indices [a] (rows of aev), feature_indices [f] (columns the networks read),
//                 weight1 [M, f, w1], bias1 [M, 1, w1]   (first layer; [f, M*w1] and [M*w1] accepted too),
//                 weight2 [M, w1, w2], bias2 [M, 1, w2], weight3 [M, w2, w3], bias3 [M, 1, w3],
//                 weight4 [M, w3], bias4_sum [M]         (output layer; bias times a)
// Returns each member's sum of atomic outputs [M] and, if needGradient, d(mean of the members'
// energies)/d(aev) [atoms, features] (else an empty tensor). The hidden layers use CELU with
// alpha = 0.1 (TorchANI's TightCELU).

#include <torch/torch.h>

#include <tuple>

namespace NNPPlugin {
namespace ani {

constexpr int PARAMETERS_PER_ELEMENT = 10;

std::tuple<torch::Tensor, torch::Tensor> evaluateNetworks(const torch::Tensor& aev, at::TensorList parameters,
                                                          bool needGradient);

} // namespace ani
} // namespace NNPPlugin

#endif
