// openmm_nnp::so3lr_heads (TorchScript operator, first-order autograd): the output heads of an SO3LR module
// (openmm_nnp/models/so3lr.py, SO3LR._heads, which computes the same with PyTorch operations) on the final atom
// features: the sum of the atomic energies, the partial charges (shifted to sum to the total charge) and the
// Hirshfeld ratios, with a hand-written backward pass instead of about fifteen operations and a dozen autograd steps.
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

#include <tuple>

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

class HeadsFunction : public torch::autograd::Function<HeadsFunction> {
public:
    static torch::autograd::tensor_list forward(torch::autograd::AutogradContext* ctx, const Tensor& features,
                                                const Tensor& first, const Tensor& firstBias, const Tensor& second,
                                                const Tensor& segments, const Tensor& offsets,
                                                const Tensor& totalCharge) {
        checkInputs(features, first, firstBias, second, segments, offsets, totalCharge);
        at::AutoDispatchBelowADInplaceOrView belowAutograd;
        const int64_t n = features.size(0);
        const Tensor preactivation = at::addmm(firstBias, features, first);
        const Tensor heads = at::addmm(offsets, at::silu(preactivation).mul_(second), segments);  // [n, 3]
        const Tensor energy = heads.select(1, 0).sum();
        const Tensor raw = heads.select(1, 1);
        const Tensor charges = raw + (totalCharge.reshape({}) - raw.sum()) / static_cast<double>(n);
        const Tensor ratios = heads.select(1, 2);
        const Tensor hirshfeld = at::abs(ratios);
        ctx->save_for_backward({preactivation, ratios, first, second, segments});
        return {energy, charges, hirshfeld};
    }

    static torch::autograd::tensor_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::tensor_list gradOutputs) {
        const auto saved = ctx->get_saved_variables();
        at::NoGradGuard noGrad;
        const Tensor &preactivation = saved[0], &ratios = saved[1], &first = saved[2], &second = saved[3],
                     &segments = saved[4];
        const int64_t n = preactivation.size(0);
        // d heads: [d energy, d charges minus their mean (the shift's gradient), d hirshfeld sign(ratios)].
        Tensor gradHeads = at::zeros({n, 3}, preactivation.options());
        if (gradOutputs[0].defined())
            gradHeads.select(1, 0).fill_(gradOutputs[0].reshape({}));
        if (gradOutputs[1].defined())
            gradHeads.select(1, 1).copy_(gradOutputs[1] - gradOutputs[1].mean());
        if (gradOutputs[2].defined())
            gradHeads.select(1, 2).copy_(gradOutputs[2] * at::sign(ratios));
        const Tensor gradHidden = at::mm(gradHeads, segments.t()).mul_(second);
        const Tensor gradFeatures = at::mm(at::silu_backward(gradHidden, preactivation), first.t());
        const Tensor none;
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
