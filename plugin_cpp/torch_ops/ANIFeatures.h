#ifndef OPENMM_NNP_ANI_FEATURES_H_
#define OPENMM_NNP_ANI_FEATURES_H_

// ANI atomic environment vectors (AEVs) and their gradient, computed directly in loops over
// neighbour pairs and triples (all pairs are examined: O(n^2) for the n atoms of a region).
//
// Layout of one atom's AEV row (the layout openmm_nnp.models.ANI uses internally):
//   radial:  [species of the neighbour][radial shift]                  S * R features
//   angular: [species pair][angular section][angular shift]   P * Z * K features
// with P = S (S + 1) / 2 pairs numbered by pairIndex[S, S]. Constant factors are left out
// (the networks' first-layer weights carry them): a radial term is
//   exp(-eta_r (r - shift)^2) fc(r)                                (TorchANI: 0.25 times this)
// and an angular term, for neighbours a, b of the centre with angle theta,
//   (1 + cos(theta' - section))^zeta exp(-eta_a ((r_a + r_b)/2 - shift)^2) fc(r_a) fc(r_b)
// with cos(theta') = 0.95 cos(theta)                              (TorchANI: 2^(1 - zeta) times this).
// fc is the cosine cutoff 0.5 cos(pi r / rc) + 0.5 for r < rc, else 0.
// Displacements use the minimum image of OpenMM's reduced triclinic box when a box is given.
// Exponents are clamped at -80 (as in the model's PyTorch path): exp(-80) ~ 1.8e-35, and a
// float32 exp does not reach the slow subnormal range.
// Arithmetic is in the precision of the positions (float32 or float64), as in the PyTorch path.

#include <torch/torch.h>

#include <memory>
#include <vector>

namespace NNPPlugin {
namespace ani {

struct AEVParameters {
    int64_t numSpecies, numPairs, numRadial, numSections, numAngularShifts;
    double radialCutoff, radialEta, angularCutoff, angularEta, zeta;
    std::vector<double> radialShifts, angularShifts, sectionCos, sectionSin;
    std::vector<int64_t> species, pairIndex;

    int64_t numAtoms() const { return species.size(); }
    int64_t radialLength() const { return numSpecies * numRadial; }
    int64_t angularBlock() const { return numSections * numAngularShifts; }
    int64_t length() const { return radialLength() + numPairs * angularBlock(); }
};

// Checks and reads the featurization's constants, once (the arguments of openmm_nnp.ANIFeatures's
// constructor, see NNPTorchOps.h): species [n] and pairIndex [S, S] (symmetric) integer tensors,
// the shifts (1-dimensional, finite), sections [2, Z] (rows cos(section), sin(section)), positive
// cutoffs and widths, zeta >= 1. Throws c10::Error with a message naming the bad constant.
AEVParameters makeAEVParameters(const torch::Tensor& species, const torch::Tensor& pairIndex,
                                const torch::Tensor& radialShifts, const torch::Tensor& angularShifts,
                                const torch::Tensor& sections, double radialCutoff, double radialEta,
                                double angularCutoff, double angularEta, double zeta);

// Checks what changes per call: positions [n, 3], float32 or float64, on the CPU.
void checkPositions(const AEVParameters& parameters, const torch::Tensor& positions);

// One evaluation of the AEVs for one set of positions [n, 3] (Angstrom) and optional box [3, 3].
// It keeps what the gradient needs (neighbours and the exponential and power terms), so
// positionGradient() only does arithmetic.
class AEVComputation {
public:
    AEVComputation(const AEVParameters& parameters, const torch::Tensor& positions,
                   const c10::optional<torch::Tensor>& box);
    ~AEVComputation();
    // [n, length] in the positions' type
    const torch::Tensor& aev() const;
    // d(energy)/d(positions) [n, 3] from d(energy)/d(aev) [n, length]
    torch::Tensor positionGradient(const torch::Tensor& gradAEV) const;

    class Implementation;

private:
    std::unique_ptr<Implementation> implementation;
};

} // namespace ani
} // namespace NNPPlugin

#endif
