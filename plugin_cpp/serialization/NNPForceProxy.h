#ifndef OPENMM_NNP_FORCE_PROXY_H_
#define OPENMM_NNP_FORCE_PROXY_H_

#include "NNPForce.h"
#include "openmm/serialization/SerializationProxy.h"

namespace NNPPlugin {

/** Reads and writes NNPForce as XML; the model travels inside the XML as base64. */
class OPENMM_NNP_EXPORT NNPForceProxy : public OpenMM::SerializationProxy {
public:
    NNPForceProxy();
    void serialize(const void* object, OpenMM::SerializationNode& node) const;
    void* deserialize(const OpenMM::SerializationNode& node) const;
};

} // namespace NNPPlugin

#endif /*OPENMM_NNP_FORCE_PROXY_H_*/
