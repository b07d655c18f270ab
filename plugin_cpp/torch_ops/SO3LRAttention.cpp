// openmm_nnp::so3lr_attention (TorchScript operator, first-order autograd): the attention coefficients of an
// SO3LR layer (openmm_nnp/models/so3lr.py) on the pairs within the short-range cutoff, in one pass over the pairs
// each way. The module's PyTorch path spreads the pair filters over all n x n ordered pairs and multiplies,
// contracts and differentiates them in about a dozen separate operations per layer; here each listed pair is
// read once and both of its directions are done together.
//
//   so3lr_attention(queries [2, n, F], keys [2, n, F], filters [2, P, F], first [K], second [K], heads)
//       -> attention [2, n, n, heads]
//
// For each kind c (0: invariant attention, 1: ev attention) and listed pair p = (a, b) (a = first[p],
// b = second[p], p < K <= P), with d running over the F / heads features of head h:
//   attention[c, a, b, h] = sum_d queries[c, a, d] keys[c, b, d] filters[c, p, d]
//   attention[c, b, a, h] = sum_d queries[c, b, d] keys[c, a, d] filters[c, p, d]
// and zero for every other (i, j) (the diagonal, pairs not listed). Gradients flow to queries, keys and filters.
// CPU tensors of one floating-point dtype; the two kinds run on two intra-op threads when there are.

#include <ATen/Parallel.h>
#include <torch/torch.h>

#include <vector>

#include "SO3LRKernels.h"
#include "SO3LRPairs.h"
#include "Vectorize.h"

using at::Tensor;

