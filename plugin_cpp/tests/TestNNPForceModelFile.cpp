/* C++ test: a TorchScript model file evaluated through NNPForce in a program without Python.
 * Usage: TestNNPForceModelFile <kernel library> <OpenMM plugin directory> <model.pt> <expected.txt>
 * expected.txt (written by the pytest suite, which computed the values with the model in Python):
 *   n                          number of particles; all of them form the region, in order
 *   x y z      (n lines)       positions, nm
 *   energy tolerance           expected energy (kJ/mol) and relative tolerance
 *   fx fy fz   (n lines)       expected forces (kJ/mol/nm)
 *   tolerance                  relative tolerance on forces (of the largest component)
 * Models that call openmm-nnp's TorchScript operators (openmm_nnp.models.ANI) load only if the
 * kernel library registered them, which is what this checks when given such a model. */
#include "NNPForce.h"
#include "OpenMM.h"
#include <algorithm>
#include <cmath>
#include <fstream>
#include <iostream>

using namespace NNPPlugin;
using namespace OpenMM;
using namespace std;

#define CHECK(condition) do { if (!(condition)) throw runtime_error(string("check failed: ") + #condition + " at line " + to_string(__LINE__)); } while (0)

int main(int argc, char* argv[]) {
    if (argc != 5) {
        cout << "usage: " << argv[0] << " <libOpenMMNNPReference.so> <OpenMM plugin dir> <model.pt> <expected.txt>" << endl;
        return 1;
    }
    try {
        Platform::loadPluginsFromDirectory(argv[2]);
        Platform::loadPluginLibrary(argv[1]);
        ifstream input(argv[4]);
        int n;
        input >> n;
        CHECK(input && n > 0);
        vector<Vec3> positions(n), expectedForces(n);
        for (Vec3& p : positions)
            input >> p[0] >> p[1] >> p[2];
        double expectedEnergy, energyTolerance, forceTolerance;
        input >> expectedEnergy >> energyTolerance;
        for (Vec3& f : expectedForces)
            input >> f[0] >> f[1] >> f[2];
        input >> forceTolerance;
        CHECK(input);

        System system;
        vector<int> region;
        for (int i = 0; i < n; i++) {
            system.addParticle(12.0);
            region.push_back(i);
        }
        system.addForce(new NNPForce(argv[3], region));
        VerletIntegrator integrator(0.001);
        Context context(system, integrator, Platform::getPlatformByName("Reference"));
        context.setPositions(positions);
        State state = context.getState(State::Energy | State::Forces);
        double largest = 0, error = 0;
        for (int i = 0; i < n; i++)
            for (int c = 0; c < 3; c++) {
                largest = max(largest, fabs(expectedForces[i][c]));
                error = max(error, fabs(state.getForces()[i][c] - expectedForces[i][c]));
            }
        cout << "energy " << state.getPotentialEnergy() << " expected " << expectedEnergy << "; force error "
             << error / largest << " of the largest component" << endl;
        CHECK(fabs(state.getPotentialEnergy() - expectedEnergy) <= energyTolerance * fabs(expectedEnergy));
        CHECK(error <= forceTolerance * largest);
    }
    catch (const exception& e) {
        cout << "exception: " << e.what() << endl;
        return 1;
    }
    cout << "Done" << endl;
    return 0;
}
