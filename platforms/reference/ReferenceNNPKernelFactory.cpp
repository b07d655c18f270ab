#include "ReferenceNNPKernels.h"
#include "NNPComputation.h"
#include "openmm/OpenMMException.h"
#include "openmm/reference/ReferencePlatform.h"
#include "openmm/internal/ContextImpl.h"
#include "openmm/KernelFactory.h"

using namespace NNPPlugin;
using namespace OpenMM;

namespace {
class ReferenceNNPKernelFactory : public KernelFactory {
public:
    KernelImpl* createKernelImpl(std::string name, const Platform& platform, ContextImpl& context) const {
        if (name == CalcNNPForceKernel::Name())
            return new ReferenceCalcNNPForceKernel(name, platform);
        if (name == CombineForcesKernel::Name())
            return new ReferenceCombineForcesKernel(name, platform);
        throw OpenMMException("openmm-nnp: the Reference kernel factory was asked for an unknown kernel '" + name + "'.");
    }
};
}

// Called by OpenMM when this library is loaded as a plugin (Platform::loadPluginLibrary). The kernel
// serves every platform built on the Reference platform's data structures, which includes the CPU platform.
extern "C" OPENMM_NNP_EXPORT void registerKernelFactories() {
    requireTorchOperators(); // models may call openmm-nnp's TorchScript operators
    for (int i = 0; i < Platform::getNumPlatforms(); i++) {
        Platform& platform = Platform::getPlatform(i);
        if (dynamic_cast<ReferencePlatform*>(&platform) != NULL) {
            ReferenceNNPKernelFactory* factory = new ReferenceNNPKernelFactory();
            platform.registerKernelFactory(CalcNNPForceKernel::Name(), factory);
            platform.registerKernelFactory(CombineForcesKernel::Name(), factory);
        }
    }
}

extern "C" OPENMM_NNP_EXPORT void registerPlatforms() {
}
