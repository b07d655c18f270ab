#ifndef OPENMM_NNP_COMPUTATION_H_
#define OPENMM_NNP_COMPUTATION_H_

#include "NNPForce.h"
#include "NNPModel.h"
#include "openmm/internal/ContextImpl.h"
#include <torch/script.h>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace NNPPlugin {

/**
 * What every platform's NNPForce kernel does around its model, independent of where positions and
 * forces live: which global parameters the model receives, the scale parameter (λ) and its shortcut
 * at 0, the energy-parameter derivatives, the check for non-finite forces and the numThreads property.
 * A platform kernel gathers the region's positions (made whole) into a tensor, calls evaluate() and
 * adds the forces it returns to its own force buffer.
 */
class NNPComputation {
public:
    /**
     * Load and check the model of `force` for the region `atoms` (System indices), to run on `device`.
     * Throws OpenMMException naming the problem.
     */
    NNPComputation(const NNPForce& force, const std::vector<int>& atoms, const torch::Device& device);
    /** The property numThreads: torch's intra-op threads on the host, 0 when absent or empty (torch's setting). */
    static int numThreadsProperty(const NNPForce& force);
    /** The global parameters whose energy derivatives this force contributes (derivatives requested of it). */
    const std::vector<std::string>& getDerivativeNames() const {
        return derivativeNames;
    }
    /** Whether the model has to run at all: not when the scale parameter is 0 and no derivative is requested. */
    bool isActive(OpenMM::ContextImpl& context) const;
    struct Output {
        double energy;        // scaled energy, kJ/mol
        torch::Tensor forces; // [n,3] scaled forces in kJ/mol/nm on the model's device; undefined unless requested
        std::vector<std::pair<std::string, double> > derivatives; // scaled dE/dparam for each requested derivative
    };
    /** What the model's result depends on besides positions and box: read from the context by getInputs(). */
    struct Inputs {
        double scale;
        std::vector<double> parameterValues; // the model's global parameters (all but the scale parameter)
        bool includeForces;
        bool operator==(const Inputs& other) const {
            return scale == other.scale && parameterValues == other.parameterValues && includeForces == other.includeForces;
        }
    };
    /** The current values of the scale parameter and the model's global parameters. */
    Inputs getInputs(OpenMM::ContextImpl& context, bool includeForces) const;
    /**
     * Run the model on the region's positions and add the scaled parameter derivatives to `derivatives`.
     * @param positions  [n,3] in nm, made whole, in any floating dtype on any device (copied to the model's)
     * @param box        [3,3] box vectors in nm (unused unless the force is periodic)
     */
    Output evaluate(OpenMM::ContextImpl& context, const torch::Tensor& positions, const torch::Tensor& box, bool includeForces,
                    std::map<std::string, double>& derivatives);
    /**
     * The same without the context: run the model for `inputs` and return everything in the Output
     * (derivatives included). It touches no ContextImpl, so it may run on another thread while OpenMM
     * works on the context, as long as no other call on this object runs at the same time.
     */
    Output compute(const Inputs& inputs, const torch::Tensor& positions, const torch::Tensor& box);
    /** Add an Output's derivatives to a context's energy-parameter derivatives. */
    static void addDerivatives(const Output& output, std::map<std::string, double>& derivatives);
    const std::string& getForceName() const {
        return model->getForceName();
    }
private:
    double getScale(OpenMM::ContextImpl& context) const;
    std::unique_ptr<NNPModel> model;
    std::vector<int> atoms;
    torch::Device device;
    std::string scaleParameter;
    bool scaleDerivative;
    std::vector<std::string> parameterNames; // global parameters passed to the model (all but the scale parameter)
    std::vector<bool> derivativeMask;        // for each of them, whether dE/dparam was requested
    std::vector<std::string> derivativeNames;
};

/**
 * Fail unless the library of openmm-nnp's TorchScript operators is loaded and registered its operators.
 * Every kernel library calls it when OpenMM registers its factories, which also keeps that library linked.
 */
void requireTorchOperators();

} // namespace NNPPlugin

#endif /*OPENMM_NNP_COMPUTATION_H_*/
