#ifndef OPENMM_NNP_MODEL_H_
#define OPENMM_NNP_MODEL_H_

#include "NNPForce.h"
#include <torch/script.h>
#include <string>
#include <vector>

namespace NNPPlugin {

/**
 * A loaded TorchScript model with the calling convention of NNPForce: builds the argument list,
 * runs forward, checks what comes back and gets forces and parameter derivatives from autograd.
 * Platform kernels supply positions (already made whole) on their device and apply the results.
 */
class NNPModel {
public:
    /** The optional method of a model that returns (energy, forces) itself, with forward()'s arguments. */
    static const char* const ENERGY_AND_FORCES;
    struct Result {
        double energy;                           // unscaled model energy, kJ/mol
        torch::Tensor forces;                    // [n,3] kJ/mol/nm, defined when forces were requested
        std::vector<double> parameterDerivatives; // dE/dp for each global parameter in derivativeMask
    };
    /**
     * Load and check the model of `force` for a region of `numAtoms` atoms on `device`.
     * Throws OpenMMException naming the problem.
     */
    NNPModel(const NNPForce& force, int numAtoms, const torch::Device& device);
    /** The dtype positions are cast to before they reach the model. */
    torch::ScalarType getDtype() const {
        return dtype;
    }
    const std::string& getForceName() const {
        return forceName;
    }
    /**
     * Evaluate the model.
     * @param positions       [n,3] positions in nm of the region, in getDtype()
     * @param box             [3,3] box vectors in nm (ignored unless the force is periodic)
     * @param parameters      values of the model's global parameters (all but the scale parameter), in the order they were added
     * @param includeForces   whether forces are needed
     * @param derivativeMask  for each of those parameters, whether dE/dparam is needed
     */
    Result evaluate(const torch::Tensor& positions, const torch::Tensor& box, const std::vector<double>& parameters,
                    bool includeForces, const std::vector<bool>& derivativeMask);
private:
    std::string describe() const;
    torch::jit::Module module;
    torch::Device device;
    torch::ScalarType dtype;
    int numAtoms;
    bool usePeriodic, outputsForces, passNoneForBox;
    bool energyAndForces = false; // the model exports ENERGY_AND_FORCES (checked at load)
    std::string forceName;
    std::vector<std::string> parameterNames;
};

} // namespace NNPPlugin

#endif /*OPENMM_NNP_MODEL_H_*/
