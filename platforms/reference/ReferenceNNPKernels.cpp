#include "ReferenceNNPKernels.h"
#include "openmm/internal/ContextImpl.h"
#include "openmm/reference/ReferencePlatform.h"

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
    computation.reset(new NNPComputation(force, atoms, torch::kCPU));
    positionBuffer.resize(3 * atoms.size());
}

double ReferenceCalcNNPForceKernel::execute(ContextImpl& context, bool includeForces, bool includeEnergy) {
    if (!computation->isActive(context))
        return 0.0; // switched off: nothing the model computes would be used
    ReferencePlatform::PlatformData& data = platformData(context);

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
    torch::Tensor positionTensor = torch::from_blob(positionBuffer.data(), {n, 3}, torch::kFloat64);
    torch::Tensor boxTensor;
    if (usePeriodic)
        boxTensor = torch::from_blob(&box[0][0], {3, 3}, torch::kFloat64);

    NNPComputation::Output output = computation->evaluate(context, positionTensor, boxTensor, includeForces, *data.energyParameterDerivatives);

    if (output.forces.defined()) {
        torch::Tensor forces = output.forces.to(torch::kCPU, torch::kFloat64).contiguous();
        const double* f = forces.data_ptr<double>();
        vector<Vec3>& forceBuffer = *data.forces;
        for (int i = 0; i < n; i++)
            forceBuffer[atoms[i]] += Vec3(f[3 * i], f[3 * i + 1], f[3 * i + 2]);
    }
    return output.energy;
}