namespace {

struct Shapes {
    int64_t atoms, pairs, features, heads, headSize;
};

Shapes checkInputs(const Tensor& queries, const Tensor& keys, const Tensor& filters, const Tensor& first,
                   const Tensor& second, int64_t heads) {
    TORCH_CHECK(queries.device().is_cpu() && keys.device().is_cpu() && filters.device().is_cpu(),
                "so3lr_attention: CPU tensors only");
    TORCH_CHECK(queries.dim() == 3 && queries.size(0) == 2 && keys.sizes() == queries.sizes() && filters.dim() == 3 &&
                    filters.size(0) == 2 && filters.size(2) == queries.size(2),
                "so3lr_attention: queries and keys must be [2, n, F], filters [2, P, F]");
    TORCH_CHECK(keys.scalar_type() == queries.scalar_type() && filters.scalar_type() == queries.scalar_type(),
                "so3lr_attention: queries, keys and filters must have the same dtype");
    TORCH_CHECK(first.scalar_type() == torch::kInt64 && second.scalar_type() == torch::kInt64 && first.dim() == 1 &&
                    second.sizes() == first.sizes() && first.size(0) <= filters.size(1),
                "so3lr_attention: first and second must be int64 [K] with K <= P");
    TORCH_CHECK(heads > 0 && queries.size(2) % heads == 0, "so3lr_attention: F must be a multiple of heads");
    const int64_t n = queries.size(1);
    NNPPlugin::so3lr::checkDistinctPairs(first, second, n, "so3lr_attention");
    return {n, first.size(0), queries.size(2), heads, queries.size(2) / heads};
}

// One head of one pair both ways (features begin to end): forward = sum_d qa kb f, reverse = sum_d qb ka f.
// Outside the dispatch macro, where the SIMD pragma works (its lanes sum in a different order).
template <typename T>
NNP_INLINE void headProducts(const T* qa, const T* kb, const T* qb, const T* ka, const T* f, int64_t begin,
                             int64_t end, T& forward, T& reverse) {
    T sumForward = 0, sumReverse = 0;
#pragma omp simd reduction(+ : sumForward, sumReverse)
    for (int64_t d = begin; d < end; d++) {
        sumForward += qa[d] * kb[d] * f[d];
        sumReverse += qb[d] * ka[d] * f[d];
    }
    forward = sumForward;
    reverse = sumReverse;
}

// The gradients of one head of one pair from those of its two coefficients (forward, reverse); the rows a and b
// differ (checked), so the four accumulated rows and gf do not overlap.
template <typename T>
NNP_INLINE void headGradients(T forward, T reverse, const T* qa, const T* kb, const T* qb, const T* ka, const T* f,
                              T* gf, T* gqa, T* gkb, T* gqb, T* gka, int64_t begin, int64_t end) {
#pragma omp simd
    for (int64_t d = begin; d < end; d++) {
        gf[d] = forward * qa[d] * kb[d] + reverse * qb[d] * ka[d];
        const T ff = forward * f[d], rf = reverse * f[d];
        gqa[d] += ff * kb[d];
        gkb[d] += ff * qa[d];
        gqb[d] += rf * ka[d];
        gka[d] += rf * qb[d];
    }
}

// One kind's coefficients on the listed pairs (q, k: [n, F], f: [P, F] of that kind; out [n, n, heads] zeroed).
template <typename T>
NNP_INLINE void attentionKind(const T* q, const T* k, const T* f, const int64_t* pa, const int64_t* pb,
                              const Shapes& s, T* out) {
    const int64_t n = s.atoms, F = s.features, H = s.heads, D = s.headSize;
    for (int64_t p = 0; p < s.pairs; p++) {
        const int64_t a = pa[p], b = pb[p];
        const T *qa = q + a * F, *qb = q + b * F, *ka = k + a * F, *kb = k + b * F, *fp = f + p * F;
        for (int64_t h = 0; h < H; h++)
            headProducts(qa, kb, qb, ka, fp, h * D, (h + 1) * D, out[(a * n + b) * H + h], out[(b * n + a) * H + h]);
    }
}

// Its gradients from g [n, n, heads]: gq, gk [n, F] zeroed, the listed pairs' rows of gf [P, F] written.
template <typename T>
NNP_INLINE void attentionKindBackward(const T* q, const T* k, const T* f, const T* g, const int64_t* pa,
                                      const int64_t* pb, const Shapes& s, T* gq, T* gk, T* gf) {
    const int64_t n = s.atoms, F = s.features, H = s.heads, D = s.headSize;
    for (int64_t p = 0; p < s.pairs; p++) {
        const int64_t a = pa[p], b = pb[p];
        const T *qa = q + a * F, *qb = q + b * F, *ka = k + a * F, *kb = k + b * F, *fp = f + p * F;
        T *gqa = gq + a * F, *gqb = gq + b * F, *gka = gk + a * F, *gkb = gk + b * F;
        for (int64_t h = 0; h < H; h++)
            headGradients(g[(a * n + b) * H + h], g[(b * n + a) * H + h], qa, kb, qb, ka, fp, gf + p * F, gqa, gkb,
                          gqb, gka, h * D, (h + 1) * D);
    }
}

} // namespace

