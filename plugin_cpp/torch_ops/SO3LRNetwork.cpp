// openmm_nnp::so3lr_network (TorchScript operator, first-order autograd): the energy of an SO3LR region
// (openmm_nnp/models/so3lr.py, SO3LR._network, which calls the same steps one operator at a time) in one call, and
// its gradient with respect to the positions in the same call when the positions require it. The steps are the
// other SO3LR operators' forward and backward functions (SO3LRKernels.h) in the module's order: the front, the
// tabulated radial filters, per layer the ev filters, projections, attention and update, then the heads and the
// physical terms; backward the same in reverse, with the gradients of tensors read twice (features, ev, r, the
// cutoff function, the harmonics) summed here. A call of the module through the separate operators costs, besides
// their arithmetic, the TorchScript interpreter, about fifty autograd nodes and their saved tensors, and the
// operators' dispatch; here that is one operator call.
//
//   so3lr_network(positions [n, 3], shifts [n, n, 3] or None, parameters, constants, zbl, switches, physical, heads)
//       -> energy []
//
// parameters: the module's tensors in the order of enum Parameter below (one entry per layer in the first dimension
// of the per-layer ones, two per layer for filterEvSecond); constants: enum Constant; zbl, switches and physical:
// so3lr_physical's zbl, switches and constants; heads: the attention heads. Positions are in the unit that
// lengthScale takes to Å, the shifts (constants: the minimum-image shifts of the pair vectors) in Å, the energy in
// eV times energyScale. Gradients flow to the positions only (first order: the gradient is computed with the
// energy, and a second derivative is refused). CPU tensors of one floating-point dtype.

#include <torch/torch.h>

#include <vector>

#include "SO3LRKernels.h"

using at::Tensor;

