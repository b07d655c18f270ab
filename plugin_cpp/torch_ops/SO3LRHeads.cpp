// openmm_nnp::so3lr_heads (TorchScript operator, first-order autograd): the output heads of an SO3LR module
// (openmm_nnp/models/so3lr.py, SO3LR._heads, which computes the same with PyTorch operations) on the final atom
// features: the sum of the atomic energies, the partial charges (shifted to sum to the total charge) and the
// Hirshfeld ratios, with a hand-written backward pass instead of about fifteen operations and a dozen autograd steps
// (ATen only for the two products each way and the SiLU; the sums, the shift and the absolute value are loops).
//
//   so3lr_heads(features [n, F], first [F, M], firstBias [M], second [n, M], segments [M, 3], offsets [n, 3],
//               totalCharge [1]) -> (energy [], charges [n], hirshfeld [n])
//
//   heads = (silu(features @ first + firstBias) * second) @ segments + offsets      [n, 3]
//   energy = sum_i heads[i, 0];  charges = heads[:, 1] + (totalCharge - sum_i heads[i, 1]) / n;
//   hirshfeld = |heads[:, 2]|
// Gradients flow to features; the other inputs are the module's constants and must not require gradients. CPU
// tensors of one floating-point dtype.

#include <torch/torch.h>

#include <cmath>
#include <tuple>
#include <vector>

#include "SO3LRKernels.h"

using at::Tensor;

namespace {

void checkInputs(const Tensor& features, const Tensor& first, const Tensor& firstBias, const Tensor& second,
                 const Tensor& segments, const Tensor& offsets, const Tensor& totalCharge) {
    for (const Tensor* t : {&features, &first, &firstBias, &second, &segments, &offsets, &totalCharge})
        TORCH_CHECK(t->device().is_cpu() && t->scalar_type() == features.scalar_type(),
                    "so3lr_heads: CPU tensors of one dtype expected");
    TORCH_CHECK(at::isFloatingType(features.scalar_type()), "so3lr_heads: floating-point tensors expected");
    for (const Tensor* t : {&first, &firstBias, &second, &segments, &offsets, &totalCharge})
        TORCH_CHECK(!t->requires_grad(),
                    "so3lr_heads: gradients flow to features only; the weights must not require gradients");
    TORCH_CHECK(features.dim() == 2 && first.dim() == 2 && first.size(0) == features.size(1) && firstBias.dim() == 1 &&
                    firstBias.size(0) == first.size(1) && second.dim() == 2 && second.size(0) == features.size(0) &&
                    second.size(1) == first.size(1) && segments.dim() == 2 && segments.size(0) == first.size(1) &&
                    segments.size(1) == 3 && offsets.dim() == 2 && offsets.size(0) == features.size(0) &&
                    offsets.size(1) == 3 && totalCharge.numel() == 1,
                "so3lr_heads: features must be [n, F], first [F, M], firstBias [M], second [n, M], segments [M, 3], "
                "offsets [n, 3], totalCharge [1]");
}

// energy = sum_i heads[i, 0], charges = heads[:, 1] + (total - sum_i heads[i, 1]) / n, hirshfeld = |heads[:, 2]|
// (heads [n, 3] contiguous), one loop instead of a dozen small ATen calls.
template <typename T>
void splitHeads(const T* heads, T total, int64_t n, T* energy, T* charges, T* hirshfeld) {
    T energySum = 0, chargeSum = 0;
    for (int64_t i = 0; i < n; i++) {
        energySum += heads[3 * i];
        chargeSum += heads[3 * i + 1];
    }
    const T shift = (total - chargeSum) / n;
    for (int64_t i = 0; i < n; i++) {
        charges[i] = heads[3 * i + 1] + shift;
        hirshfeld[i] = std::abs(heads[3 * i + 2]);
    }
    *energy = energySum;
}

// d heads [n, 3]: [d energy, d charges minus their mean (the shift's gradient), d hirshfeld sign(heads[:, 2])]; an
// undefined (unused) output's gradient (null) is zero.
template <typename T>
void joinHeadGradients(const T* gradEnergy, const T* gradCharges, const T* gradHirshfeld, const T* heads, int64_t n,
                       T* gradHeads) {
    T meanCharge = 0;
    if (gradCharges) {
        for (int64_t i = 0; i < n; i++)
            meanCharge += gradCharges[i];
        meanCharge /= n;
    }
    for (int64_t i = 0; i < n; i++) {
        const T ratio = heads[3 * i + 2];
        gradHeads[3 * i] = gradEnergy ? gradEnergy[0] : 0;
        gradHeads[3 * i + 1] = gradCharges ? gradCharges[i] - meanCharge : 0;
        gradHeads[3 * i + 2] = gradHirshfeld ? gradHirshfeld[i] * static_cast<T>((ratio > 0) - (ratio < 0)) : 0;
    }
}

} // namespace

