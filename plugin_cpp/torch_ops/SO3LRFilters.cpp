// openmm_nnp::so3lr_radial_filters (TorchScript operator, first-order autograd): the radial parts of all filter
// networks of an SO3LR module (openmm_nnp/models/so3lr.py), all layers and both filter kinds, in one operator with a
// hand-written backward pass. The module's PyTorch path computes the same with a tensordot, a SiLU, a split and per
// layer a reshape, a transpose and a batched product (and autograd differentiates them one by one).
//
//   so3lr_radial_filters(basis [P, B], first [B, S F], second [S, F, F], bias [S, F]) -> filters [S, P, F]
//   so3lr_radial_filters_grouped(basis, first, second, bias, group) -> S / group tensors [group, P, F], the same
//       filters in separate outputs (the module: group 2, one per layer; a split of one output would make autograd
//       join the groups' gradients in a copy)
//
// with S = 2 L networks (index 2 layer + kind), hidden = silu(basis @ first) read as [P, S, F], and, stacked,
//   filters[s, p, :] = hidden[p, s, :] @ second[s] + bias[s].
// (The module appends a constant 1 to the basis and the first layers' biases to `first`.) Gradients flow to basis
// only: first, second and bias are the module's constant weights and must not require gradients. CPU tensors of one
// floating-point dtype.

#include <ATen/Parallel.h>
#include <torch/torch.h>

#include <dlfcn.h>

#include <algorithm>
#include <type_traits>
#include <vector>

#include "SO3LRPairs.h"
#include "Vectorize.h"

using at::Tensor;

// Implementation: the pairs in blocks of about 64, the blocks split over the intra-op threads. Per block the first
// layer, the SiLU and its derivative in one pass, and the second layers into the block's output rows, on rows still
// in cache, with the process's BLAS gemm (sgemm_/dgemm_, which PyTorch's MKL or OpenBLAS exports; found at run
// time, ATen's product where missing) called directly: no dispatcher calls, no [S, P, F] intermediates, no copies of
// the biases. The forward pass keeps silu'(preactivation) [P, S F]; the backward pass runs on the same blocks:
// d hidden = grad @ second^T per network, times that derivative, then d basis = d hidden [block, S F] @ first^T in
// one product (no sum over the networks). The SiLU's exponential is our own vectorizable one (vectorExp).

