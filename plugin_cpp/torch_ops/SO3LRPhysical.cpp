// openmm_nnp::so3lr_physical (TorchScript operator, first-order autograd): the ZBL repulsion, electrostatic and
// dispersion energy of an SO3LR region (openmm_nnp/models/so3lr.py, SO3LR._physical_terms, which has the formulas
// and computes the same with PyTorch operations), with its analytic gradients, in one loop over the ordered pairs
// each way instead of about a hundred small operations forward and more backward.
//
//   so3lr_physical(r [n, n], cutoff [n, n], charges [n], hirshfeld [n], zbl_charge_products [n, n],
//                  zbl_inverse_lengths [n, n], free_polarizabilities [n], free_c6 [n], zbl [8], switches [7],
//                  constants [13]) -> energy (0-dimensional)
//
// zbl: the four ZBL coefficients, then the four exponents; switches: the three switching functions' onsets, their
// inverse widths, then the regulariser epsilon; constants: electrostatic sigma, Coulomb shift, Coulomb force shift,
// long-range cutoff, Coulomb constant, van der Waals radius factor, the QDO fit's four coefficients (b0..b3),
// dispersion scale times 2 times the QDO damping factor, Bohr radius, Hartree. The diagonal (i = j) is left out.
// Gradients flow to r, cutoff, charges and hirshfeld. CPU tensors of one floating-point dtype; computed in double.

#include <torch/torch.h>

#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <mutex>
#include <utility>
#include <vector>

#include "SO3LRKernels.h"

using at::Tensor;

