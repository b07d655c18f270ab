#ifndef OPENMM_NNP_SO3LR_PAIRS_H_
#define OPENMM_NNP_SO3LR_PAIRS_H_

// The check that the SO3LR operators' pair lists (first[p], second[p]) name distinct atoms 0 <= a, b < n,
// with the operator's name in the message. The int64 1-dimensional layouts are checked by the callers.

#include <torch/torch.h>

namespace NNPPlugin {
namespace so3lr {

inline void checkDistinctPairs(const torch::Tensor& first, const torch::Tensor& second, int64_t atoms,
                               const char* operatorName) {
    const torch::Tensor a = first.contiguous(), b = second.contiguous();
    const int64_t* pa = a.data_ptr<int64_t>();
    const int64_t* pb = b.data_ptr<int64_t>();
    for (int64_t p = 0; p < a.numel(); p++)
        TORCH_CHECK(pa[p] >= 0 && pa[p] < atoms && pb[p] >= 0 && pb[p] < atoms && pa[p] != pb[p], operatorName,
                    ": pair ", p, " (", pa[p], ", ", pb[p], ") is not a pair of distinct atoms");
}

} // namespace so3lr
} // namespace NNPPlugin

#endif
