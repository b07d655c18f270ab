#include "CommonNNPKernels.h"
#include "CommonNNPKernelSources.h"
#include "RegionGeometry.h"
#include "openmm/common/ComputeForceInfo.h"
#include "openmm/common/ContextSelector.h"
#include "openmm/internal/ContextImpl.h"
#include <set>

using namespace NNPPlugin;
using namespace OpenMM;
using namespace std;

/** Re-uploads the region's slots whenever OpenMM reorders atoms. */
class CommonCalcNNPForceKernel::ReorderListener : public ComputeContext::ReorderListener {
public:
    ReorderListener(CommonCalcNNPForceKernel& owner) : owner(owner) {
    }
    void execute() {
        owner.updateSlots();
    }
private:
    CommonCalcNNPForceKernel& owner;
};

/**
 * Tells OpenMM's reordering that a region atom is identical to no other particle, so whole molecules
 * containing region atoms are never swapped with copies of themselves (the model sees atoms in region
 * order, which need not be symmetric under such swaps), and that the region is one group.
 */
class CommonCalcNNPForceKernel::ForceInfo : public ComputeForceInfo {
public:
    ForceInfo(const vector<int>& atoms) : atoms(atoms), region(atoms.begin(), atoms.end()) {
    }
    bool areParticlesIdentical(int particle1, int particle2) {
        return particle1 == particle2 || (region.count(particle1) == 0 && region.count(particle2) == 0);
    }
    int getNumParticleGroups() {
        return 1;
    }
    void getParticlesInGroup(int index, vector<int>& particles) {
        particles = atoms;
    }
    bool areGroupsIdentical(int group1, int group2) {
        return group1 == group2;
    }
private:
    vector<int> atoms;
    set<int> region;
};

CommonCalcNNPForceKernel::CommonCalcNNPForceKernel(string name, const Platform& platform, ComputeContext& cc) :
        CalcNNPForceKernel(name, platform), cc(cc), numRegionAtoms(0), usePeriodic(false) {
}

CommonCalcNNPForceKernel::~CommonCalcNNPForceKernel() {
}

torch::ScalarType CommonCalcNNPForceKernel::mixedDtype() const {
    return cc.getUseDoublePrecision() || cc.getUseMixedPrecision() ? torch::kFloat64 : torch::kFloat32;
}

void CommonCalcNNPForceKernel::initialize(const System& system, const NNPForce& force, const vector<int>& regionAtoms) {
    ContextSelector selector(cc);
    atoms = regionAtoms;
    numRegionAtoms = atoms.size();
    usePeriodic = force.usesPeriodicBoundaryConditions();
    computation.reset(new NNPComputation(force, atoms, modelDevice()));
    for (const string& name : computation->getDerivativeNames())
        cc.addEnergyParameterDerivative(name);

    WholeRegionPlan plan = planWholeRegion(atoms, force.getBonds());
    int mixedSize = mixedDtype() == torch::kFloat64 ? sizeof(double) : sizeof(float);
    regionPositions.initialize(cc, 3 * numRegionAtoms, mixedSize, "nnpRegionPositions");
    regionForces.initialize(cc, 3 * numRegionAtoms, mixedSize, "nnpRegionForces");
    hostBuffer.resize(3 * numRegionAtoms * mixedSize);
    slots.initialize<int>(cc, numRegionAtoms, "nnpRegionSlots");
    wholeOrder.initialize<int>(cc, numRegionAtoms, "nnpWholeOrder");
    wholeReference.initialize<int>(cc, numRegionAtoms, "nnpWholeReference");
    wholeOrder.upload(plan.order);
    wholeReference.upload(plan.reference);
    updateSlots();
    cc.addReorderListener(new ReorderListener(*this));
    cc.addForce(new ForceInfo(atoms));

    map<string, string> defines;
    defines["NUM_REGION_ATOMS"] = cc.intToString(numRegionAtoms);
    defines["PADDED_NUM_ATOMS"] = cc.intToString(cc.getPaddedNumAtoms());
    if (usePeriodic)
        defines["USE_PERIODIC"] = "1";
    ComputeProgram program = cc.compileProgram(CommonNNPKernelSources::nnpForce, defines);
    gatherKernel = program->createKernel("gatherRegion");
    gatherKernel->addArg(cc.getPosq());
    if (cc.getUseMixedPrecision())
        gatherKernel->addArg(cc.getPosqCorrection());
    gatherKernel->addArg(slots);
    gatherKernel->addArg(wholeOrder);
    gatherKernel->addArg(wholeReference);
    gatherKernel->addArg(regionPositions);
    for (int i = 0; i < 3; i++)
        gatherKernel->addArg(); // box vectors, set each step
    scatterKernel = program->createKernel("scatterRegionForces");
    scatterKernel->addArg(regionForces);
    scatterKernel->addArg(slots);
    scatterKernel->addArg(cc.getLongForceBuffer());
}

