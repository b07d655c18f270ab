// The atomic networks of an ANI ensemble (openmm_nnp.models.ANI), with their gradient by
// back-propagation, as one operator. The arithmetic is that of the model's PyTorch path (the
// same stacked matrix products); doing it here saves the interpreter's per-operation cost,
// which for the few tens of atoms of an NNP region is as large as the matrix products.
//
// ani_networks(aev, parameters, need_gradient) -> (energies, aev_gradient)
//   aev         [atoms, features]
//   parameters  ten tensors per element present in the region (members M, widths w1 w2 w3):
//                 atom_indices [a] (rows of aev), feature_indices [f] (columns the networks read),
//                 weight1 [f, M*w1], bias1 [M*w1]        (first layer, members side by side),
//                 weight2 [M, w1, w2], bias2 [M, 1, w2], weight3 [M, w2, w3], bias3 [M, 1, w3],
//                 weight4 [M, w3], bias4_sum [M]         (output layer; bias times a)
//   energies    [M]: each member's sum of atomic outputs
//   aev_gradient [atoms, features]: d(mean of the members' energies)/d(aev), if need_gradient
//                (else an empty tensor)
// The hidden layers use CELU with alpha = 0.1 (TorchANI's TightCELU).

#include "NNPTorchOps.h"

#include <torch/library.h>
#include <torch/torch.h>

#include <tuple>
#include <vector>

namespace {

using at::Tensor;

constexpr double ALPHA = 0.1;
constexpr int PARAMETERS_PER_ELEMENT = 10;

Tensor celuActivation(const Tensor& x) {
    return at::celu(x, ALPHA);
}

// grad * d celu(z)/dz, from the activation celu(z): 1 for z > 0, 1 + celu(z) / alpha otherwise.
Tensor celuBackward(const Tensor& grad, const Tensor& activation) {
    return at::elu_backward(grad, ALPHA, 1.0, 1.0 / ALPHA, true, activation);
}

struct ElementParameters {
    Tensor atoms, features, weight1, bias1, weight2, bias2, weight3, bias3, weight4, bias4Sum;
};

// One element's networks, all members at once: adds the members' energies to `energies` and returns
// d(mean of the members' energies)/d(x), x = the element's AEV block [a, f] (if requested).
Tensor elementNetworks(const ElementParameters& p, const Tensor& x, bool needGradient, Tensor& energies) {
    const int64_t numAtoms = x.size(0), members = p.weight2.size(0), width1 = p.weight2.size(1);
    // [a, M*w1] -> [M, a, w1]
    Tensor h1 = celuActivation(at::addmm(p.bias1, x, p.weight1)).view({numAtoms, members, width1}).transpose(0, 1);
    Tensor h2 = celuActivation(at::baddbmm(p.bias2, h1, p.weight2));
    Tensor h3 = celuActivation(at::baddbmm(p.bias3, h2, p.weight3));
    // Output layer summed over atoms: sum_a (h3_a . w4 + b4) = (sum_a h3_a) . w4 + a b4
    energies += (h3.sum(1) * p.weight4).sum(1) + p.bias4Sum;
    if (!needGradient)
        return Tensor();
    Tensor grad = celuBackward((p.weight4 * (1.0 / members)).unsqueeze(1).expand_as(h3), h3);
    grad = celuBackward(at::bmm(grad, p.weight3.transpose(1, 2)), h2);
    grad = celuBackward(at::bmm(grad, p.weight2.transpose(1, 2)), h1);
    return at::mm(grad.transpose(0, 1).reshape({numAtoms, members * width1}), p.weight1.t());  // [a, f]
}

std::tuple<Tensor, Tensor> networks(const Tensor& aev, at::TensorList parameters, bool needGradient) {
    TORCH_CHECK(aev.dim() == 2, "ani_networks: aev must have shape [atoms, features]");
    TORCH_CHECK(!parameters.empty() && parameters.size() % PARAMETERS_PER_ELEMENT == 0,
                "ani_networks: expected ", PARAMETERS_PER_ELEMENT, " parameter tensors per element, got ",
                parameters.size());
    at::NoGradGuard noGrad;
    const int64_t members = parameters[8].size(0);
    Tensor energies = at::zeros({members}, aev.options());
    Tensor aevGradient = needGradient ? at::zeros_like(aev) : at::empty({0}, aev.options());
    for (size_t e = 0; e < parameters.size(); e += PARAMETERS_PER_ELEMENT) {
        const at::TensorList t = parameters.slice(e, PARAMETERS_PER_ELEMENT);
        const ElementParameters p{t[0], t[1], t[2], t[3], t[4], t[5], t[6], t[7], t[8], t[9]};
        TORCH_CHECK(p.weight1.size(0) == p.features.size(0) && p.weight1.size(1) == members * p.weight2.size(1) &&
                        p.weight4.size(0) == members,
                    "ani_networks: inconsistent parameter shapes for element ", e / PARAMETERS_PER_ELEMENT);
        // The element's block of the AEV: its atoms' rows, the columns its networks read.
        const c10::List<c10::optional<Tensor>> block({p.atoms.unsqueeze(1), p.features.unsqueeze(0)});
        Tensor grad = elementNetworks(p, aev.index(block), needGradient, energies);
        // Elements own disjoint rows, so no position is written twice.
        if (needGradient)
            aevGradient.index_put_(block, grad);
    }
    return {energies, aevGradient};
}

} // namespace

TORCH_LIBRARY_IMPL(openmm_nnp, CPU, m) {
    m.impl("ani_networks", networks);
}
