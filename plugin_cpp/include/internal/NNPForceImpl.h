#ifndef OPENMM_NNP_FORCE_IMPL_H_
#define OPENMM_NNP_FORCE_IMPL_H_

#include "NNPForce.h"
#include "NNPKernels.h"
#include "openmm/Kernel.h"
#include "openmm/internal/ForceImpl.h"
#include <map>
#include <string>
#include <utility>
#include <vector>

namespace NNPPlugin {

/** The internal implementation of NNPForce inside a Context. */
class OPENMM_NNP_EXPORT NNPForceImpl : public OpenMM::ForceImpl {
public:
    NNPForceImpl(const NNPForce& owner);
    ~NNPForceImpl();
    void initialize(OpenMM::ContextImpl& context);
    const NNPForce& getOwner() const {
        return owner;
    }
    /** At the start of a step: lets the kernel start the model early when the integrator will compute this force's group. */
    void updateContextState(OpenMM::ContextImpl& context, bool& forcesInvalid);
    double calcForcesAndEnergy(OpenMM::ContextImpl& context, bool includeForces, bool includeEnergy, int groups);
    std::map<std::string, double> getDefaultParameters();
    std::vector<std::string> getKernelNames();
    /** Bonds within the region, so that OpenMM treats the region's atoms as one molecule. */
    std::vector<std::pair<int, int> > getBondedParticles() const;
    /** started, used and discarded evaluations started ahead of a step (see NNPForce::getOverlapStatisticsInContext). */
    std::vector<long long> getOverlapStatistics() const;
private:
    const NNPForce& owner;
    OpenMM::Kernel kernel;
};

} // namespace NNPPlugin

#endif /*OPENMM_NNP_FORCE_IMPL_H_*/
