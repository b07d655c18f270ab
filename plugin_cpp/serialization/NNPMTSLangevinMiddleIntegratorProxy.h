#ifndef OPENMM_NNP_MTS_LANGEVIN_MIDDLE_INTEGRATOR_PROXY_H_
#define OPENMM_NNP_MTS_LANGEVIN_MIDDLE_INTEGRATOR_PROXY_H_

#include "NNPMTSLangevinMiddleIntegrator.h"
#include "openmm/serialization/SerializationProxy.h"

namespace NNPPlugin {

/** Reads and writes NNPMTSLangevinMiddleIntegrator as XML. */
class OPENMM_NNP_EXPORT NNPMTSLangevinMiddleIntegratorProxy : public OpenMM::SerializationProxy {
public:
    NNPMTSLangevinMiddleIntegratorProxy();
    void serialize(const void* object, OpenMM::SerializationNode& node) const;
    void* deserialize(const OpenMM::SerializationNode& node) const;
};

} // namespace NNPPlugin

#endif /*OPENMM_NNP_MTS_LANGEVIN_MIDDLE_INTEGRATOR_PROXY_H_*/
