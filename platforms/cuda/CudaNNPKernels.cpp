#include "CudaNNPKernels.h"
#include <torch/cuda.h>

using namespace NNPPlugin;
using namespace OpenMM;
using namespace std;

CudaCalcNNPForceKernel::CudaCalcNNPForceKernel(string name, const Platform& platform, CudaContext& cu) :
        CommonCalcNNPForceKernel(name, platform, cu), cu(cu), onDevice(false) {
}

torch::Device CudaCalcNNPForceKernel::modelDevice() {
    onDevice = torch::cuda::is_available() && cu.getDeviceIndex() < (int) torch::cuda::device_count();
    if (onDevice)
        return torch::Device(torch::kCUDA, cu.getDeviceIndex());
    return CommonCalcNNPForceKernel::modelDevice();
}

torch::Tensor CudaCalcNNPForceKernel::deviceTensor(ComputeArray& array) {
    void* data = reinterpret_cast<void*>(cu.unwrap(array).getDevicePointer());
    return torch::from_blob(data, {numRegionAtoms, 3}, torch::TensorOptions().dtype(mixedDtype()).device(torch::kCUDA, cu.getDeviceIndex()));
}

torch::Tensor CudaCalcNNPForceKernel::positionsToModel() {
    if (!onDevice)
        return CommonCalcNNPForceKernel::positionsToModel();
    cc.flushQueue(); // torch works on its own stream: the gather on OpenMM's must have finished
    return deviceTensor(regionPositions);
}

void CudaCalcNNPForceKernel::forcesFromModel(const torch::Tensor& forces) {
    if (!onDevice) {
        CommonCalcNNPForceKernel::forcesFromModel(forces);
        return;
    }
    deviceTensor(regionForces).copy_(forces);
    torch::cuda::synchronize(cu.getDeviceIndex()); // before OpenMM's stream reads them
}