namespace {

enum Parameter {
    PairFirst,  // [M] int64: the candidate pairs a < b
    PairSecond,
    HarmonicsMatrix,  // [120, C]
    HarmonicsParity,  // [C]
    BasisLogBinomial,  // [R] (empty with the table)
    BasisK,
    BasisKReverse,
    FilterTable,  // [intervals, degree + 1, 2 L, F]
    InitialFeatures,  // [n, F]
    DegreeExpand,  // [H, C]
    DegreeContract,  // [C, H]
    FilterEvFirst,  // [L, H + 1, 2 E]
    FilterEvSecond,  // [2 L, E, F]
    Projections,  // [L, H, D, 5 D]
    LayerNorms,  // [L, 4, F]
    MlpFirst,  // [L, F, F]
    MlpFirstBias,  // [L, F]
    MlpSecond,  // [L, F, F]
    MlpSecondBias,  // [L, F]
    Interaction,  // [L, F + H, F + H]
    InteractionBias,  // [L, F + H]
    HeadFirst,  // [F, M]
    HeadFirstBias,  // [M]
    HeadSecond,  // [n, M]
    HeadSegments,  // [M, 3]
    HeadOffsets,  // [n, 3]
    TotalCharge,  // [1]
    ZblChargeProducts,  // [n, n]
    ZblInverseLengths,  // [n, n]
    FreePolarizabilities,  // [n]
    FreeC6,  // [n]
    NumParameters
};

enum Constant {
    LengthScale,  // positions' unit to Å
    EnergyScale,  // eV to the energy's unit
    Cutoff,  // Å
    BasisGamma,
    BasisEpsilon,
    SmallestNormal,
    TableSpacing,
    LayerNormEpsilon,
    NumConstants
};

// The filters come from the table two at a time (invariant and ev filters of a layer).
constexpr int64_t kFiltersPerLayer = 2;

struct Network {
    std::vector<Tensor> p;
    std::vector<double> c, zbl, switches, physical;
    int64_t heads;
};

void checkNetwork(const Tensor& positions, const Network& net) {
    TORCH_CHECK(net.p.size() == NumParameters, "so3lr_network: expected ", static_cast<int>(NumParameters),
                " parameter tensors, got ", net.p.size());
    TORCH_CHECK(net.c.size() == NumConstants, "so3lr_network: expected ", static_cast<int>(NumConstants),
                " constants, got ", net.c.size());
    TORCH_CHECK(positions.device().is_cpu() && positions.dim() == 2 && positions.size(1) == 3,
                "so3lr_network: positions must be a CPU tensor [n, 3]");
    const int64_t n = positions.size(0);
    for (size_t i = 0; i < net.p.size(); i++) {
        const Tensor& t = net.p[i];
        TORCH_CHECK(t.device().is_cpu() && !t.requires_grad(), "so3lr_network: parameter ", i,
                    " must be a constant CPU tensor");
        if (i != PairFirst && i != PairSecond)
            TORCH_CHECK(t.scalar_type() == positions.scalar_type(), "so3lr_network: parameter ", i,
                        " must have the positions' dtype");
    }
    const int64_t layers = net.p[Projections].size(0);
    TORCH_CHECK(net.p[InitialFeatures].dim() == 2 && net.p[InitialFeatures].size(0) == n,
                "so3lr_network: ", n, " positions for a module of ", net.p[InitialFeatures].size(0), " atoms");
    TORCH_CHECK(net.p[FilterTable].dim() == 4 && net.p[FilterTable].size(2) == kFiltersPerLayer * layers &&
                    net.p[FilterEvFirst].size(0) == layers && net.p[FilterEvSecond].size(0) == 2 * layers &&
                    net.p[LayerNorms].size(0) == layers && net.p[MlpFirst].size(0) == layers &&
                    net.p[MlpFirstBias].size(0) == layers && net.p[MlpSecond].size(0) == layers &&
                    net.p[MlpSecondBias].size(0) == layers && net.p[Interaction].size(0) == layers &&
                    net.p[InteractionBias].size(0) == layers,
                "so3lr_network: the per-layer parameters and the filter table disagree on the number of layers");
}

// Energy (0-dimensional) and, if asked, its gradient with respect to the positions [n, 3].
std::pair<Tensor, Tensor> evaluateNetwork(const Tensor& positionsIn, const c10::optional<Tensor>& shiftsIn,
                                          const Network& net, bool wantGradient) {
    using namespace NNPPlugin::so3lr;
    checkNetwork(positionsIn, net);
    const std::vector<Tensor>& p = net.p;
    const std::vector<double>& c = net.c;
    const int64_t n = positionsIn.size(0), layers = p[Projections].size(0);
    const Tensor positions = positionsIn.contiguous() * c[LengthScale];

    // Forward, keeping what the backward pass reads.
    FrontState frontState;
    const FrontOutputs geometry = frontForward(positions, shiftsIn, p[PairFirst], p[PairSecond], c[Cutoff],
                                               p[HarmonicsMatrix], p[HarmonicsParity], p[BasisLogBinomial], p[BasisK],
                                               p[BasisKReverse], c[BasisGamma], c[BasisEpsilon], c[SmallestNormal],
                                               frontState);
    const int64_t K = geometry.first.size(0) - 1;  // listed pairs, without the copy of pair 0
    const Tensor firstPairs = geometry.first.narrow(0, 0, K), secondPairs = geometry.second.narrow(0, 0, K);
    const std::vector<Tensor> radial = tabulatedFiltersForward(geometry.r, geometry.first, geometry.second,
                                                               p[FilterTable], c[TableSpacing], kFiltersPerLayer);
    struct Layer {
        Tensor queries, keys, filters;
        EvFiltersState evFilters;
        LayerUpdateState update;
    };
    std::vector<Layer> saved(layers);
    Tensor features = p[InitialFeatures];
    Tensor ev = at::zeros({n, p[HarmonicsMatrix].size(1)}, positions.options());
    for (int64_t layer = 0; layer < layers; layer++) {
        Layer& s = saved[layer];
        // The first layer's ev features are zero: its filters' ev parts are in the table's bias. The later layers'
        // ev parts are added to their tabulated filters in place (nothing else reads those).
        s.filters = layer == 0 ? radial[0]
                               : evFiltersForward(radial[layer], ev, geometry.first, geometry.second,
                                                  p[DegreeContract], p[FilterEvFirst][layer],
                                                  p[FilterEvSecond].narrow(0, 2 * layer, 2), true, s.evFilters);
        const std::vector<Tensor> projected = projectionsForward(features, p[Projections][layer]);
        s.queries = projected[0];
        s.keys = projected[1];
        const Tensor attention = attentionForward(s.queries, s.keys, s.filters, firstPairs, secondPairs, net.heads);
        const std::vector<Tensor> updated = layerUpdateForward(
            features, ev, attention, geometry.cutoffFunction, geometry.harmonics, projected[2], p[LayerNorms][layer],
            p[MlpFirst][layer], p[MlpFirstBias][layer], p[MlpSecond][layer], p[MlpSecondBias][layer],
            p[Interaction][layer], p[InteractionBias][layer], p[DegreeExpand], p[DegreeContract],
            c[LayerNormEpsilon], layer + 1 < layers, s.update);
        features = updated[0];
        ev = updated[1];
    }
    HeadsState headsState;
    const std::vector<Tensor> heads = headsForward(features, p[HeadFirst], p[HeadFirstBias], p[HeadSecond],
                                                   p[HeadSegments], p[HeadOffsets], p[TotalCharge], headsState);
    const std::vector<Tensor> physical = physicalTerms(
        geometry.r, geometry.cutoffFunction, heads[1], heads[2], p[ZblChargeProducts], p[ZblInverseLengths],
        p[FreePolarizabilities], p[FreeC6], net.zbl, net.switches, net.physical, wantGradient);
    const Tensor energy = (heads[0] + physical[0]) * c[EnergyScale];
    if (!wantGradient)
        return {energy, Tensor()};

    // Backward from d energy / d energy = 1. The physical terms read r, the cutoff function, the charges and the
    // Hirshfeld ratios; their gradients start the sums.
    Tensor gradR = physical[1], gradCutoff = physical[2], gradHarmonics;
    Tensor gradFeatures =
        headsBackward(headsState, at::ones({}, positions.options()), physical[3], physical[4]);
    Tensor gradEv;  // the last layer's ev features are not read
    std::vector<Tensor> gradRadial(layers);
    for (int64_t layer = layers - 1; layer >= 0; layer--) {
        const Layer& s = saved[layer];
        // {d features, d ev, d attention, d cutoff, d harmonics, d values}
        const std::vector<Tensor> g = layerUpdateBackward(s.update, gradFeatures, gradEv);
        gradCutoff.add_(g[3]);
        gradHarmonics = gradHarmonics.defined() ? gradHarmonics.add_(g[4]) : g[4];
        // {d queries, d keys, d filters}
        const std::vector<Tensor> a =
            attentionBackward(g[2], s.queries, s.keys, s.filters, firstPairs, secondPairs, net.heads);
        gradFeatures = g[0].add_(projectionsBackward(p[Projections][layer], a[0], a[1], g[5]));
        gradEv = g[1];
        if (layer > 0)
            gradEv.add_(evFiltersBackward(s.evFilters, a[2]));
        gradRadial[layer] = a[2];  // the ev filters pass the radial part's gradient through
    }
    gradR.add_(tabulatedFiltersBackward(geometry.r, geometry.first, geometry.second, p[FilterTable], c[TableSpacing],
                                        kFiltersPerLayer, gradRadial));
    Tensor gradPositions = frontBackward(frontState, gradR, gradCutoff, gradHarmonics, Tensor());
    gradPositions.mul_(c[LengthScale] * c[EnergyScale]);
    return {energy, gradPositions};
}

class NetworkFunction : public torch::autograd::Function<NetworkFunction> {
public:
    static Tensor forward(torch::autograd::AutogradContext* ctx, const Tensor& positions,
                          const c10::optional<Tensor>& shifts, std::vector<Tensor> parameters,
                          std::vector<double> constants, std::vector<double> zbl, std::vector<double> switches,
                          std::vector<double> physical, int64_t heads) {
        TORCH_CHECK(!shifts.has_value() || !shifts->defined() || !shifts->requires_grad(),
                    "so3lr_network: the shifts are constants and must not require gradients");
        const bool wantGradient = positions.requires_grad();
        at::AutoDispatchBelowADInplaceOrView belowAutograd;
        at::NoGradGuard noGrad;
        const Network net{std::move(parameters), std::move(constants), std::move(zbl), std::move(switches),
                          std::move(physical), heads};
        const auto result = evaluateNetwork(positions, shifts, net, wantGradient);
        if (wantGradient)
            ctx->save_for_backward({result.second});
        return result.first;
    }

