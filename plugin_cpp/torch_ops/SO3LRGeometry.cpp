// openmm_nnp::so3lr_pair_geometry (TorchScript operator, first-order autograd): the pair features an SO3LR module
// (openmm_nnp/models/so3lr.py, SO3LR._pair_geometry, which computes the same with PyTorch operations) needs from
// the pair vectors: the real spherical harmonics of the pairs within the short-range cutoff, spread over the dense
// n x n pairs, and the Bernstein radial basis of the listed pairs, with a hand-written backward pass. The PyTorch
// path takes about twenty-five operations forward (tensor powers, selections, concatenations, the basis in log
// space) and more backward; here one loop over the pairs and one matrix product each way.
//
//   so3lr_pair_geometry(vectors [n, n, 3], first [P], second [P], pairs, harmonicsMatrix [120, C], parity [C],
//                       logBinomial [R], k [R], kReverse [R], gamma, epsilon, smallest)
//       -> (harmonics [n, n, C], basis [P, R + 1])
//
// For listed pair p = (a, b) = (first[p], second[p]) with v = vectors[a, b], r = |v|, u = v / r:
//   harmonics[a, b] = [u, u⊗u, u⊗u⊗u, u⊗u⊗u⊗u] @ harmonicsMatrix (tensor powers flattened row-major), and
//   harmonics[b, a] = parity * harmonics[a, b], for p < pairs only; every other (i, j) is zero;
//   e = clamp(exp(-gamma r), epsilon, 1 - epsilon),
//   basis[p, k] = exp(logBinomial[k] + k[k] log e + kReverse[k] log(1 - e)), set to 0 below `smallest`;
//   basis[p, R] = 1 (with R = 0, empty constants, that column only: a module that reads no basis).
// Gradients flow to vectors (the listed pairs' entries); the other inputs are constants. CPU tensors of one
// floating-point dtype (first and second int64).

#include <torch/torch.h>

#include "SO3LRKernels.h"
#include "SO3LRPairs.h"

#include <algorithm>
#include <cmath>
#include <tuple>
#include <vector>

using at::Tensor;

