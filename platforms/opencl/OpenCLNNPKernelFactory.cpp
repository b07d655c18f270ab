// NNPForce kernels for OpenMM's OpenCL platform: the Common kernel on the platform's first device context.
#include "CommonNNPKernels.h"
#include "openmm/KernelFactory.h"
#include "openmm/OpenMMException.h"
#include "openmm/internal/ContextImpl.h"
#include "openmm/opencl/OpenCLContext.h"
#include "openmm/opencl/OpenCLPlatform.h"

using namespace NNPPlugin;
using namespace OpenMM;

namespace {
class OpenCLNNPKernelFactory : public KernelFactory {
public:
    KernelImpl* createKernelImpl(std::string name, const Platform& platform, ContextImpl& context) const {
        OpenCLPlatform::PlatformData& data = *static_cast<OpenCLPlatform::PlatformData*>(context.getPlatformData());
        if (name == CalcNNPForceKernel::Name())
            return new CommonCalcNNPForceKernel(name, platform, *data.contexts[0]);
        if (name == CombineForcesKernel::Name())
            return new CommonCombineForcesKernel(name, platform, *data.contexts[0]);
        throw OpenMMException("openmm-nnp: the OpenCL kernel factory was asked for an unknown kernel '" + name + "'.");
    }
};
}

extern "C" OPENMM_NNP_EXPORT void registerKernelFactories() {
    requireTorchOperators(); // models may call openmm-nnp's TorchScript operators
    for (int i = 0; i < Platform::getNumPlatforms(); i++) {
        Platform& platform = Platform::getPlatform(i);
        if (dynamic_cast<OpenCLPlatform*>(&platform) != NULL) {
            OpenCLNNPKernelFactory* factory = new OpenCLNNPKernelFactory();
            platform.registerKernelFactory(CalcNNPForceKernel::Name(), factory);
            platform.registerKernelFactory(CombineForcesKernel::Name(), factory);
        }
    }
}

extern "C" OPENMM_NNP_EXPORT void registerPlatforms() {
}
