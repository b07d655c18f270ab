// ANI AEVs and their gradient (see ANIFeatures.h for the definitions and the layout).
//
// For the few tens of atoms of an NNP region, the same computation as a graph of tensor
// operations costs hundreds of operator dispatches per call; here the AEVs take well under a
// millisecond, most of it in exp and pow. The forward pass keeps those terms, so the gradient
// pass is plain arithmetic.

#include "ANIFeatures.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>

using at::Tensor;

namespace NNPPlugin {
namespace ani {

namespace {

std::vector<double> toDoubles(const Tensor& t) {
    Tensor c = t.detach().to(torch::kCPU, torch::kFloat64).contiguous();
    return std::vector<double>(c.data_ptr<double>(), c.data_ptr<double>() + c.numel());
}

std::vector<int64_t> toLongs(const Tensor& t) {
    Tensor c = t.detach().to(torch::kCPU, torch::kInt64).contiguous();
    return std::vector<int64_t>(c.data_ptr<int64_t>(), c.data_ptr<int64_t>() + c.numel());
}

// base^exponent; ANI-1x's zeta (32) is an integer, for which repeated squaring is much faster
// than pow. (ANI-2x's is 14.1.)
template <typename real>
inline real power(real base, real exponent) {
    if (exponent >= 0 && exponent <= 1024 && exponent == std::floor(exponent)) {
        auto e = static_cast<unsigned>(exponent);
        real result = 1;
        while (e > 0) {
            if (e & 1u)
                result *= base;
            base *= base;
            e >>= 1;
        }
        return result;
    }
    return std::pow(base, exponent);
}

template <typename real>
inline real clampedExp(real x) {
    return std::exp(std::max(x, real(-80)));
}

// Runs body(i) for i in [0, n) on PyTorch's intra-op threads, centre i going to thread i mod T:
// atoms are usually ordered heavy atoms first, and their many neighbours make them the costly centres.
template <typename Body>
void forEachCentre(int64_t n, const Body& body) {
    const int64_t threads = std::min<int64_t>(at::get_num_threads(), std::max<int64_t>(n / 8, 1));
    at::parallel_for(0, threads, 1, [&](int64_t begin, int64_t end) {
        for (int64_t t = begin; t < end; t++)
            for (int64_t i = t; i < n; i += threads)
                body(i);
    });
}

} // namespace

namespace {

std::vector<double> finiteValues(const Tensor& t, const char* name, int64_t dim) {
    TORCH_CHECK(t.is_floating_point() && t.dim() == dim && t.numel() > 0, "ANIFeatures: ", name, " must be a non-empty ",
                dim, "-dimensional floating-point tensor, got ", t.scalar_type(), " of shape ", t.sizes());
    std::vector<double> values = toDoubles(t);
    for (double v : values)
        TORCH_CHECK(std::isfinite(v), "ANIFeatures: ", name, " must be finite");
    return values;
}

std::vector<int64_t> integerValues(const Tensor& t, const char* name) {
    TORCH_CHECK(at::isIntegralType(t.scalar_type(), /*includeBool=*/false), "ANIFeatures: ", name,
                " must be an integer tensor, got ", t.scalar_type());
    return toLongs(t);
}

void checkPositive(double value, const char* name) {
    TORCH_CHECK(std::isfinite(value) && value > 0, "ANIFeatures: ", name, " must be positive and finite, got ", value);
}

} // namespace

AEVParameters makeAEVParameters(const Tensor& species, const Tensor& pairIndex, const Tensor& radialShifts,
                                const Tensor& angularShifts, const Tensor& sections, double radialCutoff,
                                double radialEta, double angularCutoff, double angularEta, double zeta) {
    TORCH_CHECK(species.dim() == 1 && species.numel() > 0, "ANIFeatures: species must list one species per atom");
    TORCH_CHECK(pairIndex.dim() == 2 && pairIndex.size(0) == pairIndex.size(1) && pairIndex.numel() > 0,
                "ANIFeatures: pair_index must be a square [species, species] matrix, got shape ", pairIndex.sizes());
    TORCH_CHECK(sections.dim() == 2 && sections.size(0) == 2,
                "ANIFeatures: sections must hold the rows cos(section), sin(section), got shape ", sections.sizes());
    checkPositive(radialCutoff, "radial_cutoff");
    checkPositive(angularCutoff, "angular_cutoff");
    checkPositive(radialEta, "radial_eta");
    checkPositive(angularEta, "angular_eta");
    // base^(zeta - 1) in the gradient, with base = 1 + cos(theta' - section) >= 0
    TORCH_CHECK(std::isfinite(zeta) && zeta >= 1, "ANIFeatures: angular_zeta must be at least 1, got ", zeta);
    AEVParameters p;
    p.numSpecies = pairIndex.size(0);
    p.pairIndex = integerValues(pairIndex, "pair_index");
    for (int64_t a = 0; a < p.numSpecies; a++)
        for (int64_t b = 0; b < p.numSpecies; b++) {
            const int64_t index = p.pairIndex[a * p.numSpecies + b];
            TORCH_CHECK(index >= 0, "ANIFeatures: pair_index entries must be non-negative");
            TORCH_CHECK(index == p.pairIndex[b * p.numSpecies + a], "ANIFeatures: pair_index must be symmetric");
        }
    p.numPairs = *std::max_element(p.pairIndex.begin(), p.pairIndex.end()) + 1;
    p.species = integerValues(species, "species");
    for (int64_t s : p.species)
        TORCH_CHECK(s >= 0 && s < p.numSpecies, "ANIFeatures: species index ", s, " outside [0, ", p.numSpecies, ")");
    p.radialShifts = finiteValues(radialShifts, "radial_shifts", 1);
    p.angularShifts = finiteValues(angularShifts, "angular_shifts", 1);
    p.numRadial = p.radialShifts.size();
    p.numAngularShifts = p.angularShifts.size();
    p.numSections = sections.size(1);
    std::vector<double> sectionRows = finiteValues(sections, "sections", 2);
    p.sectionCos.assign(sectionRows.begin(), sectionRows.begin() + p.numSections);
    p.sectionSin.assign(sectionRows.begin() + p.numSections, sectionRows.end());
    p.radialCutoff = radialCutoff;
    p.radialEta = radialEta;
    p.angularCutoff = angularCutoff;
    p.angularEta = angularEta;
    p.zeta = zeta;
    return p;
}

void checkPositions(const AEVParameters& p, const Tensor& positions) {
    TORCH_CHECK(positions.dim() == 2 && positions.size(1) == 3,
                "ANIFeatures: positions must have shape [atoms, 3], got ", positions.sizes());
    TORCH_CHECK(positions.size(0) == p.numAtoms(), "ANIFeatures: positions for ", positions.size(0),
                " atoms, the species for ", p.numAtoms());
    TORCH_CHECK(positions.scalar_type() == torch::kFloat32 || positions.scalar_type() == torch::kFloat64,
                "ANIFeatures: positions must be float32 or float64");
    TORCH_CHECK(positions.device().is_cpu(), "ANIFeatures: positions must be on the CPU, got ", positions.device());
}

class AEVComputation::Implementation {
public:
    virtual ~Implementation() = default;
    virtual Tensor positionGradient(const Tensor& gradAEV) const = 0;
    Tensor aev;
};

namespace {

template <typename real>
class AEVImplementation : public AEVComputation::Implementation {
public:
    AEVImplementation(const AEVParameters& parameters, const Tensor& positions, const c10::optional<Tensor>& box);
    Tensor positionGradient(const Tensor& gradAEV) const override;

private:
    struct Neighbor {
        int64_t atom;
        real vector[3];  // from the centre to the neighbour
        real distance;
    };
    // One centre's neighbours and the terms computed for them.
    struct Centre {
        std::vector<Neighbor> neighbors;   // within the larger cutoff
        std::vector<real> radialCutoff;    // per neighbour: fc, dfc/dr (radial cutoff)
        std::vector<real> radialGauss;     // per neighbour: the R Gaussians
        std::vector<int64_t> angular;      // neighbours within the angular cutoff
        std::vector<real> angularCutoff;   // per angular neighbour: fc, dfc/dr (angular cutoff)
        std::vector<real> tripleTerms;     // per pair of angular neighbours, tripleSize() numbers (see below)
    };