namespace {

constexpr int64_t kMonomials = 3 + 9 + 27 + 81;

void checkInputs(const Tensor& vectors, const Tensor& first, const Tensor& second, int64_t pairs,
                 const Tensor& harmonicsMatrix, const Tensor& parity, const Tensor& logBinomial, const Tensor& k,
                 const Tensor& kReverse) {
    for (const Tensor* t : {&vectors, &harmonicsMatrix, &parity, &logBinomial, &k, &kReverse}) {
        TORCH_CHECK(t->device().is_cpu() && t->scalar_type() == vectors.scalar_type(),
                    "so3lr_pair_geometry: CPU tensors of one dtype expected");
    }
    TORCH_CHECK(at::isFloatingType(vectors.scalar_type()), "so3lr_pair_geometry: floating-point tensors expected");
    for (const Tensor* t : {&harmonicsMatrix, &parity, &logBinomial, &k, &kReverse})
        TORCH_CHECK(!t->requires_grad(),
                    "so3lr_pair_geometry: gradients flow to vectors only; the constants must not require gradients");
    TORCH_CHECK(vectors.dim() == 3 && vectors.size(1) == vectors.size(0) && vectors.size(2) == 3,
                "so3lr_pair_geometry: vectors must be [n, n, 3]");
    TORCH_CHECK(harmonicsMatrix.dim() == 2 && harmonicsMatrix.size(0) == kMonomials && parity.dim() == 1 &&
                    parity.size(0) == harmonicsMatrix.size(1),
                "so3lr_pair_geometry: harmonicsMatrix must be [120, C], parity [C]");
    TORCH_CHECK(logBinomial.dim() == 1 && k.sizes() == logBinomial.sizes() && kReverse.sizes() == logBinomial.sizes(),
                "so3lr_pair_geometry: logBinomial, k and kReverse must be [R]");
    TORCH_CHECK(first.device().is_cpu() && second.device().is_cpu() && first.scalar_type() == torch::kInt64 &&
                    second.scalar_type() == torch::kInt64 && first.dim() == 1 &&
                    second.sizes() == first.sizes() && pairs >= 0 && pairs <= first.size(0),
                "so3lr_pair_geometry: first and second must be int64 [P], 0 <= pairs <= P");
    const int64_t n = vectors.size(0);
    NNPPlugin::so3lr::checkDistinctPairs(first, second, n, "so3lr_pair_geometry");
}

// The tensor powers of u (degrees 1 to 4), flattened row-major as the module's: [u, u⊗u, u⊗u⊗u, u⊗u⊗u⊗u].
template <typename T>
void tensorPowers(const T* u, T* m) {
    T* u2 = m + 3;
    T* u3 = u2 + 9;
    T* u4 = u3 + 27;
    for (int i = 0; i < 3; i++)
        m[i] = u[i];
    for (int i = 0; i < 3; i++)
        for (int j = 0; j < 3; j++)
            u2[i * 3 + j] = u[i] * u[j];
    for (int i = 0; i < 9; i++)
        for (int j = 0; j < 3; j++)
            u3[i * 3 + j] = u2[i] * u[j];
    for (int i = 0; i < 27; i++)
        for (int j = 0; j < 3; j++)
            u4[i * 3 + j] = u3[i] * u[j];
}

// d loss / d u from d loss / d (tensor powers) g (overwritten: the chain runs from degree 4 down), powers m.
template <typename T>
void tensorPowersBackward(const T* u, const T* m, T* g, T* gu) {
    const T* u2 = m + 3;
    const T* u3 = u2 + 9;
    T* g2 = g + 3;
    T* g3 = g2 + 9;
    T* g4 = g3 + 27;
    for (int i = 0; i < 3; i++)
        gu[i] = g[i];
    for (int i = 0; i < 27; i++)
        for (int j = 0; j < 3; j++) {
            g3[i] += g4[i * 3 + j] * u[j];
            gu[j] += g4[i * 3 + j] * u3[i];
        }
    for (int i = 0; i < 9; i++)
        for (int j = 0; j < 3; j++) {
            g2[i] += g3[i * 3 + j] * u[j];
            gu[j] += g3[i * 3 + j] * u2[i];
        }
    for (int i = 0; i < 3; i++)
        for (int j = 0; j < 3; j++) {
            gu[i] += g2[i * 3 + j] * u[j];
            gu[j] += g2[i * 3 + j] * u[i];
        }
}

// The pair geometry of the listed pairs (first, second; the first `pairs` of them get harmonics): the dense
// harmonics [n, n, C], the basis [P, R + 1] and the tensor powers [pairs, 120] that the backward pass reads.
struct Geometry {
    Tensor harmonics, basis, powers;
};

Geometry geometryForward(const Tensor& vectors, const Tensor& first, const Tensor& second, int64_t pairs,
                         const Tensor& harmonicsMatrix, const Tensor& parity, const Tensor& logBinomial,
                         const Tensor& kk, const Tensor& kReverse, double gamma, double epsilon, double smallest) {
    const int64_t n = vectors.size(0), P = first.size(0), C = harmonicsMatrix.size(1), R = logBinomial.size(0);
    Tensor powers = at::empty({pairs, kMonomials}, vectors.options());
    Tensor basis = at::empty({P, R + 1}, vectors.options());
    AT_DISPATCH_FLOATING_TYPES(vectors.scalar_type(), "so3lr_pair_geometry", [&] {
        const scalar_t* v = vectors.data_ptr<scalar_t>();
        const int64_t* pa = first.data_ptr<int64_t>();
        const int64_t* pb = second.data_ptr<int64_t>();
        const scalar_t* lb = logBinomial.data_ptr<scalar_t>();
        const scalar_t* k = kk.data_ptr<scalar_t>();
        const scalar_t* kr = kReverse.data_ptr<scalar_t>();
        scalar_t* m = powers.data_ptr<scalar_t>();
        scalar_t* out = basis.data_ptr<scalar_t>();
        const scalar_t low = epsilon, high = 1.0 - epsilon, tiny = smallest, minusGamma = -gamma;
        for (int64_t p = 0; p < P; p++) {
            const scalar_t* vp = v + (pa[p] * n + pb[p]) * 3;
            const scalar_t r = std::sqrt(vp[0] * vp[0] + vp[1] * vp[1] + vp[2] * vp[2]);
            if (p < pairs) {
                const scalar_t u[3] = {vp[0] / r, vp[1] / r, vp[2] / r};
                tensorPowers(u, m + p * kMonomials);
            }
            scalar_t* row = out + p * (R + 1);
            row[R] = 1;
            if (R == 0)
                continue;  // no basis asked for (an SO3LR module with the filter table): the constant column only
            const scalar_t e = std::min(std::max(std::exp(minusGamma * r), low), high);
            const scalar_t logE = std::log(e), log1mE = std::log(scalar_t(1) - e);
            for (int64_t j = 0; j < R; j++) {
                const scalar_t value = std::exp(lb[j] + k[j] * logE + kr[j] * log1mE);
                row[j] = value >= tiny ? value : scalar_t(0);
            }
        }
    });
    const Tensor compact = at::mm(powers, harmonicsMatrix);  // [pairs, C]
    Tensor harmonics = at::zeros({n, n, C}, vectors.options());
    AT_DISPATCH_FLOATING_TYPES(vectors.scalar_type(), "so3lr_pair_geometry", [&] {
        const scalar_t* y = compact.data_ptr<scalar_t>();
        const scalar_t* s = parity.data_ptr<scalar_t>();
        const int64_t* pa = first.data_ptr<int64_t>();
        const int64_t* pb = second.data_ptr<int64_t>();
        scalar_t* out = harmonics.data_ptr<scalar_t>();
        for (int64_t p = 0; p < pairs; p++) {
            scalar_t* forward = out + (pa[p] * n + pb[p]) * C;
            scalar_t* reverse = out + (pb[p] * n + pa[p]) * C;
            for (int64_t c = 0; c < C; c++) {
                forward[c] = y[p * C + c];
                reverse[c] = s[c] * y[p * C + c];
            }
        }
    });
    return {harmonics, basis, powers};
}

// Adds d loss / d vectors from the gradients of the harmonics and the basis (either may be undefined) to gradVectors.
void geometryBackward(const Tensor& vectors, const Tensor& first, const Tensor& second, int64_t pairs,
                      const Tensor& powers, const Tensor& basis, const Tensor& harmonicsMatrix, const Tensor& parity,
                      const Tensor& kk, const Tensor& kReverse, double gamma, double epsilon,
                      const Tensor& gradHarmonicsIn, const Tensor& gradBasisIn, Tensor& gradVectors) {
    const int64_t n = vectors.size(0), P = first.size(0), C = harmonicsMatrix.size(1), R = kk.size(0);
    const Tensor gradHarmonics = gradHarmonicsIn.defined() ? gradHarmonicsIn.contiguous() : Tensor();
    const Tensor gradBasis = gradBasisIn.defined() ? gradBasisIn.contiguous() : Tensor();
    // d compact[p] = d harmonics[a, b] + parity * d harmonics[b, a]; d powers = d compact @ harmonicsMatrix^T.
    Tensor gradPowers;
    if (gradHarmonics.defined()) {
        Tensor gradCompact = at::empty({pairs, C}, vectors.options());
        AT_DISPATCH_FLOATING_TYPES(vectors.scalar_type(), "so3lr_pair_geometry_backward", [&] {
            const scalar_t* g = gradHarmonics.data_ptr<scalar_t>();
            const scalar_t* s = parity.data_ptr<scalar_t>();
            const int64_t* pa = first.data_ptr<int64_t>();
            const int64_t* pb = second.data_ptr<int64_t>();
            scalar_t* out = gradCompact.data_ptr<scalar_t>();
            for (int64_t p = 0; p < pairs; p++) {
                const scalar_t* forward = g + (pa[p] * n + pb[p]) * C;
                const scalar_t* reverse = g + (pb[p] * n + pa[p]) * C;
                for (int64_t c = 0; c < C; c++)
                    out[p * C + c] = forward[c] + s[c] * reverse[c];
            }
        });
        gradPowers = at::mm(gradCompact, harmonicsMatrix.t()).contiguous();
    }
    AT_DISPATCH_FLOATING_TYPES(vectors.scalar_type(), "so3lr_pair_geometry_backward", [&] {
        const scalar_t* v = vectors.data_ptr<scalar_t>();
        const int64_t* pa = first.data_ptr<int64_t>();
        const int64_t* pb = second.data_ptr<int64_t>();
        const scalar_t* m = powers.data_ptr<scalar_t>();
        const scalar_t* b = basis.data_ptr<scalar_t>();
        const scalar_t* k = kk.data_ptr<scalar_t>();
        const scalar_t* kr = kReverse.data_ptr<scalar_t>();
        scalar_t* gm = gradPowers.defined() ? gradPowers.data_ptr<scalar_t>() : nullptr;
        const scalar_t* gb = gradBasis.defined() ? gradBasis.data_ptr<scalar_t>() : nullptr;
        scalar_t* gv = gradVectors.data_ptr<scalar_t>();
        const scalar_t low = epsilon, high = 1.0 - epsilon, minusGamma = -gamma;
        for (int64_t p = 0; p < P; p++) {
            const int64_t offset = (pa[p] * n + pb[p]) * 3;
            const scalar_t* vp = v + offset;
            const scalar_t r = std::sqrt(vp[0] * vp[0] + vp[1] * vp[1] + vp[2] * vp[2]);
            scalar_t gradR = 0;  // d loss / d r, with u held fixed
            scalar_t gu[3] = {0, 0, 0};
            if (p < pairs && gm != nullptr) {
                const scalar_t u[3] = {vp[0] / r, vp[1] / r, vp[2] / r};
                tensorPowersBackward(u, m + p * kMonomials, gm + p * kMonomials, gu);
            }
            if (gb != nullptr && R > 0) {
                // basis = exp(...): d basis / d r = basis (k d log e / dr + kReverse d log(1 - e) / dr), with
                // de/dr = -gamma e where e is not clamped (zero where clamped); flushed entries are zero.
                const scalar_t unclamped = std::exp(minusGamma * r);
                if (unclamped >= low && unclamped <= high) {
                    const scalar_t e = unclamped, dE = minusGamma * e;
                    const scalar_t dLogE = dE / e, dLog1mE = -dE / (scalar_t(1) - e);
                    const scalar_t* row = b + p * (R + 1);
                    const scalar_t* grow = gb + p * (R + 1);
                    for (int64_t j = 0; j < R; j++)
                        gradR += grow[j] * row[j] * (k[j] * dLogE + kr[j] * dLog1mE);
                }
            }
            // u = v / r, r = |v|: d v = d u / r + (d r - (d u . v) / r^2) v / r.
            const scalar_t radial = (gradR - (gu[0] * vp[0] + gu[1] * vp[1] + gu[2] * vp[2]) / (r * r)) / r;
            for (int i = 0; i < 3; i++)
                gv[offset + i] += gu[i] / r + radial * vp[i];
        }
    });
}

class PairGeometryFunction : public torch::autograd::Function<PairGeometryFunction> {
public:
    static torch::autograd::tensor_list forward(torch::autograd::AutogradContext* ctx, const Tensor& vectorsIn,
                                                const Tensor& firstIn, const Tensor& secondIn, int64_t pairs,
                                                const Tensor& harmonicsMatrix, const Tensor& parityIn,
                                                const Tensor& logBinomialIn, const Tensor& kIn,
                                                const Tensor& kReverseIn, double gamma, double epsilon,
                                                double smallest) {
        checkInputs(vectorsIn, firstIn, secondIn, pairs, harmonicsMatrix, parityIn, logBinomialIn, kIn, kReverseIn);
        at::AutoDispatchBelowADInplaceOrView belowAutograd;
        const Tensor vectors = vectorsIn.contiguous(), first = firstIn.contiguous(), second = secondIn.contiguous();
        const Tensor parity = parityIn.contiguous(), logBinomial = logBinomialIn.contiguous();
        const Tensor kk = kIn.contiguous(), kReverse = kReverseIn.contiguous();
        const Geometry geometry = geometryForward(vectors, first, second, pairs, harmonicsMatrix, parity, logBinomial,
                                                  kk, kReverse, gamma, epsilon, smallest);
        ctx->save_for_backward(
            {vectors, first, second, geometry.powers, geometry.basis, harmonicsMatrix, parity, kk, kReverse});
        ctx->saved_data["pairs"] = pairs;
        ctx->saved_data["gamma"] = gamma;
        ctx->saved_data["epsilon"] = epsilon;
        return {geometry.harmonics, geometry.basis};
    }

