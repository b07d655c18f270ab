#ifndef OPENMM_NNP_FORCE_H_
#define OPENMM_NNP_FORCE_H_

/* openmm-nnp: a TorchScript neural-network potential over a region of atoms as an OpenMM force. */

#include "NNPExport.h"
#include "openmm/Force.h"
#include <map>
#include <string>
#include <utility>
#include <vector>

namespace NNPPlugin {

/**
 * NNPForce evaluates a TorchScript model on a region of the System's particles.
 *
 * Model contract (the same as openmm-torch's): forward(positions[, boxVectors], p1, p2, ...) where
 * positions is [n,3] in nm for the region's atoms in the order given by getAtoms(), boxVectors is
 * [3,3] in nm (passed only when usesPeriodicBoundaryConditions() is true), and p1, p2, ... are scalar
 * tensors holding the global parameters in the order they were added. The model returns the energy
 * in kJ/mol, or (energy, forces[n,3] in kJ/mol/nm) when getOutputsForces() is true; otherwise the
 * forces are -dE/dpositions from autograd. A model that computes its forces itself may also export a
 * method energy_and_forces() with forward()'s arguments that returns (energy, forces): whenever forces
 * are needed and no parameter derivatives are, the force calls it instead of forward() and autograd
 * (openmm_nnp.models.ANI does, as its forces are analytic); energy-only evaluations still call forward().
 *
 * With periodic boundary conditions the region is made whole before the model sees it: each atom is
 * placed at the periodic image nearest to the atom it is bonded to (setBonds), or to the region's
 * first atom when it has no bonds, so a molecule that straddles the box boundary is never torn apart.
 *
 * An optional scale parameter (setScaleParameter) multiplies energy and forces by the value of a
 * global parameter; the derivative of the energy with respect to it is the unscaled model energy. It is
 * listed among the global parameters (so tools that set global parameters see it) but is not passed to
 * the model: the model receives the other global parameters, in the order they were added.
 */
class OPENMM_NNP_EXPORT NNPForce : public OpenMM::Force {
public:
    /** Create a force with no model; set one with setModelBytes(). */
    NNPForce();
    /**
     * Create a force from a TorchScript file written by torch.jit.save.
     * @param file   path of the model file (its contents are read now and stored in the force)
     * @param atoms  particle indices of the region in the order the model receives them; empty means all particles
     */
    explicit NNPForce(const std::string& file, const std::vector<int>& atoms = std::vector<int>());

    /** The serialized TorchScript module (the bytes torch.jit.save writes). */
    const std::string& getModelBytes() const;
    void setModelBytes(const std::string& modelBytes);

    /** Particle indices of the region (empty = every particle of the System, in order). */
    const std::vector<int>& getAtoms() const;
    void setAtoms(const std::vector<int>& atoms);

    /** Bonds between region atoms (System particle indices), used to keep the region whole. */
    const std::vector<std::pair<int, int> >& getBonds() const;
    void setBonds(const std::vector<std::pair<int, int> >& bonds);

    void setUsesPeriodicBoundaryConditions(bool periodic);
    bool usesPeriodicBoundaryConditions() const;

    /** Whether the model returns (energy, forces) instead of the energy alone. */
    void setOutputsForces(bool outputsForces);
    bool getOutputsForces() const;

    /** The number of global parameters, the scale parameter (if any) included. */
    int getNumGlobalParameters() const;
    /** Add a global parameter; every global parameter except the scale parameter is passed to the model. */
    int addGlobalParameter(const std::string& name, double defaultValue);
    const std::string& getGlobalParameterName(int index) const;
    void setGlobalParameterName(int index, const std::string& name);
    double getGlobalParameterDefaultValue(int index) const;
    void setGlobalParameterDefaultValue(int index, double defaultValue);

    /**
     * Request the derivative of the energy with respect to a global parameter (a model parameter or
     * the scale parameter), reported by State::getEnergyParameterDerivatives().
     */
    void addEnergyParameterDerivative(const std::string& name);
    int getNumEnergyParameterDerivatives() const;
    const std::string& getEnergyParameterDerivativeName(int index) const;

    /**
     * Scale energy and forces by the global parameter `name`, which is added to the global parameters
     * (or, if it is one already, given this default value) and is not passed to the model. A previous
     * scale parameter is removed; an empty name removes the scaling.
     */
    void setScaleParameter(const std::string& name, double defaultValue = 1.0);
    const std::string& getScaleParameter() const;
    double getScaleParameterDefaultValue() const;

    /**
     * Platform options. Recognized keys: "numThreads" (intra-op threads torch uses on the CPU, set for the
     * thread that creates the Context, which runs the model unless it overlaps; empty or 0 leaves torch's
     * setting alone), "overlap" ("true" or "false", default "false"; CPU platform: the model runs on a
     * thread of its own, with numThreads torch threads or one, and starts when a step begins, so that it
     * runs while OpenMM computes the other forces), "dtype" ("auto", "float32" or "float64": the precision of the
     * positions given to the model; "auto" uses the dtype of the model's floating-point parameters,
     * or float64 when it has none) and "hugePages" ("true" or "false", default "true"; where the model runs on
     * the CPU, its tensors of 2 MiB or more in all are moved into one block of memory backed by 2 MiB pages when
     * the kernel allows it, for fewer TLB misses as each call reads the weights).
     */
    void setProperty(const std::string& name, const std::string& value);
    const std::map<std::string, std::string>& getProperties() const;

    /**
     * How often, in a Context, the model was started ahead of a step to run while OpenMM computes the
     * other forces (property "overlap"), and what became of those results: [started, used, discarded]
     * (discarded: the positions, box or parameters had changed by the time the force was computed, which
     * was then computed again). All zero where the kernel does not overlap (Reference, GPU platforms).
     */
    std::vector<long long> getOverlapStatisticsInContext(const OpenMM::Context& context) const;

protected:
    OpenMM::ForceImpl* createImpl() const;

private:
    struct GlobalParameterInfo {
        std::string name;
        double defaultValue;
    };
    std::string modelBytes;
    std::vector<int> atoms;
    std::vector<std::pair<int, int> > bonds;
    bool usePeriodic, outputsForces;
    std::vector<GlobalParameterInfo> globalParameters;
    std::vector<std::string> energyParameterDerivatives;
    std::string scaleParameter;
    std::map<std::string, std::string> properties;
};

} // namespace NNPPlugin

#endif /*OPENMM_NNP_FORCE_H_*/
