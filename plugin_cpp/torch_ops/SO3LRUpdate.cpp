// openmm_nnp::so3lr_layer_update (TorchScript operator, first-order autograd): everything an SO3LR layer
// (openmm_nnp/models/so3lr.py, SO3LR._update, which computes the same with PyTorch operations) does to the atoms'
// features after the attention coefficients, in one operator with a hand-written backward pass. The PyTorch path
// takes about thirty operations forward (messages, two layer norms, the residual MLP, the interaction block) and
// TorchScript's differentiable graph and autograd about twice as many backward, each with its overhead; here the
// messages are a loop over the n x n pairs and a batched product each way, and the rest a few matrix products.
//
//   so3lr_layer_update(features [n, F], ev [n, C], attention [2, n, n, H], cutoff [n, n], harmonics [n, n, C],
//                      values [n, F], norms [4, F], mlpFirst [F, F], mlpFirstBias [F], mlpSecond [F, F],
//                      mlpSecondBias [F], interaction [F + I, F + I], interactionBias [F + I], expand [H, C],
//                      contract [C, I], epsilon, updateEv) -> (features [n, F], ev [n, C])
//
// with a = attention * cutoff[:, :, None], h(d) the head of feature d (F / H features each), l(c) the degree of ev
// component c (expand[l, c] = 1, one-hot columns):
//   f1[i, d] = features[i, d] + sum_j a[0, i, j, h(d)] values[j, d]
//   ev1[i, c] = ev[i, c] + sum_j a[1, i, j, l(c)] harmonics[i, j, c]
//   g = layer_norm(f1; norms[0], norms[1])
//   f2 = g + silu(silu(g) @ mlpFirst + mlpFirstBias) @ mlpSecond + mlpSecondBias
//   mixed = [f2, (ev1 * ev1) @ contract] @ interaction + interactionBias
//   features' = layer_norm(f2 + mixed[:, :F]; norms[2], norms[3])
//   ev' = ev1 * (1 + mixed[:, F:] @ expand) if updateEv, else ev1
// Gradients flow to features, ev, attention, cutoff, harmonics and values; the weights (norms to contract) are the
// module's constants and must not require gradients. CPU tensors of one floating-point dtype.

#include <torch/torch.h>

#include <array>
#include <tuple>
#include <vector>

using at::Tensor;