    static torch::autograd::tensor_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::tensor_list gradOutputs) {
        const auto saved = ctx->get_saved_variables();
        at::NoGradGuard noGrad;
        const Tensor& vectors = saved[0];
        Tensor gradVectors = at::zeros(vectors.sizes(), vectors.options());
        geometryBackward(vectors, saved[1], saved[2], ctx->saved_data["pairs"].toInt(), saved[3], saved[4], saved[5],
                         saved[6], saved[7], saved[8], ctx->saved_data["gamma"].toDouble(),
                         ctx->saved_data["epsilon"].toDouble(), gradOutputs[0], gradOutputs[1], gradVectors);
        const Tensor none;
        return {gradVectors, none, none, none, none, none, none, none, none, none, none, none};
    }
};

std::tuple<Tensor, Tensor> so3lrPairGeometry(const Tensor& vectors, const Tensor& first, const Tensor& second,
                                             int64_t pairs, const Tensor& harmonicsMatrix, const Tensor& parity,
                                             const Tensor& logBinomial, const Tensor& k, const Tensor& kReverse,
                                             double gamma, double epsilon, double smallest) {
    const auto outputs = PairGeometryFunction::apply(vectors, first, second, pairs, harmonicsMatrix, parity,
                                                     logBinomial, k, kReverse, gamma, epsilon, smallest);
    return {outputs[0], outputs[1]};
}

} // namespace

