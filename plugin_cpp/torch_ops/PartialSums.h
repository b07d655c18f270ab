#ifndef OPENMM_NNP_PARTIAL_SUMS_H_
#define OPENMM_NNP_PARTIAL_SUMS_H_

// Sums of the partial buffers of parallel tasks in a fixed order: each task of an at::parallel_for loop that
// scatters into shared rows fills a buffer of its own, tagged with the start of its range; addInOrder adds them to
// the target in the order of those starts, so that the sums do not depend on the order the tasks end in.

#include <algorithm>
#include <cstdint>
#include <utility>
#include <vector>

namespace NNPPlugin {

template <typename T>
void addInOrder(std::vector<std::pair<int64_t, std::vector<T>>>& partials, T* target) {
    std::sort(partials.begin(), partials.end(),
              [](const auto& a, const auto& b) { return a.first < b.first; });
    for (const auto& partial : partials) {
        const std::vector<T>& values = partial.second;
        for (size_t k = 0; k < values.size(); k++)
            target[k] += values[k];
    }
}

} // namespace NNPPlugin

#endif
