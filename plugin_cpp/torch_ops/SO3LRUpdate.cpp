// openmm_nnp::so3lr_layer_update (TorchScript operator, first-order autograd): everything an SO3LR layer
// (openmm_nnp/models/so3lr.py, SO3LR._update, which computes the same with PyTorch operations) does to the atoms'
// features after the attention coefficients, in one operator with a hand-written backward pass. The PyTorch path
// takes about thirty operations forward (messages, two layer norms, the residual MLP, the interaction block) and
// TorchScript's differentiable graph and autograd about twice as many backward, each with its overhead; here the
// messages, the layer norms and the element-wise steps are loops over the pairs or the atoms, and only the three
// matrix products of the MLP and the interaction (each way), their SiLUs and, backward, one batched product of the
// messages' per-head sums are ATen calls.
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
//   ev' = ev1 * (1 + mixed[:, F:] @ expand) if updateEv (which needs I = H), else ev1
// Gradients flow to features, ev, attention, cutoff, harmonics and values; the weights (norms to contract) are the
// module's constants and must not require gradients. CPU tensors of one floating-point dtype.

#include <torch/torch.h>

#include <ATen/Parallel.h>

#include <cmath>
#include <mutex>
#include <tuple>
#include <vector>

#include "PartialSums.h"
#include "SO3LRKernels.h"
#include "Vectorize.h"

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
    std::vector<int64_t> degree(C, -1);
    const Tensor e = expand.contiguous();
    AT_DISPATCH_FLOATING_TYPES(e.scalar_type(), "so3lr_layer_update", [&] {
        const scalar_t* pe = e.data_ptr<scalar_t>();
        for (int64_t c = 0; c < C; c++)
            for (int64_t l = 0; l < H; l++) {
                TORCH_CHECK(pe[l * C + c] == 0 || (pe[l * C + c] == 1 && degree[c] < 0),
                            "so3lr_layer_update: expand must have one 1 in each column, zeros elsewhere");
                if (pe[l * C + c] == 1)
                    degree[c] = l;
            }
    });
    for (int64_t c = 0; c < C; c++)
        TORCH_CHECK(degree[c] >= 0, "so3lr_layer_update: expand must have one 1 in each column, zeros elsewhere");
    return degree;
}

struct Sizes {
    int64_t n, F, C, H, I;
};

// Atoms per task of the parallel loops over the atoms (one atom: a pass over its n pairs, F + C multiply-adds each).
constexpr int64_t kAtomsPerTask = 4;

// f1 = features + the invariant messages, ev1 = ev + the ev messages (the formula above) of atoms i in [begin, end),
// one pass over their pairs.
template <typename T>
NNP_INLINE void messagesForward(const T* features, const T* ev, const T* attention, const T* cutoff,
                                const T* harmonics, const T* values, const int64_t* degree, const Sizes& s,
                                int64_t begin, int64_t end, T* f1, T* ev1) {
    const int64_t n = s.n, F = s.F, C = s.C, H = s.H, D = F / H;
    for (int64_t i = begin; i < end; i++) {
        T* fi = f1 + i * F;
        T* evi = ev1 + i * C;
        for (int64_t d = 0; d < F; d++)
            fi[d] = features[i * F + d];
        for (int64_t c = 0; c < C; c++)
            evi[c] = ev[i * C + c];
        for (int64_t j = 0; j < n; j++) {
            const T cij = cutoff[i * n + j];
            if (cij == 0)
                continue;  // the diagonal and pairs beyond the cutoff (a zero factor; the same sums)
            const T* a0 = attention + (i * n + j) * H;
            const T* vj = values + j * F;
            for (int64_t h = 0; h < H; h++) {
                const T w = a0[h] * cij;
                T* out = fi + h * D;
                const T* v = vj + h * D;
#pragma omp simd
                for (int64_t d = 0; d < D; d++)
                    out[d] += w * v[d];
            }
            const T* a1 = attention + ((n + i) * n + j) * H;
            const T* yij = harmonics + (i * n + j) * C;
            for (int64_t c = 0; c < C; c++)
                evi[c] += a1[degree[c]] * cij * yij[c];
        }
    }
}

