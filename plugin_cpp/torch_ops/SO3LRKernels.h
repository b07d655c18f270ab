#ifndef OPENMM_NNP_SO3LR_KERNELS_H_
#define OPENMM_NNP_SO3LR_KERNELS_H_

// The forward and backward passes of the SO3LR operators as plain functions (no autograd): each operator's
// torch::autograd::Function calls them, and so does so3lr_network (SO3LRNetwork.cpp), which runs the whole network
// and its gradient in one call. The formulas are at each operator's registration; a function's State holds what its
// backward pass reads. Callers hold autograd off (the functions call ATen directly).

#include <torch/torch.h>

#include <vector>

namespace NNPPlugin {
namespace so3lr {

using at::Tensor;

// SO3LRGeometry.cpp: so3lr_front.
struct FrontState {
    Tensor vectors, r, first, second, powers, basis, harmonicsMatrix, parity, k, kReverse;
    int64_t pairs;
    double cutoff, gamma, epsilon;
};
struct FrontOutputs {
    Tensor r, cutoffFunction, first, second, harmonics, basis;
};
FrontOutputs frontForward(const Tensor& positions, const c10::optional<Tensor>& shifts, const Tensor& pairFirst,
                          const Tensor& pairSecond, double cutoff, const Tensor& harmonicsMatrix, const Tensor& parity,
                          const Tensor& logBinomial, const Tensor& k, const Tensor& kReverse, double gamma,
                          double epsilon, double smallest, FrontState& state);
// d loss / d positions from the gradients of r, the cutoff function, the harmonics and the basis (any undefined).
Tensor frontBackward(const FrontState& state, const Tensor& gradR, const Tensor& gradCutoff,
                     const Tensor& gradHarmonics, const Tensor& gradBasis);

// SO3LRFilters.cpp: so3lr_tabulated_filters (the inputs are its state) and so3lr_ev_filters.
std::vector<Tensor> tabulatedFiltersForward(const Tensor& r, const Tensor& first, const Tensor& second,
                                            const Tensor& table, double spacing, int64_t group);
// d loss / d r [n, n] from the outputs' gradients (any undefined).
Tensor tabulatedFiltersBackward(const Tensor& r, const Tensor& first, const Tensor& second, const Tensor& table,
                                double spacing, int64_t group, const std::vector<Tensor>& gradOutputs);
struct EvFiltersState {
    Tensor ev, preactivation, first, second, contract, evFirst, evSecond;
};
// intoRadial: add to radial in place and return it (radial contiguous, not read again) instead of a new tensor.
Tensor evFiltersForward(const Tensor& radial, const Tensor& ev, const Tensor& first, const Tensor& second,
                        const Tensor& contract, const Tensor& evFirst, const Tensor& evSecond, bool intoRadial,
                        EvFiltersState& state);
// d loss / d ev (that of radial is the output's gradient itself).
Tensor evFiltersBackward(const EvFiltersState& state, const Tensor& grad);

// SO3LRAttention.cpp: so3lr_attention (the inputs are its state) and so3lr_projections (the weights are).
Tensor attentionForward(const Tensor& queries, const Tensor& keys, const Tensor& filters, const Tensor& first,
                        const Tensor& second, int64_t heads);
// {d queries, d keys, d filters}.
std::vector<Tensor> attentionBackward(const Tensor& grad, const Tensor& queries, const Tensor& keys,
                                      const Tensor& filters, const Tensor& first, const Tensor& second, int64_t heads);
// {queries, keys, values}.
std::vector<Tensor> projectionsForward(const Tensor& features, const Tensor& weights);
// d loss / d features from the gradients of queries, keys and values (any undefined, not all).
Tensor projectionsBackward(const Tensor& weights, const Tensor& gradQueries, const Tensor& gradKeys,
                           const Tensor& gradValues);

// SO3LRUpdate.cpp: so3lr_layer_update.
struct LayerUpdateState {
    Tensor attention, cutoff, harmonics, values, g, xhat1, rstd1, hidden, xhat2, rstd2, mixed, ev1, norms, mlpFirst,
        mlpSecond, interaction, contract;
    std::vector<int64_t> degree;
    bool updateEv;
};
// {features', ev'}.
std::vector<Tensor> layerUpdateForward(const Tensor& features, const Tensor& ev, const Tensor& attention,
                                       const Tensor& cutoff, const Tensor& harmonics, const Tensor& values,
                                       const Tensor& norms, const Tensor& mlpFirst, const Tensor& mlpFirstBias,
                                       const Tensor& mlpSecond, const Tensor& mlpSecondBias, const Tensor& interaction,
                                       const Tensor& interactionBias, const Tensor& expand, const Tensor& contract,
                                       double epsilon, bool updateEv, LayerUpdateState& state);
// {d features, d ev, d attention, d cutoff, d harmonics, d values} from the outputs' gradients (either undefined).
std::vector<Tensor> layerUpdateBackward(const LayerUpdateState& state, const Tensor& gradFeatures,
                                        const Tensor& gradEv);

// SO3LRHeads.cpp: so3lr_heads.
struct HeadsState {
    Tensor preactivation, heads, first, second, segments;
};
// {energy, charges, hirshfeld}.
std::vector<Tensor> headsForward(const Tensor& features, const Tensor& first, const Tensor& firstBias,
                                 const Tensor& second, const Tensor& segments, const Tensor& offsets,
                                 const Tensor& totalCharge, HeadsState& state);
// d loss / d features from the outputs' gradients (any undefined).
Tensor headsBackward(const HeadsState& state, const Tensor& gradEnergy, const Tensor& gradCharges,
                     const Tensor& gradHirshfeld);

// SO3LRPhysical.cpp: so3lr_physical, {energy} or with gradients {energy, d r, d cutoff, d charges, d hirshfeld}.
std::vector<Tensor> physicalTerms(const Tensor& r, const Tensor& cutoff, const Tensor& charges, const Tensor& hirshfeld,
                                  const Tensor& chargeProducts, const Tensor& inverseLengths,
                                  const Tensor& polarizabilities, const Tensor& c6, const std::vector<double>& zbl,
                                  const std::vector<double>& switches, const std::vector<double>& constants,
                                  bool gradients);

} // namespace so3lr
} // namespace NNPPlugin

#endif
