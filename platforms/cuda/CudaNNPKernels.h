#ifndef OPENMM_CUDA_NNP_KERNELS_H_
#define OPENMM_CUDA_NNP_KERNELS_H_

#include "CommonNNPKernels.h"
#include "openmm/cuda/CudaContext.h"

namespace NNPPlugin {

/**
 * NNPForce on OpenMM's CUDA platform. With a CUDA build of torch that sees OpenMM's device, the model
 * runs on that device and positions and forces stay there: torch reads the gathered region and writes
 * the forces through tensors over OpenMM's own arrays. Otherwise the Common kernel's host path is used.
 */
class CudaCalcNNPForceKernel : public CommonCalcNNPForceKernel {
public:
    CudaCalcNNPForceKernel(std::string name, const OpenMM::Platform& platform, OpenMM::CudaContext& cu);
protected:
    torch::Device modelDevice();
    torch::Tensor positionsToModel();
    void forcesFromModel(const torch::Tensor& forces);
private:
    torch::Tensor deviceTensor(OpenMM::ComputeArray& array);
    OpenMM::CudaContext& cu;
    bool onDevice;
};

} // namespace NNPPlugin

#endif /*OPENMM_CUDA_NNP_KERNELS_H_*/
