// openmm-nnp's TorchScript class openmm_nnp.ANIFeatures (see NNPTorchOps.h): constants, methods,
// autograd and pickling.

#include "NNPTorchOps.h"
#include <ATen/Parallel.h>
#include "ANIFeatures.h"
#include "ANINetworks.h"

#include <torch/custom_class.h>
#include <torch/torch.h>

#include <string>
#include <tuple>
#include <vector>

using at::Tensor;
using namespace NNPPlugin::ani;

namespace {

// The constructor's arguments, which are also the pickled state: species, pair_index, radial_shifts,
// angular_shifts, sections, radial_cutoff, radial_eta, angular_cutoff, angular_eta, angular_zeta.
using ANIFeaturesState = std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor, double, double, double, double, double>;

Tensor storedCopy(const Tensor& t) {
    return t.detach().to(torch::kCPU).clone().contiguous();
}

// The AEV constants of one region, checked and parsed once at construction.
class ANIFeatures : public torch::CustomClassHolder {
public:
    ANIFeatures(const Tensor& species, const Tensor& pairIndex, const Tensor& radialShifts,
                const Tensor& angularShifts, const Tensor& sections, double radialCutoff, double radialEta,
                double angularCutoff, double angularEta, double zeta)
        : parameters(makeAEVParameters(species, pairIndex, radialShifts, angularShifts, sections, radialCutoff,
                                       radialEta, angularCutoff, angularEta, zeta)),
          state(storedCopy(species), storedCopy(pairIndex), storedCopy(radialShifts), storedCopy(angularShifts),
                storedCopy(sections), radialCutoff, radialEta, angularCutoff, angularEta, zeta) {}

    explicit ANIFeatures(const ANIFeaturesState& s)
        : ANIFeatures(std::get<0>(s), std::get<1>(s), std::get<2>(s), std::get<3>(s), std::get<4>(s), std::get<5>(s),
                      std::get<6>(s), std::get<7>(s), std::get<8>(s), std::get<9>(s)) {}

    // AEVs [n, length] of positions [n, 3] (Angstrom), without autograd.
    Tensor aev(const Tensor& positions, const c10::optional<Tensor>& box) const {
        checkPositions(parameters, positions);
        return AEVComputation(parameters, positions, box).aev();
    }

    // d(energy)/d(positions) from d(energy)/d(AEV), for the AEVs of these positions.
    Tensor aevBackward(const Tensor& gradAEV, const Tensor& positions, const c10::optional<Tensor>& box) const {
        checkPositions(parameters, positions);
        return AEVComputation(parameters, positions, box).positionGradient(gradAEV);
    }

    // AEVs, networks and (on request) the chain rule back to the positions in one call; the AEV
    // terms computed on the way are reused for the gradient.
    std::tuple<Tensor, Tensor> energies(const Tensor& positions, const c10::optional<Tensor>& box,
                                        std::vector<Tensor> networkParameters, bool needGradient) const {
        // Plain tensors in, plain tensors out: the ATen calls inside skip the autograd layer (as they did when
        // this was an operator without an autograd kernel, called through the dispatcher).
        at::NoGradGuard noGrad;
        at::AutoDispatchBelowADInplaceOrView belowAutograd;
        checkPositions(parameters, positions);
        const AEVComputation computation(parameters, positions, box);
        auto [memberEnergies, aevGradient] = evaluateNetworks(computation.aev(), networkParameters, needGradient);
        if (!needGradient)
            return {memberEnergies, aevGradient};
        return {memberEnergies, computation.positionGradient(aevGradient)};
    }

    const ANIFeaturesState& getState() const { return state; }

private:
    const AEVParameters parameters;
    const ANIFeaturesState state;
};

// First-order autograd for ANIFeatures.aev: the gradient flows to the positions only.
class AEVFunction : public torch::autograd::Function<AEVFunction> {
public:
    static Tensor forward(torch::autograd::AutogradContext* ctx, const Tensor& positions,
                          const c10::optional<Tensor>& box, const c10::intrusive_ptr<ANIFeatures>& features) {
        ctx->save_for_backward({positions, box.has_value() ? *box : Tensor()});
        ctx->saved_data["features"] = features;
        at::AutoDispatchBelowADInplaceOrView belowAutograd;
        return features->aev(positions, box);
    }

    static torch::autograd::tensor_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::tensor_list gradOutputs) {
        const auto saved = ctx->get_saved_variables();
        c10::optional<Tensor> box;
        if (saved[1].defined())
            box = saved[1];
        const auto features = ctx->saved_data["features"].toCustomClass<ANIFeatures>();
        return {features->aevBackward(gradOutputs[0], saved[0], box), Tensor(), Tensor()};
    }
};

} // namespace

TORCH_LIBRARY(openmm_nnp, m) {
    m.class_<ANIFeatures>("ANIFeatures")
        .def(torch::init<Tensor, Tensor, Tensor, Tensor, Tensor, double, double, double, double, double>())
        .def("aev",
             [](const c10::intrusive_ptr<ANIFeatures>& self, const Tensor& positions,
                const c10::optional<Tensor>& box) { return AEVFunction::apply(positions, box, self); })
        .def("energies", &ANIFeatures::energies)
        // torch.export and torch.compile trace the model's PyTorch strategy, never these methods, so they may
        // keep the real object instead of asking for a fake class.
        .def("tracing_mode", [](const c10::intrusive_ptr<ANIFeatures>&) { return std::string("real"); })
        .def_pickle([](const c10::intrusive_ptr<ANIFeatures>& self) { return self->getState(); },
                    [](ANIFeaturesState state) { return c10::make_intrusive<ANIFeatures>(state); });
}

int NNPPlugin::registeredTorchOperators() {
    return 11;  // the class ANIFeatures, the operators so3lr_attention, so3lr_projections, so3lr_physical,
                // so3lr_radial_filters, so3lr_radial_filters_grouped, so3lr_ev_filters, so3lr_layer_update,
                // so3lr_pair_geometry, so3lr_front and so3lr_heads (SO3LR*.cpp)
}

void NNPPlugin::initializeParallelOnThisThread() {
    at::parallel_for(0, 1, 1, [](int64_t, int64_t) {});
}