// One row of a layer norm: xhat = (x - mean) rstd, y = xhat w + b (biased variance, as torch's layer_norm).
template <typename T>
NNP_INLINE void layerNormRow(const T* x, const T* w, const T* b, int64_t F, T epsilon, T* xhat, T* y, T& rstd) {
    T mean = 0;
#pragma omp simd reduction(+ : mean)
    for (int64_t d = 0; d < F; d++)
        mean += x[d];
    mean /= F;
    T variance = 0;
#pragma omp simd reduction(+ : variance)
    for (int64_t d = 0; d < F; d++)
        variance += (x[d] - mean) * (x[d] - mean);
    variance /= F;
    rstd = 1 / std::sqrt(variance + epsilon);
#pragma omp simd
    for (int64_t d = 0; d < F; d++) {
        xhat[d] = (x[d] - mean) * rstd;
        y[d] = xhat[d] * w[d] + b[d];
    }
}

// Its input gradient: dx = rstd (gy w - mean(gy w) - xhat mean(gy w xhat)).
template <typename T>
NNP_INLINE void layerNormRowBackward(const T* gy, const T* xhat, const T* w, T rstd, int64_t F, T* gx) {
    T meanGrad = 0, meanGradXhat = 0;
#pragma omp simd reduction(+ : meanGrad, meanGradXhat)
    for (int64_t d = 0; d < F; d++) {
        meanGrad += gy[d] * w[d];
        meanGradXhat += gy[d] * w[d] * xhat[d];
    }
    meanGrad /= F;
    meanGradXhat /= F;
#pragma omp simd
    for (int64_t d = 0; d < F; d++)
        gx[d] = rstd * (gy[d] * w[d] - meanGrad - xhat[d] * meanGradXhat);
}

// Gradients of attention, cutoff, harmonics and values from d f1 (gf1; the layer norm's input gradient, that of
// features too), d ev1 (gev1) and products[h, i, j] = sum_(d in h) gf1[i, d] values[j, d] ([H, n, n], one batched
// product: short dot products per pair and head cost more in a loop), one pass over the pairs (i, j) of atoms i in
// [begin, end): their entries of gradAttention, gradCutoff and gradHarmonics are written, their terms of gradValues
// (every row; zeroed by the caller) added.
template <typename T>
NNP_INLINE void messagesBackward(const T* gf1, const T* gev1, const T* products, const T* attention, const T* cutoff,
                                 const T* harmonics, const int64_t* degree, const Sizes& s, int64_t begin,
                                 int64_t end, T* gradAttention, T* gradCutoff, T* gradHarmonics, T* gradValues) {
    const int64_t n = s.n, F = s.F, C = s.C, H = s.H, D = F / H;
    std::vector<T> perDegree(H);
    for (int64_t i = begin; i < end; i++) {
        const T* gi = gf1 + i * F;
        const T* gevi = gev1 + i * C;
        for (int64_t j = 0; j < n; j++) {
            const T cij = cutoff[i * n + j];
            const T* a0 = attention + (i * n + j) * H;
            const T* a1 = attention + ((n + i) * n + j) * H;
            T* ga0 = gradAttention + (i * n + j) * H;
            T* ga1 = gradAttention + ((n + i) * n + j) * H;
            T* gvj = gradValues + j * F;
            T gradCut = 0;
            for (int64_t h = 0; h < H; h++) {
                // d a0 = products cij, d cutoff += products a0, d values[j] += a0 cij gf1[i] (head h's features).
                const T product = products[(h * n + i) * n + j];
                ga0[h] = product * cij;
                gradCut += product * a0[h];
                const T w = a0[h] * cij;
                if (w != 0) {
                    const T* g = gi + h * D;
                    T* gv = gvj + h * D;
#pragma omp simd
                    for (int64_t d = 0; d < D; d++)
                        gv[d] += w * g[d];
                }
            }
            const T* yij = harmonics + (i * n + j) * C;
            T* gyij = gradHarmonics + (i * n + j) * C;
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
            gradCutoff[i * n + j] = gradCut;
        }
    }
}

} // namespace

