// The atomic networks of an ANI ensemble (see ANINetworks.h), one network (element, member) at a time: its
// forward pass and, if asked, its backward pass right after it, so that the network's weights (0.2-1.4 MB in
// float32) are read from memory once per call and from the core's own L2 cache by the backward pass. A region's
// few atoms per element make every matrix product a thin one: the loops below are written for that shape (the
// forward pass broadcasts an atom's input over a row of weights, the backward pass takes dot products along the
// same rows), with GCC's vector extensions, compiled for the widest vector unit the CPU has (Vectorize.h).
// The arithmetic is that of the model's PyTorch path (openmm_nnp/models/ani/networks.py), the reference of the
// tests.

#include "ANINetworks.h"
#include "Vectorize.h"

// The vector types below live in inlined code only; GCC's note on their calling convention does not apply.
#pragma GCC diagnostic ignored "-Wpsabi"

#include <ATen/Parallel.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <tuple>
#include <type_traits>
#include <vector>

using at::Tensor;

namespace NNPPlugin {
namespace ani {

namespace {

constexpr double ALPHA = 0.1;  // CELU's alpha in ANI (TorchANI's TightCELU)

// 64 bytes of T (16 floats or 8 doubles) and the integers of the same width.
template <typename T>
struct Vec {
    static constexpr int LANES = 64 / sizeof(T);
    using Integer = std::conditional_t<sizeof(T) == 4, int32_t, int64_t>;
    typedef T Type __attribute__((vector_size(64)));
    typedef Integer IntType __attribute__((vector_size(64)));
};

template <typename T>
NNP_INLINE typename Vec<T>::Type load(const T* p) {
    typename Vec<T>::Type v;
    std::memcpy(&v, p, sizeof(v));
    return v;
}

template <typename T>
NNP_INLINE void store(T* p, typename Vec<T>::Type v) {
    std::memcpy(p, &v, sizeof(v));
}

// exp(x) for x <= 0, in arithmetic that runs lane by lane: exp(x) = 2^n exp(r) with n = round(x / ln 2) and
// |r| <= ln 2 / 2, exp(r) by its Taylor series (degree 7 in float, relative error 5e-9; 13 in double, 4e-18).
// x is clamped at -80 (exp(-80) ~ 1.8e-35 is still a normal float; CELU's value there is -alpha either way).
template <typename T>
NNP_INLINE typename Vec<T>::Type expNonPositive(typename Vec<T>::Type x) {
    using V = typename Vec<T>::Type;
    using VI = typename Vec<T>::IntType;
    constexpr bool single = sizeof(T) == 4;
    constexpr int mantissaBits = single ? 23 : 52, exponentBias = single ? 127 : 1023, degree = single ? 7 : 13;
    // Adding 1.5 * 2^mantissaBits rounds to an integer, which then sits in the low mantissa bits.
    const T shifter = T(1.5) * T(single ? 8388608.0 : 4503599627370496.0);
    // ln 2 split so that n * ln2High is exact.
    const T ln2High = single ? T(0.693145751953125) : T(6.93147180369123816490e-01);
    const T ln2Low = single ? T(1.428606820309417232e-06) : T(1.90821492927058770002e-10);
    x = x < T(-80) ? V{} + T(-80) : x;
    const V shifted = x * T(1.4426950408889634) + shifter;
    const V n = shifted - shifter;
    const V r = (x - n * ln2High) - n * ln2Low;
    V p = V{} + T(1);
    for (int k = degree; k >= 1; k--)
        p = p * r * (T(1) / T(k)) + T(1);
    // 2^n from n's bits: (n + bias) << mantissaBits.
    const VI exponent = ((VI)shifted - (VI)(V{} + shifter) + exponentBias) << mantissaBits;
    return p * (V)exponent;
}

// CELU of a preactivation: z for z > 0, alpha (exp(z / alpha) - 1) otherwise.
template <typename T>
NNP_INLINE typename Vec<T>::Type celu(typename Vec<T>::Type z) {
    using V = typename Vec<T>::Type;
    const V negative = z < T(0) ? z : V{};
    const V e = expNonPositive<T>(negative * T(1.0 / ALPHA));
    return z > T(0) ? z : (e - T(1)) * T(ALPHA);
}

template <typename T>
NNP_INLINE T celuScalar(T z) {
    using V = typename Vec<T>::Type;
    return celu<T>(V{} + z)[0];
}

// d celu(z)/dz from the activation h = celu(z): 1 for z > 0, exp(z / alpha) = 1 + h / alpha otherwise.
template <typename T>
NNP_INLINE T celuDerivative(T h) {
    return h > T(0) ? T(1) : T(1) + h * T(1.0 / ALPHA);
}

// A column stripe of weights (2 vectors wide, `rows` rows ld apart) to be asked from memory ahead of its use:
// after an MD step the weights are no longer in the caches, and the loops below would otherwise wait for each
// row in turn.
template <typename T>
struct Stripe {
    const T* w = nullptr;
    int64_t ld = 0, rows = 0;
};

// out[r][c] = celu(bias[c] + sum_k in[r][k] w[k][c]) for `Rows` atoms and `Columns` (a multiple of the lanes)
// outputs: each weight row is loaded once and multiplied by every atom's input, in registers. Meanwhile the
// rows of `prefetch` (if any) are requested into the L2 cache.
template <typename T, int Rows, int Columns>
NNP_INLINE void forwardTile(const T* in, int64_t inputs, const T* w, int64_t ldw, const T* bias, T* out,
                            int64_t outputs, Stripe<T> prefetch) {
    using V = typename Vec<T>::Type;
    constexpr int L = Vec<T>::LANES, C = Columns / L;
    V acc[Rows][C];
    for (int c = 0; c < C; c++) {
        const V b = load(bias + c * L);
        for (int r = 0; r < Rows; r++)
            acc[r][c] = b;
    }
    for (int64_t k = 0; k < inputs; k++) {
        V row[C];
        for (int c = 0; c < C; c++)
            row[c] = load(w + k * ldw + c * L);
        if (k < prefetch.rows) {
            __builtin_prefetch(prefetch.w + k * prefetch.ld, 0, 2);
            __builtin_prefetch(prefetch.w + k * prefetch.ld + L, 0, 2);
        }
        for (int r = 0; r < Rows; r++) {
            const T x = in[r * inputs + k];
            for (int c = 0; c < C; c++)
                acc[r][c] += x * row[c];
        }
    }
    for (int64_t k = inputs; k < prefetch.rows; k++) {
        __builtin_prefetch(prefetch.w + k * prefetch.ld, 0, 2);
        __builtin_prefetch(prefetch.w + k * prefetch.ld + L, 0, 2);
    }
    for (int r = 0; r < Rows; r++)
        for (int c = 0; c < C; c++)
            store(out + r * outputs + c * L, celu<T>(acc[r][c]));
}

// One layer forward: out [atoms, outputs] = celu(in [atoms, inputs] w + bias), w's rows ldw apart. Tiles of
// 4 atoms and 2 or 1 vectors of outputs; a column stripe of w (a few kB) serves every tile of atoms in turn,
// and the first tile asks for the next stripe. (Asking also for the next layer's or network's first stripe
// made no difference.)
template <typename T>
NNP_INLINE void forwardLayer(const T* in, int64_t atoms, int64_t inputs, const T* w, int64_t ldw, const T* bias,
                             int64_t outputs, T* out) {
    constexpr int L = Vec<T>::LANES, ROWS = 4;
    int64_t c = 0;
    auto columns = [&](auto width) NNP_INLINE_LAMBDA {
        constexpr int W = decltype(width)::value;
        for (; c + W <= outputs; c += W)
            for (int64_t r = 0; r < atoms; r += ROWS) {
                const T* x = in + r * inputs;
                T* y = out + r * outputs + c;
                Stripe<T> next;
                if (r == 0 && c + W < outputs)
                    next = Stripe<T>{w + c + W, ldw, inputs};
                switch (std::min<int64_t>(ROWS, atoms - r)) {
                case 4: forwardTile<T, 4, W>(x, inputs, w + c, ldw, bias + c, y, outputs, next); break;
                case 3: forwardTile<T, 3, W>(x, inputs, w + c, ldw, bias + c, y, outputs, next); break;
                case 2: forwardTile<T, 2, W>(x, inputs, w + c, ldw, bias + c, y, outputs, next); break;
                default: forwardTile<T, 1, W>(x, inputs, w + c, ldw, bias + c, y, outputs, next); break;
                }
            }
    };
    columns(std::integral_constant<int, 2 * L>());
    columns(std::integral_constant<int, L>());
    for (; c < outputs; c++)  // widths that are not a multiple of the lanes
        for (int64_t r = 0; r < atoms; r++) {
            T z = bias[c];
            for (int64_t k = 0; k < inputs; k++)
                z += in[r * inputs + k] * w[k * ldw + c];
            out[r * outputs + c] = celuScalar(z);
        }
}

// Adds pairs of neighbouring groups of `Half` lanes of (a, b): lane t of the result is the sum of the two halves
// of group t / Half, where a holds the first groups and b the next. Applied with Half = L/2, L/4, ..., 1 to L
// vectors, it leaves one vector whose lane q is the sum of vector q's lanes (in a fixed order).
template <typename T, int Half>
NNP_INLINE typename Vec<T>::Type pairSums(typename Vec<T>::Type a, typename Vec<T>::Type b) {
    using VI = typename Vec<T>::IntType;
    constexpr int L = Vec<T>::LANES;
#if defined(__GNUC__) && !defined(__clang__)
    VI low, high;
    for (int t = 0; t < L; t++) {
        low[t] = (t / Half) * 2 * Half + t % Half;
        high[t] = low[t] + Half;
    }
    return __builtin_shuffle(a, b, low) + __builtin_shuffle(a, b, high);
#else  // the same sums lane by lane (clang has no __builtin_shuffle with computed masks)
    typename Vec<T>::Type sums;
    for (int t = 0; t < L; t++) {
        const int low = (t / Half) * 2 * Half + t % Half, high = low + Half;
        sums[t] = (low < L ? a[low] : b[low - L]) + (high < L ? a[high] : b[high - L]);
    }
    return sums;
#endif
}

template <typename T, int Half>
NNP_INLINE void reduceLevel(typename Vec<T>::Type* v, int count) {
    for (int q = 0; q < count / 2; q++)
        v[q] = pairSums<T, Half>(v[2 * q], v[2 * q + 1]);
}

// Lane q of the result: the sum of v[q]'s lanes, for the L vectors v (overwritten).
template <typename T>
NNP_INLINE typename Vec<T>::Type laneSums(typename Vec<T>::Type* v) {
    constexpr int L = Vec<T>::LANES;
    reduceLevel<T, L / 2>(v, L);
    reduceLevel<T, L / 4>(v, L / 2);
    reduceLevel<T, L / 8>(v, L / 4);
    if constexpr (L == 16)
        reduceLevel<T, 1>(v, 2);
    return v[0];
}

// sums[r * K + k] = sum_n g[r][n] w[k][n] for `Rows` atoms and K = L / Rows weight rows: dot products along the
// rows of w, in vector lanes, reduced together at the end.
template <typename T, int Rows>
NNP_INLINE void backwardTile(const T* g, int64_t outputs, const T* w, int64_t ldw, int64_t weightRows, T* sums) {
    using V = typename Vec<T>::Type;
    constexpr int L = Vec<T>::LANES, K = L / Rows;
    V acc[L];
    for (int q = 0; q < L; q++)
        acc[q] = V{};
    const int64_t rows = std::min<int64_t>(K, weightRows);
    int64_t n = 0;
    for (; n + L <= outputs; n += L) {
        V wk[K];
        for (int k = 0; k < K; k++)
            wk[k] = k < rows ? load(w + k * ldw + n) : V{};
        for (int r = 0; r < Rows; r++) {
            const V gr = load(g + r * outputs + n);
            for (int k = 0; k < K; k++)
                acc[r * K + k] += gr * wk[k];
        }
    }
    const V total = laneSums<T>(acc);
    for (int q = 0; q < L; q++)
        sums[q] = total[q];
    for (; n < outputs; n++)  // widths that are not a multiple of the lanes
        for (int r = 0; r < Rows; r++)
            for (int64_t k = 0; k < rows; k++)
                sums[r * K + k] += g[r * outputs + n] * w[k * ldw + n];
}

// One layer backward: in [atoms, inputs] = (g [atoms, outputs] w^T) * celu'(activation) (activation [atoms,
// inputs], or none: factor 1); w [inputs, outputs], rows ldw apart. Blocks of L weight rows (a few kB, kept in
// the L1 cache) are taken against every tile of atoms in turn.
template <typename T>
NNP_INLINE void backwardLayer(const T* g, int64_t atoms, int64_t outputs, const T* w, int64_t ldw, int64_t inputs,
                              const T* activation, T* in) {
    constexpr int L = Vec<T>::LANES;
    T sums[L];
    for (int64_t block = 0; block < inputs; block += L)
        for (int64_t r0 = 0; r0 < atoms;) {
            const int rows = atoms - r0 >= 4 ? 4 : atoms - r0 >= 2 ? 2 : 1;
            const int weightRows = L / rows;  // per tile
            for (int64_t k0 = block; k0 < std::min<int64_t>(inputs, block + L); k0 += weightRows) {
                const T* gr = g + r0 * outputs;
                const T* wk = w + k0 * ldw;
                if (rows == 4)
                    backwardTile<T, 4>(gr, outputs, wk, ldw, inputs - k0, sums);
                else if (rows == 2)
                    backwardTile<T, 2>(gr, outputs, wk, ldw, inputs - k0, sums);
                else
                    backwardTile<T, 1>(gr, outputs, wk, ldw, inputs - k0, sums);
                for (int r = 0; r < rows; r++)
                    for (int64_t k = k0; k < std::min<int64_t>(inputs, k0 + weightRows); k++) {
                        const int64_t i = (r0 + r) * inputs + k;
                        const T value = sums[r * weightRows + (k - k0)];
                        in[i] = activation ? value * celuDerivative(activation[i]) : value;
                    }
            }
            r0 += rows;
        }
}

} // namespace

namespace {

// One element's networks: its AEV block and layer shapes; member m's weights are slices of the stacked tensors.
struct ElementParameters {
    Tensor atoms, features, weight1, bias1, weight2, bias2, weight3, bias3, weight4, bias4Sum;
    Tensor input;  // the element's block of the AEV [atoms, features]
    int64_t numAtoms() const { return atoms.numel(); }
    int64_t numFeatures() const { return features.numel(); }
    int64_t width1() const { return weight2.size(1); }
    int64_t width2() const { return weight2.size(2); }
    int64_t width3() const { return weight3.size(2); }
    int64_t scratchSize() const { return 2 * numAtoms() * (width1() + width2() + width3()); }
    // Member m's first layer. weight1 is [members, f, w1]; or, in models saved before 2026-11-30, [f, members w1]
    // (member m: columns [m w1, (m+1) w1)). bias1 is [members, 1, w1] or [members w1], the same numbers in memory.
    template <typename T>
    Stripe<T> firstLayer(int64_t m) const {
        const int64_t f = numFeatures(), w1 = width1();
        if (weight1.dim() == 3)
            return {weight1.data_ptr<T>() + m * f * w1, w1, f};
        return {weight1.data_ptr<T>() + m * w1, weight2.size(0) * w1, f};
    }
};

// Member m's network of element p: returns its energy (sum of the atomic outputs) and, if gradient is not null,
// writes d(energy * gradientScale)/d(input) [atoms, features] there. scratch: p.scratchSize() numbers.
template <typename T>
NNP_INLINE T evaluateNetwork(const ElementParameters& p, int64_t m, T gradientScale, T* scratch, T* gradient) {
    using V = typename Vec<T>::Type;
    constexpr int L = Vec<T>::LANES;
    const int64_t a = p.numAtoms(), f = p.numFeatures(), w1 = p.width1(), w2 = p.width2(), w3 = p.width3();
    const Stripe<T> first = p.firstLayer<T>(m);
    const T* weight1 = first.w;
    const int64_t ldw1 = first.ld;
    const T* bias1 = p.bias1.data_ptr<T>() + m * w1;
    const T* weight2 = p.weight2.data_ptr<T>() + m * w1 * w2;
    const T* bias2 = p.bias2.data_ptr<T>() + m * w2;
    const T* weight3 = p.weight3.data_ptr<T>() + m * w2 * w3;
    const T* bias3 = p.bias3.data_ptr<T>() + m * w3;
    const T* weight4 = p.weight4.data_ptr<T>() + m * w3;
    T* h1 = scratch;
    T* h2 = h1 + a * w1;
    T* h3 = h2 + a * w2;
    T* g3 = h3 + a * w3;
    T* g2 = g3 + a * w3;
    T* g1 = g2 + a * w2;
    forwardLayer(p.input.data_ptr<T>(), a, f, weight1, ldw1, bias1, w1, h1);
    forwardLayer(h1, a, w1, weight2, w2, bias2, w2, h2);
    forwardLayer(h2, a, w2, weight3, w3, bias3, w3, h3);
    // The output layer summed over atoms (its bias is added by the caller).
    V acc = V{};
    T energy = 0;
    for (int64_t r = 0; r < a; r++) {
        int64_t j = 0;
        for (; j + L <= w3; j += L)
            acc += load(h3 + r * w3 + j) * load(weight4 + j);
        for (; j < w3; j++)
            energy += h3[r * w3 + j] * weight4[j];
    }
    for (int l = 0; l < L; l++)
        energy += acc[l];
    if (gradient) {
        for (int64_t r = 0; r < a; r++)
            for (int64_t j = 0; j < w3; j++)
                g3[r * w3 + j] = weight4[j] * gradientScale * celuDerivative(h3[r * w3 + j]);
        backwardLayer(g3, a, w3, weight3, w3, w2, h2, g2);
        backwardLayer(g2, a, w2, weight2, w2, w1, h1, g1);
        backwardLayer(g1, a, w1, weight1, ldw1, f, static_cast<const T*>(nullptr), gradient);
    }
    return energy;
}

// The element's block of the AEV, [atoms, features] (rows and columns picked by index), and the reverse: writing
// such a block into a zero-initialised AEV gradient.
void checkBlockIndices(const Tensor& atoms, const Tensor& features, const Tensor& aev) {
    TORCH_CHECK(atoms.scalar_type() == torch::kInt64 && features.scalar_type() == torch::kInt64 && atoms.dim() == 1 &&
                    features.dim() == 1 && atoms.is_contiguous() && features.is_contiguous(),
                "ANIFeatures.energies: atom and feature indices must be contiguous 1-dimensional int64 tensors");
    TORCH_CHECK(atoms.numel() > 0, "ANIFeatures.energies: an element without atoms");
    const int64_t* atom = atoms.data_ptr<int64_t>();
    const int64_t* feature = features.data_ptr<int64_t>();
    for (int64_t i = 0; i < atoms.numel(); i++)
        TORCH_CHECK(atom[i] >= 0 && atom[i] < aev.size(0), "ANIFeatures.energies: atom index ", atom[i], " out of range");
    for (int64_t j = 0; j < features.numel(); j++)
        TORCH_CHECK(feature[j] >= 0 && feature[j] < aev.size(1), "ANIFeatures.energies: feature index ", feature[j],
                    " out of range");
}

Tensor gatherBlock(const Tensor& aev, const Tensor& atoms, const Tensor& features) {
    Tensor block = at::empty({atoms.numel(), features.numel()}, aev.options());
    AT_DISPATCH_FLOATING_TYPES(aev.scalar_type(), "ani_gather_block", [&] {
        const auto source = aev.accessor<scalar_t, 2>();
        auto target = block.accessor<scalar_t, 2>();
        const int64_t* atom = atoms.data_ptr<int64_t>();
        const int64_t* feature = features.data_ptr<int64_t>();
        for (int64_t i = 0; i < atoms.numel(); i++)
            for (int64_t j = 0; j < features.numel(); j++)
                target[i][j] = source[atom[i]][feature[j]];
    });
    return block;
}

template <typename T>
void scatterBlock(T* aevGradient, int64_t aevLength, const Tensor& atoms, const Tensor& features, const T* block) {
    const int64_t* atom = atoms.data_ptr<int64_t>();
    const int64_t* feature = features.data_ptr<int64_t>();
    const int64_t f = features.numel();
    for (int64_t i = 0; i < atoms.numel(); i++)
        for (int64_t j = 0; j < f; j++)
            aevGradient[atom[i] * aevLength + feature[j]] = block[i * f + j];
}

} // namespace

std::tuple<Tensor, Tensor> evaluateNetworks(const Tensor& aevInput, at::TensorList parameters, bool needGradient) {
    TORCH_CHECK(aevInput.dim() == 2, "ANIFeatures.energies: aev must have shape [atoms, features]");
    TORCH_CHECK(!parameters.empty() && parameters.size() % PARAMETERS_PER_ELEMENT == 0,
                "ANIFeatures.energies: expected ", PARAMETERS_PER_ELEMENT, " parameter tensors per element, got ",
                parameters.size());
    at::NoGradGuard noGrad;
    const Tensor aev = aevInput.contiguous();
    const int64_t members = parameters[8].size(0);
    std::vector<ElementParameters> elements;
    for (size_t e = 0; e < parameters.size(); e += PARAMETERS_PER_ELEMENT) {
        const at::TensorList t = parameters.slice(e, PARAMETERS_PER_ELEMENT);
        ElementParameters p{t[0], t[1], t[2], t[3], t[4], t[5], t[6], t[7], t[8], t[9], Tensor()};
        const bool stackedFirstLayer = p.weight1.dim() == 3 && p.weight1.size(0) == members &&
                                       p.weight1.size(1) == p.features.size(0) && p.weight1.size(2) == p.width1();
        const bool sideBySideFirstLayer = p.weight1.dim() == 2 && p.weight1.size(0) == p.features.size(0) &&
                                          p.weight1.size(1) == members * p.width1();
        TORCH_CHECK(p.weight2.dim() == 3 && p.weight3.dim() == 3 && p.weight4.dim() == 2 &&
                        (stackedFirstLayer || sideBySideFirstLayer) && p.weight2.size(0) == members &&
                        p.bias1.numel() == members * p.width1() &&
                        p.bias2.numel() == members * p.width2() && p.weight3.size(0) == members &&
                        p.weight3.size(1) == p.width2() && p.bias3.numel() == members * p.width3() &&
                        p.weight4.size(0) == members && p.weight4.size(1) == p.width3() &&
                        p.bias4Sum.numel() == members,
                    "ANIFeatures.energies: inconsistent parameter shapes for element ", e / PARAMETERS_PER_ELEMENT);
        for (int i = 2; i < PARAMETERS_PER_ELEMENT; i++)
            TORCH_CHECK(t[i].scalar_type() == aev.scalar_type() && t[i].is_contiguous() && t[i].device().is_cpu(),
                        "ANIFeatures.energies: the networks' weights must be contiguous CPU tensors of the AEV's type");
        // The element's block of the AEV: its atoms' rows, the columns its networks read.
        checkBlockIndices(p.atoms, p.features, aev);
        p.input = gatherBlock(aev, p.atoms, p.features);
        elements.push_back(p);
    }
    const int64_t numElements = elements.size(), numNetworks = members * numElements;
    Tensor energies = at::zeros({members}, aev.options());
    Tensor aevGradient = needGradient ? at::zeros_like(aev) : at::empty({0}, aev.options());
    AT_DISPATCH_FLOATING_TYPES(aev.scalar_type(), "ani_networks", [&] {
        using T = scalar_t;
        // Each network's energy and input gradient in a place of its own, summed below in a fixed order: the
        // result does not depend on how the networks are shared among threads.
        std::vector<T> networkEnergies(numNetworks);
        std::vector<int64_t> gradientOffset(numNetworks + 1, 0);
        int64_t scratchSize = 0;
        for (int64_t q = 0; q < numNetworks; q++) {
            const ElementParameters& p = elements[q % numElements];
            gradientOffset[q + 1] = gradientOffset[q] + (needGradient ? p.numAtoms() * p.numFeatures() : 0);
            scratchSize = std::max(scratchSize, p.scratchSize());
        }
        std::vector<T> networkGradients(gradientOffset[numNetworks]);
        const T gradientScale = T(1) / T(members);  // of the members' mean energy
        // Networks in member-major order (member m, element e at m * elements + e), so that threads given
        // contiguous ranges get similar mixes of elements.
        at::parallel_for(0, numNetworks, 1, [&](int64_t begin, int64_t end) {
            std::vector<T> scratch(scratchSize);
            NNPPlugin::runVectorized([&]() NNP_INLINE_LAMBDA {
                for (int64_t q = begin; q < end; q++)
                    networkEnergies[q] =
                        evaluateNetwork<T>(elements[q % numElements], q / numElements, gradientScale, scratch.data(),
                                           needGradient ? networkGradients.data() + gradientOffset[q] : nullptr);
            });
        });
        T* energy = energies.data_ptr<T>();
        for (int64_t m = 0; m < members; m++)
            for (int64_t e = 0; e < numElements; e++)
                energy[m] += networkEnergies[m * numElements + e] + elements[e].bias4Sum.data_ptr<T>()[m];
        if (needGradient)
            for (int64_t e = 0; e < numElements; e++) {
                const ElementParameters& p = elements[e];
                std::vector<T> block(networkGradients.begin() + gradientOffset[e],
                                     networkGradients.begin() + gradientOffset[e + 1]);
                for (int64_t m = 1; m < members; m++) {
                    const T* g = networkGradients.data() + gradientOffset[m * numElements + e];
                    for (size_t i = 0; i < block.size(); i++)
                        block[i] += g[i];
                }
                // Elements own disjoint rows, so no position is written twice.
                scatterBlock(aevGradient.data_ptr<T>(), aev.size(1), p.atoms, p.features, block.data());
            }
    });
    return {energies, aevGradient};
}

} // namespace ani
} // namespace NNPPlugin