// so3lr_front: positions to everything the network reads of the geometry, in one operator (the PyTorch path's pair
// vectors, distances, cutoff polynomial, pair listing and pair geometry: about forty operations forward and twenty
// autograd steps backward).
//
//   so3lr_front(positions [n, 3], shifts [n, n, 3] or None, pairFirst [M], pairSecond [M], cutoff,
//               harmonicsMatrix, parity, logBinomial, k, kReverse, gamma, epsilon, smallest)
//       -> (r [n, n], cutoffFunction [n, n], first [K + 1], second [K + 1], harmonics [n, n, C], basis [K + 1, R + 1])
//
// vectors[i, j] = positions[i] - positions[j] + shifts[i, j] (shifts: constants, the minimum-image shifts);
// r[i, j] = sqrt(|vectors[i, j]|^2 + (i == j)) (1 on the diagonal);
// cutoffFunction[i, j] = 1 - 6 s^5 + 15 s^4 - 10 s^3 with s = r / cutoff for i != j and r < cutoff, else 0;
// first, second: the K pairs (pairFirst[m], pairSecond[m]) with r < cutoff in the order of m, then a copy of pair
// m = 0; harmonics and basis: so3lr_pair_geometry of (vectors, first, second, K). Gradients flow to positions.

namespace NNPPlugin {
namespace so3lr {

FrontOutputs frontForward(const Tensor& positionsIn, const c10::optional<Tensor>& shiftsIn, const Tensor& pairFirstIn,
                          const Tensor& pairSecondIn, double cutoff, const Tensor& harmonicsMatrix,
                          const Tensor& parityIn, const Tensor& logBinomialIn, const Tensor& kIn,
                          const Tensor& kReverseIn, double gamma, double epsilon, double smallest, FrontState& state) {
    TORCH_CHECK(positionsIn.device().is_cpu() && positionsIn.dim() == 2 && positionsIn.size(1) == 3 &&
                    at::isFloatingType(positionsIn.scalar_type()),
                "so3lr_front: positions must be a floating-point CPU tensor [n, 3]");
    const int64_t n = positionsIn.size(0);
    TORCH_CHECK(pairFirstIn.dim() == 1 && pairFirstIn.size(0) > 0,
                "so3lr_front: pairFirst and pairSecond must list at least one pair");
    const Tensor positions = positionsIn.contiguous();
    Tensor vectors = (positions.unsqueeze(1) - positions.unsqueeze(0)).contiguous();
    if (shiftsIn.has_value() && shiftsIn->defined()) {
        TORCH_CHECK(shiftsIn->sizes() == vectors.sizes() && shiftsIn->scalar_type() == vectors.scalar_type() &&
                        shiftsIn->device().is_cpu() && !shiftsIn->requires_grad(),
                    "so3lr_front: shifts must be a constant CPU tensor [n, n, 3] of the positions' dtype");
        vectors.add_(*shiftsIn);
    }
    // The candidate pairs are checked like so3lr_pair_geometry's listed pairs.
    checkInputs(vectors, pairFirstIn, pairSecondIn, 0, harmonicsMatrix, parityIn, logBinomialIn, kIn, kReverseIn);
    const Tensor pairFirst = pairFirstIn.contiguous(), pairSecond = pairSecondIn.contiguous();
    const Tensor parity = parityIn.contiguous(), logBinomial = logBinomialIn.contiguous();
    const Tensor kk = kIn.contiguous(), kReverse = kReverseIn.contiguous();
    const int64_t M = pairFirst.size(0);
    Tensor r = at::empty({n, n}, vectors.options());
    Tensor cutoffFunction = at::empty({n, n}, vectors.options());
    std::vector<int64_t> listedFirst, listedSecond;
    listedFirst.reserve(M + 1);
    listedSecond.reserve(M + 1);
    AT_DISPATCH_FLOATING_TYPES(vectors.scalar_type(), "so3lr_front", [&] {
        const scalar_t* v = vectors.data_ptr<scalar_t>();
        scalar_t* pr = r.data_ptr<scalar_t>();
        scalar_t* pc = cutoffFunction.data_ptr<scalar_t>();
        const scalar_t rc = cutoff;
        for (int64_t i = 0; i < n; i++)
            for (int64_t j = 0; j < n; j++) {
                const scalar_t* vij = v + (i * n + j) * 3;
                const scalar_t squared = vij[0] * vij[0] + vij[1] * vij[1] + vij[2] * vij[2];
                const scalar_t rij = std::sqrt(i == j ? squared + scalar_t(1) : squared);
                pr[i * n + j] = rij;
                if (i != j && rij < rc) {
                    const scalar_t s = rij / rc, s3 = s * s * s;
                    pc[i * n + j] = scalar_t(1) - scalar_t(6) * s3 * s * s + scalar_t(15) * s3 * s -
                                    scalar_t(10) * s3;
                } else {
                    pc[i * n + j] = 0;
                }
            }
        const int64_t* pa = pairFirst.data_ptr<int64_t>();
        const int64_t* pb = pairSecond.data_ptr<int64_t>();
        for (int64_t m = 0; m < M; m++)
            if (pr[pa[m] * n + pb[m]] < rc) {
                listedFirst.push_back(pa[m]);
                listedSecond.push_back(pb[m]);
            }
        listedFirst.push_back(pa[0]);
        listedSecond.push_back(pb[0]);
    });
    const int64_t pairs = static_cast<int64_t>(listedFirst.size()) - 1;
    const auto indexOptions = pairFirst.options();
    Tensor first = at::empty({pairs + 1}, indexOptions), second = at::empty({pairs + 1}, indexOptions);
    std::copy(listedFirst.begin(), listedFirst.end(), first.data_ptr<int64_t>());
    std::copy(listedSecond.begin(), listedSecond.end(), second.data_ptr<int64_t>());
    const Geometry geometry = geometryForward(vectors, first, second, pairs, harmonicsMatrix, parity, logBinomial, kk,
                                              kReverse, gamma, epsilon, smallest);
    state = {vectors, r, first, second, geometry.powers, geometry.basis, harmonicsMatrix, parity, kk, kReverse,
             pairs, cutoff, gamma, epsilon};
    return {r, cutoffFunction, first, second, geometry.harmonics, geometry.basis};
}

Tensor frontBackward(const FrontState& state, const Tensor& gradRIn, const Tensor& gradCutoffIn,
                     const Tensor& gradHarmonics, const Tensor& gradBasis) {
    const Tensor &vectors = state.vectors, &r = state.r;
    const int64_t n = vectors.size(0);
    const double cutoff = state.cutoff;
    Tensor gradVectors = at::zeros(vectors.sizes(), vectors.options());
    geometryBackward(vectors, state.first, state.second, state.pairs, state.powers, state.basis,
                     state.harmonicsMatrix, state.parity, state.k, state.kReverse, state.gamma, state.epsilon,
                     gradHarmonics, gradBasis, gradVectors);
    const Tensor gradR = gradRIn.defined() ? gradRIn.contiguous() : Tensor();
    const Tensor gradCutoff = gradCutoffIn.defined() ? gradCutoffIn.contiguous() : Tensor();
    Tensor gradPositions = at::empty({n, 3}, vectors.options());
    AT_DISPATCH_FLOATING_TYPES(vectors.scalar_type(), "so3lr_front_backward", [&] {
        const scalar_t* v = vectors.data_ptr<scalar_t>();
        const scalar_t* pr = r.data_ptr<scalar_t>();
        const scalar_t* gr = gradR.defined() ? gradR.data_ptr<scalar_t>() : nullptr;
        const scalar_t* gc = gradCutoff.defined() ? gradCutoff.data_ptr<scalar_t>() : nullptr;
        scalar_t* gv = gradVectors.data_ptr<scalar_t>();
        scalar_t* gx = gradPositions.data_ptr<scalar_t>();
        const scalar_t rc = cutoff;
        // d r / d v = v / r off the diagonal (on it v = 0: no gradient); the cutoff polynomial's derivative
        // d/dr (1 - 6 s^5 + 15 s^4 - 10 s^3) = -30 s^2 (1 - s)^2 / cutoff.
        for (int64_t i = 0; i < n; i++)
            for (int64_t j = 0; j < n; j++) {
                if (i == j)
                    continue;
                const int64_t ij = i * n + j;
                const scalar_t rij = pr[ij];
                scalar_t gradDistance = gr != nullptr ? gr[ij] : scalar_t(0);
                if (gc != nullptr && rij < rc) {
                    const scalar_t s = rij / rc, t = scalar_t(1) - s;
                    gradDistance += gc[ij] * scalar_t(-30) * s * s * t * t / rc;
                }
                const scalar_t factor = gradDistance / rij;
                for (int d = 0; d < 3; d++)
                    gv[ij * 3 + d] += factor * v[ij * 3 + d];
            }
        // vectors[i, j] = positions[i] - positions[j] (+ constants).
        for (int64_t i = 0; i < n; i++)
            for (int d = 0; d < 3; d++) {
                scalar_t sum = 0;
                for (int64_t j = 0; j < n; j++)
                    sum += gv[(i * n + j) * 3 + d] - gv[(j * n + i) * 3 + d];
                gx[i * 3 + d] = sum;
            }
    });
    return gradPositions;
}

} // namespace so3lr
} // namespace NNPPlugin

