#ifndef OPENMM_NNP_REGION_GEOMETRY_H_
#define OPENMM_NNP_REGION_GEOMETRY_H_

#include <cmath>
#include <utility>
#include <vector>

namespace NNPPlugin {

/**
 * The order in which to make a periodic region whole: each region atom (by its index within the
 * region) is imaged next to a reference atom that was placed before it. Reference atoms follow the
 * bonds (a breadth-first tree from the first atom of each bonded fragment), so chains longer than
 * half the box stay intact; atoms of fragments without bonds to earlier ones use the region's first atom.
 */
struct WholeRegionPlan {
    std::vector<int> order;     // region indices in placement order; order[0] == 0
    std::vector<int> reference; // reference[k] = region index that order[k] is imaged against (-1 for the first)
};

/**
 * @param atoms  System particle indices of the region
 * @param bonds  bonds between region atoms, as System particle indices
 */
WholeRegionPlan planWholeRegion(const std::vector<int>& atoms, const std::vector<std::pair<int, int> >& bonds);

/**
 * Shift `delta` by lattice vectors to its minimum image in a box in OpenMM's reduced triclinic form
 * (a along x, b in the xy plane, c anywhere with positive z).
 */
inline void minimumImage(double delta[3], const double box[3][3]) {
    for (int axis = 2; axis >= 0; axis--) {
        double shift = std::floor(delta[axis] / box[axis][axis] + 0.5);
        for (int k = 0; k < 3; k++)
            delta[k] -= shift * box[axis][k];
    }
}

} // namespace NNPPlugin

#endif /*OPENMM_NNP_REGION_GEOMETRY_H_*/