namespace {

// Rows (atoms i, each a pass over its n pairs) per task of the parallel loop.
constexpr int64_t kRowsPerTask = 4;

// The smooth step of SO3LR._switches and its derivative with respect to x.
struct Switch {
    double value, derivative;
};

Switch smoothStep(double x, double on, double inverseWidth, double epsilon) {
    const double c = (x - on) * inverseWidth;
    const double t1 = std::max(1.0 - c, 1e-12), t2 = std::max(c, 1e-12);
    const double rising = std::exp(-1.0 / t1), falling = std::exp(-1.0 / t2);
    const double dRising = 1.0 - c > 1e-12 ? -rising / (t1 * t1) : 0.0;  // d/dc
    const double dFalling = c > 1e-12 ? falling / (t2 * t2) : 0.0;
    const double denominator = rising + falling + epsilon;
    return {rising / denominator,
            (dRising * (falling + epsilon) - rising * dFalling) / (denominator * denominator) * inverseWidth};
}

struct Inputs {
    Tensor r, cutoff, charges, hirshfeld, chargeProducts, inverseLengths, polarizabilities, c6;
    std::vector<double> zbl, switches, constants;
};

// Energy and, with gradients requested, d energy / d (r, cutoff, charges, hirshfeld), tensors of the inputs' dtype
// T; the arithmetic and the sums are in double whatever T.
template <typename T>
std::vector<Tensor> evaluate(const Inputs& in, bool gradients) {
    const auto d = [](const Tensor& t) { return t.contiguous(); };
    const Tensor r = d(in.r), cutoff = d(in.cutoff), q = d(in.charges), h = d(in.hirshfeld);
    const Tensor z = d(in.chargeProducts), lengths = d(in.inverseLengths), a0 = d(in.polarizabilities),
                 c60 = d(in.c6);
    const int64_t n = r.size(0);
    TORCH_CHECK(r.dim() == 2 && r.size(1) == n && cutoff.sizes() == r.sizes() && z.sizes() == r.sizes() &&
                    lengths.sizes() == r.sizes() && q.dim() == 1 && q.size(0) == n && h.sizes() == q.sizes() &&
                    a0.sizes() == q.sizes() && c60.sizes() == q.sizes(),
                "so3lr_physical: r, cutoff and pair constants must be [n, n], atom tensors [n]");
    TORCH_CHECK(in.zbl.size() == 8 && in.switches.size() == 7 && in.constants.size() == 13,
                "so3lr_physical: expected 8 ZBL, 7 switching and 13 other constants");
    const T* R = r.data_ptr<T>();
    const T* C = cutoff.data_ptr<T>();
    const T* Q = q.data_ptr<T>();
    const T* Hf = h.data_ptr<T>();
    const T* Z = z.data_ptr<T>();
    const T* L = lengths.data_ptr<T>();
    const T* A0 = a0.data_ptr<T>();
    const T* C60 = c60.data_ptr<T>();
    const auto& k = in.zbl;
    const auto& s = in.switches;
    const auto& c = in.constants;
    const double sigmaE = c[0], shift = c[1], forceShift = c[2], rc = c[3], coulomb = c[4], radiusFactor = c[5];
    const double b0 = c[6], b1 = c[7], b2 = c[8], b3 = c[9], dampingScale = c[10], bohr = c[11], hartree = c[12];
    const double twoOverSqrtPi = 2.0 / std::sqrt(M_PI);

    // Each pair's entries of gradR and gradCutoff are written once (the diagonal stays zero); the atoms' sums in
    // double.
    Tensor gradR = at::zeros({n, n}, r.options()), gradCutoff = at::zeros({n, n}, r.options());
    T* gR = gradR.data_ptr<T>();
    T* gC = gradCutoff.data_ptr<T>();
    std::vector<double> gQ(n, 0.0), gH(n, 0.0);
    std::vector<double> alpha(n), c6(n), product(n);
    for (int64_t i = 0; i < n; i++) {
        alpha[i] = A0[i] * Hf[i];
        c6[i] = C60[i] * Hf[i] * Hf[i];
        product[i] = c6[i] * alpha[i];
    }
    // The rows i run on the intra-op threads; each task sums the energy and the atoms' gradients in double in a
    // buffer of its own (pairs (i, j) add to atom j too), and the buffers are added in the order of their rows.
    struct Partial {
        double energy = 0.0;
        std::vector<double> charges, alpha, c6;
    };
    std::mutex partialsLock;
    std::vector<std::pair<int64_t, Partial>> partials;
    at::parallel_for(0, n, kRowsPerTask, [&](int64_t begin, int64_t end) {
        Partial part;
        part.charges.assign(n, 0.0);
        part.alpha.assign(n, 0.0);
        part.c6.assign(n, 0.0);
        for (int64_t i = begin; i < end; i++)
            for (int64_t j = 0; j < n; j++) {
                if (i == j)
                    continue;
                const int64_t ij = i * n + j;
                const double x = R[ij];
                const Switch zblSwitch = smoothStep(x, s[0], s[3], s[6]);
                const Switch coulombSwitch = smoothStep(x, s[1], s[4], s[6]);
                const Switch dispersionSwitch = smoothStep(x, s[2], s[5], s[6]);
                // ZBL: cutoff Z / max(r, 1e-6) sum_k c_k exp(a_k r L) switch.
                double screening = 0.0, dScreening = 0.0;
                for (int m = 0; m < 4; m++) {
                    const double e = k[m] * std::exp(k[4 + m] * x * L[ij]);
                    screening += e;
                    dScreening += e * k[4 + m] * L[ij];
                }
                const double inverse = 1.0 / std::max(x, 1e-6);
                const double dInverse = x > 1e-6 ? -inverse * inverse : 0.0;
                const double zblPart = Z[ij] * inverse * screening * zblSwitch.value;
                part.energy += 0.5 * C[ij] * zblPart;
                double dEdr = 0.5 * C[ij] * Z[ij] *
                              (dInverse * screening * zblSwitch.value + inverse * dScreening * zblSwitch.value +
                               inverse * screening * zblSwitch.derivative);
                gC[ij] = static_cast<T>(0.5 * zblPart);
                // Electrostatics inside the long-range cutoff.
                if (x < rc) {
                    const double erfPart = std::erf(x / sigmaE);
                    const double potential = erfPart / x - shift - (1.0 - coulombSwitch.value) * forceShift * (x - rc);
                    const double dPotential = (twoOverSqrtPi * std::exp(-(x / sigmaE) * (x / sigmaE)) / sigmaE * x -
                                               erfPart) / (x * x) +
                                              coulombSwitch.derivative * forceShift * (x - rc) -
                                              (1.0 - coulombSwitch.value) * forceShift;
                    part.energy += 0.5 * coulomb * Q[i] * Q[j] * potential;
                    dEdr += 0.5 * coulomb * Q[i] * Q[j] * dPotential;
                    part.charges[i] += 0.5 * coulomb * Q[j] * potential;
                    part.charges[j] += 0.5 * coulomb * Q[i] * potential;
                }
                // Dispersion (vdW-QDO).
                const double denominator = alpha[i] * alpha[i] * c6[j] + alpha[j] * alpha[j] * c6[i];
                const double c6Pair = 2.0 * product[i] * product[j] / denominator;
                const double mean = 0.5 * (alpha[i] + alpha[j]);
                const double root = std::pow(mean, 1.0 / 7.0);
                const double radius = radiusFactor * root;
                const double sigma = ((b3 * radius + b2) * radius + b1) * radius + b0;
                const double dSigma = (3.0 * b3 * radius + 2.0 * b2) * radius + b1;  // d sigma / d radius
                const double s2 = sigma * sigma;
                const double p2 = (dampingScale * root) * (dampingScale * root);
                const double p6 = p2 * p2 * p2, p8 = p6 * p2, p10 = p8 * p2;
                const double d2 = (x / bohr) * (x / bohr);
                const double d6 = d2 * d2 * d2, d8 = d6 * d2, d10 = d8 * d2;
                const double t6 = 1.0 / (d6 + p6), t8 = 1.0 / (d8 + p8), t10 = 1.0 / (d10 + p10);
                const double g = t6 + 10.0 * s2 * t8 + 122.5 * s2 * s2 * t10;
                const double dd2 = 2.0 * x / (bohr * bohr);
                const double dgdr = -(3.0 * d2 * d2 * dd2) * t6 * t6 - 10.0 * s2 * (4.0 * d6 * dd2) * t8 * t8 -
                                    122.5 * s2 * s2 * (5.0 * d8 * dd2) * t10 * t10;
                const double scale = -0.5 * hartree;
                part.energy += scale * c6Pair * g * dispersionSwitch.value;
                dEdr += scale * c6Pair * (dgdr * dispersionSwitch.value + g * dispersionSwitch.derivative);
                gR[ij] = static_cast<T>(dEdr);
                // Through the Hirshfeld ratios: g via the mean polarisability (root), c6Pair via alpha and C6.
                const double dp2 = 2.0 * dampingScale * dampingScale * root;  // d p2 / d root
                const double ds2 = 2.0 * sigma * dSigma * radiusFactor;      // d s2 / d root
                const double dgdRoot = -(3.0 * p2 * p2 * dp2) * t6 * t6 +
                                       10.0 * (ds2 * t8 - s2 * (4.0 * p6 * dp2) * t8 * t8) +
                                       122.5 * (2.0 * s2 * ds2 * t10 - s2 * s2 * (5.0 * p8 * dp2) * t10 * t10);
                const double dRootdAlpha = root / (7.0 * mean) * 0.5;  // the same for alpha_i and alpha_j
                const double weight = scale * dispersionSwitch.value;
                const double dc6dAlphaI = 2.0 * c6[i] * product[j] / denominator -
                                          c6Pair / denominator * 2.0 * alpha[i] * c6[j];
                const double dc6dAlphaJ = 2.0 * c6[j] * product[i] / denominator -
                                          c6Pair / denominator * 2.0 * alpha[j] * c6[i];
                const double dc6dC6I =
                    2.0 * alpha[i] * product[j] / denominator - c6Pair / denominator * alpha[j] * alpha[j];
                const double dc6dC6J =
                    2.0 * alpha[j] * product[i] / denominator - c6Pair / denominator * alpha[i] * alpha[i];
                part.alpha[i] += weight * (dc6dAlphaI * g + c6Pair * dgdRoot * dRootdAlpha);
                part.alpha[j] += weight * (dc6dAlphaJ * g + c6Pair * dgdRoot * dRootdAlpha);
                part.c6[i] += weight * dc6dC6I * g;
                part.c6[j] += weight * dc6dC6J * g;
            }
        const std::lock_guard<std::mutex> guard(partialsLock);
        partials.emplace_back(begin, std::move(part));
    });
    std::sort(partials.begin(), partials.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
    std::vector<double> gAlpha(n, 0.0), gC6(n, 0.0);
    double energy = 0.0;
    for (const auto& entry : partials) {
        const Partial& part = entry.second;
        energy += part.energy;
        for (int64_t i = 0; i < n; i++) {
            gQ[i] += part.charges[i];
            gAlpha[i] += part.alpha[i];
            gC6[i] += part.c6[i];
        }
    }
    for (int64_t i = 0; i < n; i++)
        gH[i] = gAlpha[i] * A0[i] + gC6[i] * 2.0 * C60[i] * Hf[i];
    Tensor result = at::scalar_tensor(energy, r.options());
    if (!gradients)
        return {result};
    Tensor gradQ = at::empty({n}, r.options()), gradH = at::empty({n}, r.options());
    for (int64_t i = 0; i < n; i++) {
        gradQ.data_ptr<T>()[i] = static_cast<T>(gQ[i]);
        gradH.data_ptr<T>()[i] = static_cast<T>(gH[i]);
    }
    return {result, gradR, gradCutoff, gradQ, gradH};
}

} // namespace

namespace NNPPlugin {
namespace so3lr {

std::vector<Tensor> physicalTerms(const Tensor& r, const Tensor& cutoff, const Tensor& charges, const Tensor& hirshfeld,
                                  const Tensor& chargeProducts, const Tensor& inverseLengths,
                                  const Tensor& polarizabilities, const Tensor& c6, const std::vector<double>& zbl,
                                  const std::vector<double>& switches, const std::vector<double>& constants,
                                  bool gradients) {
    for (const Tensor* t :
         {&r, &cutoff, &charges, &hirshfeld, &chargeProducts, &inverseLengths, &polarizabilities, &c6})
        TORCH_CHECK(t->device().is_cpu() && t->scalar_type() == r.scalar_type(),
                    "so3lr_physical: CPU tensors of one dtype expected");
    TORCH_CHECK(at::isFloatingType(r.scalar_type()), "so3lr_physical: floating-point tensors expected");
    const Inputs inputs{r, cutoff, charges, hirshfeld, chargeProducts, inverseLengths, polarizabilities, c6,
                        zbl, switches, constants};
    std::vector<Tensor> outputs;
    AT_DISPATCH_FLOATING_TYPES(r.scalar_type(), "so3lr_physical",
                               [&] { outputs = evaluate<scalar_t>(inputs, gradients); });
    return outputs;
}

} // namespace so3lr
} // namespace NNPPlugin

namespace {

class PhysicalFunction : public torch::autograd::Function<PhysicalFunction> {
public:
    static Tensor forward(torch::autograd::AutogradContext* ctx, const Tensor& r, const Tensor& cutoff,
                          const Tensor& charges, const Tensor& hirshfeld, const Tensor& chargeProducts,
                          const Tensor& inverseLengths, const Tensor& polarizabilities, const Tensor& c6,
                          std::vector<double> zbl, std::vector<double> switches, std::vector<double> constants) {
        at::AutoDispatchBelowADInplaceOrView belowAutograd;
        at::NoGradGuard noGrad;
        const bool gradients = r.requires_grad() || cutoff.requires_grad() || charges.requires_grad() ||
                               hirshfeld.requires_grad();
        const std::vector<Tensor> outputs = NNPPlugin::so3lr::physicalTerms(
            r, cutoff, charges, hirshfeld, chargeProducts, inverseLengths, polarizabilities, c6, zbl, switches,
            constants, gradients);
        if (gradients)
            ctx->save_for_backward({outputs[1], outputs[2], outputs[3], outputs[4]});
        return outputs[0];
    }