void CommonCalcNNPForceKernel::updateSlots() {
    // getAtomIndex()[slot] is the System index of the atom now in `slot`.
    const vector<int>& order = cc.getAtomIndex();
    vector<int> slotOf(order.size());
    for (int slot = 0; slot < (int) order.size(); slot++)
        slotOf[order[slot]] = slot;
    vector<int> regionSlots(numRegionAtoms);
    for (int i = 0; i < numRegionAtoms; i++)
        regionSlots[i] = slotOf[atoms[i]];
    slots.upload(regionSlots);
}

torch::Device CommonCalcNNPForceKernel::modelDevice() {
    return torch::kCPU;
}

torch::Tensor CommonCalcNNPForceKernel::positionsToModel() {
    regionPositions.download(hostBuffer.data());
    return torch::from_blob(hostBuffer.data(), {numRegionAtoms, 3}, mixedDtype());
}

void CommonCalcNNPForceKernel::forcesFromModel(const torch::Tensor& forces) {
    torch::Tensor host = forces.to(torch::kCPU, mixedDtype()).contiguous();
    regionForces.upload(host.data_ptr());
}

double CommonCalcNNPForceKernel::execute(ContextImpl& context, bool includeForces, bool includeEnergy) {
    // With several devices (OpenCL's parallel mode) the first one computes the whole force.
    if (cc.getContextIndex() != 0 || !computation->isActive(context))
        return 0.0;
    ContextSelector selector(cc);
    Vec3 box[3];
    cc.getPeriodicBoxVectors(box[0], box[1], box[2]);
    int firstBoxArg = cc.getUseMixedPrecision() ? 6 : 5; // after posq, posqCorrection (mixed only), slots, order, reference, positions
    for (int i = 0; i < 3; i++) {
        if (mixedDtype() == torch::kFloat64)
            gatherKernel->setArg(firstBoxArg + i, mm_double4(box[i][0], box[i][1], box[i][2], 0.0));
        else
            gatherKernel->setArg(firstBoxArg + i, mm_float4((float) box[i][0], (float) box[i][1], (float) box[i][2], 0.0f));
    }
    gatherKernel->execute(1, 1);
    torch::Tensor positions = positionsToModel();
    torch::Tensor boxTensor;
    if (usePeriodic)
        boxTensor = torch::tensor({box[0][0], box[0][1], box[0][2], box[1][0], box[1][1], box[1][2], box[2][0], box[2][1], box[2][2]},
                                  torch::kFloat64).reshape({3, 3});
    NNPComputation::Output output = computation->evaluate(context, positions, boxTensor, includeForces, cc.getEnergyParamDerivWorkspace());
    if (output.forces.defined()) {
        forcesFromModel(output.forces);
        scatterKernel->execute(numRegionAtoms);
    }
    return output.energy;
}

void CommonCombineForcesKernel::initialize(const System& system) {
    ContextSelector selector(cc);
    saved.initialize<long long>(cc, 3 * cc.getPaddedNumAtoms(), "nnpSavedForces");
    map<string, string> defines;
    defines["NUM_ATOMS"] = cc.intToString(cc.getNumAtoms());
    defines["PADDED_NUM_ATOMS"] = cc.intToString(cc.getPaddedNumAtoms());
    ComputeProgram program = cc.compileProgram(CommonNNPKernelSources::combineForces, defines);
    saveKernel = program->createKernel("saveForces");
    saveKernel->addArg(cc.getLongForceBuffer());
    saveKernel->addArg(cc.getAtomIndexArray());
    saveKernel->addArg(saved);
    addKernel = program->createKernel("scaleAndAddSavedForces");
    addKernel->addArg(cc.getLongForceBuffer());
    addKernel->addArg(cc.getAtomIndexArray());
    addKernel->addArg(saved);
    addKernel->addArg(0); // the multiple, set on each call
}

void CommonCombineForcesKernel::saveForces(ContextImpl& context) {
    ContextSelector selector(cc);
    saveKernel->execute(cc.getNumAtoms());
}

void CommonCombineForcesKernel::scaleAndAddSavedForces(ContextImpl& context, int multiple) {
    ContextSelector selector(cc);
    addKernel->setArg(3, multiple);
    addKernel->execute(cc.getNumAtoms());
}