namespace {

// Fortran BLAS gemm (column-major), 32-bit integers (LP64).
template <typename T>
using BlasGemm = void (*)(const char*, const char*, const int*, const int*, const int*, const T*, const T*,
                          const int*, const T*, const int*, const T*, T*, const int*);

template <typename T>
BlasGemm<T> blasGemm() {
    static const BlasGemm<T> gemm = reinterpret_cast<BlasGemm<T>>(
        dlsym(RTLD_DEFAULT, std::is_same<T, float>::value ? "sgemm_" : "dgemm_"));
    return gemm;
}

// Row-major C [m, n] = A [m, k] @ op(B) + beta C, with op(B) = B [k, n] (row stride ldb) or, transposed, B^T for
// B [n, k]: the column-major product C^T = op(B)^T A^T.
// Without those routines, ATen's product on views of the same memory (beta 0 or 1).
template <typename T>
void rowMajorGemm(bool transposeB, int64_t m, int64_t n, int64_t k, const T* a, int64_t lda, const T* b,
                  int64_t ldb, T beta, T* c, int64_t ldc) {
    if (const BlasGemm<T> gemm = blasGemm<T>()) {
        const int im = static_cast<int>(m), in = static_cast<int>(n), ik = static_cast<int>(k);
        const int ilda = static_cast<int>(lda), ildb = static_cast<int>(ldb), ildc = static_cast<int>(ldc);
        const T one = 1;
        gemm(transposeB ? "T" : "N", "N", &in, &im, &ik, &one, b, &ildb, a, &ilda, &beta, c, &ildc);
        return;
    }
    const auto options = at::TensorOptions().dtype(c10::CppTypeToScalarType<T>::value);
    const Tensor left = at::from_blob(const_cast<T*>(a), {m, k}, {lda, 1}, options);
    const Tensor right = transposeB ? at::from_blob(const_cast<T*>(b), {n, k}, {ldb, 1}, options).t()
                                    : at::from_blob(const_cast<T*>(b), {k, n}, {ldb, 1}, options);
    Tensor out = at::from_blob(c, {m, n}, {ldc, 1}, options);
    out.copy_(beta == T(0) ? at::mm(left, right) : at::addmm(out, left, right));
}

// exp(x) for x clamped to [low, high] (the normal range) in a form compilers vectorize: x = k ln 2 + r with
// |r| <= ln 2 / 2, exp(r) by its Taylor polynomial (degree 7 in float, 13 in double: truncation below 1e-8 and
// 1e-17 relative), 2^k from the exponent bits.
template <typename T>
struct ExpConstants;
template <>
struct ExpConstants<float> {
    using Bits = int32_t;
    static constexpr float low = -87.0f, high = 88.0f, shifter = 12582912.0f;  // 1.5 2^23
    static constexpr float ln2High = 0.693359375f, ln2Low = -2.12194440e-4f;
    static constexpr int degree = 7, mantissaBits = 23;
    static constexpr Bits bias = 127;
};
template <>
struct ExpConstants<double> {
    using Bits = int64_t;
    static constexpr double low = -708.0, high = 709.0, shifter = 6755399441055744.0;  // 1.5 2^52
    static constexpr double ln2High = 6.93147180369123816490e-01, ln2Low = 1.90821492927058770002e-10;
    static constexpr int degree = 13, mantissaBits = 52;
    static constexpr Bits bias = 1023;
};

// 1 / i! for i = 0..N, at compile time.
template <typename T, int N>
struct InverseFactorials {
    T value[N + 1];
    constexpr InverseFactorials() : value() {
        double factorial = 1;
        for (int i = 0; i <= N; i++) {
            factorial *= i > 1 ? i : 1;
            value[i] = T(1 / factorial);
        }
    }
};

template <typename T>
NNP_INLINE T vectorExp(T x) {
    using C = ExpConstants<T>;
    x = x < C::low ? C::low : (x > C::high ? C::high : x);
    const T kFloat = (x * T(1.4426950408889634) + C::shifter) - C::shifter;  // round(x / ln 2)
    const T r = (x - kFloat * C::ln2High) - kFloat * C::ln2Low;
    constexpr InverseFactorials<T, C::degree> coefficients;
    T polynomial = coefficients.value[C::degree];
#pragma GCC unroll 16
    for (int i = C::degree - 1; i >= 0; i--)  // Horner
        polynomial = polynomial * r + coefficients.value[i];
    const typename C::Bits bits = (static_cast<typename C::Bits>(kFloat) + C::bias) << C::mantissaBits;
    return polynomial * __builtin_bit_cast(T, bits);
}

// In place: row = silu(row), derivative = silu'(row) = sigmoid (1 + x (1 - sigmoid)).
template <typename T>
NNP_INLINE void siluWithDerivative(T* row, T* derivative, int64_t count) {
#pragma omp simd
    for (int64_t i = 0; i < count; i++) {
        const T x = row[i];
        const T sigmoid = T(1) / (T(1) + vectorExp(-x));
        row[i] = x * sigmoid;
        derivative[i] = sigmoid * (T(1) + x * (T(1) - sigmoid));
    }
}

template <typename T>
NNP_INLINE void multiplyInPlace(T* values, const T* factors, int64_t count) {
#pragma omp simd
    for (int64_t i = 0; i < count; i++)
        values[i] *= factors[i];
}

// Each thread's scratch block, kept between calls (no allocation and first-touch page faults per call).
template <typename T>
T* scratch(int64_t size) {
    thread_local std::vector<T> buffer;
    if (static_cast<int64_t>(buffer.size()) < size)
        buffer.resize(size);
    return buffer.data();
}

struct Blocks {
    int64_t count, size;
};

// About 64 pairs a block, as many blocks as a multiple of the threads.
Blocks pairBlocks(int64_t P) {
    const int64_t threads = std::max<int64_t>(1, at::get_num_threads());
    int64_t count = std::max<int64_t>(1, (P + 63) / 64);
    count = (count + threads - 1) / threads * threads;
    const int64_t size = std::max<int64_t>(1, (P + count - 1) / count);
    return {(P + size - 1) / size, size};
}

// body(p0, rows, scratch) for each block of pairs [p0, p0 + rows), blocks split over the threads; scratch: the
// thread's [rows, width] block.
template <typename T, typename Body>
void forEachBlock(int64_t P, int64_t width, const Body& body) {
    const Blocks blocks = pairBlocks(P);
    at::parallel_for(0, blocks.count, 1, [&](int64_t begin, int64_t end) {
        T* buffer = scratch<T>(blocks.size * width);
        for (int64_t block = begin; block < end; block++)
            body(block * blocks.size, std::min(blocks.size, P - block * blocks.size), buffer);
    });
}

template <typename T>
void blockedForward(const T* basis, const T* first, const T* second, const T* bias, int64_t P, int64_t B, int64_t S,
                    int64_t F, int64_t group, const std::vector<T*>& outputs, T* derivative) {
    const int64_t width = S * F;
    forEachBlock<T>(P, width, [&](int64_t p0, int64_t rows, T* hidden) {
        rowMajorGemm<T>(false, rows, width, B, basis + p0 * B, B, first, width, T(0), hidden, width);
        NNPPlugin::runVectorized([&]() NNP_INLINE_LAMBDA {
            siluWithDerivative(hidden, derivative + p0 * width, rows * width);
        });
        for (int64_t s = 0; s < S; s++) {
            T* out = outputs[s / group] + ((s % group) * P + p0) * F;
            for (int64_t p = 0; p < rows; p++)
                std::copy(bias + s * F, bias + (s + 1) * F, out + p * F);
            rowMajorGemm<T>(false, rows, F, F, hidden + s * F, width, second + s * F * F, F, T(1), out, F);
        }
    });
}

template <typename T>
void blockedBackward(const std::vector<const T*>& grads, const T* derivative, const T* first, const T* second,
                     int64_t P, int64_t B, int64_t S, int64_t F, int64_t group, T* gradBasis) {
    const int64_t width = S * F;
    forEachBlock<T>(P, width, [&](int64_t p0, int64_t rows, T* gradHidden) {
        for (int64_t s = 0; s < S; s++) {
            const T* grad = grads[s / group];
            if (grad == nullptr) {
                for (int64_t p = 0; p < rows; p++)
                    std::fill(gradHidden + p * width + s * F, gradHidden + p * width + (s + 1) * F, T(0));
                continue;
            }
            rowMajorGemm<T>(true, rows, F, F, grad + ((s % group) * P + p0) * F, F, second + s * F * F, F, T(0),
                            gradHidden + s * F, width);
        }
        NNPPlugin::runVectorized([&]() NNP_INLINE_LAMBDA {
            multiplyInPlace(gradHidden, derivative + p0 * width, rows * width);
        });
        rowMajorGemm<T>(true, rows, B, width, gradHidden, width, first, width, T(0), gradBasis + p0 * B, B);
    });
}

} // namespace