namespace {

const char* const kWeightNames[] = {"norms", "mlpFirst", "mlpFirstBias", "mlpSecond", "mlpSecondBias",
                                    "interaction", "interactionBias", "expand", "contract"};

// The degree of each ev component (the row of its 1 in expand); checks the shapes.
std::vector<int64_t> checkInputs(const Tensor& features, const Tensor& ev, const Tensor& attention,
                                 const Tensor& cutoff, const Tensor& harmonics, const Tensor& values,
                                 const std::vector<Tensor>& weights) {
    const std::vector<const Tensor*> inputs = {&features, &ev, &attention, &cutoff, &harmonics, &values};
    for (const Tensor* t : inputs)
        TORCH_CHECK(t->device().is_cpu() && t->scalar_type() == features.scalar_type(),
                    "so3lr_layer_update: CPU tensors of one dtype expected");
    TORCH_CHECK(at::isFloatingType(features.scalar_type()), "so3lr_layer_update: floating-point tensors expected");
    for (size_t k = 0; k < weights.size(); k++) {
        TORCH_CHECK(weights[k].device().is_cpu() && weights[k].scalar_type() == features.scalar_type(),
                    "so3lr_layer_update: CPU tensors of one dtype expected");
        TORCH_CHECK(!weights[k].requires_grad(), "so3lr_layer_update: gradients flow to features, ev, attention, "
                    "cutoff, harmonics and values only; the weight ", kWeightNames[k], " must not require gradients");
    }
    const Tensor &norms = weights[0], &mlpFirst = weights[1], &mlpFirstBias = weights[2], &mlpSecond = weights[3],
                 &mlpSecondBias = weights[4], &interaction = weights[5], &interactionBias = weights[6],
                 &expand = weights[7], &contract = weights[8];
    TORCH_CHECK(features.dim() == 2 && ev.dim() == 2 && ev.size(0) == features.size(0) && attention.dim() == 4,
                "so3lr_layer_update: features must be [n, F], ev [n, C], attention [2, n, n, H]");
    const int64_t n = features.size(0), F = features.size(1), C = ev.size(1), H = attention.size(3);
    TORCH_CHECK(attention.size(0) == 2 && attention.size(1) == n && attention.size(2) == n && H > 0 && F % H == 0 &&
                    cutoff.dim() == 2 && cutoff.size(0) == n && cutoff.size(1) == n && harmonics.dim() == 3 &&
                    harmonics.size(0) == n && harmonics.size(1) == n && harmonics.size(2) == C &&
                    values.sizes() == features.sizes(),
                "so3lr_layer_update: attention [2, n, n, H] (H dividing F), cutoff [n, n], harmonics [n, n, C] and "
                "values [n, F] expected");
    TORCH_CHECK(expand.dim() == 2 && expand.size(0) == H && expand.size(1) == C && contract.dim() == 2 &&
                    contract.size(0) == C,
                "so3lr_layer_update: expand must be [H, C], contract [C, I]");
    const int64_t I = contract.size(1);
    TORCH_CHECK(norms.dim() == 2 && norms.size(0) == 4 && norms.size(1) == F && mlpFirst.dim() == 2 &&
                    mlpFirst.size(0) == F && mlpFirst.size(1) == F && mlpSecond.sizes() == mlpFirst.sizes() &&
                    mlpFirstBias.dim() == 1 && mlpFirstBias.size(0) == F &&
                    mlpSecondBias.sizes() == mlpFirstBias.sizes() &&
                    interaction.dim() == 2 && interaction.size(0) == F + I && interaction.size(1) == F + I &&
                    interactionBias.dim() == 1 && interactionBias.size(0) == F + I,
                "so3lr_layer_update: norms must be [4, F], mlpFirst and mlpSecond [F, F], their biases [F], "
                "interaction [F + I, F + I], interactionBias [F + I]");
    const Tensor e = expand.to(torch::kFloat64).contiguous();
    const double* pe = e.data_ptr<double>();
    std::vector<int64_t> degree(C, -1);
    for (int64_t c = 0; c < C; c++)
        for (int64_t l = 0; l < H; l++) {
            TORCH_CHECK(pe[l * C + c] == 0.0 || (pe[l * C + c] == 1.0 && degree[c] < 0),
                        "so3lr_layer_update: expand must have one 1 in each column, zeros elsewhere");
            if (pe[l * C + c] == 1.0)
                degree[c] = l;
        }
    for (int64_t c = 0; c < C; c++)
        TORCH_CHECK(degree[c] >= 0, "so3lr_layer_update: expand must have one 1 in each column, zeros elsewhere");
    return degree;
}

// The invariant messages' weights per head, headWeights[h, i, j] = attention[0, i, j, h] cutoff[i, j] ([H, n, n]), and
// ev1 = ev + the ev messages (the formula above), contiguous inputs.
void messagesForward(const Tensor& ev, const Tensor& attention, const Tensor& cutoff, const Tensor& harmonics,
                     const std::vector<int64_t>& degree, Tensor& headWeights, Tensor& ev1) {
    const int64_t n = ev.size(0), C = ev.size(1), H = attention.size(3);
    headWeights = at::empty({H, n, n}, ev.options());
    ev1 = ev.clone();
    AT_DISPATCH_FLOATING_TYPES(ev.scalar_type(), "so3lr_layer_update", [&] {
        const scalar_t* A = attention.data_ptr<scalar_t>();
        const scalar_t* cut = cutoff.data_ptr<scalar_t>();
        const scalar_t* Y = harmonics.data_ptr<scalar_t>();
        scalar_t* W = headWeights.data_ptr<scalar_t>();
        scalar_t* outEv = ev1.data_ptr<scalar_t>();
        for (int64_t i = 0; i < n; i++) {
            scalar_t* evi = outEv + i * C;
            for (int64_t j = 0; j < n; j++) {
                const scalar_t cij = cut[i * n + j];
                const scalar_t* a0 = A + (i * n + j) * H;
                for (int64_t h = 0; h < H; h++)
                    W[(h * n + i) * n + j] = a0[h] * cij;
                if (cij == 0)
                    continue;  // the diagonal and pairs beyond the cutoff (a zero factor; the same sums)
                const scalar_t* a1 = A + ((n + i) * n + j) * H;
                const scalar_t* yij = Y + (i * n + j) * C;
                for (int64_t c = 0; c < C; c++)
                    evi[c] += a1[degree[c]] * cij * yij[c];
            }
        }
    });
}

// Gradients of attention, cutoff and harmonics from products[h, i, j] = sum_(d in h) d f1[i, d] values[j, d]
// ([H, n, n]) and d ev1 (gev1).
std::vector<Tensor> messagesBackward(const Tensor& products, const Tensor& gev1, const Tensor& attention,
                                     const Tensor& cutoff, const Tensor& harmonics,
                                     const std::vector<int64_t>& degree) {
    Tensor gradAttention = at::empty(attention.sizes(), attention.options());
    Tensor gradCutoff = at::empty(cutoff.sizes(), cutoff.options());
    Tensor gradHarmonics = at::empty(harmonics.sizes(), harmonics.options());
    AT_DISPATCH_FLOATING_TYPES(attention.scalar_type(), "so3lr_layer_update_backward", [&] {
        const int64_t n = cutoff.size(0), C = harmonics.size(2), H = attention.size(3);
        const scalar_t* A = attention.data_ptr<scalar_t>();
        const scalar_t* cut = cutoff.data_ptr<scalar_t>();
        const scalar_t* Y = harmonics.data_ptr<scalar_t>();
        const scalar_t* S = products.data_ptr<scalar_t>();
        const scalar_t* GE = gev1.data_ptr<scalar_t>();
        scalar_t* gA = gradAttention.data_ptr<scalar_t>();
        scalar_t* gC = gradCutoff.data_ptr<scalar_t>();
        scalar_t* gY = gradHarmonics.data_ptr<scalar_t>();
        std::vector<scalar_t> perDegree(H);
        for (int64_t i = 0; i < n; i++) {
            const scalar_t* gevi = GE + i * C;
            for (int64_t j = 0; j < n; j++) {
                const scalar_t cij = cut[i * n + j];
                const scalar_t* a0 = A + (i * n + j) * H;
                const scalar_t* a1 = A + ((n + i) * n + j) * H;
                scalar_t* ga0 = gA + (i * n + j) * H;
                scalar_t* ga1 = gA + ((n + i) * n + j) * H;
                scalar_t gradCut = 0;
                for (int64_t h = 0; h < H; h++) {
                    const scalar_t sum = S[(h * n + i) * n + j];
                    ga0[h] = sum * cij;
                    gradCut += sum * a0[h];
                }
                const scalar_t* yij = Y + (i * n + j) * C;
                scalar_t* gyij = gY + (i * n + j) * C;
                for (int64_t h = 0; h < H; h++)
                    perDegree[h] = 0;
                for (int64_t c = 0; c < C; c++) {
                    perDegree[degree[c]] += gevi[c] * yij[c];
                    gyij[c] = a1[degree[c]] * cij * gevi[c];
                }
                for (int64_t h = 0; h < H; h++) {
                    ga1[h] = perDegree[h] * cij;
                    gradCut += perDegree[h] * a1[h];
                }
                gC[i * n + j] = gradCut;
            }
        }
    });
    return {gradAttention, gradCutoff, gradHarmonics};
}

class LayerUpdateFunction : public torch::autograd::Function<LayerUpdateFunction> {
public:
    static torch::autograd::tensor_list forward(
        torch::autograd::AutogradContext* ctx, const Tensor& featuresIn, const Tensor& evIn,
        const Tensor& attentionIn, const Tensor& cutoffIn, const Tensor& harmonicsIn, const Tensor& valuesIn,
        const Tensor& norms, const Tensor& mlpFirst, const Tensor& mlpFirstBias, const Tensor& mlpSecond,
        const Tensor& mlpSecondBias, const Tensor& interaction, const Tensor& interactionBias, const Tensor& expand,
        const Tensor& contract, double epsilon, bool updateEv) {
        const std::vector<Tensor> weights = {norms,       mlpFirst,        mlpFirstBias, mlpSecond, mlpSecondBias,
                                             interaction, interactionBias, expand,       contract};
        const std::vector<int64_t> degree =
            checkInputs(featuresIn, evIn, attentionIn, cutoffIn, harmonicsIn, valuesIn, weights);
        at::AutoDispatchBelowADInplaceOrView belowAutograd;
        const Tensor attention = attentionIn.contiguous(), cutoff = cutoffIn.contiguous();
        const Tensor harmonics = harmonicsIn.contiguous(), values = valuesIn.contiguous();
        const int64_t F = featuresIn.size(1), I = contract.size(1);
        const int64_t n = featuresIn.size(0), H = attention.size(3);
        // Invariant messages: one batched product over the heads, [H, n, n] @ [H, n, F / H].
        Tensor headWeights, ev1;
        messagesForward(evIn.contiguous(), attention, cutoff, harmonics, degree, headWeights, ev1);
        const Tensor valueHeads = values.view({n, H, F / H}).transpose(0, 1);
        const Tensor f1 = at::bmm(headWeights, valueHeads).transpose(0, 1).reshape({n, F}).add_(featuresIn);
        auto [g, mean1, rstd1] = at::native_layer_norm(f1, {F}, norms[0], norms[1], epsilon);
        const Tensor hidden = at::addmm(mlpFirstBias, at::silu(g), mlpFirst);
        const Tensor f2 = at::addmm(mlpSecondBias, at::silu(hidden), mlpSecond).add_(g);
        const Tensor mixed = at::addmm(interactionBias, at::cat({f2, at::mm(ev1 * ev1, contract)}, 1), interaction);
        const Tensor f3 = f2 + mixed.narrow(1, 0, F);
        auto [out, mean2, rstd2] = at::native_layer_norm(f3, {F}, norms[2], norms[3], epsilon);
        Tensor scale, evOut = ev1;
        if (updateEv) {
            scale = at::mm(mixed.narrow(1, F, I), expand);
            evOut = ev1 + scale * ev1;
        }
        ctx->save_for_backward({attention, cutoff, harmonics, values, headWeights, f1, g, mean1, rstd1, hidden, f3,
                                mean2, rstd2, ev1, updateEv ? scale : Tensor(), norms, mlpFirst, mlpSecond,
                                interaction, expand, contract});
        ctx->saved_data["degree"] = c10::IValue(degree);
        ctx->saved_data["updateEv"] = updateEv;
        return {out, evOut};
    }