namespace NNPPlugin {
namespace so3lr {

std::vector<Tensor> layerUpdateForward(const Tensor& featuresIn, const Tensor& evIn, const Tensor& attentionIn,
                                       const Tensor& cutoffIn, const Tensor& harmonicsIn, const Tensor& valuesIn,
                                       const Tensor& normsIn, const Tensor& mlpFirst, const Tensor& mlpFirstBias,
                                       const Tensor& mlpSecond, const Tensor& mlpSecondBiasIn,
                                       const Tensor& interaction, const Tensor& interactionBias, const Tensor& expand,
                                       const Tensor& contractIn, double epsilon, bool updateEv,
                                       LayerUpdateState& state) {
    const std::vector<Tensor> weights = {normsIn,     mlpFirst,        mlpFirstBias, mlpSecond, mlpSecondBiasIn,
                                         interaction, interactionBias, expand,       contractIn};
    const std::vector<int64_t> degree =
        checkInputs(featuresIn, evIn, attentionIn, cutoffIn, harmonicsIn, valuesIn, weights);
    const Tensor features = featuresIn.contiguous(), ev = evIn.contiguous();
    const Tensor attention = attentionIn.contiguous(), cutoff = cutoffIn.contiguous();
    const Tensor harmonics = harmonicsIn.contiguous(), values = valuesIn.contiguous();
    const Tensor norms = normsIn.contiguous(), mlpSecondBias = mlpSecondBiasIn.contiguous();
    const Tensor contract = contractIn.contiguous();
    const Sizes s = {features.size(0), features.size(1), ev.size(1), attention.size(3), contract.size(1)};
    const int64_t n = s.n, F = s.F, C = s.C, I = s.I;
    // The ev scales mixed[:, F:] @ expand are read as mixed[:, F + degree[c]].
    TORCH_CHECK(!updateEv || s.H == I, "so3lr_layer_update: updating ev needs expand [I, C]");
    Tensor f1 = at::empty({n, F}, features.options()), ev1 = at::empty({n, C}, features.options());
    Tensor g = at::empty({n, F}, features.options()), xhat1 = at::empty({n, F}, features.options());
    Tensor rstd1 = at::empty({n}, features.options()), xhat2 = at::empty({n, F}, features.options());
    Tensor rstd2 = at::empty({n}, features.options()), out = at::empty({n, F}, features.options());
    Tensor mixedInput = at::empty({n, F + I}, features.options());
    Tensor hidden, mixed;
    Tensor evOut = updateEv ? at::empty({n, C}, features.options()) : ev1;
    AT_DISPATCH_FLOATING_TYPES(features.scalar_type(), "so3lr_layer_update", [&] {
        const scalar_t eps = static_cast<scalar_t>(epsilon);
        const scalar_t* w = norms.data_ptr<scalar_t>();
        at::parallel_for(0, n, kAtomsPerTask, [&](int64_t begin, int64_t end) {
            NNPPlugin::runVectorized([&]() NNP_INLINE_LAMBDA {
                messagesForward(features.data_ptr<scalar_t>(), ev.data_ptr<scalar_t>(),
                                attention.data_ptr<scalar_t>(), cutoff.data_ptr<scalar_t>(),
                                harmonics.data_ptr<scalar_t>(), values.data_ptr<scalar_t>(), degree.data(), s, begin,
                                end, f1.data_ptr<scalar_t>(), ev1.data_ptr<scalar_t>());
                for (int64_t i = begin; i < end; i++)
                    layerNormRow(f1.data_ptr<scalar_t>() + i * F, w, w + F, F, eps,
                                 xhat1.data_ptr<scalar_t>() + i * F, g.data_ptr<scalar_t>() + i * F,
                                 rstd1.data_ptr<scalar_t>()[i]);
            });
        });
        // The residual MLP: f2 = g + silu(silu(g) @ mlpFirst + b1) @ mlpSecond + b2.
        hidden = at::addmm(mlpFirstBias, at::silu(g), mlpFirst);
        const Tensor mlp = at::mm(at::silu(hidden), mlpSecond);
        // The interaction's input [f2, (ev1 * ev1) @ contract].
        const scalar_t *pg = g.data_ptr<scalar_t>(), *pm = mlp.data_ptr<scalar_t>();
        const scalar_t *b2 = mlpSecondBias.data_ptr<scalar_t>(), *pk = contract.data_ptr<scalar_t>();
        const scalar_t* pe = ev1.data_ptr<scalar_t>();
        scalar_t* pin = mixedInput.data_ptr<scalar_t>();
        for (int64_t i = 0; i < n; i++) {
            scalar_t* row = pin + i * (F + I);
            for (int64_t d = 0; d < F; d++)
                row[d] = pg[i * F + d] + pm[i * F + d] + b2[d];
            for (int64_t l = 0; l < I; l++)
                row[F + l] = 0;
            for (int64_t c = 0; c < C; c++) {
                const scalar_t e2 = pe[i * C + c] * pe[i * C + c];
                for (int64_t l = 0; l < I; l++)
                    row[F + l] += e2 * pk[c * I + l];
            }
        }
        mixed = at::addmm(interactionBias, mixedInput, interaction);
        // features' = layer_norm(f2 + mixed[:, :F]); ev' = ev1 (1 + mixed[:, F + degree]) (expand one-hot).
        const scalar_t* px = mixed.data_ptr<scalar_t>();
        scalar_t* po = evOut.data_ptr<scalar_t>();
        std::vector<scalar_t> f3(F);
        for (int64_t i = 0; i < n; i++) {
            for (int64_t d = 0; d < F; d++)
                f3[d] = pin[i * (F + I) + d] + px[i * (F + I) + d];
            layerNormRow(f3.data(), w + 2 * F, w + 3 * F, F, eps, xhat2.data_ptr<scalar_t>() + i * F,
                         out.data_ptr<scalar_t>() + i * F, rstd2.data_ptr<scalar_t>()[i]);
            if (updateEv)
                for (int64_t c = 0; c < C; c++)
                    po[i * C + c] = pe[i * C + c] * (1 + px[i * (F + I) + F + degree[c]]);
        }
    });
    state = {attention, cutoff, harmonics, values,    g,           xhat1,    rstd1,  hidden,  xhat2, rstd2,
             mixed,     ev1,    norms,     mlpFirst, mlpSecond, interaction, contract, degree, updateEv};
    return {out, evOut};
}

std::vector<Tensor> layerUpdateBackward(const LayerUpdateState& state, const Tensor& gradFeatures,
                                        const Tensor& gradEv) {
    const Tensor &attention = state.attention, &cutoff = state.cutoff, &harmonics = state.harmonics;
    const Tensor &values = state.values, &g = state.g, &xhat1 = state.xhat1, &rstd1 = state.rstd1;
    const Tensor &hidden = state.hidden, &xhat2 = state.xhat2, &rstd2 = state.rstd2, &mixed = state.mixed;
    const Tensor &ev1 = state.ev1, &norms = state.norms, &mlpFirst = state.mlpFirst, &mlpSecond = state.mlpSecond;
    const Tensor &interaction = state.interaction, &contract = state.contract;
    const bool updateEv = state.updateEv;
    const std::vector<int64_t>& degree = state.degree;
    const Sizes s = {g.size(0), g.size(1), ev1.size(1), attention.size(3), contract.size(1)};
    const int64_t n = s.n, F = s.F, C = s.C, I = s.I;
    // Undefined output gradients (an output not used) are zeros.
    const Tensor gradOut = gradFeatures.defined() ? gradFeatures.contiguous() : at::zeros_like(g);
    const Tensor gradEvOut = gradEv.defined() ? gradEv.contiguous() : at::zeros_like(ev1);
    Tensor gradMixed = at::empty({n, F + I}, g.options()), gev1 = at::empty({n, C}, g.options());
    Tensor gf2 = at::empty({n, F}, g.options()), gf1 = at::empty({n, F}, g.options());
    Tensor gradAttention = at::empty(attention.sizes(), g.options());
    Tensor gradCutoff = at::empty(cutoff.sizes(), g.options());
    Tensor gradHarmonics = at::empty(harmonics.sizes(), g.options());
    Tensor gradValues = at::zeros(values.sizes(), g.options());
    AT_DISPATCH_FLOATING_TYPES(g.scalar_type(), "so3lr_layer_update_backward", [&] {
        const scalar_t* w = norms.data_ptr<scalar_t>();
        const scalar_t *pe = ev1.data_ptr<scalar_t>(), *px = mixed.data_ptr<scalar_t>();
        const scalar_t* gE = gradEvOut.data_ptr<scalar_t>();
        scalar_t *pgm = gradMixed.data_ptr<scalar_t>(), *pgev = gev1.data_ptr<scalar_t>();
        // d mixed = [d f3, d (mixed[:, F:])] (the second part from the ev output), and d ev1 from the ev output.
        for (int64_t i = 0; i < n; i++) {
            scalar_t* row = pgm + i * (F + I);
            layerNormRowBackward(gradOut.data_ptr<scalar_t>() + i * F, xhat2.data_ptr<scalar_t>() + i * F,
                                 w + 2 * F, rstd2.data_ptr<scalar_t>()[i], F, row);
            for (int64_t l = 0; l < I; l++)
                row[F + l] = 0;
            for (int64_t c = 0; c < C; c++) {
                const int64_t k = i * C + c;
                if (updateEv) {
                    row[F + degree[c]] += gE[k] * pe[k];
                    pgev[k] = gE[k] * (1 + px[i * (F + I) + F + degree[c]]);
                } else {
                    pgev[k] = gE[k];
                }
            }
        }
        // d [f2, invariants] = d mixed @ interaction^T; d f2 adds d f3 (the residual).
        const Tensor gradInput = at::mm(gradMixed, interaction.t());
        const scalar_t *pgi = gradInput.data_ptr<scalar_t>(), *pk = contract.data_ptr<scalar_t>();
        scalar_t* pgf2 = gf2.data_ptr<scalar_t>();
        for (int64_t i = 0; i < n; i++) {
            const scalar_t* row = pgi + i * (F + I);
            for (int64_t d = 0; d < F; d++)
                pgf2[i * F + d] = pgm[i * (F + I) + d] + row[d];
            for (int64_t c = 0; c < C; c++) {
                scalar_t sum = 0;
                for (int64_t l = 0; l < I; l++)
                    sum += row[F + l] * pk[c * I + l];
                pgev[i * C + c] += 2 * pe[i * C + c] * sum;
            }
        }
        // The residual MLP backward, then the first layer norm's on d g = d (MLP) + d f2.
        Tensor gradHidden = at::mm(gf2, mlpSecond.t());
        at::silu_backward_out(gradHidden, gradHidden, hidden);
        Tensor gg = at::mm(gradHidden, mlpFirst.t());
        at::silu_backward_out(gg, gg, g);
        scalar_t* pgg = gg.data_ptr<scalar_t>();
        for (int64_t i = 0; i < n; i++) {
            for (int64_t d = 0; d < F; d++)
                pgg[i * F + d] += pgf2[i * F + d];
            layerNormRowBackward(pgg + i * F, xhat1.data_ptr<scalar_t>() + i * F, w,
                                 rstd1.data_ptr<scalar_t>()[i], F, gf1.data_ptr<scalar_t>() + i * F);
        }
        const int64_t D = F / s.H;
        const Tensor products =
            at::bmm(gf1.view({n, s.H, D}).transpose(0, 1), values.view({n, s.H, D}).permute({1, 2, 0}));
        // Each task sums its atoms' terms of gradValues in a buffer of its own; the buffers are added in the order of
        // their atoms (the same sums whatever the order the tasks end in).
        std::mutex partialsLock;
        std::vector<std::pair<int64_t, std::vector<scalar_t>>> partials;
        at::parallel_for(0, n, kAtomsPerTask, [&](int64_t begin, int64_t end) {
            std::vector<scalar_t> partialValues(n * F, scalar_t(0));
            NNPPlugin::runVectorized([&]() NNP_INLINE_LAMBDA {
                messagesBackward(gf1.data_ptr<scalar_t>(), pgev, products.data_ptr<scalar_t>(),
                                 attention.data_ptr<scalar_t>(), cutoff.data_ptr<scalar_t>(),
                                 harmonics.data_ptr<scalar_t>(), degree.data(), s, begin, end,
                                 gradAttention.data_ptr<scalar_t>(), gradCutoff.data_ptr<scalar_t>(),
                                 gradHarmonics.data_ptr<scalar_t>(), partialValues.data());
            });
            const std::lock_guard<std::mutex> guard(partialsLock);
            partials.emplace_back(begin, std::move(partialValues));
        });
        NNPPlugin::addInOrder(partials, gradValues.data_ptr<scalar_t>());
    });
    return {gf1, gev1, gradAttention, gradCutoff, gradHarmonics, gradValues};
}

} // namespace so3lr
} // namespace NNPPlugin

