#include "NNPComputation.h"
#include "NNPTorchOps.h"
#include "openmm/OpenMMException.h"
#include <ATen/Parallel.h>
#include <ATen/Dispatch.h>
#include <cmath>

using namespace NNPPlugin;
using namespace OpenMM;
using namespace std;

void NNPPlugin::requireTorchOperators() {
    if (registeredTorchOperators() <= 0)
        throw OpenMMException("openmm-nnp: the TorchScript operator library registered no operators.");
}

int NNPComputation::numThreadsProperty(const NNPForce& force) {
    auto properties = force.getProperties();
    if (!properties.count("numThreads") || properties["numThreads"].empty())
        return 0;
    int threads;
    try {
        size_t used;
        threads = stoi(properties["numThreads"], &used);
        if (used != properties["numThreads"].size())
            threads = -1;
    }
    catch (const std::exception&) {
        threads = -1;
    }
    if (threads < 0)
        throw OpenMMException("NNPForce: property numThreads must be a non-negative integer, not '" + properties["numThreads"] + "'.");
    return threads;
}

static void applyNumThreads(const NNPForce& force) {
    int threads = NNPComputation::numThreadsProperty(force);
    if (threads > 0)
        at::set_num_threads(threads);
}

NNPComputation::NNPComputation(const NNPForce& force, const vector<int>& atoms, const torch::Device& device) :
        atoms(atoms), device(device), scaleParameter(force.getScaleParameter()), scaleDerivative(false) {
    for (int i = 0; i < force.getNumGlobalParameters(); i++)
        if (force.getGlobalParameterName(i) != scaleParameter)
            parameterNames.push_back(force.getGlobalParameterName(i));
    derivativeMask.assign(parameterNames.size(), false);
    for (int i = 0; i < force.getNumEnergyParameterDerivatives(); i++) {
        const string& name = force.getEnergyParameterDerivativeName(i);
        derivativeNames.push_back(name);
        if (name == scaleParameter)
            scaleDerivative = true;
        for (size_t j = 0; j < parameterNames.size(); j++)
            if (parameterNames[j] == name)
                derivativeMask[j] = true;
    }
    applyNumThreads(force);
    model.reset(new NNPModel(force, atoms.size(), device));
}

double NNPComputation::getScale(ContextImpl& context) const {
    return scaleParameter.empty() ? 1.0 : context.getParameter(scaleParameter);
}

bool NNPComputation::isActive(ContextImpl& context) const {
    return getScale(context) != 0.0 || !derivativeNames.empty();
}

NNPComputation::Inputs NNPComputation::getInputs(ContextImpl& context, bool includeForces) const {
    Inputs inputs;
    inputs.scale = getScale(context);
    for (auto& name : parameterNames)
        inputs.parameterValues.push_back(context.getParameter(name));
    inputs.includeForces = includeForces;
    return inputs;
}

NNPComputation::Output NNPComputation::evaluate(ContextImpl& context, const torch::Tensor& positions, const torch::Tensor& box,
                                                bool includeForces, map<string, double>& derivatives) {
    Output output = compute(getInputs(context, includeForces), positions, box);
    addDerivatives(output, derivatives);
    return output;
}

void NNPComputation::addDerivatives(const Output& output, map<string, double>& derivatives) {
    for (auto& derivative : output.derivatives)
        derivatives[derivative.first] += derivative.second;
}

// On the CPU the few conversions and checks around a model call are plain loops: each ATen operation costs far
// more right after the MM forces than back to back (its code has gone cold), and a loop's code stays small
// (benchmarks/bench_force_call.py). Other devices and types go through ATen.
static bool plainCpuFloat(const torch::Tensor& t) {
    return t.device().is_cpu() && t.is_contiguous() && (t.scalar_type() == torch::kFloat32 || t.scalar_type() == torch::kFloat64);
}

// A new tensor holding `t` converted to dtype on device (the model may keep references to its input, and the
// caller's buffer is reused, so always a copy).
static torch::Tensor copyForModel(const torch::Tensor& t, const torch::Device& device, torch::ScalarType dtype) {
    if (!device.is_cpu() || !plainCpuFloat(t) || (dtype != torch::kFloat32 && dtype != torch::kFloat64))
        return t.to(device, dtype, false, true);
    torch::Tensor result = torch::empty(t.sizes(), torch::TensorOptions().dtype(dtype));
    AT_DISPATCH_FLOATING_TYPES(t.scalar_type(), "copyForModel", [&] {
        using In = scalar_t;
        const In* in = t.data_ptr<In>();
        AT_DISPATCH_FLOATING_TYPES(dtype, "copyForModel", [&] {
            scalar_t* out = result.data_ptr<scalar_t>();
            for (int64_t i = 0; i < t.numel(); i++)
                out[i] = static_cast<scalar_t>(in[i]);
        });
    });
    return result;
}

// The first row of forces [n, 3] with a non-finite component, or -1.
static int64_t firstNonFiniteRow(const torch::Tensor& forces) {
    if (!plainCpuFloat(forces)) {
        torch::Tensor finite = torch::isfinite(forces).all(1);
        if (finite.all().item<bool>())
            return -1;
        return torch::nonzero(finite.logical_not()).index({0, 0}).item<int64_t>();
    }
    int64_t row = -1;
    AT_DISPATCH_FLOATING_TYPES(forces.scalar_type(), "firstNonFiniteRow", [&] {
        const scalar_t* f = forces.data_ptr<scalar_t>();
        for (int64_t i = 0; i < forces.numel() && row < 0; i++)
            if (!std::isfinite(f[i]))
                row = i / 3;
    });
    return row;
}

NNPComputation::Output NNPComputation::compute(const Inputs& inputs, const torch::Tensor& positions, const torch::Tensor& box) {
    double scale = inputs.scale;
    torch::Tensor modelPositions = copyForModel(positions, device, model->getDtype());
    torch::Tensor modelBox;
    if (box.defined())
        modelBox = copyForModel(box, device, model->getDtype());
    bool wantForces = inputs.includeForces && scale != 0.0;
    NNPModel::Result result = model->evaluate(modelPositions, modelBox, inputs.parameterValues, wantForces, derivativeMask);

    Output output;
    output.energy = scale * result.energy;
    if (wantForces) {
        int64_t first = firstNonFiniteRow(result.forces);
        if (first >= 0) {
            throw OpenMMException("NNPForce '" + getForceName() + "': the model returned a non-finite force on particle " + to_string(atoms[first]) +
                                  ". Check the positions (overlapping atoms, an exploding simulation) and the model.");
        }
        output.forces = scale == 1.0 ? result.forces : result.forces * scale;
    }
    for (size_t i = 0; i < parameterNames.size(); i++)
        if (derivativeMask[i])
            output.derivatives.emplace_back(parameterNames[i], scale * result.parameterDerivatives[i]);
    if (scaleDerivative)
        output.derivatives.emplace_back(scaleParameter, result.energy);
    return output;
}