namespace {

void checkInputs(const Tensor& basis, const Tensor& first, const Tensor& second, const Tensor& bias) {
    TORCH_CHECK(basis.device().is_cpu() && first.device().is_cpu() && second.device().is_cpu() &&
                    bias.device().is_cpu(),
                "so3lr_radial_filters: CPU tensors only");
    TORCH_CHECK(basis.dim() == 2 && first.dim() == 2 && second.dim() == 3 && bias.dim() == 2 &&
                    first.size(0) == basis.size(1) && second.size(1) == second.size(2) &&
                    first.size(1) == second.size(0) * second.size(1) && bias.size(0) == second.size(0) &&
                    bias.size(1) == second.size(1),
                "so3lr_radial_filters: basis must be [P, B], first [B, S F], second [S, F, F], bias [S, F]");
    TORCH_CHECK(first.scalar_type() == basis.scalar_type() && second.scalar_type() == basis.scalar_type() &&
                    bias.scalar_type() == basis.scalar_type() && at::isFloatingType(basis.scalar_type()),
                "so3lr_radial_filters: all tensors must have the same floating-point dtype");
    TORCH_CHECK(!first.requires_grad() && !second.requires_grad() && !bias.requires_grad(),
                "so3lr_radial_filters: gradients flow to the basis only; the weights must not require gradients");
}

class RadialFiltersFunction : public torch::autograd::Function<RadialFiltersFunction> {
public:
    static torch::autograd::tensor_list forward(torch::autograd::AutogradContext* ctx, const Tensor& basis,
                                                const Tensor& first, const Tensor& second, const Tensor& bias,
                                                int64_t group) {
        checkInputs(basis, first, second, bias);
        TORCH_CHECK(group > 0 && second.size(0) % group == 0,
                    "so3lr_radial_filters: group must divide the number of networks");
        at::AutoDispatchBelowADInplaceOrView belowAutograd;
        const int64_t P = basis.size(0), B = basis.size(1), S = second.size(0), F = second.size(1);
        ctx->saved_data["group"] = group;
        const Tensor basisC = basis.contiguous(), firstC = first.contiguous(), secondC = second.contiguous();
        const Tensor biasC = bias.contiguous();
        // One output per group of networks (the module's layers), each its own tensor: a split of one output
        // would make autograd join the groups' gradients in a copy.
        torch::autograd::tensor_list filters;
        for (int64_t s = 0; s < S; s += group)
            filters.push_back(at::empty({group, P, F}, basis.options()));
        Tensor derivative = at::empty({P, S * F}, basis.options());
        AT_DISPATCH_FLOATING_TYPES(basis.scalar_type(), "so3lr_radial_filters", [&] {
            std::vector<scalar_t*> outputs;
            for (const Tensor& t : filters)
                outputs.push_back(t.data_ptr<scalar_t>());
            blockedForward(basisC.data_ptr<scalar_t>(), firstC.data_ptr<scalar_t>(), secondC.data_ptr<scalar_t>(),
                           biasC.data_ptr<scalar_t>(), P, B, S, F, group, outputs, derivative.data_ptr<scalar_t>());
        });
        ctx->save_for_backward({derivative, firstC, secondC});
        return filters;
    }

