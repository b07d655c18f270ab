#ifndef OPENMM_NNP_KERNELS_H_
#define OPENMM_NNP_KERNELS_H_

#include "NNPForce.h"
#include "openmm/KernelImpl.h"
#include "openmm/Platform.h"
#include "openmm/System.h"
#include <string>

namespace NNPPlugin {

/** The kernel that evaluates an NNPForce; each platform provides its own implementation. */
class CalcNNPForceKernel : public OpenMM::KernelImpl {
public:
    static std::string Name() {
        return "CalcNNPForce";
    }
    CalcNNPForceKernel(std::string name, const OpenMM::Platform& platform) : OpenMM::KernelImpl(name, platform) {
    }
    /** Prepare the kernel: load and check the model. `atoms` is the resolved region (never empty). */
    virtual void initialize(const OpenMM::System& system, const NNPForce& force, const std::vector<int>& atoms) = 0;
    /** Add the region's forces to the context and return its energy. */
    virtual double execute(OpenMM::ContextImpl& context, bool includeForces, bool includeEnergy) = 0;
};

} // namespace NNPPlugin

#endif /*OPENMM_NNP_KERNELS_H_*/
