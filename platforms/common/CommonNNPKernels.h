#ifndef OPENMM_COMMON_NNP_KERNELS_H_
#define OPENMM_COMMON_NNP_KERNELS_H_

#include "NNPKernels.h"
#include "NNPComputation.h"
#include "openmm/common/ComputeArray.h"
#include "openmm/common/ComputeContext.h"
#include <memory>

namespace NNPPlugin {

/**
 * NNPForce on OpenMM's GPU platforms (CUDA, OpenCL), written once against OpenMM's ComputeContext.
 * Each step a device kernel gathers the region from posq through OpenMM's atom reordering and makes
 * it whole; the model runs where the two transfer hooks put it (here: on the host, with one download
 * of the region's positions and one upload of its forces); a second kernel adds the forces to the
 * fixed-point force buffer.
 */
class CommonCalcNNPForceKernel : public CalcNNPForceKernel {
public:
    CommonCalcNNPForceKernel(std::string name, const OpenMM::Platform& platform, OpenMM::ComputeContext& cc);
    ~CommonCalcNNPForceKernel();
    void initialize(const OpenMM::System& system, const NNPForce& force, const std::vector<int>& atoms);
    double execute(OpenMM::ContextImpl& context, bool includeForces, bool includeEnergy);
protected:
    /** The device the model runs on. */
    virtual torch::Device modelDevice();
    /** The gathered region positions (regionPositions, [n,3] in `mixed`) as a tensor for the model. */
    virtual torch::Tensor positionsToModel();
    /** Put the model's forces ([n,3], on modelDevice()) into regionForces ([n,3] in `mixed`). */
    virtual void forcesFromModel(const torch::Tensor& forces);
    /** The torch dtype of the platform's `mixed` type (the arrays above). */
    torch::ScalarType mixedDtype() const;
    OpenMM::ComputeContext& cc;
    OpenMM::ComputeArray regionPositions, regionForces;
    int numRegionAtoms;
private:
    class ReorderListener;
    class ForceInfo;
    void updateSlots();
    std::unique_ptr<NNPComputation> computation;
    std::vector<int> atoms;
    bool usePeriodic;
    OpenMM::ComputeArray slots, wholeOrder, wholeReference;
    OpenMM::ComputeKernel gatherKernel, scatterKernel;
    std::vector<char> hostBuffer;
};

/** CombineForcesKernel on OpenMM's GPU platforms: device kernels on the fixed-point force buffer. */
class CommonCombineForcesKernel : public CombineForcesKernel {
public:
    CommonCombineForcesKernel(std::string name, const OpenMM::Platform& platform, OpenMM::ComputeContext& cc) :
            CombineForcesKernel(name, platform), cc(cc) {
    }
    void initialize(const OpenMM::System& system);
    void saveForces(OpenMM::ContextImpl& context);
    void scaleAndAddSavedForces(OpenMM::ContextImpl& context, int multiple);
private:
    OpenMM::ComputeContext& cc;
    OpenMM::ComputeArray saved;
    OpenMM::ComputeKernel saveKernel, addKernel;
};

} // namespace NNPPlugin

#endif /*OPENMM_COMMON_NNP_KERNELS_H_*/