    static torch::autograd::tensor_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::tensor_list gradOutputs) {
        const auto saved = ctx->get_saved_variables();
        at::NoGradGuard noGrad;
        const Tensor &derivative = saved[0], &first = saved[1], &second = saved[2];  // derivative: silu'(pre)
        const int64_t group = ctx->saved_data["group"].toInt();
        const int64_t P = derivative.size(0), B = first.size(0), S = second.size(0), F = second.size(1);
        std::vector<Tensor> grads;
        for (const Tensor& grad : gradOutputs)
            grads.push_back(grad.defined() ? grad.contiguous() : grad);
        Tensor gradBasis = at::empty({P, B}, derivative.options());
        AT_DISPATCH_FLOATING_TYPES(derivative.scalar_type(), "so3lr_radial_filters_backward", [&] {
            std::vector<const scalar_t*> pointers;
            for (const Tensor& grad : grads)
                pointers.push_back(grad.defined() ? grad.data_ptr<scalar_t>() : nullptr);
            blockedBackward(pointers, derivative.data_ptr<scalar_t>(), first.data_ptr<scalar_t>(),
                            second.data_ptr<scalar_t>(), P, B, S, F, group, gradBasis.data_ptr<scalar_t>());
        });
        return {gradBasis, Tensor(), Tensor(), Tensor(), Tensor()};
    }
};

