#include "RegionGeometry.h"
#include <map>
#include <queue>

using namespace NNPPlugin;
using namespace std;

WholeRegionPlan NNPPlugin::planWholeRegion(const vector<int>& atoms, const vector<pair<int, int> >& bonds) {
    int n = atoms.size();
    map<int, int> regionIndex;
    for (int i = 0; i < n; i++)
        regionIndex[atoms[i]] = i;
    vector<vector<int> > neighbors(n);
    for (auto& bond : bonds) {
        auto a = regionIndex.find(bond.first), b = regionIndex.find(bond.second);
        if (a != regionIndex.end() && b != regionIndex.end()) {
            neighbors[a->second].push_back(b->second);
            neighbors[b->second].push_back(a->second);
        }
    }
    WholeRegionPlan plan;
    vector<bool> placed(n, false);
    for (int start = 0; start < n; start++) {
        if (placed[start])
            continue;
        placed[start] = true;
        plan.order.push_back(start);
        plan.reference.push_back(start == 0 ? -1 : 0);
        queue<int> pending;
        pending.push(start);
        while (!pending.empty()) {
            int atom = pending.front();
            pending.pop();
            for (int neighbor : neighbors[atom])
                if (!placed[neighbor]) {
                    placed[neighbor] = true;
                    plan.order.push_back(neighbor);
                    plan.reference.push_back(atom);
                    pending.push(neighbor);
                }
        }
    }
    return plan;
}