    static torch::autograd::tensor_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::tensor_list gradOutputs) {
        // The gradient was computed with the energy, without a graph of its own.
        TORCH_CHECK(!torch::autograd::GradMode::is_enabled(),
                    "so3lr_network: first derivatives only (energy and forces); SO3LR(..., compiledOperators=False) "
                    "computes higher ones with PyTorch operations");
        const Tensor gradient = ctx->get_saved_variables()[0];
        const Tensor none;
        return {gradient * gradOutputs[0], none, none, none, none, none, none, none};
    }
};

Tensor so3lrNetwork(const Tensor& positions, const c10::optional<Tensor>& shifts, std::vector<Tensor> parameters,
                    std::vector<double> constants, std::vector<double> zbl, std::vector<double> switches,
                    std::vector<double> physical, int64_t heads) {
    return NetworkFunction::apply(positions, shifts, std::move(parameters), std::move(constants), std::move(zbl),
                                  std::move(switches), std::move(physical), heads);
}

} // namespace

TORCH_LIBRARY_FRAGMENT(openmm_nnp, m) {
    m.def("so3lr_network(Tensor positions, Tensor? shifts, Tensor[] parameters, float[] constants, float[] zbl, "
          "float[] switches, float[] physical, int heads) -> Tensor",
          &so3lrNetwork);
}