Tensor so3lrRadialFilters(const Tensor& basis, const Tensor& first, const Tensor& second, const Tensor& bias) {
    return RadialFiltersFunction::apply(basis, first, second, bias, second.size(0))[0];
}

std::vector<Tensor> so3lrRadialFiltersGrouped(const Tensor& basis, const Tensor& first, const Tensor& second,
                                              const Tensor& bias, int64_t group) {
    return RadialFiltersFunction::apply(basis, first, second, bias, group);
}

} // namespace

TORCH_LIBRARY_FRAGMENT(openmm_nnp, m) {
    m.def("so3lr_radial_filters(Tensor basis, Tensor first, Tensor second, Tensor bias) -> Tensor",
          &so3lrRadialFilters);
    m.def("so3lr_radial_filters_grouped(Tensor basis, Tensor first, Tensor second, Tensor bias, int group) "
          "-> Tensor[]",
          &so3lrRadialFiltersGrouped);
}

// openmm_nnp::so3lr_ev_filters (first-order autograd): one layer's filters of both kinds, the radial parts (from
// so3lr_radial_filters or the PyTorch path) plus the parts from the invariants of the ev-feature differences:
//
//   so3lr_ev_filters(radial [2, P, F], ev [n, C], first [P], second [P], contract [C, I], evFirst [I + 1, 2 E],
//                    evSecond [2, E, F]) -> filters [2, P, F]
//
//   difference = ev[second] - ev[first]          [P, C]
//   hidden = silu([(difference^2) @ contract, 1] @ evFirst)   [P, 2 E] (the last row of evFirst: the biases)
//   filters[c] = radial[c] + hidden[:, c E:(c + 1) E] @ evSecond[c]
//
// The gathers, the invariants and the first layer are one loop over the pairs each way (pairs of distinct atoms
// 0 <= a, b < n, checked), the second layer one batched product. Gradients flow to radial and ev; contract, evFirst
// and evSecond are constant weights (no gradients).