namespace NNPPlugin {
namespace so3lr {

std::vector<Tensor> headsForward(const Tensor& features, const Tensor& first, const Tensor& firstBias,
                                 const Tensor& second, const Tensor& segments, const Tensor& offsets,
                                 const Tensor& totalCharge, HeadsState& state) {
    checkInputs(features, first, firstBias, second, segments, offsets, totalCharge);
    const int64_t n = features.size(0);
    const Tensor preactivation = at::addmm(firstBias, features, first);
    const Tensor heads = at::addmm(offsets, at::silu(preactivation).mul_(second), segments);  // [n, 3]
    Tensor energy = at::empty({}, features.options()), charges = at::empty({n}, features.options());
    Tensor hirshfeld = at::empty({n}, features.options());
    const Tensor total = totalCharge.contiguous();
    AT_DISPATCH_FLOATING_TYPES(features.scalar_type(), "so3lr_heads", [&] {
        splitHeads(heads.data_ptr<scalar_t>(), total.data_ptr<scalar_t>()[0], n, energy.data_ptr<scalar_t>(),
                   charges.data_ptr<scalar_t>(), hirshfeld.data_ptr<scalar_t>());
    });
    state = {preactivation, heads, first, second, segments};
    return {energy, charges, hirshfeld};
}

Tensor headsBackward(const HeadsState& state, const Tensor& gradEnergy, const Tensor& gradCharges,
                     const Tensor& gradHirshfeld) {
    const Tensor &preactivation = state.preactivation, &heads = state.heads;
    const int64_t n = preactivation.size(0);
    std::vector<Tensor> grads = {gradEnergy, gradCharges, gradHirshfeld};
    for (Tensor& grad : grads)
        if (grad.defined())
            grad = grad.contiguous();
    Tensor gradHeads = at::empty({n, 3}, preactivation.options());
    AT_DISPATCH_FLOATING_TYPES(preactivation.scalar_type(), "so3lr_heads_backward", [&] {
        const auto pointer = [](const Tensor& t) { return t.defined() ? t.data_ptr<scalar_t>() : nullptr; };
        joinHeadGradients<scalar_t>(pointer(grads[0]), pointer(grads[1]), pointer(grads[2]),
                                    heads.data_ptr<scalar_t>(), n, gradHeads.data_ptr<scalar_t>());
    });
    const Tensor gradHidden = at::mm(gradHeads, state.segments.t()).mul_(state.second);
    return at::mm(at::silu_backward(gradHidden, preactivation), state.first.t());
}

} // namespace so3lr
} // namespace NNPPlugin

namespace {

class HeadsFunction : public torch::autograd::Function<HeadsFunction> {
public:
    static torch::autograd::tensor_list forward(torch::autograd::AutogradContext* ctx, const Tensor& features,
                                                const Tensor& first, const Tensor& firstBias, const Tensor& second,
                                                const Tensor& segments, const Tensor& offsets,
                                                const Tensor& totalCharge) {
        at::AutoDispatchBelowADInplaceOrView belowAutograd;
        NNPPlugin::so3lr::HeadsState s;
        const torch::autograd::tensor_list outputs =
            NNPPlugin::so3lr::headsForward(features, first, firstBias, second, segments, offsets, totalCharge, s);
        ctx->save_for_backward({s.preactivation, s.heads, s.first, s.second, s.segments});
        return outputs;
    }

    static torch::autograd::tensor_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::tensor_list gradOutputs) {
        const auto saved = ctx->get_saved_variables();
        at::NoGradGuard noGrad;
        const NNPPlugin::so3lr::HeadsState s{saved[0], saved[1], saved[2], saved[3], saved[4]};
        const Tensor none;
        const Tensor gradFeatures = NNPPlugin::so3lr::headsBackward(s, gradOutputs[0], gradOutputs[1], gradOutputs[2]);
        return {gradFeatures, none, none, none, none, none, none};
    }
};

std::tuple<Tensor, Tensor, Tensor> so3lrHeads(const Tensor& features, const Tensor& first, const Tensor& firstBias,
                                              const Tensor& second, const Tensor& segments, const Tensor& offsets,
                                              const Tensor& totalCharge) {
    const auto outputs = HeadsFunction::apply(features, first, firstBias, second, segments, offsets, totalCharge);
    return {outputs[0], outputs[1], outputs[2]};
}

} // namespace

TORCH_LIBRARY_FRAGMENT(openmm_nnp, m) {
    m.def("so3lr_heads(Tensor features, Tensor first, Tensor firstBias, Tensor second, Tensor segments, "
          "Tensor offsets, Tensor totalCharge) -> (Tensor, Tensor, Tensor)",
          &so3lrHeads);
}
