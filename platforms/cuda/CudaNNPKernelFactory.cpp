// NNPForce kernels for OpenMM's CUDA platform.
#include "CudaNNPKernels.h"
#include "openmm/KernelFactory.h"
#include "openmm/OpenMMException.h"
#include "openmm/cuda/CudaPlatform.h"
#include "openmm/internal/ContextImpl.h"

using namespace NNPPlugin;
using namespace OpenMM;

namespace {
class CudaNNPKernelFactory : public KernelFactory {
public:
    KernelImpl* createKernelImpl(std::string name, const Platform& platform, ContextImpl& context) const {
        CudaPlatform::PlatformData& data = *static_cast<CudaPlatform::PlatformData*>(context.getPlatformData());
        if (name == CalcNNPForceKernel::Name())
            return new CudaCalcNNPForceKernel(name, platform, *data.contexts[0]);
        if (name == CombineForcesKernel::Name())
            return new CommonCombineForcesKernel(name, platform, *data.contexts[0]);
        throw OpenMMException("openmm-nnp: the CUDA kernel factory was asked for an unknown kernel '" + name + "'.");
    }
};
}

extern "C" OPENMM_NNP_EXPORT void registerKernelFactories() {
    requireTorchOperators(); // models may call openmm-nnp's TorchScript operators
    for (int i = 0; i < Platform::getNumPlatforms(); i++) {
        Platform& platform = Platform::getPlatform(i);
        if (dynamic_cast<CudaPlatform*>(&platform) != NULL) {
            CudaNNPKernelFactory* factory = new CudaNNPKernelFactory();
            platform.registerKernelFactory(CalcNNPForceKernel::Name(), factory);
            platform.registerKernelFactory(CombineForcesKernel::Name(), factory);
        }
    }
}

extern "C" OPENMM_NNP_EXPORT void registerPlatforms() {
}