    static torch::autograd::tensor_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::tensor_list gradOutputs) {
        const auto saved = ctx->get_saved_variables();
        at::NoGradGuard noGrad;
        const Tensor &attention = saved[0], &cutoff = saved[1], &harmonics = saved[2], &values = saved[3];
        const Tensor &headWeights = saved[4], &f1 = saved[5], &g = saved[6], &mean1 = saved[7], &rstd1 = saved[8];
        const Tensor &hidden = saved[9], &f3 = saved[10], &mean2 = saved[11], &rstd2 = saved[12], &ev1 = saved[13];
        const Tensor &scale = saved[14], &norms = saved[15], &mlpFirst = saved[16], &mlpSecond = saved[17];
        const Tensor &interaction = saved[18], &expand = saved[19], &contract = saved[20];
        const bool updateEv = ctx->saved_data["updateEv"].toBool();
        const std::vector<int64_t> degree = ctx->saved_data["degree"].toIntVector();
        const int64_t n = f1.size(0), F = f1.size(1), I = contract.size(1);
        const std::array<bool, 3> inputOnly = {true, false, false};
        // Undefined output gradients (an output not used) are zeros.
        const Tensor gradOut = gradOutputs[0].defined() ? gradOutputs[0].contiguous() : at::zeros_like(f3);
        const Tensor gradEvOut = gradOutputs[1].defined() ? gradOutputs[1].contiguous() : at::zeros_like(ev1);
        const Tensor gf3 = std::get<0>(
            at::native_layer_norm_backward(gradOut, f3, {F}, mean2, rstd2, norms[2], norms[3], inputOnly));
        // d mixed: [gf3, d (mixed[:, F:])]; the ev output's gradient reaches ev1 directly and through the scale.
        Tensor gradMixed = at::empty({n, F + I}, f1.options());
        gradMixed.narrow(1, 0, F).copy_(gf3);
        Tensor gev1;
        if (updateEv) {
            Tensor block = gradMixed.narrow(1, F, I);
            at::mm_out(block, gradEvOut * ev1, expand.t());
            gev1 = gradEvOut + gradEvOut * scale;
        } else {
            gradMixed.narrow(1, F, I).zero_();
            gev1 = gradEvOut.clone();
        }
        const Tensor gradInput = at::mm(gradMixed, interaction.t());  // [n, F + I]: d [f2, invariants]
        const Tensor gf2 = gf3 + gradInput.narrow(1, 0, F);
        gev1.add_(at::mm(gradInput.narrow(1, F, I), contract.t()).mul_(ev1), 2.0);
        const Tensor gradHidden = at::silu_backward(at::mm(gf2, mlpSecond.t()), hidden);
        const Tensor gg = at::silu_backward(at::mm(gradHidden, mlpFirst.t()), g).add_(gf2);
        const Tensor gf1 = std::get<0>(
            at::native_layer_norm_backward(gg, f1, {F}, mean1, rstd1, norms[0], norms[1], inputOnly)).contiguous();
        // The invariant messages' products: d values = headWeights^T @ d f1 per head, and the pair sums
        // products[h, i, j] = sum_(d in h) d f1[i, d] values[j, d] for the attention and cutoff gradients.
        const int64_t H = attention.size(3);
        const Tensor gradHeads = gf1.view({n, H, F / H}).transpose(0, 1);
        const Tensor products = at::bmm(gradHeads, values.view({n, H, F / H}).permute({1, 2, 0}));
        const Tensor gradValues = at::bmm(headWeights.transpose(1, 2), gradHeads).transpose(0, 1).reshape({n, F});
        const auto grads = messagesBackward(products, gev1.contiguous(), attention, cutoff, harmonics, degree);
        const Tensor none;
        return {gf1,  gev1, grads[0], grads[1], grads[2], gradValues, none, none, none,
                none, none, none,     none,     none,     none,     none, none};
    }
};