namespace NNPPlugin {
namespace so3lr {

Tensor attentionForward(const Tensor& queriesIn, const Tensor& keysIn, const Tensor& filtersIn, const Tensor& firstIn,
                        const Tensor& secondIn, int64_t heads) {
    const Shapes s = checkInputs(queriesIn, keysIn, filtersIn, firstIn, secondIn, heads);
    const Tensor queries = queriesIn.contiguous(), keys = keysIn.contiguous(), filters = filtersIn.contiguous();
    const Tensor first = firstIn.contiguous(), second = secondIn.contiguous();
    Tensor attention = at::zeros({2, s.atoms, s.atoms, s.heads}, queries.options());
    AT_DISPATCH_FLOATING_TYPES(queries.scalar_type(), "so3lr_attention", [&] {
        const scalar_t* q0 = queries.data_ptr<scalar_t>();
        const scalar_t* k0 = keys.data_ptr<scalar_t>();
        const scalar_t* f0 = filters.data_ptr<scalar_t>();
        scalar_t* out0 = attention.data_ptr<scalar_t>();
        const int64_t* pa = first.data_ptr<int64_t>();
        const int64_t* pb = second.data_ptr<int64_t>();
        const int64_t n = s.atoms, F = s.features, H = s.heads, P = filters.size(1);
        at::parallel_for(0, 2, 1, [&](int64_t begin, int64_t end) {
            for (int64_t c = begin; c < end; c++)
                NNPPlugin::runVectorized([&]() NNP_INLINE_LAMBDA {
                    attentionKind(q0 + c * n * F, k0 + c * n * F, f0 + c * P * F, pa, pb, s, out0 + c * n * n * H);
                });
        });
    });
    return attention;
}

// Gradients of queries, keys and filters from the gradient of the attention.
std::vector<Tensor> attentionBackward(const Tensor& gradIn, const Tensor& queries, const Tensor& keys,
                                      const Tensor& filters, const Tensor& first, const Tensor& second,
                                      int64_t heads) {
    const Shapes s = checkInputs(queries, keys, filters, first, second, heads);
    const Tensor grad = gradIn.contiguous();
    TORCH_CHECK(grad.dim() == 4 && grad.size(0) == 2 && grad.size(1) == s.atoms && grad.size(2) == s.atoms &&
                    grad.size(3) == s.heads && grad.scalar_type() == queries.scalar_type(),
                "so3lr_attention: gradient of the wrong shape or dtype");
    Tensor gradQueries = at::zeros({2, s.atoms, s.features}, queries.options());
    Tensor gradKeys = at::zeros({2, s.atoms, s.features}, queries.options());
    // Rows p < K are written whole below; only the others (not listed pairs) need zeros.
    Tensor gradFilters = at::empty(filters.sizes(), queries.options());
    gradFilters.narrow(1, s.pairs, filters.size(1) - s.pairs).zero_();
    AT_DISPATCH_FLOATING_TYPES(queries.scalar_type(), "so3lr_attention_backward", [&] {
        const scalar_t* q0 = queries.data_ptr<scalar_t>();
        const scalar_t* k0 = keys.data_ptr<scalar_t>();
        const scalar_t* f0 = filters.data_ptr<scalar_t>();
        const scalar_t* g0 = grad.data_ptr<scalar_t>();
        scalar_t* gq0 = gradQueries.data_ptr<scalar_t>();
        scalar_t* gk0 = gradKeys.data_ptr<scalar_t>();
        scalar_t* gf0 = gradFilters.data_ptr<scalar_t>();
        const int64_t* pa = first.data_ptr<int64_t>();
        const int64_t* pb = second.data_ptr<int64_t>();
        const int64_t n = s.atoms, F = s.features, H = s.heads, P = filters.size(1);
        at::parallel_for(0, 2, 1, [&](int64_t begin, int64_t end) {
            for (int64_t c = begin; c < end; c++)
                NNPPlugin::runVectorized([&]() NNP_INLINE_LAMBDA {
                    attentionKindBackward(q0 + c * n * F, k0 + c * n * F, f0 + c * P * F, g0 + c * n * n * H, pa, pb,
                                          s, gq0 + c * n * F, gk0 + c * n * F, gf0 + c * P * F);
                });
        });
    });
    return {gradQueries, gradKeys, gradFilters};
}

} // namespace so3lr
} // namespace NNPPlugin

namespace {

class AttentionFunction : public torch::autograd::Function<AttentionFunction> {
public:
    static Tensor forward(torch::autograd::AutogradContext* ctx, const Tensor& queries, const Tensor& keys,
                          const Tensor& filters, const Tensor& first, const Tensor& second, int64_t heads) {
        ctx->save_for_backward({queries, keys, filters, first, second});
        ctx->saved_data["heads"] = heads;
        at::AutoDispatchBelowADInplaceOrView belowAutograd;
        return NNPPlugin::so3lr::attentionForward(queries, keys, filters, first, second, heads);
    }

