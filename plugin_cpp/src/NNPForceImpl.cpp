#include "internal/NNPForceImpl.h"
#include "NNPKernels.h"
#include "NNPMTSLangevinMiddleIntegrator.h"
#include "openmm/OpenMMException.h"
#include "openmm/internal/ContextImpl.h"
#include <set>

using namespace NNPPlugin;
using namespace OpenMM;
using namespace std;

NNPForceImpl::NNPForceImpl(const NNPForce& owner) : owner(owner) {
}

NNPForceImpl::~NNPForceImpl() {
}

void NNPForceImpl::initialize(ContextImpl& context) {
    const System& system = context.getSystem();
    int numParticles = system.getNumParticles();
    vector<int> atoms = owner.getAtoms();
    if (atoms.empty())
        for (int i = 0; i < numParticles; i++)
            atoms.push_back(i);
    set<int> region;
    for (int atom : atoms) {
        if (atom >= numParticles)
            throw OpenMMException("NNPForce: atom index " + to_string(atom) + " is out of range: the System has " + to_string(numParticles) + " particles (valid indices are 0 to " + to_string(numParticles - 1) + ").");
        if (system.isVirtualSite(atom))
            throw OpenMMException("NNPForce: particle " + to_string(atom) + " is a virtual site; the region may contain only real atoms.");
        region.insert(atom);
    }
    for (auto& bond : owner.getBonds())
        if (region.count(bond.first) == 0 || region.count(bond.second) == 0)
            throw OpenMMException("NNPForce: the bond (" + to_string(bond.first) + ", " + to_string(bond.second) + ") given with setBonds() joins a particle outside the region; bonds must join two region atoms.");
    for (int i = 0; i < owner.getNumEnergyParameterDerivatives(); i++) {
        const string& name = owner.getEnergyParameterDerivativeName(i);
        bool known = false;
        for (int j = 0; j < owner.getNumGlobalParameters(); j++)
            known |= (name == owner.getGlobalParameterName(j));
        if (!known)
            throw OpenMMException("NNPForce: a derivative was requested for '" + name + "', which is neither a global parameter of this force (addGlobalParameter) nor its scale parameter (setScaleParameter).");
    }
    if (owner.getModelBytes().empty())
        throw OpenMMException("NNPForce: no model was set. Construct the force from a TorchScript file or call setModelBytes().");
    kernel = context.getPlatform().createKernel(CalcNNPForceKernel::Name(), context);
    kernel.getAs<CalcNNPForceKernel>().initialize(system, owner, atoms);
}

double NNPForceImpl::calcForcesAndEnergy(ContextImpl& context, bool includeForces, bool includeEnergy, int groups) {
    if ((groups & (1 << owner.getForceGroup())) != 0)
        return kernel.getAs<CalcNNPForceKernel>().execute(context, includeForces, includeEnergy);
    return 0.0;
}

void NNPForceImpl::updateContextState(ContextImpl& context, bool& forcesInvalid) {
    // Start the model ahead of time only in steps that will compute this force's group.
    const Integrator& integrator = context.getIntegrator();
    const NNPMTSLangevinMiddleIntegrator* mts = dynamic_cast<const NNPMTSLangevinMiddleIntegrator*>(&integrator);
    bool computed = mts != NULL ? mts->computesGroupInStep(owner.getForceGroup(), context.getStepCount())
                                : (integrator.getIntegrationForceGroups() & (1 << owner.getForceGroup())) != 0;
    if (computed)
        kernel.getAs<CalcNNPForceKernel>().prepare(context);
}

vector<long long> NNPForceImpl::getOverlapStatistics() const {
    OverlapStatistics statistics = kernel.getAs<const CalcNNPForceKernel>().getOverlapStatistics();
    return {statistics.started, statistics.used, statistics.discarded};
}

map<string, double> NNPForceImpl::getDefaultParameters() {
    map<string, double> parameters;
    for (int i = 0; i < owner.getNumGlobalParameters(); i++)
        parameters[owner.getGlobalParameterName(i)] = owner.getGlobalParameterDefaultValue(i);
    return parameters;
}

vector<string> NNPForceImpl::getKernelNames() {
    return {CalcNNPForceKernel::Name()};
}

vector<pair<int, int> > NNPForceImpl::getBondedParticles() const {
    return owner.getBonds();
}
