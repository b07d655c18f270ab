/* C++ test: NNPForce survives an XML round trip with every field intact, including binary model bytes. */
#include "NNPForce.h"
#include "openmm/OpenMMException.h"
#include "openmm/serialization/XmlSerializer.h"
#include <iostream>
#include <sstream>

using namespace NNPPlugin;
using namespace OpenMM;
using namespace std;

#define CHECK(condition) do { if (!(condition)) throw runtime_error(string("check failed: ") + #condition + " at line " + to_string(__LINE__)); } while (0)

static void testRoundTrip(size_t modelSize) {
    NNPForce force;
    string bytes;
    for (size_t i = 0; i < modelSize; i++)
        bytes += (char) ((i * 37 + 11) % 256); // every byte value, including 0 and non-UTF-8 ones
    force.setModelBytes(bytes);
    force.setAtoms({5, 2, 9});
    force.setBonds({{5, 2}, {2, 9}});
    force.setUsesPeriodicBoundaryConditions(true);
    force.setOutputsForces(true);
    force.addGlobalParameter("alpha", 0.25);
    force.addGlobalParameter("beta", -3.5);
    force.addEnergyParameterDerivative("beta");
    force.setScaleParameter("lambda_nnp", 0.75);
    force.addEnergyParameterDerivative("lambda_nnp");
    force.setProperty("numThreads", "2");
    force.setForceGroup(3);
    force.setName("ligand NNP");

    stringstream buffer;
    XmlSerializer::serialize<NNPForce>(&force, "Force", buffer);
    NNPForce* copy = XmlSerializer::deserialize<NNPForce>(buffer);
    CHECK(copy->getModelBytes() == bytes);
    CHECK(copy->getAtoms() == force.getAtoms());
    CHECK(copy->getBonds() == force.getBonds());
    CHECK(copy->usesPeriodicBoundaryConditions() && copy->getOutputsForces());
    CHECK(copy->getNumGlobalParameters() == 3);
    CHECK(copy->getGlobalParameterName(2) == "lambda_nnp" && copy->getGlobalParameterDefaultValue(2) == 0.75);
    CHECK(copy->getGlobalParameterName(1) == "beta" && copy->getGlobalParameterDefaultValue(1) == -3.5);
    CHECK(copy->getGlobalParameterName(0) == "alpha" && copy->getGlobalParameterDefaultValue(0) == 0.25);
    CHECK(copy->getNumEnergyParameterDerivatives() == 2);
    CHECK(copy->getEnergyParameterDerivativeName(0) == "beta" && copy->getEnergyParameterDerivativeName(1) == "lambda_nnp");
    CHECK(copy->getScaleParameter() == "lambda_nnp" && copy->getScaleParameterDefaultValue() == 0.75);
    CHECK(copy->getProperties() == force.getProperties());
    CHECK(copy->getForceGroup() == 3 && copy->getName() == "ligand NNP");
    delete copy;
}

static void testCorruptModelIsRejected() {
    NNPForce force;
    force.setModelBytes("some model bytes");
    stringstream buffer;
    XmlSerializer::serialize<NNPForce>(&force, "Force", buffer);
    string xml = buffer.str();
    size_t data = xml.find("data=\"");
    CHECK(data != string::npos);
    xml.replace(data + 6, 4, "!!!!");
    stringstream corrupt(xml);
    try {
        delete XmlSerializer::deserialize<NNPForce>(corrupt);
    }
    catch (const OpenMMException& e) {
        CHECK(string(e.what()).find("base64") != string::npos);
        return;
    }
    throw runtime_error("a corrupt model was not rejected");
}

int main() {
    try {
        for (size_t size : {0, 1, 2, 3, 4, 5, 1000, 65537})
            testRoundTrip(size);
        testCorruptModelIsRejected();
    }
    catch (const exception& e) {
        cout << "FAILED: " << e.what() << endl;
        return 1;
    }
    cout << "Done" << endl;
    return 0;
}