namespace {

void checkEvInputs(const Tensor& radial, const Tensor& ev, const Tensor& first, const Tensor& second,
                   const Tensor& contract, const Tensor& evFirst, const Tensor& evSecond) {
    for (const Tensor* t : {&radial, &ev, &first, &second, &contract, &evFirst, &evSecond})
        TORCH_CHECK(t->device().is_cpu(), "so3lr_ev_filters: CPU tensors only");
    TORCH_CHECK(radial.dim() == 3 && radial.size(0) == 2 && ev.dim() == 2 && contract.dim() == 2 &&
                    contract.size(0) == ev.size(1) && evFirst.dim() == 2 && evFirst.size(0) == contract.size(1) + 1 &&
                    evSecond.dim() == 3 && evSecond.size(0) == 2 && evFirst.size(1) == 2 * evSecond.size(1) &&
                    evSecond.size(2) == radial.size(2),
                "so3lr_ev_filters: radial [2, P, F], ev [n, C], contract [C, I], evFirst [I + 1, 2 E], "
                "evSecond [2, E, F] expected");
    TORCH_CHECK(first.scalar_type() == torch::kInt64 && second.scalar_type() == torch::kInt64 && first.dim() == 1 &&
                    second.sizes() == first.sizes() && first.size(0) == radial.size(1),
                "so3lr_ev_filters: first and second must be int64 [P]");
    for (const Tensor* t : {&ev, &contract, &evFirst, &evSecond})
        TORCH_CHECK(t->scalar_type() == radial.scalar_type(), "so3lr_ev_filters: tensors of one dtype expected");
    TORCH_CHECK(at::isFloatingType(radial.scalar_type()), "so3lr_ev_filters: floating-point tensors expected");
    TORCH_CHECK(!contract.requires_grad() && !evFirst.requires_grad() && !evSecond.requires_grad(),
                "so3lr_ev_filters: gradients flow to radial and ev only; the weights must not require gradients");
}

// The ev-invariant MLP's preactivations of the listed pairs, [2, P, E] (kind-major, so that one batched product
// reads each kind's block): pre[c, p, :] = [(difference^2) @ contract, 1] @ evFirst[:, c E:(c + 1) E], one loop
// over the pairs instead of two gathers, a subtraction, a square and two products.
template <typename T>
NNP_INLINE void evPreactivations(const T* ev, const int64_t* first, const int64_t* second, const T* contract,
                                   const T* evFirst, int64_t P, int64_t C, int64_t I, int64_t E, T* pre) {
    std::vector<T> invariants(I);
    for (int64_t p = 0; p < P; p++) {
        const T* ea = ev + first[p] * C;
        const T* eb = ev + second[p] * C;
        for (int64_t i = 0; i < I; i++)
            invariants[i] = 0;
        for (int64_t c = 0; c < C; c++) {
            const T d = eb[c] - ea[c];
            const T d2 = d * d;
            for (int64_t i = 0; i < I; i++)
                invariants[i] += d2 * contract[c * I + i];
        }
        for (int64_t kind = 0; kind < 2; kind++) {
            T* out = pre + (kind * P + p) * E;
            const T* bias = evFirst + I * 2 * E + kind * E;
            for (int64_t e = 0; e < E; e++)
                out[e] = bias[e];
            for (int64_t i = 0; i < I; i++) {
                const T v = invariants[i];
                const T* w = evFirst + i * 2 * E + kind * E;
#pragma omp simd
                for (int64_t e = 0; e < E; e++)
                    out[e] += v * w[e];
            }
        }
    }
}

// d ev from d preactivation [2, P, E]: d invariants = d pre @ evFirst[:I]^T, d difference = 2 difference
// (d invariants @ contract^T), added to row second[p] and subtracted from row first[p] of gradEv (zeroed).
template <typename T>
NNP_INLINE void evPreactivationsBackward(const T* gradPre, const T* ev, const int64_t* first, const int64_t* second,
                                           const T* contract, const T* evFirst, int64_t P, int64_t C, int64_t I,
                                           int64_t E, T* gradEv) {
    std::vector<T> gradInvariants(I);
    for (int64_t p = 0; p < P; p++) {
        for (int64_t i = 0; i < I; i++) {
            T sum = 0;
            for (int64_t kind = 0; kind < 2; kind++) {
                const T* g = gradPre + (kind * P + p) * E;
                const T* w = evFirst + i * 2 * E + kind * E;
#pragma omp simd reduction(+ : sum)
                for (int64_t e = 0; e < E; e++)
                    sum += g[e] * w[e];
            }
            gradInvariants[i] = sum;
        }
        const T* ea = ev + first[p] * C;
        const T* eb = ev + second[p] * C;
        T* ga = gradEv + first[p] * C;
        T* gb = gradEv + second[p] * C;
        for (int64_t c = 0; c < C; c++) {
            T sum = 0;
            for (int64_t i = 0; i < I; i++)
                sum += gradInvariants[i] * contract[c * I + i];
            const T g = 2 * (eb[c] - ea[c]) * sum;
            gb[c] += g;
            ga[c] -= g;
        }
    }
}

class EvFiltersFunction : public torch::autograd::Function<EvFiltersFunction> {
public:
    static Tensor forward(torch::autograd::AutogradContext* ctx, const Tensor& radial, const Tensor& evIn,
                          const Tensor& firstIn, const Tensor& secondIn, const Tensor& contractIn,
                          const Tensor& evFirstIn, const Tensor& evSecond) {
        checkEvInputs(radial, evIn, firstIn, secondIn, contractIn, evFirstIn, evSecond);
        NNPPlugin::so3lr::checkDistinctPairs(firstIn, secondIn, evIn.size(0), "so3lr_ev_filters");
        at::AutoDispatchBelowADInplaceOrView belowAutograd;
        const Tensor ev = evIn.contiguous(), first = firstIn.contiguous(), second = secondIn.contiguous();
        const Tensor contract = contractIn.contiguous(), evFirst = evFirstIn.contiguous();
        const int64_t P = first.size(0), C = ev.size(1), I = contract.size(1), E = evSecond.size(1);
        Tensor preactivation = at::empty({2, P, E}, radial.options());
        AT_DISPATCH_FLOATING_TYPES(radial.scalar_type(), "so3lr_ev_filters", [&] {
            NNPPlugin::runVectorized([&]() NNP_INLINE_LAMBDA {
                evPreactivations(ev.data_ptr<scalar_t>(), first.data_ptr<int64_t>(), second.data_ptr<int64_t>(),
                                 contract.data_ptr<scalar_t>(), evFirst.data_ptr<scalar_t>(), P, C, I, E,
                                 preactivation.data_ptr<scalar_t>());
            });
        });
        // filters[c] = radial[c] + silu(pre[c]) @ evSecond[c], one batched product for both kinds.
        const Tensor filters = at::baddbmm(radial, at::silu(preactivation), evSecond);
        ctx->save_for_backward({ev, preactivation, first, second, contract, evFirst, evSecond});
        return filters;
    }

