#include "NNPModel.h"
#include "openmm/OpenMMException.h"
#include <torch/csrc/autograd/autograd.h>
#include <cmath>
#include <map>
#include <set>
#include <memory>
#include <sys/mman.h>
#include <c10/core/CPUAllocator.h>
#include <cstring>
#include <sstream>

using namespace NNPPlugin;
using namespace OpenMM;
using namespace std;

const char* const NNPModel::ENERGY_AND_FORCES = "energy_and_forces";

// The first line of a torch error message (the rest is a C++ stack trace).
// The first line of a message that has any text (torch's load errors begin with a newline).
static string firstLine(const string& message) {
    size_t start = message.find_first_not_of("\n");
    if (start == string::npos)
        return "";
    return message.substr(start, message.find('\n', start) - start);
}

// What went wrong inside a model's forward(): for errors raised in the TorchScript interpreter, the
// line naming the exception (it follows a traceback); otherwise the first line.
static string modelErrorSummary(const string& message) {
    if (message.find("failed in the TorchScript interpreter") == string::npos)
        return firstLine(message);
    istringstream lines(message);
    string line, summary;
    while (getline(lines, line)) {
        if (line.find("Exception raised from") != string::npos)
            break;
        if (line.find_first_not_of(" \t") != string::npos)
            summary = line;
    }
    return summary.empty() ? firstLine(message) : summary;
}

static torch::ScalarType modelDtype(const torch::jit::Module& module, const string& requested) {
    if (requested == "float32")
        return torch::kFloat32;
    if (requested == "float64")
        return torch::kFloat64;
    for (const auto& parameter : module.parameters(true))
        if (parameter.is_floating_point())
            return parameter.scalar_type();
    for (const auto& buffer : module.buffers(true))
        if (buffer.is_floating_point())
            return buffer.scalar_type();
    return torch::kFloat64;
}

// The model's tensors (parameters, buffers, any tensor its attributes hold) moved into one block of memory that the kernel may
// back with 2 MiB pages (transparent huge pages, madvise): a few large pages instead of thousands of small ones.
// An ANI-2x ensemble holds about 11 MB of weights, all of which each call reads once; with small pages every
// call right after the MM forces pays a TLB miss and page-table walk per 4 KiB (benchmarks/bench_force_call.py).
// Tensors that share a storage keep sharing the new one; a storage keeps its resizability (torch.jit.load's are
// not resizable; one that is moves to torch's allocator when resized). Models under 2 MiB are left as they are.
namespace {
struct HugePageBlock {
    void* mapping = nullptr;
    size_t length = 0;
    char* data = nullptr;
    ~HugePageBlock() {
        if (mapping != nullptr)
            munmap(mapping, length);
    }
};
}

// Every tensor reachable from `value` (attributes of modules and objects, lists, tuples, dicts), each object once.
static void collectTensors(const c10::IValue& value, std::vector<torch::Tensor>& tensors, std::set<const void*>& seen) {
    if (value.isTensor()) {
        if (value.toTensor().defined())
            tensors.push_back(value.toTensor());
    }
    else if (value.isObject()) {
        if (seen.insert(value.internalToPointer()).second)
            for (const auto& slot : value.toObjectRef().slots())
                collectTensors(slot, tensors, seen);
    }
    else if (value.isList()) {
        for (const auto& element : value.toListRef())
            collectTensors(element, tensors, seen);
    }
    else if (value.isTuple()) {
        for (const auto& element : value.toTupleRef().elements())
            collectTensors(element, tensors, seen);
    }
    else if (value.isGenericDict()) {
        for (const auto& entry : value.toGenericDict()) {
            collectTensors(entry.key(), tensors, seen);
            collectTensors(entry.value(), tensors, seen);
        }
    }
}

