// ANI atomic environment vectors (AEVs) and their gradient, computed directly in loops over
// neighbour pairs and triples.
//
// For the few tens of atoms of an NNP region, the same computation as a graph of tensor
// operations costs hundreds of operator dispatches per call; here the whole AEV and its chain
// rule take a few tens of microseconds. All arithmetic is in double precision; inputs and
// outputs are in the positions' type (float32 or float64).
//
// Layout of one atom's AEV row (the layout openmm_nnp.models.ANI uses internally):
//   radial:  [species of the neighbour][radial shift]                  S * R features
//   angular: [species pair][angular section][angular shift]   P * Z * K features
// with P = S (S + 1) / 2 pairs numbered by pair_index[S, S]. Constant factors are left out
// (the networks' first-layer weights carry them): a radial term is
//   exp(-eta_r (r - shift)^2) fc(r)                                (TorchANI: 0.25 times this)
// and an angular term, for neighbours a, b of the centre with angle theta,
//   (1 + cos(theta' - section))^zeta exp(-eta_a ((r_a + r_b)/2 - shift)^2) fc(r_a) fc(r_b)
// with cos(theta') = 0.95 cos(theta)                              (TorchANI: 2^(1 - zeta) times this).
// fc is the cosine cutoff 0.5 cos(pi r / rc) + 0.5 for r < rc, else 0.
// Displacements use the minimum image of OpenMM's reduced triclinic box when a box is given.
// Exponents are clamped at -80 (as in the pure PyTorch path): exp(-80) ~ 1.8e-35.

#include <torch/library.h>
#include <torch/torch.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <vector>

namespace {

using at::Tensor;

struct Neighbor {
    int64_t atom;
    double vector[3];  // from the centre to the neighbour, Angstrom
    double distance;
};

// Constants of one ANI featurization, read from the operator's arguments.
struct AEVParameters {
    int64_t numAtoms, numSpecies, numPairs, numRadial, numSections, numAngularShifts;
    double radialCutoff, radialEta, angularCutoff, angularEta, zeta;
    std::vector<double> radialShifts, angularShifts, sectionCos, sectionSin;
    std::vector<int64_t> species, pairIndex;

