#ifndef OPENMM_NNP_MTS_LANGEVIN_MIDDLE_INTEGRATOR_H_
#define OPENMM_NNP_MTS_LANGEVIN_MIDDLE_INTEGRATOR_H_

#include "NNPExport.h"
#include "openmm/Integrator.h"
#include "openmm/Kernel.h"
#include "openmm/LangevinMiddleIntegrator.h"
#include <memory>
#include <string>
#include <vector>

namespace NNPPlugin {

/**
 * Langevin dynamics with two force groups on two time scales (r-RESPA in its leapfrog form): a fast group
 * every inner step and a slow group (for NNP/MM: the NNP correction U_NNP(region) - U_MM(region)) once every
 * slowInterval inner steps, as an impulse of slowInterval inner steps' worth.
 *
 * Every inner step is one step of OpenMM's LangevinMiddleIntegrator, run by that integrator's own kernel on
 * the platform (kick, half drift, friction and noise, half drift, constraints), on the fast group's forces.
 * In the inner steps that start an outer step (step count a multiple of slowInterval) the kick is
 * dt*(F_fast + slowInterval*F_slow)/m: there the fast group is computed, its forces kept, the slow group
 * computed by itself, and its forces multiplied by slowInterval and added to the kept ones. The two half
 * kicks of r-RESPA at the boundary between outer steps act at the same positions and so are this one kick;
 * the positions are those of BAOAB-RESPA (OpenMM's MTSLangevinIntegrator), and without friction those of
 * MTSIntegrator.
 * Velocities are, as with LangevinMiddleIntegrator, half an inner step behind the positions.
 *
 * Which inner step of an outer step comes next follows from the context's step count, so checkpoints,
 * setStepCount and Simulation.currentStep agree with it. step(n) advances n inner steps.
 */
class OPENMM_NNP_EXPORT NNPMTSLangevinMiddleIntegrator : public OpenMM::Integrator {
public:
    /**
     * @param temperature    the temperature of the heat bath (K)
     * @param frictionCoeff  the friction coefficient (1/ps)
     * @param stepSize       the inner step (ps): what step(1) advances
     * @param slowInterval   the slow group is applied every slowInterval inner steps (>= 1)
     * @param slowGroup      the slow force group (NNPotential.createMTSSystem puts the NNP correction in 1)
     * @param fastGroup      the fast force group (createMTSSystem: 0, all of the MM force field)
     */
    NNPMTSLangevinMiddleIntegrator(double temperature, double frictionCoeff, double stepSize, int slowInterval,
                                   int slowGroup = 1, int fastGroup = 0);
    ~NNPMTSLangevinMiddleIntegrator();
    double getTemperature() const {
        return temperature;
    }
    void setTemperature(double temperature);
    double getFriction() const {
        return friction;
    }
    void setFriction(double frictionCoeff);
    int getSlowInterval() const {
        return slowInterval;
    }
    int getSlowGroup() const {
        return slowGroup;
    }
    int getFastGroup() const {
        return fastGroup;
    }
    int getRandomNumberSeed() const {
        return randomNumberSeed;
    }
    /** The seed of the random numbers (0: a new one for each Context); read when a Context is created. */
    void setRandomNumberSeed(int seed) {
        randomNumberSeed = seed;
    }
    /** Refused: the groups this integrator integrates are its slowGroup and fastGroup (constructor). */
    void setIntegrationForceGroups(int groups);
    /** Whether the inner step that begins at the context step count `stepCount` computes force group `group`. */
    bool computesGroupInStep(int group, long long stepCount) const {
        return group == fastGroup || (group == slowGroup && isOuterStepStart(stepCount));
    }
    /** Advance `steps` inner steps. */
    void step(int steps);
protected:
    void initialize(OpenMM::ContextImpl& context);
    void cleanup();
    std::vector<std::string> getKernelNames();
    double computeKineticEnergy();
    bool kineticEnergyRequiresForce() const {
        return false;
    }
    double getVelocityTimeOffset() const {
        return getStepSize() / 2;
    }
private:
    /** Whether the inner step that begins at the context step count `stepCount` carries the slow impulse. */
    bool isOuterStepStart(long long stepCount) const {
        return stepCount % slowInterval == 0;
    }
    /** The LangevinMiddleIntegrator whose kernel takes the steps, with this integrator's current settings. */
    const OpenMM::LangevinMiddleIntegrator& innerSettings();
    double temperature, friction;
    int slowInterval, slowGroup, fastGroup, randomNumberSeed;
    std::unique_ptr<OpenMM::LangevinMiddleIntegrator> inner;
    OpenMM::Kernel stepKernel, forcesKernel;
};

} // namespace NNPPlugin

#endif /*OPENMM_NNP_MTS_LANGEVIN_MIDDLE_INTEGRATOR_H_*/