namespace {

class FrontFunction : public torch::autograd::Function<FrontFunction> {
public:
    static torch::autograd::tensor_list forward(torch::autograd::AutogradContext* ctx, const Tensor& positions,
                                                const c10::optional<Tensor>& shifts, const Tensor& pairFirst,
                                                const Tensor& pairSecond, double cutoff,
                                                const Tensor& harmonicsMatrix, const Tensor& parity,
                                                const Tensor& logBinomial, const Tensor& k, const Tensor& kReverse,
                                                double gamma, double epsilon, double smallest) {
        at::AutoDispatchBelowADInplaceOrView belowAutograd;
        NNPPlugin::so3lr::FrontState s;
        const NNPPlugin::so3lr::FrontOutputs out =
            NNPPlugin::so3lr::frontForward(positions, shifts, pairFirst, pairSecond, cutoff, harmonicsMatrix, parity,
                                           logBinomial, k, kReverse, gamma, epsilon, smallest, s);
        ctx->mark_non_differentiable({out.first, out.second});
        ctx->save_for_backward({s.vectors, s.r, s.first, s.second, s.powers, s.basis, s.harmonicsMatrix, s.parity, s.k,
                                s.kReverse});
        ctx->saved_data["pairs"] = s.pairs;
        ctx->saved_data["cutoff"] = cutoff;
        ctx->saved_data["gamma"] = gamma;
        ctx->saved_data["epsilon"] = epsilon;
        return {out.r, out.cutoffFunction, out.first, out.second, out.harmonics, out.basis};
    }

