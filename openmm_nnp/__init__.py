"""openmm-nnp: hybrid NNP/MM molecular dynamics in OpenMM.

Importing this package loads the compiled plugin: the NNPForce class and XML serialization
(libOpenMMNNP), the TorchScript operators that openmm_nnp.models call (libOpenMMNNPTorchOps)
and the NNPForce kernels of each platform: Reference and CPU (libOpenMMNNPReference), OpenCL
(libOpenMMNNPOpenCL) and CUDA (libOpenMMNNPCUDA), where they were built. A GPU kernel library that
cannot load here (no driver, no OpenCL runtime) is recorded in getPluginLoadFailures(), as OpenMM
records its own platforms' failures, and its platform simply has no NNPForce kernels.
"""

import os as _os
import sys as _sys

# torch's OpenMP threads spin after each parallel region (libgomp's default), taking cores from OpenMM's
# own threads, which run right after the model in every step: on the CPU platform that made an NNP/MM
# step cost far more than MM plus the model. libgomp reads this once, when torch is loaded; an explicit
# setting of the user's wins, and a torch imported before openmm_nnp keeps its policy.
if 'torch' not in _sys.modules:
    _os.environ.setdefault('OMP_WAIT_POLICY', 'PASSIVE')

import openmm as _openmm
import torch as _torch  # loads libtorch before the libraries that link it

from openmm_nnp import force as _force
from openmm_nnp.force import NNPForce
from openmm_nnp.potential import NNPotential

__all__ = ['NNPForce', 'NNPotential', 'getPluginLoadFailures']

_LIBRARY_DIR = _os.path.dirname(_os.path.abspath(__file__))


# Kernel libraries by platform; the Reference/CPU one is required, the GPU ones are optional.
_KERNEL_LIBRARIES = [('libOpenMMNNPReference.so', True), ('libOpenMMNNPOpenCL.so', False), ('libOpenMMNNPCUDA.so', False)]
_plugin_load_failures = []


def getPluginLoadFailures():
    """Messages of the openmm-nnp kernel libraries that failed to load in this process (as
    openmm.Platform.getPluginLoadFailures() for OpenMM's own platforms)."""
    return list(_plugin_load_failures)


def _load_kernels():
    """Register the TorchScript operators with PyTorch and the NNPForce kernels with OpenMM's
    platforms (once per process)."""
    if getattr(_openmm.Platform, '_openmm_nnp_kernels_loaded', False):
        return
    _torch.ops.load_library(_os.path.join(_LIBRARY_DIR, 'libOpenMMNNPTorchOps.so'))
    for library, required in _KERNEL_LIBRARIES:
        path = _os.path.join(_LIBRARY_DIR, library)
        if not required and not _os.path.exists(path):
            continue  # not built here (no OpenCL headers, no CUDA toolkit)
        try:
            _openmm.Platform.loadPluginLibrary(path)
        except Exception as e:
            if required:
                raise
            _plugin_load_failures.append(f'{path}: {e}')
    _openmm.Platform._openmm_nnp_kernels_loaded = True


_load_kernels()
_force.install_force_downcasts()
_force.install_context_check()
