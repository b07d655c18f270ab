#ifndef OPENMM_NNP_KERNELS_H_
#define OPENMM_NNP_KERNELS_H_

#include "NNPForce.h"
#include "openmm/KernelImpl.h"
#include "openmm/Platform.h"
#include "openmm/System.h"
#include <string>

namespace NNPPlugin {

/** Counts of what happened to the model evaluations started ahead of time (kernels that overlap). */
struct OverlapStatistics {
    long long started = 0;   // prefetches started by prepare()
    long long used = 0;      // results execute() used
    long long discarded = 0; // results computed from inputs that had changed by the time they were needed
};

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
    /**
     * Called when an integrator begins a step, before it computes forces: a kernel may start the model
     * on the current state here, as long as execute() returns exactly what it would have computed.
     */
    virtual void prepare(OpenMM::ContextImpl& context) {
    }
    /** Add the region's forces to the context and return its energy. */
    virtual double execute(OpenMM::ContextImpl& context, bool includeForces, bool includeEnergy) = 0;
    /** What happened to evaluations started by prepare() (all zero for kernels that start none). */
    virtual OverlapStatistics getOverlapStatistics() const {
        return OverlapStatistics();
    }
};

/**
 * Combines two force-group evaluations in the context's force buffer for NNPMTSLangevinMiddleIntegrator:
 * saveForces() keeps a copy of the forces the context holds (one group's, just computed), and after the
 * next group's computation scaleAndAddSavedForces() makes the forces a multiple of that group's plus the kept
 * ones. Forces are kept per atom, so a reordering of the atoms in between does not matter.
 */
class CombineForcesKernel : public OpenMM::KernelImpl {
public:
    static std::string Name() {
        return "NNPCombineForces";
    }
    CombineForcesKernel(std::string name, const OpenMM::Platform& platform) : OpenMM::KernelImpl(name, platform) {
    }
    virtual void initialize(const OpenMM::System& system) = 0;
    /** Keep a copy of the context's current forces. */
    virtual void saveForces(OpenMM::ContextImpl& context) = 0;
    /** Replace the context's current forces F by multiple * F + the kept forces. */
    virtual void scaleAndAddSavedForces(OpenMM::ContextImpl& context, int multiple) = 0;
};

} // namespace NNPPlugin

#endif /*OPENMM_NNP_KERNELS_H_*/
