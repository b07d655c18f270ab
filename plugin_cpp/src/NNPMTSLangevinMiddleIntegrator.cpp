#include "NNPMTSLangevinMiddleIntegrator.h"
#include "NNPKernels.h"
#include "openmm/Context.h"
#include "openmm/OpenMMException.h"
#include "openmm/internal/ContextImpl.h"
#include "openmm/kernels.h"

using namespace NNPPlugin;
using namespace OpenMM;
using namespace std;

static void checkGroup(int group) {
    if (group < 0 || group > 31)
        throw OpenMMException("NNPMTSLangevinMiddleIntegrator: a force group must be between 0 and 31, not " + to_string(group) + ".");
}

NNPMTSLangevinMiddleIntegrator::NNPMTSLangevinMiddleIntegrator(double temperature, double frictionCoeff, double stepSize,
        int slowInterval, int slowGroup, int fastGroup) : slowInterval(slowInterval), slowGroup(slowGroup), fastGroup(fastGroup),
        randomNumberSeed(0), inner(new LangevinMiddleIntegrator(0.0, 0.0, stepSize)) { // settings: innerSettings()
    if (slowInterval < 1)
        throw OpenMMException("NNPMTSLangevinMiddleIntegrator: slowInterval must be >= 1 (the slow group every N inner steps), not " + to_string(slowInterval) + ".");
    checkGroup(slowGroup);
    checkGroup(fastGroup);
    if (slowGroup == fastGroup)
        throw OpenMMException("NNPMTSLangevinMiddleIntegrator: the slow and the fast force group must differ (both are " + to_string(slowGroup) + ").");
    setTemperature(temperature);
    setFriction(frictionCoeff);
    setStepSize(stepSize);
    setConstraintTolerance(1e-5);
    Integrator::setIntegrationForceGroups((1 << slowGroup) | (1 << fastGroup));
}

NNPMTSLangevinMiddleIntegrator::~NNPMTSLangevinMiddleIntegrator() {
}

void NNPMTSLangevinMiddleIntegrator::setTemperature(double temp) {
    if (temp < 0)
        throw OpenMMException("NNPMTSLangevinMiddleIntegrator: the temperature cannot be negative.");
    temperature = temp;
}

void NNPMTSLangevinMiddleIntegrator::setFriction(double coeff) {
    if (coeff < 0)
        throw OpenMMException("NNPMTSLangevinMiddleIntegrator: the friction coefficient cannot be negative.");
    friction = coeff;
}

void NNPMTSLangevinMiddleIntegrator::setIntegrationForceGroups(int groups) {
    throw OpenMMException("NNPMTSLangevinMiddleIntegrator integrates its slowGroup and fastGroup: pass them to its constructor instead of calling setIntegrationForceGroups.");
}

const LangevinMiddleIntegrator& NNPMTSLangevinMiddleIntegrator::innerSettings() {
    inner->setTemperature(temperature);
    inner->setFriction(friction);
    inner->setStepSize(getStepSize());
    inner->setConstraintTolerance(getConstraintTolerance());
    inner->setRandomNumberSeed(randomNumberSeed);
    return *inner;
}

void NNPMTSLangevinMiddleIntegrator::initialize(ContextImpl& contextRef) {
    if (owner != NULL && &contextRef.getOwner() != owner)
        throw OpenMMException("This Integrator is already bound to a context");
    context = &contextRef;
    owner = &contextRef.getOwner();
    stepKernel = context->getPlatform().createKernel(IntegrateLangevinMiddleStepKernel::Name(), contextRef);
    stepKernel.getAs<IntegrateLangevinMiddleStepKernel>().initialize(contextRef.getSystem(), innerSettings());
    forcesKernel = context->getPlatform().createKernel(CombineForcesKernel::Name(), contextRef);
    forcesKernel.getAs<CombineForcesKernel>().initialize(contextRef.getSystem());
}

void NNPMTSLangevinMiddleIntegrator::cleanup() {
    stepKernel = Kernel();
    forcesKernel = Kernel();
}

vector<string> NNPMTSLangevinMiddleIntegrator::getKernelNames() {
    return {IntegrateLangevinMiddleStepKernel::Name(), CombineForcesKernel::Name()};
}

double NNPMTSLangevinMiddleIntegrator::computeKineticEnergy() {
    return stepKernel.getAs<IntegrateLangevinMiddleStepKernel>().computeKineticEnergy(*context, innerSettings());
}

void NNPMTSLangevinMiddleIntegrator::step(int steps) {
    if (context == NULL)
        throw OpenMMException("This Integrator is not bound to a context!");
    const LangevinMiddleIntegrator& settings = innerSettings();
    IntegrateLangevinMiddleStepKernel& stepper = stepKernel.getAs<IntegrateLangevinMiddleStepKernel>();
    CombineForcesKernel& combine = forcesKernel.getAs<CombineForcesKernel>();
    for (int i = 0; i < steps; ++i) {
        context->updateContextState();
        if (isOuterStepStart(context->getStepCount())) {
            // The fast group first: an NNPForce started ahead of time (overlap) runs while it is computed.
            context->calcForcesAndEnergy(true, false, 1 << fastGroup);
            combine.saveForces(*context);
            context->calcForcesAndEnergy(true, false, 1 << slowGroup);
            combine.scaleAndAddSavedForces(*context, slowInterval);
        }
        else
            context->calcForcesAndEnergy(true, false, 1 << fastGroup);
        stepper.execute(*context, settings);
    }
}