    static torch::autograd::tensor_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::tensor_list gradOutputs) {
        const auto saved = ctx->get_saved_variables();
        at::NoGradGuard noGrad;
        const NNPPlugin::so3lr::FrontState s{saved[0], saved[1], saved[2], saved[3], saved[4], saved[5], saved[6],
                                             saved[7], saved[8], saved[9], ctx->saved_data["pairs"].toInt(),
                                             ctx->saved_data["cutoff"].toDouble(), ctx->saved_data["gamma"].toDouble(),
                                             ctx->saved_data["epsilon"].toDouble()};
        const Tensor gradPositions =
            NNPPlugin::so3lr::frontBackward(s, gradOutputs[0], gradOutputs[1], gradOutputs[4], gradOutputs[5]);
        const Tensor none;
        return {gradPositions, none, none, none, none, none, none, none, none, none, none, none, none};
    }
};

std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor, Tensor>
so3lrFront(const Tensor& positions, const c10::optional<Tensor>& shifts, const Tensor& pairFirst,
           const Tensor& pairSecond, double cutoff, const Tensor& harmonicsMatrix, const Tensor& parity,
           const Tensor& logBinomial, const Tensor& k, const Tensor& kReverse, double gamma, double epsilon,
           double smallest) {
    const auto outputs = FrontFunction::apply(positions, shifts, pairFirst, pairSecond, cutoff, harmonicsMatrix,
                                              parity, logBinomial, k, kReverse, gamma, epsilon, smallest);
    return {outputs[0], outputs[1], outputs[2], outputs[3], outputs[4], outputs[5]};
}

} // namespace

TORCH_LIBRARY_FRAGMENT(openmm_nnp, m) {
    m.def("so3lr_pair_geometry(Tensor vectors, Tensor first, Tensor second, int pairs, Tensor harmonicsMatrix, "
          "Tensor parity, Tensor logBinomial, Tensor k, Tensor kReverse, float gamma, float epsilon, "
          "float smallest) -> (Tensor, Tensor)",
          &so3lrPairGeometry);
    m.def("so3lr_front(Tensor positions, Tensor? shifts, Tensor pairFirst, Tensor pairSecond, float cutoff, "
          "Tensor harmonicsMatrix, Tensor parity, Tensor logBinomial, Tensor k, Tensor kReverse, float gamma, "
          "float epsilon, float smallest) -> (Tensor, Tensor, Tensor, Tensor, Tensor, Tensor)",
          &so3lrFront);
}
