#include "ReferenceNNPKernels.h"
#include "openmm/OpenMMException.h"
#include "openmm/internal/ContextImpl.h"
#include "openmm/reference/ReferencePlatform.h"
#include <ATen/Dispatch.h>
#include <cstring>

using namespace NNPPlugin;
using namespace OpenMM;
using namespace std;

static ReferencePlatform::PlatformData& platformData(ContextImpl& context) {
    return *reinterpret_cast<ReferencePlatform::PlatformData*>(context.getPlatformData());
}

// The `overlap` property: "true" or "false" (absent or empty: false). Only the CPU platform overlaps; the
// Reference platform is for debugging, where one thread doing one thing at a time is what users expect.
// Off by default: benchmarks/bench_overhead.py measured a small and inconsistent gain on 2 cores (docs/usage.md).
static bool overlapProperty(const NNPForce& force, const Platform& platform) {
    auto properties = force.getProperties();
    return platform.getName() == "CPU" && properties.count("overlap") && properties["overlap"] == "true";
}

ReferenceCalcNNPForceKernel::~ReferenceCalcNNPForceKernel() {
    worker.reset(); // waits for a running prefetch before the computation it uses goes away
}

void ReferenceCalcNNPForceKernel::initialize(const System& system, const NNPForce& force, const vector<int>& regionAtoms) {
    atoms = regionAtoms;
    usePeriodic = force.usesPeriodicBoundaryConditions();
    wholePlan = planWholeRegion(atoms, force.getBonds());
    computation.reset(new NNPComputation(force, atoms, torch::kCPU));
    positionBuffer.resize(3 * atoms.size());
    prefetchPositions.resize(3 * atoms.size());
    overlap = overlapProperty(force, getPlatform());
    hasPrefetch = false;
    skipPrefetches = 0;
    nextSkip = 1;
    // The overlapped model runs on numThreads torch threads, one if not set: OpenMM's threads occupy the cores
    // meanwhile, and more OpenMP threads per parallel region mostly wait for them (benchmarks/bench_overhead.py).
    if (overlap)
        worker.reset(new NNPWorker(max(1, NNPComputation::numThreadsProperty(force))));
}

void ReferenceCalcNNPForceKernel::gather(ContextImpl& context, vector<double>& buffer, double box[3][3]) {
    ReferencePlatform::PlatformData& data = platformData(context);
    const vector<Vec3>& positions = *data.positions;
    for (int i = 0; i < 3; i++)
        for (int k = 0; k < 3; k++)
            box[i][k] = data.periodicBoxVectors[i][k];
    for (int k = 0; k < (int) wholePlan.order.size(); k++) {
        int i = wholePlan.order[k];
        const Vec3& p = positions[atoms[i]];
        if (!usePeriodic || wholePlan.reference[k] < 0) {
            for (int d = 0; d < 3; d++)
                buffer[3 * i + d] = p[d];
            continue;
        }
        int j = wholePlan.reference[k];
        double delta[3] = {p[0] - positions[atoms[j]][0], p[1] - positions[atoms[j]][1], p[2] - positions[atoms[j]][2]};
        minimumImage(delta, box);
        for (int d = 0; d < 3; d++)
            buffer[3 * i + d] = buffer[3 * j + d] + delta[d];
    }
}

void ReferenceCalcNNPForceKernel::finishPrefetch(bool discard) {
    if (!worker)
        return;
    worker->wait();
    if (discard && hasPrefetch) {
        hasPrefetch = false;
        prefetchOutput = NNPComputation::Output();
        prefetchError = nullptr;
    }
}

void ReferenceCalcNNPForceKernel::prepare(ContextImpl& context) {
    if (!overlap)
        return;
    if (hasPrefetch) {
        // The previous prefetch was never asked for: the integrator computes this force at other times.
        finishPrefetch(true);
        statistics.discarded++;
        skipPrefetches = nextSkip;
        nextSkip = min(2 * nextSkip, 1024);
    }
    if (skipPrefetches > 0) {
        skipPrefetches--;
        return;
    }
    if (!computation->isActive(context))
        return;
    gather(context, prefetchPositions, prefetchBox);
    prefetchInputs = computation->getInputs(context, true);
    prefetchError = nullptr;
    hasPrefetch = true;
    statistics.started++;
    int n = atoms.size();
    worker->submit([this, n] () {
        try {
            torch::Tensor positions = torch::from_blob(prefetchPositions.data(), {n, 3}, torch::kFloat64);
            torch::Tensor box;
            if (usePeriodic)
                box = torch::from_blob(&prefetchBox[0][0], {3, 3}, torch::kFloat64);
            prefetchOutput = computation->compute(prefetchInputs, positions, box);
        }
        catch (...) {
            prefetchError = current_exception();
        }
    });
}