static void moveTensorsToHugePages(const torch::jit::Module& module) {
    const size_t hugePage = 2 << 20, alignment = 64;
    std::vector<torch::Tensor> tensors;
    std::set<const void*> seen;
    collectTensors(module._ivalue(), tensors, seen);
    std::map<const c10::StorageImpl*, std::vector<torch::Tensor>> byStorage;
    size_t total = 0;
    for (const auto& t : tensors) {
        if (!t.device().is_cpu() || !t.has_storage() || t.storage().data() == nullptr ||
                !t.unsafeGetTensorImpl()->allow_tensor_metadata_change())
            return; // something this cannot move safely: leave everything as it is
        auto& shared = byStorage[t.storage().unsafeGetStorageImpl()];
        if (shared.empty())
            total += (t.storage().nbytes() + alignment - 1) / alignment * alignment;
        shared.push_back(t);
    }
    if (total < hugePage)
        return;
    auto block = std::make_shared<HugePageBlock>();
    block->length = (total + hugePage - 1) / hugePage * hugePage + hugePage;
    block->mapping = mmap(nullptr, block->length, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (block->mapping == MAP_FAILED) {
        block->mapping = nullptr;
        return;
    }
    uintptr_t start = (reinterpret_cast<uintptr_t>(block->mapping) + hugePage - 1) / hugePage * hugePage;
    block->data = reinterpret_cast<char*>(start);
    madvise(block->data, block->length - (start - reinterpret_cast<uintptr_t>(block->mapping)), MADV_HUGEPAGE); // a hint: without THP, small pages
    size_t offset = 0;
    for (auto& entry : byStorage) {
        const c10::Storage old = entry.second[0].storage();
        char* target = block->data + offset;
        memcpy(target, old.data(), old.nbytes());
        offset += (old.nbytes() + alignment - 1) / alignment * alignment;
        // Each storage holds a reference to the block, released when the storage goes or is reallocated.
        auto* owner = new std::shared_ptr<HugePageBlock>(block);
        c10::DataPtr data(target, owner, [](void* context) { delete static_cast<std::shared_ptr<HugePageBlock>*>(context); }, c10::Device(c10::kCPU));
        c10::Storage moved(c10::Storage::use_byte_size_t(), old.nbytes(), std::move(data),
                           old.resizable() ? c10::GetCPUAllocator() : nullptr, old.resizable());
        for (auto& t : entry.second)
            t.unsafeGetTensorImpl()->set_storage_keep_dtype(moved);
    }
}

NNPModel::NNPModel(const NNPForce& force, int numAtoms, const torch::Device& device) :
        device(device), numAtoms(numAtoms), usePeriodic(force.usesPeriodicBoundaryConditions()),
        outputsForces(force.getOutputsForces()), passNoneForBox(false), forceName(force.getName()) {
    for (int i = 0; i < force.getNumGlobalParameters(); i++)
        if (force.getGlobalParameterName(i) != force.getScaleParameter())
            parameterNames.push_back(force.getGlobalParameterName(i));
    try {
        istringstream in(force.getModelBytes());
        module = torch::jit::load(in, device);
    }
    catch (const std::exception& e) {
        string message = firstLine(e.what());
        const string unknownOperator = "Unknown builtin op: openmm_nnp::";
        if (message.find(unknownOperator) != string::npos) {
            string name = message.substr(message.find(unknownOperator) + string("Unknown builtin op: ").size());
            name = name.substr(0, name.find_last_not_of(". ") + 1);
            throw OpenMMException(describe() + ": the model calls the operator " + name + ", which this version of openmm-nnp does not have: it was saved by an older version. Create the model"
                                  " again with this version (e.g. openmm_nnp.models.ANI, NNPotential.createMixedSystem or openmm-nnp run).");
        }
        throw OpenMMException(describe() + ": the model is not a TorchScript module that torch.jit.load can read (" + message +
                              "). Save it with torch.jit.save(torch.jit.script(model), path).");
    }
    module.eval();
    auto properties = force.getProperties();
    if (device.is_cpu() && (!properties.count("hugePages") || properties["hugePages"] != "false"))
        moveTensorsToHugePages(module);
    dtype = modelDtype(module, properties.count("dtype") ? properties["dtype"] : "auto");

    // Check the signature of forward() against what the force will pass.
    if (!module.find_method("forward"))
        throw OpenMMException(describe() + ": the model has no forward() method.");
    const auto& arguments = module.get_method("forward").function().getSchema().arguments();
    int total = arguments.size() - 1; // without self
    int required = 0;
    for (int i = 1; i < (int) arguments.size(); i++)
        if (!arguments[i].default_value())
            required = i;
    int passed = 1 + (usePeriodic ? 1 : 0) + parameterNames.size();
    // A model written as forward(positions, boxVectors: Optional[Tensor] = None, ...) still receives the
    // global parameters in their own slots when the force is not periodic: pass None for the box.
    if (!usePeriodic && !parameterNames.empty() && total >= 2 &&
            arguments[2].type()->kind() == c10::TypeKind::OptionalType && arguments[2].name().find("box") != string::npos) {
        passNoneForBox = true;
        passed++;
    }
    if (passed < required || passed > total) {
        stringstream message;
        message << describe() << ": the model's forward() takes " << total << " argument(s) (";
        for (int i = 1; i < (int) arguments.size(); i++)
            message << (i > 1 ? ", " : "") << arguments[i].name();
        message << ") but the force passes " << passed << ": positions";
        if (usePeriodic || passNoneForBox)
            message << ", boxVectors";
        for (auto& name : parameterNames)
            message << ", " << name;
        message << ". The model must accept positions, then boxVectors when usesPeriodicBoundaryConditions is set, "
                   "then one scalar tensor per global parameter in the order they were added.";
        throw OpenMMException(message.str());
    }

    // A model that computes its own forces may export energy_and_forces(), with forward()'s arguments and
    // returning (energy, forces): used in place of forward() and autograd whenever forces are needed.
    if (!outputsForces && module.find_method(ENERGY_AND_FORCES)) {
        const auto& schema = module.get_method(ENERGY_AND_FORCES).function().getSchema();
        const auto& returns = schema.returns();
        bool sameArguments = schema.arguments().size() == arguments.size();
        for (size_t i = 1; sameArguments && i < arguments.size(); i++)
            sameArguments = schema.arguments()[i].type()->str() == arguments[i].type()->str();
        bool returnsPair = false;
        if (returns.size() == 1 && returns[0].type()->kind() == c10::TypeKind::TupleType) {
            const auto& elements = returns[0].type()->expectRef<c10::TupleType>().elements();
            returnsPair = elements.size() == 2 && elements[0]->kind() == c10::TypeKind::TensorType &&
                          elements[1]->kind() == c10::TypeKind::TensorType;
        }
        if (!sameArguments || !returnsPair) {
            stringstream message;
            message << describe() << ": the model's " << ENERGY_AND_FORCES << "() must take the arguments of forward() and return "
                    "(energy, forces) as Tuple[Tensor, Tensor], but its signature is " << schema << ". Fix or remove that method.";
            throw OpenMMException(message.str());
        }
        energyAndForces = true;
    }
}

string NNPModel::describe() const {
    return "NNPForce '" + forceName + "'";
}

NNPModel::Result NNPModel::evaluate(const torch::Tensor& positionsIn, const torch::Tensor& box, const vector<double>& parameters,
                                    bool includeForces, const vector<bool>& derivativeMask) {
    bool anyDerivative = false;
    for (bool needed : derivativeMask)
        anyDerivative |= needed;
    // The model returns the forces itself: always with setOutputsForces, through energy_and_forces() when
    // forces are needed and autograd is not needed for parameter derivatives anyway.
    bool callEnergyAndForces = energyAndForces && includeForces && !anyDerivative;
    bool modelForces = outputsForces || callEnergyAndForces;
    bool gradPositions = includeForces && !modelForces;
    bool useAutograd = gradPositions || anyDerivative;
    torch::AutoGradMode gradMode(useAutograd);

    torch::Tensor positions = positionsIn.detach();
    if (gradPositions)
        positions.requires_grad_(true);
    vector<torch::jit::IValue> inputs = {positions};
    if (usePeriodic)
        inputs.push_back(box.to(dtype));
    else if (passNoneForBox)
        inputs.push_back(torch::jit::IValue());
    vector<torch::Tensor> parameterTensors;
    for (size_t i = 0; i < parameters.size(); i++) {
        torch::Tensor value = torch::tensor(parameters[i], torch::TensorOptions().dtype(dtype).device(device));
        if (derivativeMask[i])
            value.requires_grad_(true);
        parameterTensors.push_back(value);
        inputs.push_back(value);
    }

    torch::jit::IValue output;
    const string method = callEnergyAndForces ? ENERGY_AND_FORCES : "forward";
    try {
        output = callEnergyAndForces ? module.get_method(ENERGY_AND_FORCES)(inputs) : module.forward(inputs);
    }
    catch (const std::exception& e) {
        throw OpenMMException(describe() + ": the model raised an error in " + method + "(): " + modelErrorSummary(e.what()));
    }

    torch::Tensor energyTensor, forces;
    if (modelForces) {
        if (!output.isTuple() || output.toTupleRef().elements().size() != 2 || !output.toTupleRef().elements()[0].isTensor() ||
                !output.toTupleRef().elements()[1].isTensor())
            throw OpenMMException(describe() + ": setOutputsForces(True) was set, so the model must return a tuple (energy, forces), but it returned " +
                                  output.tagKind() + ".");
        energyTensor = output.toTupleRef().elements()[0].toTensor();
        forces = output.toTupleRef().elements()[1].toTensor();
    }
    else {
        if (output.isTuple())
            throw OpenMMException(describe() + ": the model returned a tuple; if it is (energy, forces), call setOutputsForces(True).");
        if (!output.isTensor())
            throw OpenMMException(describe() + ": the model must return the energy as a tensor, but it returned " + output.tagKind() + ".");
        energyTensor = output.toTensor();
    }
    if (energyTensor.numel() != 1 || !energyTensor.is_floating_point()) {
        stringstream message;
        message << describe() << ": the model must return the energy as a floating-point tensor with one element (kJ/mol), but it returned a "
                << energyTensor.scalar_type() << " tensor of shape " << energyTensor.sizes() << ".";
        throw OpenMMException(message.str());
    }

    Result result;
    result.energy = energyTensor.item<double>();
    if (!std::isfinite(result.energy))
        throw OpenMMException(describe() + ": the model returned a non-finite energy (" + to_string(result.energy) +
                              "). Check the positions (overlapping atoms, an exploding simulation) and the model.");

    // Gradients of the energy with respect to the inputs that need them, in one backward pass.
    vector<torch::Tensor> gradInputs;
    if (gradPositions)
        gradInputs.push_back(positions);
    for (size_t i = 0; i < parameterTensors.size(); i++)
        if (derivativeMask[i])
            gradInputs.push_back(parameterTensors[i]);
    vector<torch::Tensor> grads;
    if (!gradInputs.empty()) {
        if (!energyTensor.requires_grad())
            throw OpenMMException(describe() + ": the energy the model returned does not depend on its inputs through autograd (was it computed under torch.no_grad() or detached?).");
        grads = torch::autograd::grad({energyTensor.sum()}, gradInputs, {}, false, false, true);
    }
    size_t next = 0;
    if (gradPositions) {
        if (grads[next].defined())
            forces = -grads[next];
        else
            forces = torch::zeros_like(positions);
        next++;
    }
    if (includeForces) {
        if (!forces.is_floating_point() || forces.dim() != 2 || forces.size(0) != numAtoms || forces.size(1) != 3) {
            stringstream message;
            message << describe() << ": the forces the model returned must be a floating-point tensor of shape [" << numAtoms
                    << ", 3] (kJ/mol/nm), but they are a " << forces.scalar_type() << " tensor of shape " << forces.sizes() << ".";
            throw OpenMMException(message.str());
        }
        result.forces = forces.detach();
    }
    for (size_t i = 0; i < parameterTensors.size(); i++) {
        double derivative = 0.0;
        if (derivativeMask[i]) {
            if (grads[next].defined())
                derivative = grads[next].to(torch::kFloat64).cpu().item<double>();
            next++;
        }
        result.parameterDerivatives.push_back(derivative);
    }
    return result;
}
