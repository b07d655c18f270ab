/* C++ test: NNPForce through OpenMM's C++ API on every platform whose kernels the given kernel libraries
 * register (Reference and CPU always; OpenCL/CUDA when their libraries are given and a device exists).
 * Usage: TestNNPForcePlatforms <kernel library> <OpenMM plugin directory> <model.pt> [more kernel libraries]
 * The model (written by the pytest suite) is E = sum_i k_i |r_i - r0_i|^2 with k_i = i + 1 and
 * r0_i = (0.1 i, -0.2, 0.3) nm over the region's atoms in region order, in float64. */
#include "NNPForce.h"
#include "OpenMM.h"
#include <cmath>
#include <iostream>

using namespace NNPPlugin;
using namespace OpenMM;
using namespace std;

#define CHECK(condition) do { if (!(condition)) throw runtime_error(string("check failed: ") + #condition + " at line " + to_string(__LINE__)); } while (0)

static void testPlatform(const string& platformName, const string& modelFile) {
    const int numParticles = 7;
    System system;
    for (int i = 0; i < numParticles; i++)
        system.addParticle(1.0);
    vector<int> region = {4, 1, 6};
    NNPForce* force = new NNPForce(modelFile, region);
    force->setScaleParameter("scale", 0.3);
    force->addEnergyParameterDerivative("scale");
    system.addForce(force);
    vector<Vec3> positions;
    for (int i = 0; i < numParticles; i++)
        positions.push_back(Vec3(0.05 * i, 0.1 * sin(i), -0.3 + 0.07 * i * i));
    VerletIntegrator integrator(0.001);
    Context context(system, integrator, Platform::getPlatformByName(platformName));
    context.setPositions(positions);
    State state = context.getState(State::Energy | State::Forces | State::ParameterDerivatives);
    double expected = 0;
    for (int k = 0; k < (int) region.size(); k++) {
        Vec3 r0(0.1 * k, -0.2, 0.3);
        Vec3 d = positions[region[k]] - r0;
        expected += (k + 1) * d.dot(d);
        Vec3 f = state.getForces()[region[k]];
        Vec3 expectedForce = d * (-2.0 * (k + 1) * 0.3);
        for (int c = 0; c < 3; c++)
            CHECK(fabs(f[c] - expectedForce[c]) < 1e-5 * (1 + fabs(expectedForce[c])));
    }
    for (int i : {0, 2, 3, 5})
        CHECK(state.getForces()[i].dot(state.getForces()[i]) == 0.0);
    CHECK(fabs(state.getPotentialEnergy() - 0.3 * expected) < 1e-5 * expected);
    CHECK(fabs(state.getEnergyParameterDerivatives().at("scale") - expected) < 1e-5 * expected);
}

int main(int argc, char* argv[]) {
    if (argc < 4) {
        cout << "usage: " << argv[0] << " <libOpenMMNNPReference.so> <OpenMM plugin dir> <model.pt> [more kernel libraries]" << endl;
        return 2;
    }
    try {
        Platform::loadPluginsFromDirectory(argv[2]);
        Platform::loadPluginLibrary(argv[1]);
        for (int i = 4; i < argc; i++)
            Platform::loadPluginLibrary(argv[i]);
        for (int i = 0; i < Platform::getNumPlatforms(); i++) {
            Platform& platform = Platform::getPlatform(i);
            if (!platform.supportsKernels({"CalcNNPForce"}))
                continue;
            testPlatform(platform.getName(), argv[3]);
            cout << "tested " << platform.getName() << endl;
        }
        bool rejected = false;
        try {
            NNPForce missing("/nonexistent/model.pt");
        }
        catch (const OpenMMException& e) {
            rejected = string(e.what()).find("cannot open the model file") != string::npos;
        }
        CHECK(rejected);
    }
    catch (const exception& e) {
        cout << "FAILED: " << e.what() << endl;
        return 1;
    }
    cout << "Done" << endl;
    return 0;
}
