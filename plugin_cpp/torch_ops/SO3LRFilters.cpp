// openmm_nnp::so3lr_radial_filters (TorchScript operator, first-order autograd): the radial parts of all filter
// networks of an SO3LR module (openmm_nnp/models/so3lr.py), all layers and both filter kinds, in one operator with a
// hand-written backward pass. The module's PyTorch path computes the same with a tensordot, a SiLU, a split and per
// layer a reshape, a transpose and a batched product; here the forward pass is two batched products and a SiLU on
// contiguous [S, P, F] blocks, the backward pass the same in reverse, without TorchScript's and autograd's
// per-operation overhead or the copies of transposed blocks.
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

#include <torch/torch.h>

#include <ATen/Parallel.h>

#include <cmath>
#include <mutex>
#include <vector>

#include "PartialSums.h"
#include "SO3LRKernels.h"
#include "SO3LRPairs.h"
#include "Vectorize.h"

using at::Tensor;

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
        // Batched products on contiguous [S, P, F] blocks (strided blocks of one [P, S F] product and per-network
        // products into them cost copies and run slower): preactivation[s] = basis @ first[:, s F:(s + 1) F].
        const Tensor firstBlocks = first.view({B, S, F}).transpose(0, 1);  // [S, B, F], a view
        const Tensor preactivation = at::bmm(basis.expand({S, P, B}), firstBlocks);
        const Tensor hidden = at::silu(preactivation);
        // One output per group of networks (the module's layers), each its own tensor: a split of one output
        // would make autograd join the groups' gradients in a copy.
        torch::autograd::tensor_list filters;
        for (int64_t s = 0; s < S; s += group)
            filters.push_back(at::baddbmm(bias.narrow(0, s, group).unsqueeze(1), hidden.narrow(0, s, group),
                                          second.narrow(0, s, group)));
        ctx->save_for_backward({preactivation, first, second});
        ctx->saved_data["group"] = group;
        return filters;
    }

    static torch::autograd::tensor_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::tensor_list gradOutputs) {
        const auto saved = ctx->get_saved_variables();
        at::NoGradGuard noGrad;
        const Tensor& preactivation = saved[0];
        const Tensor& first = saved[1];
        const Tensor& second = saved[2];
        const int64_t group = ctx->saved_data["group"].toInt();
        const int64_t B = first.size(0), S = second.size(0), F = second.size(1);
        // d hidden[s] = grad[s] @ second[s]^T (per group, into one buffer), times the SiLU's derivative in place;
        // d basis = sum over the networks of d preactivation[s] @ first[:, s F:(s + 1) F]^T.
        Tensor gradHidden = at::empty(preactivation.sizes(), preactivation.options());
        for (int64_t s = 0; s < S; s += group) {
            Tensor out = gradHidden.narrow(0, s, group);
            const Tensor& grad = gradOutputs[s / group];
            if (grad.defined())
                at::bmm_out(out, grad, second.narrow(0, s, group).transpose(1, 2));
            else
                out.zero_();
        }
        at::silu_backward_out(gradHidden, gradHidden, preactivation);
        const Tensor firstBlocks = first.view({B, S, F}).transpose(0, 1);
        return {at::bmm(gradHidden, firstBlocks.transpose(1, 2)).sum(0), Tensor(), Tensor(), Tensor(), Tensor()};
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

// Pairs per task of the ev filters' parallel loops (one pair: about C I + 2 I E multiply-adds each way).
constexpr int64_t kEvPairsPerTask = 32;

// The ev-invariant MLP's preactivations of the listed pairs, [2, P, E] (kind-major, so that one batched product
// reads each kind's block): pre[c, p, :] = [(difference^2) @ contract, 1] @ evFirst[:, c E:(c + 1) E], one loop
// over the pairs instead of two gathers, a subtraction, a square and two products; pairs p in [begin, end).
template <typename T>
NNP_INLINE void evPreactivations(const T* ev, const int64_t* first, const int64_t* second, const T* contract,
                                 const T* evFirst, int64_t P, int64_t C, int64_t I, int64_t E, int64_t begin,
                                 int64_t end, T* pre) {
    std::vector<T> invariants(I);
    for (int64_t p = begin; p < end; p++) {
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
// (d invariants @ contract^T), added to row second[p] and subtracted from row first[p] of gradEv (zeroed by the
// caller); pairs p in [begin, end).
template <typename T>
NNP_INLINE void evPreactivationsBackward(const T* gradPre, const T* ev, const int64_t* first, const int64_t* second,
                                         const T* contract, const T* evFirst, int64_t P, int64_t C, int64_t I,
                                         int64_t E, int64_t begin, int64_t end, T* gradEv) {
    std::vector<T> gradInvariants(I);
    for (int64_t p = begin; p < end; p++) {
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

} // namespace

namespace NNPPlugin {
namespace so3lr {

Tensor evFiltersForward(const Tensor& radial, const Tensor& evIn, const Tensor& firstIn, const Tensor& secondIn,
                        const Tensor& contractIn, const Tensor& evFirstIn, const Tensor& evSecond, bool intoRadial,
                        EvFiltersState& state) {
    checkEvInputs(radial, evIn, firstIn, secondIn, contractIn, evFirstIn, evSecond);
    NNPPlugin::so3lr::checkDistinctPairs(firstIn, secondIn, evIn.size(0), "so3lr_ev_filters");
    const Tensor ev = evIn.contiguous(), first = firstIn.contiguous(), second = secondIn.contiguous();
    const Tensor contract = contractIn.contiguous(), evFirst = evFirstIn.contiguous();
    const int64_t P = first.size(0), C = ev.size(1), I = contract.size(1), E = evSecond.size(1);
    Tensor preactivation = at::empty({2, P, E}, radial.options());
    AT_DISPATCH_FLOATING_TYPES(radial.scalar_type(), "so3lr_ev_filters", [&] {
        at::parallel_for(0, P, kEvPairsPerTask, [&](int64_t begin, int64_t end) {
            NNPPlugin::runVectorized([&]() NNP_INLINE_LAMBDA {
                evPreactivations(ev.data_ptr<scalar_t>(), first.data_ptr<int64_t>(), second.data_ptr<int64_t>(),
                                 contract.data_ptr<scalar_t>(), evFirst.data_ptr<scalar_t>(), P, C, I, E, begin, end,
                                 preactivation.data_ptr<scalar_t>());
            });
        });
    });
    state = {ev, preactivation, first, second, contract, evFirst, evSecond};
    // filters[c] = radial[c] + silu(pre[c]) @ evSecond[c], one batched product for both kinds.
    if (intoRadial) {
        Tensor filters = radial;
        return filters.baddbmm_(at::silu(preactivation), evSecond);
    }
    return at::baddbmm(radial, at::silu(preactivation), evSecond);
}

Tensor evFiltersBackward(const EvFiltersState& state, const Tensor& gradIn) {
    const Tensor &ev = state.ev, &preactivation = state.preactivation, &first = state.first, &second = state.second;
    const Tensor &contract = state.contract, &evFirst = state.evFirst, &evSecond = state.evSecond;
    const int64_t P = first.size(0), C = ev.size(1), I = contract.size(1), E = evSecond.size(1);
    const Tensor grad = gradIn.contiguous();
    Tensor gradPre = at::bmm(grad, evSecond.transpose(1, 2));  // [2, P, E]
    at::silu_backward_out(gradPre, gradPre, preactivation);
    Tensor gradEv = at::zeros(ev.sizes(), ev.options());
    AT_DISPATCH_FLOATING_TYPES(ev.scalar_type(), "so3lr_ev_filters_backward", [&] {
        // Pairs share atoms: each task scatters into a buffer of its own, added in a fixed order.
        std::mutex partialsLock;
        std::vector<std::pair<int64_t, std::vector<scalar_t>>> partials;
        at::parallel_for(0, P, kEvPairsPerTask, [&](int64_t begin, int64_t end) {
            std::vector<scalar_t> partialEv(ev.numel(), scalar_t(0));
            NNPPlugin::runVectorized([&]() NNP_INLINE_LAMBDA {
                evPreactivationsBackward(gradPre.data_ptr<scalar_t>(), ev.data_ptr<scalar_t>(),
                                         first.data_ptr<int64_t>(), second.data_ptr<int64_t>(),
                                         contract.data_ptr<scalar_t>(), evFirst.data_ptr<scalar_t>(), P, C, I, E,
                                         begin, end, partialEv.data());
            });
            const std::lock_guard<std::mutex> guard(partialsLock);
            partials.emplace_back(begin, std::move(partialEv));
        });
        NNPPlugin::addInOrder(partials, gradEv.data_ptr<scalar_t>());
    });
    return gradEv;
}

} // namespace so3lr
} // namespace NNPPlugin

namespace {

class EvFiltersFunction : public torch::autograd::Function<EvFiltersFunction> {
public:
    static Tensor forward(torch::autograd::AutogradContext* ctx, const Tensor& radial, const Tensor& ev,
                          const Tensor& first, const Tensor& second, const Tensor& contract, const Tensor& evFirst,
                          const Tensor& evSecond) {
        at::AutoDispatchBelowADInplaceOrView belowAutograd;
        NNPPlugin::so3lr::EvFiltersState s;
        const Tensor filters =
            NNPPlugin::so3lr::evFiltersForward(radial, ev, first, second, contract, evFirst, evSecond, false, s);
        ctx->save_for_backward({s.ev, s.preactivation, s.first, s.second, s.contract, s.evFirst, s.evSecond});
        return filters;
    }

    static torch::autograd::tensor_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::tensor_list gradOutputs) {
        const auto saved = ctx->get_saved_variables();
        at::NoGradGuard noGrad;
        const NNPPlugin::so3lr::EvFiltersState s{saved[0], saved[1], saved[2], saved[3], saved[4], saved[5], saved[6]};
        const Tensor grad = gradOutputs[0].contiguous();
        return {grad, NNPPlugin::so3lr::evFiltersBackward(s, grad), Tensor(), Tensor(), Tensor(), Tensor(), Tensor()};
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

// openmm_nnp::so3lr_tabulated_filters (first-order autograd): the same radial filters as so3lr_radial_filters_grouped,
// read from a table of piecewise polynomials instead of evaluating the networks. The radial filters depend on the
// distance alone, so the module (openmm_nnp/models/so3lr.py, SO3LR.__init__) fits each of the S F outputs once, as a
// polynomial of degree D - 1 on each of M equal intervals of u = sqrt(r) in [0, M spacing] (in u the intervals are
// shorter at short range, where the filters vary fastest); a pair then costs D multiply-adds per output instead of
// two network layers (F + R multiply-adds per output), each way.
//
//   so3lr_tabulated_filters(r [n, n], first [P], second [P], table [M, D, S, F], spacing, group)
//       -> S / group tensors [group, P, F]
//
// For pair p, x = sqrt(r[first[p], second[p]]) / spacing, interval i = floor(x), t = 2 (x - i) - 1 in [-1, 1]:
//   filters[s / group][s % group, p, f] = sum_d table[i, d, s, f] t^d.
// Distances at or beyond (M spacing)^2 read the end of the table (t = 1 of interval M - 1) with zero derivative (the
// module's pairs lie within the cutoff, (M spacing)^2, except the copy of pair 0 that only zero cutoffs read).
// Gradients flow to r (entries (first[p], second[p])); the table is constant. CPU tensors of one floating-point
// dtype (first and second int64, pairs of distinct atoms).

namespace {

struct TableShape {
    int64_t atoms, pairs, intervals, terms, networks, features;
};

TableShape checkTableInputs(const Tensor& r, const Tensor& first, const Tensor& second, const Tensor& table,
                            double spacing, int64_t group) {
    for (const Tensor* t : {&r, &first, &second, &table})
        TORCH_CHECK(t->device().is_cpu(), "so3lr_tabulated_filters: CPU tensors only");
    TORCH_CHECK(r.dim() == 2 && r.size(0) == r.size(1) && at::isFloatingType(r.scalar_type()),
                "so3lr_tabulated_filters: r must be a floating-point [n, n] tensor");
    TORCH_CHECK(first.scalar_type() == torch::kInt64 && second.scalar_type() == torch::kInt64 && first.dim() == 1 &&
                    second.sizes() == first.sizes(),
                "so3lr_tabulated_filters: first and second must be int64 [P]");
    TORCH_CHECK(table.dim() == 4 && table.size(0) > 0 && table.size(1) > 0 && table.scalar_type() == r.scalar_type(),
                "so3lr_tabulated_filters: table must be [M, D, S, F] of r's dtype");
    TORCH_CHECK(!table.requires_grad(), "so3lr_tabulated_filters: the table must not require gradients");
    TORCH_CHECK(spacing > 0, "so3lr_tabulated_filters: spacing must be positive");
    TORCH_CHECK(group > 0 && table.size(2) % group == 0,
                "so3lr_tabulated_filters: group must divide the number of networks");
    NNPPlugin::so3lr::checkDistinctPairs(first, second, r.size(0), "so3lr_tabulated_filters");
    return {r.size(0), first.size(0), table.size(0), table.size(1), table.size(2), table.size(3)};
}

// Where pair p reads the table: its interval, t, and dt/dr (0 beyond the table).
template <typename T>
NNP_INLINE void tablePosition(T distance, T inverseSpacing, int64_t intervals, int64_t& interval, T& t, T& slope) {
    const T root = std::sqrt(distance);
    const T x = root * inverseSpacing;
    if (x < T(intervals)) {
        interval = static_cast<int64_t>(x);
        t = T(2) * (x - T(interval)) - T(1);
        slope = inverseSpacing / root;  // dt/du du/dr = (2 / spacing) (1 / (2 sqrt(r)))
    } else {
        interval = intervals - 1;
        t = T(1);
        slope = T(0);
    }
}

// Where each pair reads the table (interval, t, dt/dr), and the pairs in the order of their intervals.
template <typename T>
struct TablePositions {
    std::vector<int64_t> interval, order;
    std::vector<T> t, slope;
};

template <typename T>
TablePositions<T> tablePositions(const T* r, const int64_t* first, const int64_t* second, const TableShape& s,
                                 T inverseSpacing) {
    TablePositions<T> positions;
    positions.interval.resize(s.pairs);
    positions.t.resize(s.pairs);
    positions.slope.resize(s.pairs);
    std::vector<int64_t> start(s.intervals + 1, 0);
    for (int64_t p = 0; p < s.pairs; p++) {
        tablePosition(r[first[p] * s.atoms + second[p]], inverseSpacing, s.intervals, positions.interval[p],
                      positions.t[p], positions.slope[p]);
        start[positions.interval[p] + 1]++;
    }
    for (int64_t i = 0; i < s.intervals; i++)
        start[i + 1] += start[i];
    positions.order.resize(s.pairs);
    for (int64_t p = 0; p < s.pairs; p++)
        positions.order[start[positions.interval[p]]++] = p;
    return positions;
}

// Outputs per block of the Horner loops: kept in registers through the D terms (float: eight AVX-512 vectors,
// eight independent chains of multiply-adds).
constexpr int64_t kTableBlock = 128;

// One network's F polynomials [P, F] at each pair's t (Horner, blocks of outputs). The loops run over the networks
// outside and over the pairs, in the order of their intervals, inside: consecutive pairs then read the same block of
// the table (D x 128 coefficients, 6 kB in float), which stays in the L1 cache, where a pair's whole interval
// (D S F coefficients, 37 kB for SO3LR) does not: the table is read from the L2 cache about once per network
// instead of once per pair. (The pairs in that order with all networks inside were not faster than in their own.)
template <typename T>
NNP_INLINE void tableForward(const T* table, const TableShape& s, const TablePositions<T>& positions,
                             int64_t network, T* out) {
    const int64_t D = s.terms, F = s.features, SF = s.networks * s.features;
    for (int64_t k = 0; k < s.pairs; k++) {
        const int64_t p = positions.order[k];
        const T t = positions.t[p];
        const T* c = table + positions.interval[p] * D * SF + network * F;
        T* row = out + p * F;
        int64_t f0 = 0;
        for (; f0 + kTableBlock <= F; f0 += kTableBlock) {
            T value[kTableBlock];
            for (int64_t j = 0; j < kTableBlock; j++)
                value[j] = c[(D - 1) * SF + f0 + j];
            for (int64_t d = D - 2; d >= 0; d--)
                for (int64_t j = 0; j < kTableBlock; j++)
                    value[j] = value[j] * t + c[d * SF + f0 + j];
            for (int64_t j = 0; j < kTableBlock; j++)
                row[f0 + j] = value[j];
        }
        for (int64_t f = f0; f < F; f++) {
            T value = c[(D - 1) * SF + f];
            for (int64_t d = D - 2; d >= 0; d--)
                value = value * t + c[d * SF + f];
            row[f] = value;
        }
    }
}

// One network's part of d loss / d t of each pair: the sum over its F outputs of the gradient (g [P, F]) times the
// polynomial's derivative in t, into sums[p]; the loops in tableForward's order.
template <typename T>
NNP_INLINE void tableBackward(const T* table, const TableShape& s, const TablePositions<T>& positions,
                              int64_t network, const T* g, T* sums) {
    const int64_t D = s.terms, F = s.features, SF = s.networks * s.features;
    for (int64_t k = 0; k < s.pairs; k++) {
        const int64_t p = positions.order[k];
        sums[p] = 0;
        if (positions.slope[p] == T(0) || D < 2)
            continue;
        const T t = positions.t[p];
        const T* c = table + positions.interval[p] * D * SF + network * F;
        const T* row = g + p * F;
        T blockSums[kTableBlock] = {};
        T sum = 0;
        int64_t f0 = 0;
        for (; f0 + kTableBlock <= F; f0 += kTableBlock) {
            T derivative[kTableBlock];
            for (int64_t j = 0; j < kTableBlock; j++)
                derivative[j] = T(D - 1) * c[(D - 1) * SF + f0 + j];
            for (int64_t d = D - 2; d >= 1; d--)
                for (int64_t j = 0; j < kTableBlock; j++)
                    derivative[j] = derivative[j] * t + T(d) * c[d * SF + f0 + j];
            for (int64_t j = 0; j < kTableBlock; j++)
                blockSums[j] += row[f0 + j] * derivative[j];
        }
        for (int64_t f = f0; f < F; f++) {
            T derivative = T(D - 1) * c[(D - 1) * SF + f];
            for (int64_t d = D - 2; d >= 1; d--)
                derivative = derivative * t + T(d) * c[d * SF + f];
            sum += row[f] * derivative;
        }
        // In vector lanes (a sequential sum would be a chain of kTableBlock dependent additions).
#pragma omp simd reduction(+ : sum)
        for (int64_t j = 0; j < kTableBlock; j++)
            sum += blockSums[j];
        sums[p] = sum;
    }
}

} // namespace

namespace NNPPlugin {
namespace so3lr {

std::vector<Tensor> tabulatedFiltersForward(const Tensor& rIn, const Tensor& firstIn, const Tensor& secondIn,
                                            const Tensor& tableIn, double spacing, int64_t group) {
    const TableShape s = checkTableInputs(rIn, firstIn, secondIn, tableIn, spacing, group);
    const Tensor r = rIn.contiguous(), first = firstIn.contiguous(), second = secondIn.contiguous();
    const Tensor table = tableIn.contiguous();
    std::vector<Tensor> filters;
    for (int64_t network = 0; network < s.networks; network += group)
        filters.push_back(at::empty({group, s.pairs, s.features}, r.options()));
    AT_DISPATCH_FLOATING_TYPES(r.scalar_type(), "so3lr_tabulated_filters", [&] {
        std::vector<scalar_t*> outputs;
        for (const Tensor& out : filters)
            outputs.push_back(out.data_ptr<scalar_t>());
        const scalar_t* pr = r.data_ptr<scalar_t>();
        const int64_t* pa = first.data_ptr<int64_t>();
        const int64_t* pb = second.data_ptr<int64_t>();
        const scalar_t* pt = table.data_ptr<scalar_t>();
        const TablePositions<scalar_t> positions =
            tablePositions(pr, pa, pb, s, scalar_t(1.0 / spacing));
        // One task per network (six for SO3LR).
        at::parallel_for(0, s.networks, 1, [&](int64_t begin, int64_t end) {
            for (int64_t network = begin; network < end; network++) {
                scalar_t* out = outputs[network / group] + (network % group) * s.pairs * s.features;
                NNPPlugin::runVectorized(
                    [&]() NNP_INLINE_LAMBDA { tableForward(pt, s, positions, network, out); });
            }
        });
    });
    return filters;
}

Tensor tabulatedFiltersBackward(const Tensor& rIn, const Tensor& firstIn, const Tensor& secondIn,
                                const Tensor& tableIn, double spacing, int64_t group,
                                const std::vector<Tensor>& gradOutputs) {
    const TableShape s = checkTableInputs(rIn, firstIn, secondIn, tableIn, spacing, group);
    const Tensor r = rIn.contiguous(), first = firstIn.contiguous(), second = secondIn.contiguous();
    const Tensor table = tableIn.contiguous();
    std::vector<Tensor> grads;
    for (const Tensor& grad : gradOutputs)
        grads.push_back(grad.defined() ? grad.contiguous() : Tensor());
    Tensor gradR = at::zeros({s.atoms, s.atoms}, r.options());
    AT_DISPATCH_FLOATING_TYPES(r.scalar_type(), "so3lr_tabulated_filters_backward", [&] {
        std::vector<const scalar_t*> gradPointers;
        for (const Tensor& grad : grads)
            gradPointers.push_back(grad.defined() ? grad.data_ptr<scalar_t>() : nullptr);
        const scalar_t* pr = r.data_ptr<scalar_t>();
        const int64_t* pa = first.data_ptr<int64_t>();
        const int64_t* pb = second.data_ptr<int64_t>();
        const scalar_t* pt = table.data_ptr<scalar_t>();
        const TablePositions<scalar_t> positions =
            tablePositions(pr, pa, pb, s, scalar_t(1.0 / spacing));
        // One task per network, each network's sums in a row of its own, added in the networks' order.
        std::vector<scalar_t> sums(s.networks * s.pairs, scalar_t(0));
        at::parallel_for(0, s.networks, 1, [&](int64_t begin, int64_t end) {
            for (int64_t network = begin; network < end; network++) {
                const scalar_t* g = gradPointers[network / group];
                if (g == nullptr)
                    continue;
                g += (network % group) * s.pairs * s.features;
                scalar_t* networkSums = sums.data() + network * s.pairs;
                NNPPlugin::runVectorized(
                    [&]() NNP_INLINE_LAMBDA { tableBackward(pt, s, positions, network, g, networkSums); });
            }
        });
        std::vector<scalar_t> gradPairs(s.pairs, scalar_t(0));
        for (int64_t network = 0; network < s.networks; network++)
            for (int64_t p = 0; p < s.pairs; p++)
                gradPairs[p] += sums[network * s.pairs + p];
        for (int64_t p = 0; p < s.pairs; p++)
            gradPairs[p] *= positions.slope[p];
        // Serially: a pair may be listed twice (the copy of pair 0).
        scalar_t* gr = gradR.data_ptr<scalar_t>();
        for (int64_t p = 0; p < s.pairs; p++)
            gr[pa[p] * s.atoms + pb[p]] += gradPairs[p];
    });
    return gradR;
}

} // namespace so3lr
} // namespace NNPPlugin

namespace {

class TabulatedFiltersFunction : public torch::autograd::Function<TabulatedFiltersFunction> {
public:
    static torch::autograd::tensor_list forward(torch::autograd::AutogradContext* ctx, const Tensor& r,
                                                const Tensor& first, const Tensor& second, const Tensor& table,
                                                double spacing, int64_t group) {
        at::AutoDispatchBelowADInplaceOrView belowAutograd;
        const torch::autograd::tensor_list filters =
            NNPPlugin::so3lr::tabulatedFiltersForward(r, first, second, table, spacing, group);
        ctx->save_for_backward({r, first, second, table});
        ctx->saved_data["spacing"] = spacing;
        ctx->saved_data["group"] = group;
        return filters;
    }

    static torch::autograd::tensor_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::tensor_list gradOutputs) {
        const auto saved = ctx->get_saved_variables();
        at::NoGradGuard noGrad;
        const Tensor gradR = NNPPlugin::so3lr::tabulatedFiltersBackward(
            saved[0], saved[1], saved[2], saved[3], ctx->saved_data["spacing"].toDouble(),
            ctx->saved_data["group"].toInt(), gradOutputs);
        return {gradR, Tensor(), Tensor(), Tensor(), Tensor(), Tensor()};
    }
};

std::vector<Tensor> so3lrTabulatedFilters(const Tensor& r, const Tensor& first, const Tensor& second,
                                          const Tensor& table, double spacing, int64_t group) {
    return TabulatedFiltersFunction::apply(r, first, second, table, spacing, group);
}

} // namespace

TORCH_LIBRARY_FRAGMENT(openmm_nnp, m) {
    m.def("so3lr_tabulated_filters(Tensor r, Tensor first, Tensor second, Tensor table, float spacing, int group) "
          "-> Tensor[]",
          &so3lrTabulatedFilters);
}
