// openmm-nnp's TorchScript operators (see NNPTorchOps.h): schemas, CPU kernels and autograd.

#include "NNPTorchOps.h"
#include <ATen/Parallel.h>
#include "ANIFeatures.h"
#include "ANINetworks.h"

#include <torch/library.h>
#include <torch/torch.h>

using at::Tensor;
using namespace NNPPlugin::ani;

namespace {

#define AEV_ARGUMENTS                                                                                      \
    "Tensor positions, Tensor? box, Tensor species, Tensor pair_index, Tensor radial_shifts, "            \
    "Tensor angular_shifts, Tensor sections, float radial_cutoff, float radial_eta, float angular_cutoff, " \
    "float angular_eta, float angular_zeta"

Tensor aev(const Tensor& positions, const c10::optional<Tensor>& box, const Tensor& species, const Tensor& pairIndex,
           const Tensor& radialShifts, const Tensor& angularShifts, const Tensor& sections, double radialCutoff,
           double radialEta, double angularCutoff, double angularEta, double zeta) {
    const AEVParameters p = readAEVParameters(positions, species, pairIndex, radialShifts, angularShifts, sections,
                                              radialCutoff, radialEta, angularCutoff, angularEta, zeta);
    return AEVComputation(p, positions, box).aev();
}

Tensor aevBackward(const Tensor& gradAEV, const Tensor& positions, const c10::optional<Tensor>& box,
                   const Tensor& species, const Tensor& pairIndex, const Tensor& radialShifts,
                   const Tensor& angularShifts, const Tensor& sections, double radialCutoff, double radialEta,
                   double angularCutoff, double angularEta, double zeta) {
    const AEVParameters p = readAEVParameters(positions, species, pairIndex, radialShifts, angularShifts, sections,
                                              radialCutoff, radialEta, angularCutoff, angularEta, zeta);
    return AEVComputation(p, positions, box).positionGradient(gradAEV);
}

// AEVs, networks and (on request) the chain rule back to the positions in one call; the AEV
// terms computed on the way are reused for the gradient.
std::tuple<Tensor, Tensor> energies(const Tensor& positions, const c10::optional<Tensor>& box, const Tensor& species,
                                    const Tensor& pairIndex, const Tensor& radialShifts, const Tensor& angularShifts,
                                    const Tensor& sections, double radialCutoff, double radialEta,
                                    double angularCutoff, double angularEta, double zeta,
                                    at::TensorList networkParameters, bool needGradient) {
    at::NoGradGuard noGrad;
    const AEVParameters p = readAEVParameters(positions, species, pairIndex, radialShifts, angularShifts, sections,
                                              radialCutoff, radialEta, angularCutoff, angularEta, zeta);
    const AEVComputation computation(p, positions, box);
    auto [memberEnergies, aevGradient] = evaluateNetworks(computation.aev(), networkParameters, needGradient);
    if (!needGradient)
        return {memberEnergies, aevGradient};
    return {memberEnergies, computation.positionGradient(aevGradient)};
}

// First-order autograd for ani_aev: the gradient flows to the positions only.
class AEVFunction : public torch::autograd::Function<AEVFunction> {
public:
    static Tensor forward(torch::autograd::AutogradContext* ctx, const Tensor& positions,
                          const c10::optional<Tensor>& box, const Tensor& species, const Tensor& pairIndex,
                          const Tensor& radialShifts, const Tensor& angularShifts, const Tensor& sections,
                          double radialCutoff, double radialEta, double angularCutoff, double angularEta,
                          double zeta) {
        ctx->save_for_backward({positions, box.has_value() ? *box : Tensor(), species, pairIndex, radialShifts,
                                angularShifts, sections});
        ctx->saved_data["constants"] = std::vector<double>{radialCutoff, radialEta, angularCutoff, angularEta, zeta};
        at::AutoDispatchBelowADInplaceOrView guard;
        return aev(positions, box, species, pairIndex, radialShifts, angularShifts, sections, radialCutoff, radialEta,
                   angularCutoff, angularEta, zeta);
    }

    static torch::autograd::tensor_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::tensor_list gradOutputs) {
        const auto saved = ctx->get_saved_variables();
        const std::vector<double> c = ctx->saved_data["constants"].toDoubleVector();
        c10::optional<Tensor> box;
        if (saved[1].defined())
            box = saved[1];
        Tensor gradPositions = aevBackward(gradOutputs[0], saved[0], box, saved[2], saved[3], saved[4], saved[5],
                                           saved[6], c[0], c[1], c[2], c[3], c[4]);
        return {gradPositions, Tensor(), Tensor(), Tensor(), Tensor(), Tensor(),
                Tensor(),      Tensor(), Tensor(), Tensor(), Tensor(), Tensor()};
    }
};

Tensor aevAutograd(const Tensor& positions, const c10::optional<Tensor>& box, const Tensor& species,
                   const Tensor& pairIndex, const Tensor& radialShifts, const Tensor& angularShifts,
                   const Tensor& sections, double radialCutoff, double radialEta, double angularCutoff,
                   double angularEta, double zeta) {
    return AEVFunction::apply(positions, box, species, pairIndex, radialShifts, angularShifts, sections, radialCutoff,
                              radialEta, angularCutoff, angularEta, zeta);
}

} // namespace

TORCH_LIBRARY(openmm_nnp, m) {
    m.def("ani_aev(" AEV_ARGUMENTS ") -> Tensor");
    m.def("ani_aev_backward(Tensor grad_aev, " AEV_ARGUMENTS ") -> Tensor");
    m.def("ani_energies(" AEV_ARGUMENTS ", Tensor[] network_parameters, bool need_gradient) -> (Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(openmm_nnp, CPU, m) {
    m.impl("ani_aev", aev);
    m.impl("ani_aev_backward", aevBackward);
    m.impl("ani_energies", energies);
}

TORCH_LIBRARY_IMPL(openmm_nnp, Autograd, m) {
    m.impl("ani_aev", aevAutograd);
}

int NNPPlugin::registeredTorchOperators() {
    return 3;
}

void NNPPlugin::initializeParallelOnThisThread() {
    at::parallel_for(0, 1, 1, [](int64_t, int64_t) {});
}
