#include "NNPForce.h"
#include "internal/NNPForceImpl.h"
#include "openmm/Context.h"
#include "openmm/OpenMMException.h"
#include <fstream>
#include <set>
#include <sstream>

using namespace NNPPlugin;
using namespace OpenMM;
using namespace std;

NNPForce::NNPForce() : usePeriodic(false), outputsForces(false) {
}

NNPForce::NNPForce(const string& file, const vector<int>& atoms) : NNPForce() {
    ifstream in(file, ios::binary);
    if (!in)
        throw OpenMMException("NNPForce: cannot open the model file '" + file + "'. Check the path; the file must be a TorchScript module saved with torch.jit.save.");
    stringstream contents;
    contents << in.rdbuf();
    modelBytes = contents.str();
    if (modelBytes.empty())
        throw OpenMMException("NNPForce: the model file '" + file + "' is empty.");
    setAtoms(atoms);
}

const string& NNPForce::getModelBytes() const {
    return modelBytes;
}

void NNPForce::setModelBytes(const string& bytes) {
    modelBytes = bytes;
}

const vector<int>& NNPForce::getAtoms() const {
    return atoms;
}

void NNPForce::setAtoms(const vector<int>& newAtoms) {
    set<int> seen;
    for (int atom : newAtoms) {
        if (atom < 0)
            throw OpenMMException("NNPForce: atom index " + to_string(atom) + " is negative; region atoms are particle indices of the System.");
        if (!seen.insert(atom).second)
            throw OpenMMException("NNPForce: atom index " + to_string(atom) + " appears more than once in the region; each particle may be listed only once.");
    }
    atoms = newAtoms;
}

const vector<pair<int, int> >& NNPForce::getBonds() const {
    return bonds;
}

void NNPForce::setBonds(const vector<pair<int, int> >& newBonds) {
    for (auto& bond : newBonds)
        if (bond.first < 0 || bond.second < 0 || bond.first == bond.second)
            throw OpenMMException("NNPForce: invalid bond (" + to_string(bond.first) + ", " + to_string(bond.second) + "); bonds join two different particles of the region.");
    bonds = newBonds;
}

void NNPForce::setUsesPeriodicBoundaryConditions(bool periodic) {
    usePeriodic = periodic;
}

bool NNPForce::usesPeriodicBoundaryConditions() const {
    return usePeriodic;
}

void NNPForce::setOutputsForces(bool outputs) {
    outputsForces = outputs;
}

bool NNPForce::getOutputsForces() const {
    return outputsForces;
}

int NNPForce::getNumGlobalParameters() const {
    return globalParameters.size();
}

int NNPForce::addGlobalParameter(const string& name, double defaultValue) {
    if (name.empty())
        throw OpenMMException("NNPForce: a global parameter needs a name.");
    for (auto& param : globalParameters)
        if (param.name == name)
            throw OpenMMException("NNPForce: the global parameter '" + name + "' was already added" +
                                  (name == scaleParameter ? " (it is the scale parameter)." : "."));
    globalParameters.push_back({name, defaultValue});
    return globalParameters.size() - 1;
}

static void checkIndex(int index, int size, const char* what) {
    if (index < 0 || index >= size)
        throw OpenMMException(string("NNPForce: ") + what + " index " + to_string(index) + " is out of range (there are " + to_string(size) + ").");
}

const string& NNPForce::getGlobalParameterName(int index) const {
    checkIndex(index, globalParameters.size(), "global parameter");
    return globalParameters[index].name;
}

void NNPForce::setGlobalParameterName(int index, const string& name) {
    checkIndex(index, globalParameters.size(), "global parameter");
    globalParameters[index].name = name;
}

double NNPForce::getGlobalParameterDefaultValue(int index) const {
    checkIndex(index, globalParameters.size(), "global parameter");
    return globalParameters[index].defaultValue;
}

void NNPForce::setGlobalParameterDefaultValue(int index, double defaultValue) {
    checkIndex(index, globalParameters.size(), "global parameter");
    globalParameters[index].defaultValue = defaultValue;
}

void NNPForce::addEnergyParameterDerivative(const string& name) {
    for (auto& existing : energyParameterDerivatives)
        if (existing == name)
            return;
    energyParameterDerivatives.push_back(name);
}

int NNPForce::getNumEnergyParameterDerivatives() const {
    return energyParameterDerivatives.size();
}

const string& NNPForce::getEnergyParameterDerivativeName(int index) const {
    checkIndex(index, energyParameterDerivatives.size(), "energy parameter derivative");
    return energyParameterDerivatives[index];
}

void NNPForce::setScaleParameter(const string& name, double defaultValue) {
    if (!scaleParameter.empty() && scaleParameter != name)
        for (size_t i = 0; i < globalParameters.size(); i++)
            if (globalParameters[i].name == scaleParameter) {
                globalParameters.erase(globalParameters.begin() + i);
                break;
            }
    scaleParameter = name;
    if (name.empty())
        return;
    for (auto& param : globalParameters)
        if (param.name == name) {
            param.defaultValue = defaultValue;
            return;
        }
    globalParameters.push_back({name, defaultValue});
}

const string& NNPForce::getScaleParameter() const {
    return scaleParameter;
}

double NNPForce::getScaleParameterDefaultValue() const {
    for (auto& param : globalParameters)
        if (param.name == scaleParameter)
            return param.defaultValue;
    return 1.0;
}

void NNPForce::setProperty(const string& name, const string& value) {
    if (name != "numThreads" && name != "dtype" && name != "overlap" && name != "hugePages" && name != "useCUDAGraphs" && name != "CUDAGraphWarmupSteps")
        throw OpenMMException("NNPForce: unknown property '" + name + "'. Known properties: numThreads, dtype, overlap, hugePages, useCUDAGraphs, CUDAGraphWarmupSteps.");
    if ((name == "overlap" || name == "hugePages") && value != "" && value != "true" && value != "false")
        throw OpenMMException("NNPForce: property " + name + " must be 'true' or 'false', not '" + value + "'.");
    if (name == "dtype" && value != "auto" && value != "float32" && value != "float64")
        throw OpenMMException("NNPForce: property dtype must be 'auto', 'float32' or 'float64', not '" + value + "'.");
    properties[name] = value;
}

const map<string, string>& NNPForce::getProperties() const {
    return properties;
}

ForceImpl* NNPForce::createImpl() const {
    return new NNPForceImpl(*this);
}

vector<long long> NNPForce::getOverlapStatisticsInContext(const Context& context) const {
    return dynamic_cast<const NNPForceImpl&>(getImplInContext(context)).getOverlapStatistics();
}
