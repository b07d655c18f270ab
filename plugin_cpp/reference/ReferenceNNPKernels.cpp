#include "ReferenceNNPKernels.h"
#include "openmm/OpenMMException.h"
#include "openmm/internal/ContextImpl.h"
#include "openmm/reference/ReferencePlatform.h"
#include <ATen/Parallel.h>
#include <cmath>

using namespace NNPPlugin;
using namespace OpenMM;
using namespace std;

static ReferencePlatform::PlatformData& platformData(ContextImpl& context) {
    return *reinterpret_cast<ReferencePlatform::PlatformData*>(context.getPlatformData());
}

void ReferenceCalcNNPForceKernel::initialize(const System& system, const NNPForce& force, const vector<int>& regionAtoms) {
    atoms = regionAtoms;
    usePeriodic = force.usesPeriodicBoundaryConditions();
    wholePlan = planWholeRegion(atoms, force.getBonds());
    scaleParameter = force.getScaleParameter();
    scaleDerivative = false;
    for (int i = 0; i < force.getNumGlobalParameters(); i++)
        if (force.getGlobalParameterName(i) != scaleParameter)
            parameterNames.push_back(force.getGlobalParameterName(i));
    derivativeMask.assign(parameterNames.size(), false);
    for (int i = 0; i < force.getNumEnergyParameterDerivatives(); i++) {
        const string& name = force.getEnergyParameterDerivativeName(i);
        if (name == scaleParameter)
            scaleDerivative = true;
        for (size_t j = 0; j < parameterNames.size(); j++)
            if (parameterNames[j] == name)
                derivativeMask[j] = true;
    }
    auto properties = force.getProperties();
    if (properties.count("numThreads") && !properties["numThreads"].empty()) {
        int threads;
        try {
            threads = stoi(properties["numThreads"]);
        }
        catch (const std::exception&) {
            threads = -1;
        }
        if (threads < 0)
            throw OpenMMException("NNPForce: property numThreads must be a non-negative integer, not '" + properties["numThreads"] + "'.");
        if (threads > 0)
            at::set_num_threads(threads);
    }
    model.reset(new NNPModel(force, atoms.size(), torch::kCPU));
    positionBuffer.resize(3 * atoms.size());
}

double ReferenceCalcNNPForceKernel::execute(ContextImpl& context, bool includeForces, bool includeEnergy) {
    ReferencePlatform::PlatformData& data = platformData(context);
    double scale = scaleParameter.empty() ? 1.0 : context.getParameter(scaleParameter);
    bool anyDerivative = scaleDerivative;
    for (bool needed : derivativeMask)
        anyDerivative |= needed;
    if (scale == 0.0 && !anyDerivative)
        return 0.0; // switched off: nothing the model computes would be used

    // Gather the region, made whole across periodic boundaries.
    const vector<Vec3>& positions = *data.positions;
    int n = atoms.size();
    double box[3][3];
    for (int i = 0; i < 3; i++)
        for (int k = 0; k < 3; k++)
            box[i][k] = data.periodicBoxVectors[i][k];
    for (int k = 0; k < (int) wholePlan.order.size(); k++) {
        int i = wholePlan.order[k];
        const Vec3& p = positions[atoms[i]];
        if (!usePeriodic || wholePlan.reference[k] < 0) {
            for (int d = 0; d < 3; d++)
                positionBuffer[3 * i + d] = p[d];
            continue;
        }
        int j = wholePlan.reference[k];
        double delta[3] = {p[0] - positions[atoms[j]][0], p[1] - positions[atoms[j]][1], p[2] - positions[atoms[j]][2]};
        minimumImage(delta, box);
        for (int d = 0; d < 3; d++)
            positionBuffer[3 * i + d] = positionBuffer[3 * j + d] + delta[d];
    }
    torch::Tensor positionTensor = torch::from_blob(positionBuffer.data(), {n, 3}, torch::kFloat64).to(model->getDtype());
    if (positionTensor.data_ptr() == positionBuffer.data())
        positionTensor = positionTensor.clone(); // the model may keep references; never hand it our buffer
    torch::Tensor boxTensor;
    if (usePeriodic)
        boxTensor = torch::from_blob(&box[0][0], {3, 3}, torch::kFloat64).clone();
    vector<double> parameterValues;
    for (auto& name : parameterNames)
        parameterValues.push_back(context.getParameter(name));

    NNPModel::Result result = model->evaluate(positionTensor, boxTensor, parameterValues, includeForces && scale != 0.0, derivativeMask);

    if (includeForces && scale != 0.0) {
        torch::Tensor forces = result.forces.to(torch::kFloat64).contiguous();
        const double* f = forces.data_ptr<double>();
        vector<Vec3>& forceBuffer = *data.forces;
        for (int i = 0; i < n; i++) {
            if (!(std::isfinite(f[3 * i]) && std::isfinite(f[3 * i + 1]) && std::isfinite(f[3 * i + 2])))
                throw OpenMMException("NNPForce '" + model->getForceName() + "': the model returned a non-finite force on particle " + to_string(atoms[i]) +
                                      ". Check the positions (overlapping atoms, an exploding simulation) and the model.");
            forceBuffer[atoms[i]] += Vec3(f[3 * i], f[3 * i + 1], f[3 * i + 2]) * scale;
        }
    }
    map<string, double>& derivatives = *data.energyParameterDerivatives;
    for (size_t i = 0; i < parameterNames.size(); i++)
        if (derivativeMask[i])
            derivatives[parameterNames[i]] += scale * result.parameterDerivatives[i];
    if (scaleDerivative)
        derivatives[scaleParameter] += result.energy;
    return scale * result.energy;
}
