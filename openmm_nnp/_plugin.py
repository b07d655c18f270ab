"""The compiled plugin, loaded once per process on first use.

`loadLibraries()` loads torch (libtorch must be loaded before the libraries that link it), registers
openmm-nnp's TorchScript operators (libOpenMMNNPTorchOps: the class openmm_nnp.ANIFeatures) and the NNPForce kernels of each platform with
OpenMM: Reference and CPU (libOpenMMNNPReference), OpenCL (libOpenMMNNPOpenCL) and CUDA
(libOpenMMNNPCUDA) where they were built. A GPU kernel library that cannot load here (no driver, no
OpenCL runtime) is recorded in getPluginLoadFailures(), as OpenMM records its own platforms' failures,
and its platform simply has no NNPForce kernels.

What needs the plugin loads it: importing openmm_nnp.force (NNPForce) or openmm_nnp.models.ani, and
deserializing XML that holds an NNPForce (`installDeserializationHook`, installed by `import openmm_nnp`,
which itself stays light: no torch). The operators alone are registered as soon as torch is imported
(`registerOperatorsWithTorch`), so that torch.jit.load reads saved models that hold them.
"""

import functools
import importlib.abc
import importlib.util
import os
import sys

LIBRARY_DIR = os.path.dirname(os.path.abspath(__file__))
# Kernel libraries by platform; the Reference/CPU one is required, the GPU ones are optional.
KERNEL_LIBRARIES = [('libOpenMMNNPReference.so', True), ('libOpenMMNNPOpenCL.so', False), ('libOpenMMNNPCUDA.so', False)]
_failures = []
_operatorsLoaded = False


def getPluginLoadFailures():
    """Messages of the openmm-nnp kernel libraries that failed to load in this process (as
    openmm.Platform.getPluginLoadFailures() for OpenMM's own platforms)."""
    return list(_failures)


def loadTorchOperators():
    """Register openmm-nnp's TorchScript operators with PyTorch (once per process)."""
    global _operatorsLoaded
    if not _operatorsLoaded:
        import torch
        torch.ops.load_library(os.path.join(LIBRARY_DIR, 'libOpenMMNNPTorchOps.so'))
        _operatorsLoaded = True


def loadLibraries():
    """Register the TorchScript operators with PyTorch and the NNPForce kernels with OpenMM's platforms
    (once per process)."""
    import openmm
    if getattr(openmm.Platform, '_openmm_nnp_kernels_loaded', False):
        return
    loadTorchOperators()
    for library, required in KERNEL_LIBRARIES:
        path = os.path.join(LIBRARY_DIR, library)
        if not required and not os.path.exists(path):
            continue  # not built here (no OpenCL headers, no CUDA toolkit)
        try:
            openmm.Platform.loadPluginLibrary(path)
        except Exception as e:
            if required:
                raise
            _failures.append(f'{path}: {e}')
    openmm.Platform._openmm_nnp_kernels_loaded = True


def load():
    """The libraries, and the Python side of NNPForce (which makes OpenMM hand back NNPForce objects)."""
    loadLibraries()
    import openmm_nnp.force  # noqa: F401  (installs the downcasts and the Context check)
    import openmm_nnp.integrators  # noqa: F401  (the integrator's downcasts)


_PLUGIN_CLASSES = ('NNPForce', 'NNPMTSLangevinMiddleIntegrator')  # what XML may hold that needs the plugin


def _loadingFirst(method):
    @functools.wraps(method)
    def wrapper(*args, **kwargs):
        if any(isinstance(arg, str) and any(name in arg for name in _PLUGIN_CLASSES) for arg in args):
            load()
        return method(*args, **kwargs)
    wrapper._nnp_loads_plugin = True
    return wrapper


def installDeserializationHook():
    """Make OpenMM's XmlSerializer (and so pickling and copying of Systems) load the plugin before it reads
    XML that holds an NNPForce or NNPMTSLangevinMiddleIntegrator (idempotent; needs only openmm)."""
    import openmm
    for name in ['deserialize', '_deserializeSystem', '_deserializeForce', '_deserializeIntegrator', '_deserializeState']:
        method = getattr(openmm.XmlSerializer, name, None)
        if method is None or getattr(method, '_nnp_loads_plugin', False):
            continue
        setattr(openmm.XmlSerializer, name, staticmethod(_loadingFirst(method)))


class _AfterTorchImport(importlib.abc.MetaPathFinder):
    """Finds torch with the other finders and registers the operators once torch has been imported."""

    def find_spec(self, name, path=None, target=None):
        if name != 'torch':
            return None
        sys.meta_path.remove(self)  # once; importlib.util.find_spec below uses the other finders
        spec = importlib.util.find_spec(name)
        if spec is not None and spec.loader is not None and hasattr(spec.loader, 'exec_module'):
            execute = spec.loader.exec_module

            def exec_module(module):
                execute(module)
                loadTorchOperators()
            spec.loader.exec_module = exec_module
        return spec


def registerOperatorsWithTorch():
    """Register the operators now if torch is imported (cheap then), else right after it is imported."""
    if 'torch' in sys.modules:
        loadTorchOperators()
    elif not any(isinstance(finder, _AfterTorchImport) for finder in sys.meta_path):
        sys.meta_path.insert(0, _AfterTorchImport())