    int64_t radialLength() const { return numSpecies * numRadial; }
    int64_t angularBlock() const { return numSections * numAngularShifts; }
    int64_t length() const { return radialLength() + numPairs * angularBlock(); }
};

std::vector<double> toDoubles(const Tensor& t) {
    Tensor c = t.detach().to(torch::kCPU, torch::kFloat64).contiguous();
    return std::vector<double>(c.data_ptr<double>(), c.data_ptr<double>() + c.numel());
}

std::vector<int64_t> toLongs(const Tensor& t) {
    Tensor c = t.detach().to(torch::kCPU, torch::kInt64).contiguous();
    return std::vector<int64_t>(c.data_ptr<int64_t>(), c.data_ptr<int64_t>() + c.numel());
}

AEVParameters readParameters(const Tensor& positions, const Tensor& species, const Tensor& pairIndex,
                             const Tensor& radialShifts, const Tensor& angularShifts, const Tensor& sections,
                             double radialCutoff, double radialEta, double angularCutoff, double angularEta,
                             double zeta) {
    TORCH_CHECK(positions.dim() == 2 && positions.size(1) == 3, "ani_aev: positions must have shape [atoms, 3], got ",
                positions.sizes());
    TORCH_CHECK(positions.scalar_type() == torch::kFloat32 || positions.scalar_type() == torch::kFloat64,
                "ani_aev: positions must be float32 or float64");
    TORCH_CHECK(species.dim() == 1 && species.size(0) == positions.size(0),
                "ani_aev: species must have one entry per atom");
    TORCH_CHECK(pairIndex.dim() == 2 && pairIndex.size(0) == pairIndex.size(1),
                "ani_aev: pair_index must be a square [species, species] matrix");
    TORCH_CHECK(sections.dim() == 2 && sections.size(0) == 2,
                "ani_aev: sections must hold the rows cos(section), sin(section)");
    TORCH_CHECK(radialCutoff > 0 && angularCutoff > 0, "ani_aev: cutoffs must be positive");
    AEVParameters p;
    p.numAtoms = positions.size(0);
    p.numSpecies = pairIndex.size(0);
    p.pairIndex = toLongs(pairIndex);
    p.numPairs = *std::max_element(p.pairIndex.begin(), p.pairIndex.end()) + 1;
    for (int64_t index : p.pairIndex)
        TORCH_CHECK(index >= 0, "ani_aev: pair_index entries must be non-negative");
    p.species = toLongs(species);
    for (int64_t s : p.species)
        TORCH_CHECK(s >= 0 && s < p.numSpecies, "ani_aev: species index ", s, " outside [0, ", p.numSpecies, ")");
    p.radialShifts = toDoubles(radialShifts);
    p.angularShifts = toDoubles(angularShifts);
    std::vector<double> sectionRows = toDoubles(sections);
    p.numRadial = p.radialShifts.size();
    p.numAngularShifts = p.angularShifts.size();
    p.numSections = sections.size(1);
    p.sectionCos.assign(sectionRows.begin(), sectionRows.begin() + p.numSections);
    p.sectionSin.assign(sectionRows.begin() + p.numSections, sectionRows.end());
    p.radialCutoff = radialCutoff;
    p.radialEta = radialEta;
    p.angularCutoff = angularCutoff;
    p.angularEta = angularEta;
    p.zeta = zeta;
    return p;
}

// base^exponent; ANI's zeta is a small integer (32), for which repeated squaring is exact and much
// faster than std::pow.
inline double power(double base, double exponent) {
    if (exponent >= 0 && exponent <= 1024 && exponent == std::floor(exponent)) {
        auto e = static_cast<unsigned>(exponent);
        double result = 1.0;
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

// Runs body(i) for i in [0, n) on PyTorch's intra-op threads, centre i going to thread i mod T:
// atoms are usually ordered heavy atoms first, whose many neighbours make them the costly centres.
template <typename Body>
void forEachCentre(int64_t n, const Body& body) {
    const int64_t threads = std::min<int64_t>(at::get_num_threads(), std::max<int64_t>(n / 8, 1));
    at::parallel_for(0, threads, 1, [&](int64_t begin, int64_t end) {
        for (int64_t t = begin; t < end; t++)
            for (int64_t i = t; i < n; i += threads)
                body(i);
    });
}

inline double clampedExp(double x) {
    return std::exp(std::max(x, -80.0));
}

inline double cosineCutoff(double r, double cutoff) {
    return r < cutoff ? 0.5 * std::cos(M_PI * r / cutoff) + 0.5 : 0.0;
}

inline double cosineCutoffDerivative(double r, double cutoff) {
    return r < cutoff ? -0.5 * M_PI / cutoff * std::sin(M_PI * r / cutoff) : 0.0;
}

// Every atom's neighbours within the larger of the two cutoffs (all pairs, minimum image).
std::vector<std::vector<Neighbor>> findNeighbors(const Tensor& positions, const c10::optional<Tensor>& box,
                                                 const AEVParameters& p) {
    const int64_t n = p.numAtoms;
    std::vector<double> x = toDoubles(positions);
    bool periodic = box.has_value() && box->defined();
    std::vector<double> b;
    if (periodic) {
        TORCH_CHECK(box->dim() == 2 && box->size(0) == 3 && box->size(1) == 3, "ani_aev: box must have shape [3, 3]");
        b = toDoubles(*box);
        TORCH_CHECK(b[0] > 0 && b[4] > 0 && b[8] > 0 && b[1] == 0 && b[2] == 0 && b[5] == 0,
                    "ani_aev: the box must be in OpenMM's reduced form (rows a, b, c; a = (ax, 0, 0), b = (bx, by, 0), "
                    "positive diagonal)");
    }
    const double cutoff = std::max(p.radialCutoff, p.angularCutoff);
    std::vector<std::vector<Neighbor>> neighbors(n);
    forEachCentre(n, [&](int64_t i) {
            for (int64_t j = 0; j < n; j++) {
                if (j == i)
                    continue;
                Neighbor nb;
                nb.atom = j;
                double* v = nb.vector;
                for (int k = 0; k < 3; k++)
                    v[k] = x[3 * j + k] - x[3 * i + k];
                if (periodic) {
                    // c, then b, then a (round half to even, as torch.round)
                    for (int row = 2; row >= 0; row--) {
                        double shift = std::nearbyint(v[row] / b[4 * row]);
                        for (int k = 0; k < 3; k++)
                            v[k] -= shift * b[3 * row + k];
                    }
                }
                nb.distance = std::sqrt(v[0] * v[0] + v[1] * v[1] + v[2] * v[2]);
                if (nb.distance < cutoff)
                    neighbors[i].push_back(nb);
            }
    });
    return neighbors;
}

// A neighbour inside the angular cutoff, with its cutoff function and derivative.
struct AngularNeighbor {
    int64_t slot;  // index in the centre's neighbour list
    const Neighbor* neighbor;
    double fc, dfc;
};

std::vector<AngularNeighbor> angularNeighbors(const std::vector<Neighbor>& neighbors, const AEVParameters& p) {
    std::vector<AngularNeighbor> result;
    for (size_t k = 0; k < neighbors.size(); k++) {
        const double r = neighbors[k].distance;
        if (r < p.angularCutoff)
            result.push_back({(int64_t) k, &neighbors[k], cosineCutoff(r, p.angularCutoff),
                              cosineCutoffDerivative(r, p.angularCutoff)});
    }
    return result;
}

// The per-triple quantities shared by the AEV and its gradient.
struct Triple {
    double cosPrime, sinPrime, mean;
};

inline Triple makeTriple(const Neighbor& a, const Neighbor& b) {
    Triple t;
    const double dot = a.vector[0] * b.vector[0] + a.vector[1] * b.vector[1] + a.vector[2] * b.vector[2];
    t.cosPrime = 0.95 * dot / (a.distance * b.distance);
    t.sinPrime = std::sqrt(1.0 - t.cosPrime * t.cosPrime);  // >= sqrt(1 - 0.95^2): never zero
    t.mean = 0.5 * (a.distance + b.distance);
    return t;
}

Tensor aevForward(const Tensor& positions, const c10::optional<Tensor>& box, const Tensor& species,
                  const Tensor& pairIndex, const Tensor& radialShifts, const Tensor& angularShifts,
                  const Tensor& sections, double radialCutoff, double radialEta, double angularCutoff,
                  double angularEta, double zeta) {
    const AEVParameters p = readParameters(positions, species, pairIndex, radialShifts, angularShifts, sections,
                                           radialCutoff, radialEta, angularCutoff, angularEta, zeta);
    const auto neighbors = findNeighbors(positions, box, p);
    const int64_t length = p.length(), block = p.angularBlock();
    std::vector<double> aev(p.numAtoms * length, 0.0);
    forEachCentre(p.numAtoms, [&](int64_t i) {
        std::vector<double> angle(p.numSections), radial(p.numAngularShifts);
        {
            double* row = aev.data() + i * length;
            for (const Neighbor& nb : neighbors[i]) {
                if (nb.distance >= p.radialCutoff)
                    continue;
                const double fc = cosineCutoff(nb.distance, p.radialCutoff);
                double* out = row + p.species[nb.atom] * p.numRadial;
                for (int64_t k = 0; k < p.numRadial; k++) {
                    const double d = nb.distance - p.radialShifts[k];
                    out[k] += clampedExp(-p.radialEta * d * d) * fc;
                }
            }
            const std::vector<AngularNeighbor> angular = angularNeighbors(neighbors[i], p);
            for (size_t ia = 0; ia < angular.size(); ia++) {
                const Neighbor& a = *angular[ia].neighbor;
                for (size_t ib = ia + 1; ib < angular.size(); ib++) {
                    const Neighbor& b = *angular[ib].neighbor;
                    const Triple t = makeTriple(a, b);
                    const double fcab = angular[ia].fc * angular[ib].fc;
                    for (int64_t z = 0; z < p.numSections; z++)
                        angle[z] = power(1.0 + t.cosPrime * p.sectionCos[z] + t.sinPrime * p.sectionSin[z], p.zeta) * fcab;
                    for (int64_t k = 0; k < p.numAngularShifts; k++) {
                        const double d = t.mean - p.angularShifts[k];
                        radial[k] = clampedExp(-p.angularEta * d * d);
                    }
                    const int64_t pair = p.pairIndex[p.species[a.atom] * p.numSpecies + p.species[b.atom]];
                    double* out = row + p.radialLength() + pair * block;
                    for (int64_t z = 0; z < p.numSections; z++)
                        for (int64_t k = 0; k < p.numAngularShifts; k++)
                            out[z * p.numAngularShifts + k] += angle[z] * radial[k];
                }
            }
        }
    });
    Tensor result = torch::from_blob(aev.data(), {p.numAtoms, length}, torch::kFloat64);
    return result.to(positions.scalar_type()).clone();  // clone: the result must own its memory
}

Tensor aevBackward(const Tensor& gradAEV, const Tensor& positions, const c10::optional<Tensor>& box,
                   const Tensor& species, const Tensor& pairIndex, const Tensor& radialShifts,
                   const Tensor& angularShifts, const Tensor& sections, double radialCutoff, double radialEta,
                   double angularCutoff, double angularEta, double zeta) {
    const AEVParameters p = readParameters(positions, species, pairIndex, radialShifts, angularShifts, sections,
                                           radialCutoff, radialEta, angularCutoff, angularEta, zeta);
    const int64_t length = p.length(), block = p.angularBlock();
    TORCH_CHECK(gradAEV.dim() == 2 && gradAEV.size(0) == p.numAtoms && gradAEV.size(1) == length,
                "ani_aev_backward: grad_aev must have shape [", p.numAtoms, ", ", length, "]");
    const auto neighbors = findNeighbors(positions, box, p);
    const std::vector<double> grad = toDoubles(gradAEV);
    // d(energy)/d(displacement vector) for every (centre, neighbour); reduced onto atoms below.
    std::vector<std::vector<double>> dVectors(p.numAtoms);
    forEachCentre(p.numAtoms, [&](int64_t i) {
        std::vector<double> powers(p.numSections), powersLess1(p.numSections), angle(p.numSections);
        std::vector<double> radial(p.numAngularShifts), dAngle(p.numSections), dRadial(p.numAngularShifts);
        {
            const double* row = grad.data() + i * length;
            const std::vector<Neighbor>& nbs = neighbors[i];
            std::vector<double>& dv = dVectors[i];
            dv.assign(3 * nbs.size(), 0.0);
            // Radial terms g_k(r) fc(r), g_k = exp(-eta (r - s_k)^2).
            for (size_t m = 0; m < nbs.size(); m++) {
                const Neighbor& nb = nbs[m];
                if (nb.distance >= p.radialCutoff)
                    continue;
                const double fc = cosineCutoff(nb.distance, p.radialCutoff);
                const double dfc = cosineCutoffDerivative(nb.distance, p.radialCutoff);
                const double* g = row + p.species[nb.atom] * p.numRadial;
                double dr = 0.0;
                for (int64_t k = 0; k < p.numRadial; k++) {
                    const double d = nb.distance - p.radialShifts[k];
                    const double gauss = clampedExp(-p.radialEta * d * d);
                    dr += g[k] * gauss * (-2.0 * p.radialEta * d * fc + dfc);
                }
                for (int k = 0; k < 3; k++)
                    dv[3 * m + k] += dr * nb.vector[k] / nb.distance;
            }
            // Angular terms A_z D_k with A_z = base_z^zeta fc_a fc_b, base_z = 1 + cos' cos_z + sin' sin_z,
            // D_k = exp(-eta (mean r - s_k)^2), cos' = 0.95 v_a.v_b / (r_a r_b).
            const std::vector<AngularNeighbor> angular = angularNeighbors(nbs, p);
            for (size_t ia = 0; ia < angular.size(); ia++) {
                const Neighbor& a = *angular[ia].neighbor;
                for (size_t ib = ia + 1; ib < angular.size(); ib++) {
                    const Neighbor& b = *angular[ib].neighbor;
                    const Triple t = makeTriple(a, b);
                    const double fcab = angular[ia].fc * angular[ib].fc;
                    const int64_t pair = p.pairIndex[p.species[a.atom] * p.numSpecies + p.species[b.atom]];
                    const double* g = row + p.radialLength() + pair * block;
                    for (int64_t z = 0; z < p.numSections; z++) {
                        const double base = 1.0 + t.cosPrime * p.sectionCos[z] + t.sinPrime * p.sectionSin[z];
                        powersLess1[z] = power(base, p.zeta - 1.0);
                        powers[z] = powersLess1[z] * base;
                        angle[z] = powers[z] * fcab;
                    }
                    for (int64_t k = 0; k < p.numAngularShifts; k++) {
                        const double d = t.mean - p.angularShifts[k];
                        radial[k] = clampedExp(-p.angularEta * d * d);
                    }
                    std::fill(dAngle.begin(), dAngle.end(), 0.0);
                    std::fill(dRadial.begin(), dRadial.end(), 0.0);
                    for (int64_t z = 0; z < p.numSections; z++)
                        for (int64_t k = 0; k < p.numAngularShifts; k++) {
                            const double gzk = g[z * p.numAngularShifts + k];
                            dAngle[z] += gzk * radial[k];
                            dRadial[k] += gzk * angle[z];
                        }
                    double dMean = 0.0;
                    for (int64_t k = 0; k < p.numAngularShifts; k++)
                        dMean += dRadial[k] * radial[k] * (-2.0 * p.angularEta * (t.mean - p.angularShifts[k]));
                    double dFcab = 0.0, dCos = 0.0;
                    for (int64_t z = 0; z < p.numSections; z++) {
                        dFcab += dAngle[z] * powers[z];
                        const double dBase = dAngle[z] * fcab * p.zeta * powersLess1[z];
                        // d base / d cos' = cos_z - (cos' / sin') sin_z
                        dCos += dBase * (p.sectionCos[z] - t.cosPrime / t.sinPrime * p.sectionSin[z]);
                    }
                    const double dRa = 0.5 * dMean + dFcab * angular[ib].fc * angular[ia].dfc;
                    const double dRb = 0.5 * dMean + dFcab * angular[ia].fc * angular[ib].dfc;
                    const double scale = 0.95 / (a.distance * b.distance);
                    double* dva = dv.data() + 3 * angular[ia].slot;
                    double* dvb = dv.data() + 3 * angular[ib].slot;
                    for (int k = 0; k < 3; k++) {
                        dva[k] += dCos * (scale * b.vector[k] - t.cosPrime * a.vector[k] / (a.distance * a.distance))
                                  + dRa * a.vector[k] / a.distance;
                        dvb[k] += dCos * (scale * a.vector[k] - t.cosPrime * b.vector[k] / (b.distance * b.distance))
                                  + dRb * b.vector[k] / b.distance;
                    }
                }
            }
        }
    });
    // vector(i -> j) = x_j - x_i (+ a constant periodic shift).
    std::vector<double> gradPositions(3 * p.numAtoms, 0.0);
    for (int64_t i = 0; i < p.numAtoms; i++)
        for (size_t m = 0; m < neighbors[i].size(); m++)
            for (int k = 0; k < 3; k++) {
                gradPositions[3 * neighbors[i][m].atom + k] += dVectors[i][3 * m + k];
                gradPositions[3 * i + k] -= dVectors[i][3 * m + k];
            }
    Tensor result = torch::from_blob(gradPositions.data(), {p.numAtoms, 3}, torch::kFloat64);
    return result.to(positions.scalar_type()).clone();
}

// First-order autograd: the gradient flows to the positions only.
class AEVFunction : public torch::autograd::Function<AEVFunction> {
public:
    static Tensor forward(torch::autograd::AutogradContext* ctx, const Tensor& positions, const c10::optional<Tensor>& box,
                          const Tensor& species, const Tensor& pairIndex, const Tensor& radialShifts,
                          const Tensor& angularShifts, const Tensor& sections, double radialCutoff, double radialEta,
                          double angularCutoff, double angularEta, double zeta) {
        ctx->save_for_backward({positions, box.has_value() ? *box : Tensor(), species, pairIndex, radialShifts,
                                angularShifts, sections});
        ctx->saved_data["constants"] = std::vector<double>{radialCutoff, radialEta, angularCutoff, angularEta, zeta};
        at::AutoDispatchBelowADInplaceOrView guard;
        return aevForward(positions, box, species, pairIndex, radialShifts, angularShifts, sections, radialCutoff,
                          radialEta, angularCutoff, angularEta, zeta);
    }

    static torch::autograd::tensor_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::tensor_list gradOutputs) {
        auto saved = ctx->get_saved_variables();
        std::vector<double> c = ctx->saved_data["constants"].toDoubleVector();
        c10::optional<Tensor> box;
        if (saved[1].defined())
            box = saved[1];
        Tensor gradPositions = aevBackward(gradOutputs[0], saved[0], box, saved[2], saved[3], saved[4], saved[5],
                                           saved[6], c[0], c[1], c[2], c[3], c[4]);
        return {gradPositions, Tensor(), Tensor(), Tensor(), Tensor(), Tensor(), Tensor(),
                Tensor(), Tensor(), Tensor(), Tensor(), Tensor()};
    }
};

Tensor aevAutograd(const Tensor& positions, const c10::optional<Tensor>& box, const Tensor& species,
                   const Tensor& pairIndex, const Tensor& radialShifts, const Tensor& angularShifts,
                   const Tensor& sections, double radialCutoff, double radialEta, double angularCutoff,
                   double angularEta, double zeta) {
    return AEVFunction::apply(positions, box, species, pairIndex, radialShifts, angularShifts, sections, radialCutoff,
                              radialEta, angularCutoff, angularEta, zeta);
}

} // namespace

TORCH_LIBRARY_IMPL(openmm_nnp, CPU, m) {
    m.impl("ani_aev", aevForward);
    m.impl("ani_aev_backward", aevBackward);
}

TORCH_LIBRARY_IMPL(openmm_nnp, Autograd, m) {
    m.impl("ani_aev", aevAutograd);
}
