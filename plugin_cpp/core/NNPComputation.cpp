#include "NNPComputation.h"
#include "NNPTorchOps.h"
#include "openmm/OpenMMException.h"
#include <ATen/Parallel.h>

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

NNPComputation::Output NNPComputation::compute(const Inputs& inputs, const torch::Tensor& positions, const torch::Tensor& box) {
    double scale = inputs.scale;
    // Always a copy: the model may keep references to its input, and the caller's buffer is reused.
    torch::Tensor modelPositions = positions.to(device, model->getDtype(), false, true);
    torch::Tensor modelBox;
    if (box.defined())
        modelBox = box.to(device, model->getDtype(), false, true);
    bool wantForces = inputs.includeForces && scale != 0.0;
    NNPModel::Result result = model->evaluate(modelPositions, modelBox, inputs.parameterValues, wantForces, derivativeMask);

    Output output;
    output.energy = scale * result.energy;
    if (wantForces) {
        torch::Tensor finite = torch::isfinite(result.forces).all(1);
        if (!finite.all().item<bool>()) {
            int first = torch::nonzero(finite.logical_not()).index({0, 0}).item<int64_t>();
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