    static torch::autograd::tensor_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::tensor_list gradOutputs) {
        const auto saved = ctx->get_saved_variables();
        at::NoGradGuard noGrad;
        auto grads = NNPPlugin::so3lr::attentionBackward(gradOutputs[0], saved[0].contiguous(), saved[1].contiguous(),
                                                         saved[2].contiguous(), saved[3].contiguous(),
                                                         saved[4].contiguous(), ctx->saved_data["heads"].toInt());
        return {grads[0], grads[1], grads[2], Tensor(), Tensor(), Tensor()};
    }
};

Tensor so3lrAttention(const Tensor& queries, const Tensor& keys, const Tensor& filters, const Tensor& first,
                      const Tensor& second, int64_t heads) {
    return AttentionFunction::apply(queries, keys, filters, first, second, heads);
}

} // namespace

// so3lr_projections: a layer's queries, keys and values from the features, contiguous in the layouts the attention
// and update operators read. SO3LR's projections act on each head's block of features separately (per-head
// matrices), so one head's five D x D matrices side by side are its weights (a dense [F, 5 F] product would multiply
// by zeros in three quarters of the matrix):
//
//   so3lr_projections(features [n, F], weights [H, D, 5 D]) -> (queries [2, n, F], keys [2, n, F], values [n, F])
//
// with F = H D and projected[i, h, :] = features[i, h D:(h + 1) D] @ weights[h] [5 D]: queries[c, i, h D + e] =
// projected[i, h, c D + e], keys[c, i, h D + e] = projected[i, h, (2 + c) D + e], values[i, h D + e] =
// projected[i, h, 4 D + e]. Gradients flow to features; weights are the module's constants (no gradients). One
// batched product over the heads each way; the columns are moved by a loop.

namespace {

// The columns of projected [H, n, 5 D] in the outputs' layouts: queries[c, i, h D + e] = projected[h, i, c D + e],
// keys[c, i, h D + e] = projected[h, i, (2 + c) D + e], values[i, h D + e] = projected[h, i, 4 D + e]; and back (an
// undefined output's part zero).
template <typename T>
void splitProjections(const T* projected, int64_t n, int64_t H, int64_t D, T* queries, T* keys, T* values) {
    const int64_t F = H * D;
    for (int64_t h = 0; h < H; h++)
        for (int64_t i = 0; i < n; i++) {
            const T* row = projected + (h * n + i) * 5 * D;
            const int64_t column = i * F + h * D;
            for (int64_t e = 0; e < D; e++) {
                queries[column + e] = row[e];
                queries[n * F + column + e] = row[D + e];
                keys[column + e] = row[2 * D + e];
                keys[n * F + column + e] = row[3 * D + e];
                values[column + e] = row[4 * D + e];
            }
        }
}

template <typename T>
void joinProjections(const T* queries, const T* keys, const T* values, int64_t n, int64_t H, int64_t D,
                     T* projected) {
    const int64_t F = H * D;
    for (int64_t h = 0; h < H; h++)
        for (int64_t i = 0; i < n; i++) {
            T* row = projected + (h * n + i) * 5 * D;
            const int64_t column = i * F + h * D;
            for (int64_t e = 0; e < D; e++) {
                row[e] = queries ? queries[column + e] : T(0);
                row[D + e] = queries ? queries[n * F + column + e] : T(0);
                row[2 * D + e] = keys ? keys[column + e] : T(0);
                row[3 * D + e] = keys ? keys[n * F + column + e] : T(0);
                row[4 * D + e] = values ? values[column + e] : T(0);
            }
        }
}

} // namespace