double ReferenceCalcNNPForceKernel::execute(ContextImpl& context, bool includeForces, bool includeEnergy) {
    // Never two model evaluations at once: whatever happens below, a running prefetch finishes first.
    finishPrefetch(false);
    if (!computation->isActive(context))
        return 0.0; // switched off: nothing the model computes would be used
    ReferencePlatform::PlatformData& data = platformData(context);
    double box[3][3];
    gather(context, positionBuffer, box);
    NNPComputation::Inputs inputs = computation->getInputs(context, includeForces);

    NNPComputation::Output output;
    bool usePrefetch = false;
    if (hasPrefetch && includeForces) {
        // A prefetch serves only the computation it was started for: these inputs, bit for bit. Energy-only
        // requests in between (a barostat's trial, a reporter) compute on their own and leave it waiting.
        usePrefetch = inputs == prefetchInputs && memcmp(positionBuffer.data(), prefetchPositions.data(), positionBuffer.size() * sizeof(double)) == 0 &&
                      (!usePeriodic || memcmp(box, prefetchBox, sizeof(box)) == 0);
        hasPrefetch = false;
        if (usePrefetch) {
            statistics.used++;
            nextSkip = 1;
            exception_ptr error = prefetchError;
            prefetchError = nullptr;
            if (error)
                rethrow_exception(error);
            output = std::move(prefetchOutput);
        }
        else {
            statistics.discarded++;
            skipPrefetches = nextSkip;
            nextSkip = min(2 * nextSkip, 1024);
        }
        prefetchOutput = NNPComputation::Output();
    }
    if (!usePrefetch) {
        int n = atoms.size();
        auto computeNow = [&] () {
            torch::Tensor positionTensor = torch::from_blob(positionBuffer.data(), {n, 3}, torch::kFloat64);
            torch::Tensor boxTensor;
            if (usePeriodic)
                boxTensor = torch::from_blob(&box[0][0], {3, 3}, torch::kFloat64);
            output = computation->compute(inputs, positionTensor, boxTensor);
        };
        if (worker) {
            // With overlap every evaluation runs on the worker, so that all of them use the same torch threads:
            // a model's results may depend on the thread count in the last bits (ANI-2x's forces do), and a
            // trajectory must not depend on which evaluations were prefetched.
            exception_ptr error;
            worker->submit([&] () {
                try {
                    computeNow();
                }
                catch (...) {
                    error = current_exception();
                }
            });
            worker->wait();
            if (error)
                rethrow_exception(error);
        }
        else
            computeNow();
    }
    NNPComputation::addDerivatives(output, *data.energyParameterDerivatives);

    if (output.forces.defined()) {
        // Read in the model's type where it is float or double on the CPU (no ATen conversion, whose code is cold
        // after the MM forces; NNPComputation.cpp).
        torch::Tensor forces = output.forces;
        if (!forces.device().is_cpu() || !forces.is_contiguous() ||
                (forces.scalar_type() != torch::kFloat32 && forces.scalar_type() != torch::kFloat64))
            forces = forces.to(torch::kCPU, torch::kFloat64).contiguous();
        vector<Vec3>& forceBuffer = *data.forces;
        AT_DISPATCH_FLOATING_TYPES(forces.scalar_type(), "scatterForces", [&] {
            const scalar_t* f = forces.data_ptr<scalar_t>();
            for (int i = 0; i < (int) atoms.size(); i++)
                forceBuffer[atoms[i]] += Vec3(f[3 * i], f[3 * i + 1], f[3 * i + 2]);
        });
    }
    return output.energy;
}

void ReferenceCombineForcesKernel::saveForces(ContextImpl& context) {
    saved = *platformData(context).forces;
}

void ReferenceCombineForcesKernel::scaleAndAddSavedForces(ContextImpl& context, int multiple) {
    vector<Vec3>& forces = *platformData(context).forces;
    for (size_t i = 0; i < forces.size(); i++)
        forces[i] = saved[i] + forces[i] * multiple;
}
