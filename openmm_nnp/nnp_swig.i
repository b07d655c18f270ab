/* SWIG interface of the C++ API (NNPForce, NNPMTSLangevinMiddleIntegrator). NNPForce's Python-facing
 * constructor (model from a file, a torch.jit.ScriptModule or bytes) is written in Python below; see
 * openmm_nnp/force.py. */
%module(package="openmm_nnp") nnp_swig

%import(module="openmm") "swig/OpenMMSwigHeaders.i"
%include "swig/typemaps.i"
%include <std_string.i>
%include <std_vector.i>
%include <std_pair.i>
%include <std_map.i>

%{
#include "NNPForce.h"
#include "NNPMTSLangevinMiddleIntegrator.h"
#include "OpenMM.h"
#include "OpenMMAmoeba.h"
#include "OpenMMDrude.h"
#include "openmm/RPMDIntegrator.h"
#include "openmm/RPMDMonteCarloBarostat.h"
#include "openmm/OpenMMException.h"
%}

namespace std {
    %template(NNPIntVector) vector<int>;
    %template(NNPBondPair) pair<int, int>;
    %template(NNPBondVector) vector<pair<int, int> >;
    %template(NNPPropertyMap) map<string, string>;
    %template(NNPCountVector) vector<long long>;
}

/* C++ exceptions become openmm.OpenMMException, as for OpenMM's own classes. */
%{
static void setOpenMMException(const std::exception& e) {
    PyObject* openmmModule = PyImport_ImportModule("openmm");
    PyObject* exceptionType = openmmModule ? PyObject_GetAttrString(openmmModule, "OpenMMException") : NULL;
    Py_XDECREF(openmmModule);
    PyErr_Clear();
    PyErr_SetString(exceptionType ? exceptionType : PyExc_Exception, e.what());
    Py_XDECREF(exceptionType);
}
%}
%exception {
    try {
        $action
    } catch (std::exception& e) {
        setOpenMMException(e);
        SWIG_fail;
    }
}

/* Steps run without the GIL, as OpenMM's own integrators' do: the model's autograd refuses to run while it is
   held, and Python forces (openmm.PythonForce) take it when they are called. */
%exception NNPPlugin::NNPMTSLangevinMiddleIntegrator::step {
    PyThreadState* threadState = PyEval_SaveThread();
    try {
        $action
    } catch (std::exception& e) {
        PyEval_RestoreThread(threadState);
        setOpenMMException(e);
        SWIG_fail;
    }
    PyEval_RestoreThread(threadState);
}

/* The model travels as Python bytes, not str: it is binary. */
%typemap(in) const std::string& modelBytes (std::string buffer) {
    char* data;
    Py_ssize_t size;
    if (!PyBytes_Check($input)) {
        PyErr_SetString(PyExc_TypeError, "the serialized model must be bytes");
        SWIG_fail;
    }
    PyBytes_AsStringAndSize($input, &data, &size);
    buffer.assign(data, size);
    $1 = &buffer;
}
%typemap(freearg) const std::string& modelBytes ""
%typemap(typecheck, precedence=SWIG_TYPECHECK_STRING) const std::string& modelBytes {
    $1 = PyBytes_Check($input) ? 1 : 0;
}
%typemap(out) const std::string& getModelBytes {
    $result = PyBytes_FromStringAndSize($1->data(), $1->size());
}

/* The Python constructor below replaces the C++ ones. */
%ignore NNPPlugin::NNPForce::NNPForce(const std::string&, const std::vector<int>&);
%ignore NNPPlugin::NNPForce::NNPForce(const std::string&);
%include "NNPExport.h"
%include "NNPForce.h"

/* openmm.Integrator's wrappers (with units) call the C++ overrides; openmm_nnp/integrators.py adds units to
   the rest. */
%ignore NNPPlugin::NNPMTSLangevinMiddleIntegrator::setIntegrationForceGroups;
%include "NNPMTSLangevinMiddleIntegrator.h"

namespace NNPPlugin {

%extend NNPForce {
    /* Whether a Force (e.g. one returned by System.getForce) is an NNPForce. */
        static bool isinstance(OpenMM::Force& force) {
            return dynamic_cast<NNPPlugin::NNPForce*>(&force) != NULL;
        }
        /* The same C++ object seen as an NNPForce (does not take ownership). */
        static NNPPlugin::NNPForce& cast(OpenMM::Force& force) {
            NNPPlugin::NNPForce* nnp = dynamic_cast<NNPPlugin::NNPForce*>(&force);
            if (nnp == NULL)
                throw OpenMM::OpenMMException("the Force is not an NNPForce");
            return *nnp;
        }
    %pythoncode %{
        def __init__(self, model, atoms=None):
            """Create an NNPForce.

            Parameters
            ----------
            model : str or os.PathLike, torch.jit.ScriptModule, torch.nn.Module, or bytes
                A TorchScript file written by torch.jit.save, a scripted module, a module that
                torch.jit.script can compile, or the bytes torch.jit.save writes.
            atoms : sequence of int, optional
                Particle indices of the region, in the order the model receives them.
                None or empty means every particle of the System.
            """
            from openmm_nnp.force import _model_to_bytes
            modelBytes = _model_to_bytes(model)
            _nnp_swig.NNPForce_swiginit(self, _nnp_swig.new_NNPForce())
            self.setModelBytes(modelBytes)
            if atoms is not None:
                self.setAtoms([int(atom) for atom in atoms])

        def getModel(self):
            """The model as a torch.jit.ScriptModule (a fresh copy loaded from the stored bytes)."""
            import io, torch
            return torch.jit.load(io.BytesIO(self.getModelBytes()))

        def __getstate__(self):
            import openmm
            return openmm.XmlSerializer.serialize(self)

        def __setstate__(self, state):
            import openmm
            self.this = openmm.XmlSerializer.deserialize(state).this

        def __copy__(self):
            import openmm
            duplicate = openmm.XmlSerializer.clone(self)
            duplicate.__dict__.update({key: value for key, value in self.__dict__.items() if key != 'this'})
            return duplicate

        def __deepcopy__(self, memo):
            return self.__copy__()
    %}
};

}

namespace NNPPlugin {
%extend NNPMTSLangevinMiddleIntegrator {
    /* Whether an Integrator (e.g. one returned by Context.getIntegrator) is an NNPMTSLangevinMiddleIntegrator. */
    static bool isinstance(OpenMM::Integrator& integrator) {
        return dynamic_cast<NNPPlugin::NNPMTSLangevinMiddleIntegrator*>(&integrator) != NULL;
    }
    /* The same C++ object seen as an NNPMTSLangevinMiddleIntegrator (does not take ownership). */
    static NNPPlugin::NNPMTSLangevinMiddleIntegrator& cast(OpenMM::Integrator& integrator) {
        NNPPlugin::NNPMTSLangevinMiddleIntegrator* mts = dynamic_cast<NNPPlugin::NNPMTSLangevinMiddleIntegrator*>(&integrator);
        if (mts == NULL)
            throw OpenMM::OpenMMException("the Integrator is not an NNPMTSLangevinMiddleIntegrator");
        return *mts;
    }
};
}