    static torch::autograd::tensor_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::tensor_list gradOutputs) {
        const auto saved = ctx->get_saved_variables();
        const Tensor g = gradOutputs[0];
        return {saved[0] * g, saved[1] * g, saved[2] * g, saved[3] * g, Tensor(), Tensor(), Tensor(), Tensor(),
                Tensor(), Tensor(), Tensor()};
    }
};

Tensor so3lrPhysical(const Tensor& r, const Tensor& cutoff, const Tensor& charges, const Tensor& hirshfeld,
                     const Tensor& chargeProducts, const Tensor& inverseLengths, const Tensor& polarizabilities,
                     const Tensor& c6, std::vector<double> zbl, std::vector<double> switches,
                     std::vector<double> constants) {
    return PhysicalFunction::apply(r, cutoff, charges, hirshfeld, chargeProducts, inverseLengths, polarizabilities,
                                   c6, zbl, switches, constants);
}

} // namespace

TORCH_LIBRARY_FRAGMENT(openmm_nnp, m) {
    m.def("so3lr_physical(Tensor r, Tensor cutoff, Tensor charges, Tensor hirshfeld, Tensor zbl_charge_products, "
          "Tensor zbl_inverse_lengths, Tensor free_polarizabilities, Tensor free_c6, float[] zbl, float[] switches, "
          "float[] constants) -> Tensor",
          &so3lrPhysical);
}