namespace {

class LayerUpdateFunction : public torch::autograd::Function<LayerUpdateFunction> {
public:
    static torch::autograd::tensor_list forward(
        torch::autograd::AutogradContext* ctx, const Tensor& features, const Tensor& ev, const Tensor& attention,
        const Tensor& cutoff, const Tensor& harmonics, const Tensor& values, const Tensor& norms,
        const Tensor& mlpFirst, const Tensor& mlpFirstBias, const Tensor& mlpSecond, const Tensor& mlpSecondBias,
        const Tensor& interaction, const Tensor& interactionBias, const Tensor& expand, const Tensor& contract,
        double epsilon, bool updateEv) {
        at::AutoDispatchBelowADInplaceOrView belowAutograd;
        NNPPlugin::so3lr::LayerUpdateState s;
        const torch::autograd::tensor_list outputs = NNPPlugin::so3lr::layerUpdateForward(
            features, ev, attention, cutoff, harmonics, values, norms, mlpFirst, mlpFirstBias, mlpSecond,
            mlpSecondBias, interaction, interactionBias, expand, contract, epsilon, updateEv, s);
        ctx->save_for_backward({s.attention, s.cutoff, s.harmonics, s.values, s.g, s.xhat1, s.rstd1, s.hidden,
                                s.xhat2, s.rstd2, s.mixed, s.ev1, s.norms, s.mlpFirst, s.mlpSecond, s.interaction,
                                s.contract});
        ctx->saved_data["degree"] = c10::IValue(s.degree);
        ctx->saved_data["updateEv"] = updateEv;
        return outputs;
    }

    static torch::autograd::tensor_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::tensor_list gradOutputs) {
        const auto v = ctx->get_saved_variables();
        at::NoGradGuard noGrad;
        const NNPPlugin::so3lr::LayerUpdateState s{
            v[0],  v[1],  v[2],  v[3],  v[4],  v[5],  v[6],  v[7],  v[8], v[9], v[10], v[11], v[12], v[13], v[14],
            v[15], v[16], ctx->saved_data["degree"].toIntVector(), ctx->saved_data["updateEv"].toBool()};
        const auto grads = NNPPlugin::so3lr::layerUpdateBackward(s, gradOutputs[0], gradOutputs[1]);
        const Tensor none;
        return {grads[0], grads[1], grads[2], grads[3], grads[4], grads[5], none, none, none,
                none,     none,     none,     none,     none,     none,     none, none};
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
