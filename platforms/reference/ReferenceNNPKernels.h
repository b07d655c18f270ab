#ifndef OPENMM_REFERENCE_NNP_KERNELS_H_
#define OPENMM_REFERENCE_NNP_KERNELS_H_

#include "NNPKernels.h"
#include "NNPComputation.h"
#include "RegionGeometry.h"
#include <memory>

namespace NNPPlugin {

/** NNPForce on the Reference and CPU platforms: positions and forces live on the host; torch runs on the CPU. */
class ReferenceCalcNNPForceKernel : public CalcNNPForceKernel {
public:
    ReferenceCalcNNPForceKernel(std::string name, const OpenMM::Platform& platform) : CalcNNPForceKernel(name, platform) {
    }
    void initialize(const OpenMM::System& system, const NNPForce& force, const std::vector<int>& atoms);
    double execute(OpenMM::ContextImpl& context, bool includeForces, bool includeEnergy);
private:
    std::unique_ptr<NNPComputation> computation;
    std::vector<int> atoms;
    WholeRegionPlan wholePlan;
    bool usePeriodic;
    std::vector<double> positionBuffer;
};

} // namespace NNPPlugin

#endif /*OPENMM_REFERENCE_NNP_KERNELS_H_*/
