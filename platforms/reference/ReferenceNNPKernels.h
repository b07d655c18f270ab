#ifndef OPENMM_REFERENCE_NNP_KERNELS_H_
#define OPENMM_REFERENCE_NNP_KERNELS_H_

#include "NNPKernels.h"
#include "NNPComputation.h"
#include "NNPWorker.h"
#include "RegionGeometry.h"
#include <exception>
#include <memory>

namespace NNPPlugin {

/**
 * NNPForce on the Reference and CPU platforms: positions and forces live on the host; torch runs on the CPU.
 *
 * Overlap (property `overlap`, CPU platform, off by default): prepare(), called when a step begins,
 * starts the model on a worker thread with the positions, box and parameters of that moment, so that it
 * runs while OpenMM computes the other forces. execute() waits for that result and uses it only if it was
 * computed from bitwise the same inputs as it would compute from now (and forces are requested); otherwise
 * it computes again, also on the worker thread. Every evaluation thus runs on the same thread with the same
 * torch thread count (numThreads, or one), and the result does not depend on whether it was prefetched.
 */
class ReferenceCalcNNPForceKernel : public CalcNNPForceKernel {
public:
    ReferenceCalcNNPForceKernel(std::string name, const OpenMM::Platform& platform) : CalcNNPForceKernel(name, platform) {
    }
    ~ReferenceCalcNNPForceKernel();
    void initialize(const OpenMM::System& system, const NNPForce& force, const std::vector<int>& atoms);
    void prepare(OpenMM::ContextImpl& context);
    double execute(OpenMM::ContextImpl& context, bool includeForces, bool includeEnergy);
    OverlapStatistics getOverlapStatistics() const {
        return statistics;
    }
private:
    /** The region's positions made whole (into `buffer`) and the box (into `box`) from the context. */
    void gather(OpenMM::ContextImpl& context, std::vector<double>& buffer, double box[3][3]);
    /** Wait for a running prefetch; it stays available to execute() unless `discard`. */
    void finishPrefetch(bool discard);
    std::unique_ptr<NNPComputation> computation;
    std::vector<int> atoms;
    WholeRegionPlan wholePlan;
    bool usePeriodic;
    std::vector<double> positionBuffer;
    // Overlap state. The worker only touches computation and the prefetch* members while it is busy,
    // and every other use of them waits for it first.
    bool overlap;
    int forceGroup;
    std::vector<double> prefetchPositions;
    double prefetchBox[3][3];
    NNPComputation::Inputs prefetchInputs;
    NNPComputation::Output prefetchOutput;
    std::exception_ptr prefetchError;
    bool hasPrefetch;        // a prefetch was started and neither used nor discarded
    int skipPrefetches;      // prefetches still to skip after misses (the inputs changed between prepare and execute)
    int nextSkip;            // how many to skip after the next miss (doubles with each miss in a row)
    OverlapStatistics statistics;
    std::unique_ptr<NNPWorker> worker; // declared last: destroyed first, waiting for a running prefetch
};

/** CombineForcesKernel on the Reference and CPU platforms: the forces are the host array of the Reference platform data. */
class ReferenceCombineForcesKernel : public CombineForcesKernel {
public:
    ReferenceCombineForcesKernel(std::string name, const OpenMM::Platform& platform) : CombineForcesKernel(name, platform) {
    }
    void initialize(const OpenMM::System& system) {
    }
    void saveForces(OpenMM::ContextImpl& context);
    void scaleAndAddSavedForces(OpenMM::ContextImpl& context, int multiple);
private:
    std::vector<OpenMM::Vec3> saved;
};

} // namespace NNPPlugin

#endif /*OPENMM_REFERENCE_NNP_KERNELS_H_*/