namespace NNPPlugin {
namespace so3lr {

std::vector<Tensor> projectionsForward(const Tensor& featuresIn, const Tensor& weightsIn) {
    TORCH_CHECK(featuresIn.device().is_cpu() && weightsIn.device().is_cpu() &&
                    featuresIn.scalar_type() == weightsIn.scalar_type() && at::isFloatingType(featuresIn.scalar_type()),
                "so3lr_projections: CPU tensors of one floating-point dtype expected");
    TORCH_CHECK(featuresIn.dim() == 2 && weightsIn.dim() == 3 && weightsIn.size(2) == 5 * weightsIn.size(1) &&
                    featuresIn.size(1) == weightsIn.size(0) * weightsIn.size(1),
                "so3lr_projections: features must be [n, H D], weights [H, D, 5 D]");
    TORCH_CHECK(!weightsIn.requires_grad(),
                "so3lr_projections: gradients flow to the features only; the weights must not require gradients");
    const Tensor features = featuresIn.contiguous(), weights = weightsIn.contiguous();
    const int64_t n = features.size(0), F = features.size(1), H = weights.size(0), D = weights.size(1);
    Tensor queries = at::empty({2, n, F}, features.options()), keys = at::empty({2, n, F}, features.options());
    Tensor values = at::empty({n, F}, features.options());
    // One batched product over the heads: [H, n, D] @ [H, D, 5 D].
    const Tensor projected = at::bmm(features.view({n, H, D}).transpose(0, 1), weights);
    AT_DISPATCH_FLOATING_TYPES(features.scalar_type(), "so3lr_projections", [&] {
        splitProjections(projected.data_ptr<scalar_t>(), n, H, D, queries.data_ptr<scalar_t>(),
                         keys.data_ptr<scalar_t>(), values.data_ptr<scalar_t>());
    });
    return {queries, keys, values};
}

Tensor projectionsBackward(const Tensor& weights, const Tensor& gradQueries, const Tensor& gradKeys,
                           const Tensor& gradValues) {
    const int64_t H = weights.size(0), D = weights.size(1);
    int64_t n = 0;
    std::vector<Tensor> grads = {gradQueries, gradKeys, gradValues};
    for (Tensor& grad : grads)
        if (grad.defined()) {
            grad = grad.contiguous();
            n = grad.size(grad.dim() - 2);
        }
    Tensor gradProjected = at::empty({H, n, 5 * D}, weights.options());
    AT_DISPATCH_FLOATING_TYPES(weights.scalar_type(), "so3lr_projections_backward", [&] {
        const auto pointer = [](const Tensor& t) { return t.defined() ? t.data_ptr<scalar_t>() : nullptr; };
        joinProjections<scalar_t>(pointer(grads[0]), pointer(grads[1]), pointer(grads[2]), n, H, D,
                                  gradProjected.data_ptr<scalar_t>());
    });
    // [H, n, 5 D] @ [H, 5 D, D] -> [H, n, D], read as [n, H D].
    return at::bmm(gradProjected, weights.transpose(1, 2)).transpose(0, 1).reshape({n, H * D});
}

} // namespace so3lr
} // namespace NNPPlugin

namespace {

class ProjectionsFunction : public torch::autograd::Function<ProjectionsFunction> {
public:
    static torch::autograd::tensor_list forward(torch::autograd::AutogradContext* ctx, const Tensor& features,
                                                const Tensor& weights) {
        at::AutoDispatchBelowADInplaceOrView belowAutograd;
        const torch::autograd::tensor_list outputs = NNPPlugin::so3lr::projectionsForward(features, weights);
        ctx->save_for_backward({weights.contiguous()});
        return outputs;
    }

    static torch::autograd::tensor_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::tensor_list gradOutputs) {
        const Tensor weights = ctx->get_saved_variables()[0];
        at::NoGradGuard noGrad;
        return {NNPPlugin::so3lr::projectionsBackward(weights, gradOutputs[0], gradOutputs[1], gradOutputs[2]),
                Tensor()};
    }
};

std::tuple<Tensor, Tensor, Tensor> so3lrProjections(const Tensor& features, const Tensor& weights) {
    const auto outputs = ProjectionsFunction::apply(features, weights);
    return {outputs[0], outputs[1], outputs[2]};
}

} // namespace

TORCH_LIBRARY_FRAGMENT(openmm_nnp, m) {
    m.def("so3lr_attention(Tensor queries, Tensor keys, Tensor filters, Tensor first, Tensor second, int heads) "
          "-> Tensor",
          &so3lrAttention);
    m.def("so3lr_projections(Tensor features, Tensor weights) -> (Tensor, Tensor, Tensor)", &so3lrProjections);
}