    void findNeighbors(const Tensor& positions, const c10::optional<Tensor>& box);
    void computeCentre(int64_t i, real* row);

    // Per triple (centre, angular neighbours a < b), in tripleTerms: base_z^(zeta - 1) and base_z for the Z
    // sections (base_z = 1 + cos' cos_z + sin' sin_z), the K Gaussians of the mean distance, cos' and sin'.
    int64_t tripleSize() const { return 2 * c.Z + c.K + 2; }

    // Constants in the working precision.
    struct Constants {
        int64_t S, R, Z, K, radialLength, block, length;
        real radialCutoff, radialEta, angularCutoff, angularEta, zeta;
        std::vector<real> radialShifts, angularShifts, sectionCos, sectionSin;
    } c;
    std::vector<int64_t> species, pairIndex;
    std::vector<Centre> centres;

    real cosineCutoff(real r, real cutoff) const {
        return r < cutoff ? real(0.5) * std::cos(real(M_PI) * r / cutoff) + real(0.5) : real(0);
    }
    real cosineCutoffDerivative(real r, real cutoff) const {
        return r < cutoff ? real(-0.5 * M_PI) / cutoff * std::sin(real(M_PI) * r / cutoff) : real(0);
    }
};

template <typename real>
AEVImplementation<real>::AEVImplementation(const AEVParameters& p, const Tensor& positions,
                                           const c10::optional<Tensor>& box)
    : species(p.species), pairIndex(p.pairIndex) {
    c.S = p.numSpecies;
    c.R = p.numRadial;
    c.Z = p.numSections;
    c.K = p.numAngularShifts;
    c.radialLength = p.radialLength();
    c.block = p.angularBlock();
    c.length = p.length();
    c.radialCutoff = p.radialCutoff;
    c.radialEta = p.radialEta;
    c.angularCutoff = p.angularCutoff;
    c.angularEta = p.angularEta;
    c.zeta = p.zeta;
    c.radialShifts.assign(p.radialShifts.begin(), p.radialShifts.end());
    c.angularShifts.assign(p.angularShifts.begin(), p.angularShifts.end());
    c.sectionCos.assign(p.sectionCos.begin(), p.sectionCos.end());
    c.sectionSin.assign(p.sectionSin.begin(), p.sectionSin.end());

    const int64_t n = p.numAtoms();
    centres.resize(n);
    findNeighbors(positions, box);
    aev = at::zeros({n, c.length}, positions.options().dtype(c10::CppTypeToScalarType<real>::value));
    real* data = aev.data_ptr<real>();
    forEachCentre(n, [&](int64_t i) { computeCentre(i, data + i * c.length); });
}

template <typename real>
void AEVImplementation<real>::findNeighbors(const Tensor& positions, const c10::optional<Tensor>& box) {
    const int64_t n = centres.size();
    const Tensor x = positions.detach().to(torch::kCPU, c10::CppTypeToScalarType<real>::value).contiguous();
    const real* pos = x.data_ptr<real>();
    const bool periodic = box.has_value() && box->defined();
    std::vector<real> b(9, 0);
    if (periodic) {
        TORCH_CHECK(box->dim() == 2 && box->size(0) == 3 && box->size(1) == 3, "ANIFeatures: box must have shape [3, 3]");
        std::vector<double> values = toDoubles(*box);
        TORCH_CHECK(values[0] > 0 && values[4] > 0 && values[8] > 0 && values[1] == 0 && values[2] == 0 &&
                        values[5] == 0,
                    "ANIFeatures: the box must be in OpenMM's reduced form (rows a, b, c; a = (ax, 0, 0), "
                    "b = (bx, by, 0), positive diagonal)");
        b.assign(values.begin(), values.end());
    }
    const real cutoff = std::max(c.radialCutoff, c.angularCutoff);
    forEachCentre(n, [&](int64_t i) {
        std::vector<Neighbor>& neighbors = centres[i].neighbors;
        for (int64_t j = 0; j < n; j++) {
            if (j == i)
                continue;
            Neighbor nb;
            nb.atom = j;
            real* v = nb.vector;
            for (int k = 0; k < 3; k++)
                v[k] = pos[3 * j + k] - pos[3 * i + k];
            if (periodic) {
                // c, then b, then a (round half to even, as torch.round)
                for (int row = 2; row >= 0; row--) {
                    const real shift = std::nearbyint(v[row] / b[4 * row]);
                    for (int k = 0; k < 3; k++)
                        v[k] -= shift * b[3 * row + k];
                }
            }
            nb.distance = std::sqrt(v[0] * v[0] + v[1] * v[1] + v[2] * v[2]);
            if (nb.distance < cutoff)
                neighbors.push_back(nb);
        }
    });
}

template <typename real>
void AEVImplementation<real>::computeCentre(int64_t i, real* row) {
    Centre& centre = centres[i];
    const std::vector<Neighbor>& neighbors = centre.neighbors;
    const int64_t count = neighbors.size();
    // Radial terms.
    centre.radialCutoff.assign(2 * count, 0);
    centre.radialGauss.assign(count * c.R, 0);
    for (int64_t m = 0; m < count; m++) {
        const Neighbor& nb = neighbors[m];
        if (nb.distance >= c.radialCutoff)
            continue;
        const real fc = cosineCutoff(nb.distance, c.radialCutoff);
        centre.radialCutoff[2 * m] = fc;
        centre.radialCutoff[2 * m + 1] = cosineCutoffDerivative(nb.distance, c.radialCutoff);
        real* gauss = centre.radialGauss.data() + m * c.R;
        real* out = row + species[nb.atom] * c.R;
        for (int64_t k = 0; k < c.R; k++) {
            const real d = nb.distance - c.radialShifts[k];
            gauss[k] = clampedExp(-c.radialEta * d * d);
            out[k] += gauss[k] * fc;
        }
    }
    // Angular terms for every pair (a, b) of neighbours inside the angular cutoff.
    for (int64_t m = 0; m < count; m++) {
        const real r = neighbors[m].distance;
        if (r < c.angularCutoff) {
            centre.angular.push_back(m);
            centre.angularCutoff.push_back(cosineCutoff(r, c.angularCutoff));
            centre.angularCutoff.push_back(cosineCutoffDerivative(r, c.angularCutoff));
        }
    }
    const int64_t numAngular = centre.angular.size();
    centre.tripleTerms.resize(numAngular * (numAngular - 1) / 2 * tripleSize());
    real* terms = centre.tripleTerms.data();
    std::vector<real> angle(c.Z);
    for (int64_t ia = 0; ia < numAngular; ia++) {
        const Neighbor& a = neighbors[centre.angular[ia]];
        for (int64_t ib = ia + 1; ib < numAngular; ib++, terms += tripleSize()) {
            const Neighbor& b = neighbors[centre.angular[ib]];
            real *powers = terms, *bases = terms + c.Z, *gauss = terms + 2 * c.Z, *cosSin = gauss + c.K;
            const real dot = a.vector[0] * b.vector[0] + a.vector[1] * b.vector[1] + a.vector[2] * b.vector[2];
            const real cosPrime = cosSin[0] = real(0.95) * dot / (a.distance * b.distance);
            const real sinPrime = cosSin[1] = std::sqrt(1 - cosPrime * cosPrime);  // >= sqrt(1 - 0.95^2) > 0
            const real fcab = centre.angularCutoff[2 * ia] * centre.angularCutoff[2 * ib];
            const real mean = real(0.5) * (a.distance + b.distance);
            for (int64_t z = 0; z < c.Z; z++) {
                bases[z] = 1 + cosPrime * c.sectionCos[z] + sinPrime * c.sectionSin[z];
                powers[z] = power(bases[z], c.zeta - 1);
                angle[z] = powers[z] * bases[z] * fcab;
            }
            for (int64_t k = 0; k < c.K; k++) {
                const real d = mean - c.angularShifts[k];
                gauss[k] = clampedExp(-c.angularEta * d * d);
            }
            real* out = row + c.radialLength + pairIndex[species[a.atom] * c.S + species[b.atom]] * c.block;
            for (int64_t z = 0; z < c.Z; z++)
                for (int64_t k = 0; k < c.K; k++)
                    out[z * c.K + k] += angle[z] * gauss[k];
        }
    }
}

template <typename real>
Tensor AEVImplementation<real>::positionGradient(const Tensor& gradAEV) const {
    const int64_t n = centres.size();
    TORCH_CHECK(gradAEV.dim() == 2 && gradAEV.size(0) == n && gradAEV.size(1) == c.length,
                "ANIFeatures: the AEV gradient must have shape [", n, ", ", c.length, "]");
    const Tensor gradient = gradAEV.detach().to(torch::kCPU, c10::CppTypeToScalarType<real>::value).contiguous();
    const real* grad = gradient.data_ptr<real>();
    // d(energy)/d(displacement vector) for every (centre, neighbour); reduced onto atoms below.
    std::vector<std::vector<real>> dVectors(n);
    forEachCentre(n, [&](int64_t i) {
        const Centre& centre = centres[i];
        const std::vector<Neighbor>& neighbors = centre.neighbors;
        const real* row = grad + i * c.length;
        std::vector<real>& dv = dVectors[i];
        dv.assign(3 * neighbors.size(), 0);
        // Radial terms g_k(r) fc(r), g_k = exp(-eta (r - s_k)^2).
        for (size_t m = 0; m < neighbors.size(); m++) {
            const Neighbor& nb = neighbors[m];
            if (nb.distance >= c.radialCutoff)
                continue;
            const real fc = centre.radialCutoff[2 * m], dfc = centre.radialCutoff[2 * m + 1];
            const real* gauss = centre.radialGauss.data() + m * c.R;
            const real* g = row + species[nb.atom] * c.R;
            real dr = 0;
            for (int64_t k = 0; k < c.R; k++)
                dr += g[k] * gauss[k] * (-2 * c.radialEta * (nb.distance - c.radialShifts[k]) * fc + dfc);
            for (int k = 0; k < 3; k++)
                dv[3 * m + k] += dr * nb.vector[k] / nb.distance;
        }
        // Angular terms A_z D_k with A_z = base_z^zeta fc_a fc_b, base_z = 1 + cos' cos_z + sin' sin_z,
        // D_k = exp(-eta (mean r - s_k)^2), cos' = 0.95 v_a.v_b / (r_a r_b).
        std::vector<real> angle(c.Z), dAngle(c.Z), dGauss(c.K);
        const real* terms = centre.tripleTerms.data();
        const int64_t numAngular = centre.angular.size();
        for (int64_t ia = 0; ia < numAngular; ia++) {
            const Neighbor& a = neighbors[centre.angular[ia]];
            const real fcA = centre.angularCutoff[2 * ia], dfcA = centre.angularCutoff[2 * ia + 1];
            for (int64_t ib = ia + 1; ib < numAngular; ib++, terms += tripleSize()) {
                const Neighbor& b = neighbors[centre.angular[ib]];
                const real fcB = centre.angularCutoff[2 * ib], dfcB = centre.angularCutoff[2 * ib + 1];
                const real *powers = terms, *bases = terms + c.Z, *gauss = terms + 2 * c.Z;
                const real cosPrime = gauss[c.K], sinPrime = gauss[c.K + 1];
                const real fcab = fcA * fcB;
                const real mean = real(0.5) * (a.distance + b.distance);
                const real* g = row + c.radialLength + pairIndex[species[a.atom] * c.S + species[b.atom]] * c.block;
                for (int64_t z = 0; z < c.Z; z++)
                    angle[z] = powers[z] * bases[z] * fcab;
                std::fill(dAngle.begin(), dAngle.end(), real(0));
                std::fill(dGauss.begin(), dGauss.end(), real(0));
                for (int64_t z = 0; z < c.Z; z++)
                    for (int64_t k = 0; k < c.K; k++) {
                        const real gzk = g[z * c.K + k];
                        dAngle[z] += gzk * gauss[k];
                        dGauss[k] += gzk * angle[z];
                    }
                real dMean = 0;
                for (int64_t k = 0; k < c.K; k++)
                    dMean += dGauss[k] * gauss[k] * (-2 * c.angularEta * (mean - c.angularShifts[k]));
                real dFcab = 0, dCos = 0;
                for (int64_t z = 0; z < c.Z; z++) {
                    dFcab += dAngle[z] * powers[z] * bases[z];
                    const real dBase = dAngle[z] * fcab * c.zeta * powers[z];
                    // d base / d cos' = cos_z - (cos' / sin') sin_z
                    dCos += dBase * (c.sectionCos[z] - cosPrime / sinPrime * c.sectionSin[z]);
                }
                const real dRa = real(0.5) * dMean + dFcab * fcB * dfcA;
                const real dRb = real(0.5) * dMean + dFcab * fcA * dfcB;
                const real scale = real(0.95) / (a.distance * b.distance);
                real* dva = dv.data() + 3 * centre.angular[ia];
                real* dvb = dv.data() + 3 * centre.angular[ib];
                for (int k = 0; k < 3; k++) {
                    dva[k] += dCos * (scale * b.vector[k] - cosPrime * a.vector[k] / (a.distance * a.distance)) +
                              dRa * a.vector[k] / a.distance;
                    dvb[k] += dCos * (scale * a.vector[k] - cosPrime * b.vector[k] / (b.distance * b.distance)) +
                              dRb * b.vector[k] / b.distance;
                }
            }
        }
    });
    // vector(i -> j) = x_j - x_i (+ a constant periodic shift).
    Tensor result = at::zeros({n, 3}, aev.options());
    real* out = result.data_ptr<real>();
    for (int64_t i = 0; i < n; i++)
        for (size_t m = 0; m < centres[i].neighbors.size(); m++)
            for (int k = 0; k < 3; k++) {
                out[3 * centres[i].neighbors[m].atom + k] += dVectors[i][3 * m + k];
                out[3 * i + k] -= dVectors[i][3 * m + k];
            }
    return result;
}

} // namespace

AEVComputation::AEVComputation(const AEVParameters& parameters, const Tensor& positions,
                               const c10::optional<Tensor>& box) {
    if (positions.scalar_type() == torch::kFloat64)
        implementation = std::make_unique<AEVImplementation<double>>(parameters, positions, box);
    else
        implementation = std::make_unique<AEVImplementation<float>>(parameters, positions, box);
}

AEVComputation::~AEVComputation() = default;

const Tensor& AEVComputation::aev() const {
    return implementation->aev;
}

Tensor AEVComputation::positionGradient(const Tensor& gradAEV) const {
    return implementation->positionGradient(gradAEV);
}

} // namespace ani
} // namespace NNPPlugin
