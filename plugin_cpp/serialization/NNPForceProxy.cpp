#include "NNPForceProxy.h"
#include "NNPMTSLangevinMiddleIntegratorProxy.h"
#include "Base64.h"
#include "openmm/OpenMMException.h"
#include "openmm/serialization/SerializationNode.h"
#include "openmm/serialization/SerializationProxy.h"

using namespace NNPPlugin;
using namespace OpenMM;
using namespace std;

// Version 1: model (base64), atoms, bonds, periodicity, outputsForces, global parameters,
// energy parameter derivatives, scale parameter, properties, force group and name.
static const int SERIALIZATION_VERSION = 1;

NNPForceProxy::NNPForceProxy() : SerializationProxy("NNPForce") {
}

void NNPForceProxy::serialize(const void* object, SerializationNode& node) const {
    node.setIntProperty("version", SERIALIZATION_VERSION);
    const NNPForce& force = *reinterpret_cast<const NNPForce*>(object);
    node.setIntProperty("forceGroup", force.getForceGroup());
    node.setStringProperty("name", force.getName());
    node.setBoolProperty("usesPeriodic", force.usesPeriodicBoundaryConditions());
    node.setBoolProperty("outputsForces", force.getOutputsForces());
    node.setStringProperty("scaleParameter", force.getScaleParameter());
    node.createChildNode("Model").setStringProperty("encoding", "base64").setIntProperty("size", force.getModelBytes().size())
        .setStringProperty("data", base64Encode(force.getModelBytes()));
    SerializationNode& atoms = node.createChildNode("Atoms");
    for (int atom : force.getAtoms())
        atoms.createChildNode("Atom").setIntProperty("index", atom);
    SerializationNode& bonds = node.createChildNode("Bonds");
    for (auto& bond : force.getBonds())
        bonds.createChildNode("Bond").setIntProperty("p1", bond.first).setIntProperty("p2", bond.second);
    SerializationNode& parameters = node.createChildNode("GlobalParameters");
    for (int i = 0; i < force.getNumGlobalParameters(); i++)
        parameters.createChildNode("Parameter").setStringProperty("name", force.getGlobalParameterName(i))
            .setDoubleProperty("default", force.getGlobalParameterDefaultValue(i));
    SerializationNode& derivatives = node.createChildNode("EnergyParameterDerivatives");
    for (int i = 0; i < force.getNumEnergyParameterDerivatives(); i++)
        derivatives.createChildNode("Parameter").setStringProperty("name", force.getEnergyParameterDerivativeName(i));
    SerializationNode& properties = node.createChildNode("Properties");
    for (auto& property : force.getProperties())
        properties.createChildNode("Property").setStringProperty("name", property.first).setStringProperty("value", property.second);
}

void* NNPForceProxy::deserialize(const SerializationNode& node) const {
    int version = node.getIntProperty("version");
    if (version < 1 || version > SERIALIZATION_VERSION)
        throw OpenMMException("NNPForce: unsupported serialization version " + to_string(version) + " (this build reads versions 1 to " + to_string(SERIALIZATION_VERSION) + "); update openmm-nnp.");
    NNPForce* force = new NNPForce();
    try {
        force->setForceGroup(node.getIntProperty("forceGroup", 0));
        force->setName(node.getStringProperty("name", force->getName()));
        force->setUsesPeriodicBoundaryConditions(node.getBoolProperty("usesPeriodic"));
        force->setOutputsForces(node.getBoolProperty("outputsForces"));
        const SerializationNode& model = node.getChildNode("Model");
        if (model.getStringProperty("encoding") != "base64")
            throw OpenMMException("NNPForce: unknown model encoding '" + model.getStringProperty("encoding") + "' in the XML.");
        string bytes = base64Decode(model.getStringProperty("data"));
        if ((long long) bytes.size() != model.getIntProperty("size"))
            throw OpenMMException("NNPForce: the model embedded in the XML is truncated or corrupt (" + to_string(bytes.size()) + " bytes decoded, " + to_string(model.getIntProperty("size")) + " expected).");
        force->setModelBytes(bytes);
        vector<int> atoms;
        for (auto& atom : node.getChildNode("Atoms").getChildren())
            atoms.push_back(atom.getIntProperty("index"));
        force->setAtoms(atoms);
        vector<pair<int, int> > bonds;
        for (auto& bond : node.getChildNode("Bonds").getChildren())
            bonds.push_back(make_pair(bond.getIntProperty("p1"), bond.getIntProperty("p2")));
        force->setBonds(bonds);
        for (auto& parameter : node.getChildNode("GlobalParameters").getChildren())
            force->addGlobalParameter(parameter.getStringProperty("name"), parameter.getDoubleProperty("default"));
        // The scale parameter is one of the global parameters read above; this marks it as such.
        string scale = node.getStringProperty("scaleParameter");
        for (int i = 0; i < force->getNumGlobalParameters(); i++)
            if (force->getGlobalParameterName(i) == scale)
                force->setScaleParameter(scale, force->getGlobalParameterDefaultValue(i));
        if (force->getScaleParameter() != scale)
            throw OpenMMException("NNPForce: the scale parameter '" + scale + "' in the XML is not among its global parameters.");
        for (auto& derivative : node.getChildNode("EnergyParameterDerivatives").getChildren())
            force->addEnergyParameterDerivative(derivative.getStringProperty("name"));
        for (auto& property : node.getChildNode("Properties").getChildren())
            force->setProperty(property.getStringProperty("name"), property.getStringProperty("value"));
    }
    catch (...) {
        delete force;
        throw;
    }
    return force;
}

// Register the proxies when the library is loaded, so XmlSerializer knows NNPForce and NNPMTSLangevinMiddleIntegrator
// in every process that loads openmm-nnp (Python: import openmm_nnp).
extern "C" OPENMM_NNP_EXPORT void registerNNPSerializationProxies() {
    SerializationProxy::registerProxy(typeid(NNPForce), new NNPForceProxy());
    SerializationProxy::registerProxy(typeid(NNPMTSLangevinMiddleIntegrator), new NNPMTSLangevinMiddleIntegratorProxy());
}

namespace {
struct RegisterProxies {
    RegisterProxies() {
        registerNNPSerializationProxies();
    }
} registerProxiesAtLoad;
}
