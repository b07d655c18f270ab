#include "NNPMTSLangevinMiddleIntegratorProxy.h"
#include "openmm/OpenMMException.h"
#include "openmm/serialization/SerializationNode.h"

using namespace NNPPlugin;
using namespace OpenMM;
using namespace std;

// Version 1: step size, constraint tolerance, temperature, friction, random seed, slow interval, slow and fast group.
static const int SERIALIZATION_VERSION = 1;

NNPMTSLangevinMiddleIntegratorProxy::NNPMTSLangevinMiddleIntegratorProxy() : SerializationProxy("NNPMTSLangevinMiddleIntegrator") {
}

void NNPMTSLangevinMiddleIntegratorProxy::serialize(const void* object, SerializationNode& node) const {
    node.setIntProperty("version", SERIALIZATION_VERSION);
    const NNPMTSLangevinMiddleIntegrator& integrator = *reinterpret_cast<const NNPMTSLangevinMiddleIntegrator*>(object);
    node.setDoubleProperty("stepSize", integrator.getStepSize());
    node.setDoubleProperty("constraintTolerance", integrator.getConstraintTolerance());
    node.setDoubleProperty("temperature", integrator.getTemperature());
    node.setDoubleProperty("friction", integrator.getFriction());
    node.setIntProperty("randomSeed", integrator.getRandomNumberSeed());
    node.setIntProperty("slowInterval", integrator.getSlowInterval());
    node.setIntProperty("slowGroup", integrator.getSlowGroup());
    node.setIntProperty("fastGroup", integrator.getFastGroup());
}

void* NNPMTSLangevinMiddleIntegratorProxy::deserialize(const SerializationNode& node) const {
    int version = node.getIntProperty("version");
    if (version != SERIALIZATION_VERSION)
        throw OpenMMException("NNPMTSLangevinMiddleIntegrator: unsupported serialization version " + to_string(version) +
                              " (this openmm-nnp reads version " + to_string(SERIALIZATION_VERSION) + ").");
    NNPMTSLangevinMiddleIntegrator* integrator = new NNPMTSLangevinMiddleIntegrator(node.getDoubleProperty("temperature"),
            node.getDoubleProperty("friction"), node.getDoubleProperty("stepSize"), node.getIntProperty("slowInterval"),
            node.getIntProperty("slowGroup"), node.getIntProperty("fastGroup"));
    integrator->setConstraintTolerance(node.getDoubleProperty("constraintTolerance"));
    integrator->setRandomNumberSeed(node.getIntProperty("randomSeed"));
    return integrator;
}
