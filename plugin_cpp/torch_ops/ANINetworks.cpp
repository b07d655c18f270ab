// The atomic networks of an ANI ensemble (see ANINetworks.h). The arithmetic is that of the
// model's PyTorch path (the same stacked matrix products); doing it here saves the interpreter's
// per-operation cost, which for the few tens of atoms of an NNP region is as large as the
// matrix products, and lets each thread run whole networks.

#include "ANINetworks.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <tuple>
#include <vector>

using at::Tensor;

namespace NNPPlugin {
namespace ani {

namespace {

constexpr double ALPHA = 0.1;

Tensor celuActivation(const Tensor& x) {
    return at::celu(x, ALPHA);
}

// grad * d celu(z)/dz, from the activation celu(z): 1 for z > 0, 1 + celu(z) / alpha otherwise.
Tensor celuBackward(const Tensor& grad, const Tensor& activation) {
    return at::elu_backward(grad, ALPHA, 1.0, 1.0 / ALPHA, true, activation);
}

// The element's block of the AEV, [atoms, features] (rows and columns picked by index), and the
// reverse: writing such a block into a zero-initialised AEV gradient. Plain loops: the indexing
// operators' generality costs more than the copy for blocks of a few thousand numbers.
void checkBlockIndices(const Tensor& atoms, const Tensor& features, const Tensor& aev) {
    TORCH_CHECK(atoms.scalar_type() == torch::kInt64 && features.scalar_type() == torch::kInt64 && atoms.dim() == 1 &&
                    features.dim() == 1 && atoms.is_contiguous() && features.is_contiguous(),
                "ANIFeatures.energies: atom and feature indices must be contiguous 1-dimensional int64 tensors");
    const int64_t* atom = atoms.data_ptr<int64_t>();
    const int64_t* feature = features.data_ptr<int64_t>();
    for (int64_t i = 0; i < atoms.numel(); i++)
        TORCH_CHECK(atom[i] >= 0 && atom[i] < aev.size(0), "ANIFeatures.energies: atom index ", atom[i], " out of range");
    for (int64_t j = 0; j < features.numel(); j++)
        TORCH_CHECK(feature[j] >= 0 && feature[j] < aev.size(1), "ANIFeatures.energies: feature index ", feature[j],
                    " out of range");
}

Tensor gatherBlock(const Tensor& aev, const Tensor& atoms, const Tensor& features) {
    Tensor block = at::empty({atoms.numel(), features.numel()}, aev.options());
    AT_DISPATCH_FLOATING_TYPES(aev.scalar_type(), "ani_gather_block", [&] {
        const auto source = aev.accessor<scalar_t, 2>();
        auto target = block.accessor<scalar_t, 2>();
        const int64_t* atom = atoms.data_ptr<int64_t>();
        const int64_t* feature = features.data_ptr<int64_t>();
        for (int64_t i = 0; i < atoms.numel(); i++)
            for (int64_t j = 0; j < features.numel(); j++)
                target[i][j] = source[atom[i]][feature[j]];
    });
    return block;
}

void scatterBlock(Tensor& aevGradient, const Tensor& atoms, const Tensor& features, const Tensor& block) {
    AT_DISPATCH_FLOATING_TYPES(aevGradient.scalar_type(), "ani_scatter_block", [&] {
        const auto source = block.accessor<scalar_t, 2>();
        auto target = aevGradient.accessor<scalar_t, 2>();
        const int64_t* atom = atoms.data_ptr<int64_t>();
        const int64_t* feature = features.data_ptr<int64_t>();
        for (int64_t i = 0; i < atoms.numel(); i++)
            for (int64_t j = 0; j < features.numel(); j++)
                target[atom[i]][feature[j]] = source[i][j];
    });
}

struct ElementParameters {
    Tensor atoms, features, weight1, bias1, weight2, bias2, weight3, bias3, weight4, bias4Sum;
};

// Members [first, first + count) of one element's networks: adds their energies to energies[first:first+count]
// and returns d(sum of their energies / members)/d(x), x = the element's AEV block [a, f] (if requested).
Tensor memberGroup(const ElementParameters& p, const Tensor& x, int64_t first, int64_t count, bool needGradient,
                   Tensor& energies) {
    const int64_t numAtoms = x.size(0), members = p.weight2.size(0), width1 = p.weight2.size(1);
    const Tensor weight1 = p.weight1.narrow(1, first * width1, count * width1);
    const Tensor weight2 = p.weight2.narrow(0, first, count), weight3 = p.weight3.narrow(0, first, count);
    const Tensor weight4 = p.weight4.narrow(0, first, count);
    // [a, count*w1] -> [count, a, w1]
    Tensor h1 = celuActivation(at::addmm(p.bias1.narrow(0, first * width1, count * width1), x, weight1))
                    .view({numAtoms, count, width1})
                    .transpose(0, 1);
    Tensor h2 = celuActivation(at::baddbmm(p.bias2.narrow(0, first, count), h1, weight2));
    Tensor h3 = celuActivation(at::baddbmm(p.bias3.narrow(0, first, count), h2, weight3));
    // Output layer summed over atoms: sum_a (h3_a . w4 + b4) = (sum_a h3_a) . w4 + a b4
    energies.narrow(0, first, count).add_((h3.sum(1) * weight4).sum(1) + p.bias4Sum.narrow(0, first, count));
    if (!needGradient)
        return Tensor();
    Tensor grad = celuBackward((weight4 * (1.0 / members)).unsqueeze(1).expand_as(h3), h3);
    grad = celuBackward(at::bmm(grad, weight3.transpose(1, 2)), h2);
    grad = celuBackward(at::bmm(grad, weight2.transpose(1, 2)), h1);
    return at::mm(grad.transpose(0, 1).reshape({numAtoms, count * width1}), weight1.t());  // [a, f]
}

} // namespace

std::tuple<Tensor, Tensor> evaluateNetworks(const Tensor& aev, at::TensorList parameters, bool needGradient) {
    TORCH_CHECK(aev.dim() == 2, "ANIFeatures.energies: aev must have shape [atoms, features]");
    TORCH_CHECK(!parameters.empty() && parameters.size() % PARAMETERS_PER_ELEMENT == 0,
                "ANIFeatures.energies: expected ", PARAMETERS_PER_ELEMENT, " parameter tensors per element, got ",
                parameters.size());
    at::NoGradGuard noGrad;
    const int64_t members = parameters[8].size(0);
    std::vector<ElementParameters> elements;
    std::vector<Tensor> inputs;
    for (size_t e = 0; e < parameters.size(); e += PARAMETERS_PER_ELEMENT) {
        const at::TensorList t = parameters.slice(e, PARAMETERS_PER_ELEMENT);
        const ElementParameters p{t[0], t[1], t[2], t[3], t[4], t[5], t[6], t[7], t[8], t[9]};
        TORCH_CHECK(p.weight1.size(0) == p.features.size(0) && p.weight1.size(1) == members * p.weight2.size(1) &&
                        p.weight4.size(0) == members,
                    "ANIFeatures.energies: inconsistent parameter shapes for element ", e / PARAMETERS_PER_ELEMENT);
        // The element's block of the AEV: its atoms' rows, the columns its networks read.
        checkBlockIndices(p.atoms, p.features, aev);
        inputs.push_back(gatherBlock(aev, p.atoms, p.features));
        elements.push_back(p);
    }
    // The members are split into one contiguous group per thread: each thread runs whole networks on
    // its share of the weights (single-threaded matrix products inside the parallel region), with one
    // fork and join per call instead of one per matrix product. Measured ~10% faster than
    // multithreaded products for the 30-atom B2 guest on 2 cores.
    const int64_t groups = std::max<int64_t>(1, std::min<int64_t>(at::get_num_threads(), members));
    Tensor energies = at::zeros({members}, aev.options());
    std::vector<std::vector<Tensor>> partial(groups, std::vector<Tensor>(elements.size()));
    at::parallel_for(0, groups, 1, [&](int64_t begin, int64_t end) {
        for (int64_t g = begin; g < end; g++) {
            const int64_t first = g * members / groups, last = (g + 1) * members / groups;
            for (size_t e = 0; e < elements.size(); e++)
                partial[g][e] = memberGroup(elements[e], inputs[e], first, last - first, needGradient, energies);
        }
    });
    Tensor aevGradient = needGradient ? at::zeros_like(aev) : at::empty({0}, aev.options());
    if (needGradient)
        for (size_t e = 0; e < elements.size(); e++) {
            Tensor grad = partial[0][e];
            for (int64_t g = 1; g < groups; g++)
                grad = grad + partial[g][e];
            // Elements own disjoint rows, so no position is written twice.
            scatterBlock(aevGradient, elements[e].atoms, elements[e].features, grad);
        }
    return {energies, aevGradient};
}

} // namespace ani
} // namespace NNPPlugin
