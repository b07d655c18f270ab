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

// A new contiguous tensor of type dtype holding t's values converted to dtype, then times unit (in dtype).
Tensor inUnit(const Tensor& t, at::ScalarType dtype, double unit) {
    Tensor result = at::empty(t.sizes(), t.options().dtype(dtype));
    AT_DISPATCH_FLOATING_TYPES(t.scalar_type(), "ani_input", [&] {
        using In = scalar_t;
        AT_DISPATCH_FLOATING_TYPES(dtype, "ani_input", [&] {
            using T = scalar_t;
            const Tensor in = t.contiguous();
            const In* x = in.data_ptr<In>();
            T* y = result.data_ptr<T>();
            const T factor = static_cast<T>(unit);
            for (int64_t i = 0; i < t.numel(); i++)
                y[i] = static_cast<T>(x[i]) * factor;
        });
    });
    return result;
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

    // What the ANI model's energy_and_forces() returns, in one call, so that an NNPForce evaluation runs no
    // tensor operation outside it: positions [n, 3] and box in nm (float32 or float64, converted to the networks'
    // type, then multiplied by lengthUnit to Angstrom), the energy (the members' mean of their network energies
    // plus selfEnergy, times energyUnit: kJ/mol), a 0-dim tensor of the networks' type, and, if needForces, the
    // forces [n, 3] (-d(energy)/d(positions), kJ/mol/nm; else an empty tensor). The members' energies are averaged
    // in double and the result rounded once.
    std::tuple<Tensor, Tensor> energyAndForces(const Tensor& positionsNm, const c10::optional<Tensor>& boxNm,
                                               std::vector<Tensor> networkParameters, double selfEnergy,
                                               double energyUnit, double lengthUnit, bool needForces) const {
        at::NoGradGuard noGrad;
        at::AutoDispatchBelowADInplaceOrView belowAutograd;
        checkPositions(parameters, positionsNm);
        TORCH_CHECK(networkParameters.size() > 2, "ANIFeatures.energy_and_forces: no network parameters");
        const auto dtype = networkParameters[2].scalar_type();
        TORCH_CHECK(!boxNm.has_value() || (boxNm->sizes() == at::IntArrayRef({3, 3}) && boxNm->is_floating_point()),
                    "ANIFeatures.energy_and_forces: the box must be a floating-point [3, 3] tensor");
        const Tensor positions = inUnit(positionsNm, dtype, lengthUnit);
        c10::optional<Tensor> box;
        if (boxNm.has_value())
            box = inUnit(*boxNm, dtype, lengthUnit);
        const AEVComputation computation(parameters, positions, box);
        auto [memberEnergies, aevGradient] = evaluateNetworks(computation.aev(), networkParameters, needForces);
        Tensor energy = at::empty({}, memberEnergies.options());
        Tensor forces = needForces ? computation.positionGradient(aevGradient) : at::empty({0}, positions.options());
        AT_DISPATCH_FLOATING_TYPES(dtype, "ani_energy_and_forces", [&] {
            using T = scalar_t;
            const T* member = memberEnergies.data_ptr<T>();
            const int64_t members = memberEnergies.numel();
            double sum = 0.0;
            for (int64_t m = 0; m < members; m++)
                sum += static_cast<double>(member[m] + static_cast<T>(selfEnergy));
            *energy.data_ptr<T>() = static_cast<T>(sum / members * energyUnit);
            // Hartree/Angstrom to kJ/mol/nm in two steps of the networks' type, as the PyTorch strategy does.
            T* f = forces.data_ptr<T>();
            const T perNm = static_cast<T>(lengthUnit), force = static_cast<T>(-energyUnit);
            for (int64_t i = 0; i < forces.numel(); i++)
                f[i] = f[i] * perNm * force;
        });
        return {energy, forces};
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
        .def("energy_and_forces", &ANIFeatures::energyAndForces)
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