std::tuple<Tensor, Tensor> so3lrLayerUpdate(const Tensor& features, const Tensor& ev, const Tensor& attention,
                                            const Tensor& cutoff, const Tensor& harmonics, const Tensor& values,
                                            const Tensor& norms, const Tensor& mlpFirst, const Tensor& mlpFirstBias,
                                            const Tensor& mlpSecond, const Tensor& mlpSecondBias,
                                            const Tensor& interaction, const Tensor& interactionBias,
                                            const Tensor& expand, const Tensor& contract, double epsilon,
                                            bool updateEv) {
    const auto outputs = LayerUpdateFunction::apply(features, ev, attention, cutoff, harmonics, values, norms,
                                                    mlpFirst, mlpFirstBias, mlpSecond, mlpSecondBias, interaction,
                                                    interactionBias, expand, contract, epsilon, updateEv);
    return {outputs[0], outputs[1]};
}

} // namespace

TORCH_LIBRARY_FRAGMENT(openmm_nnp, m) {
    m.def("so3lr_layer_update(Tensor features, Tensor ev, Tensor attention, Tensor cutoff, Tensor harmonics, "
          "Tensor values, Tensor norms, Tensor mlpFirst, Tensor mlpFirstBias, Tensor mlpSecond, "
          "Tensor mlpSecondBias, Tensor interaction, Tensor interactionBias, Tensor expand, Tensor contract, "
          "float epsilon, bool updateEv) -> (Tensor, Tensor)",
          &so3lrLayerUpdate);
}