    static torch::autograd::tensor_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::tensor_list gradOutputs) {
        const auto saved = ctx->get_saved_variables();
        at::NoGradGuard noGrad;
        const Tensor &ev = saved[0], &preactivation = saved[1], &first = saved[2], &second = saved[3];
        const Tensor &contract = saved[4], &evFirst = saved[5], &evSecond = saved[6];
        const int64_t P = first.size(0), C = ev.size(1), I = contract.size(1), E = evSecond.size(1);
        const Tensor grad = gradOutputs[0].contiguous();
        Tensor gradPre = at::bmm(grad, evSecond.transpose(1, 2));  // [2, P, E]
        at::silu_backward_out(gradPre, gradPre, preactivation);
        Tensor gradEv = at::zeros(ev.sizes(), ev.options());
        AT_DISPATCH_FLOATING_TYPES(ev.scalar_type(), "so3lr_ev_filters_backward", [&] {
            NNPPlugin::runVectorized([&]() NNP_INLINE_LAMBDA {
                evPreactivationsBackward(gradPre.data_ptr<scalar_t>(), ev.data_ptr<scalar_t>(),
                                         first.data_ptr<int64_t>(), second.data_ptr<int64_t>(),
                                         contract.data_ptr<scalar_t>(), evFirst.data_ptr<scalar_t>(), P, C, I, E,
                                         gradEv.data_ptr<scalar_t>());
            });
        });
        return {grad, gradEv, Tensor(), Tensor(), Tensor(), Tensor(), Tensor()};
    }
};

Tensor so3lrEvFilters(const Tensor& radial, const Tensor& ev, const Tensor& first, const Tensor& second,
                      const Tensor& contract, const Tensor& evFirst, const Tensor& evSecond) {
    return EvFiltersFunction::apply(radial, ev, first, second, contract, evFirst, evSecond);
}

} // namespace

TORCH_LIBRARY_FRAGMENT(openmm_nnp, m) {
    m.def("so3lr_ev_filters(Tensor radial, Tensor ev, Tensor first, Tensor second, Tensor contract, "
          "Tensor evFirst, Tensor evSecond) -> Tensor",
          &so3lrEvFilters);
}
