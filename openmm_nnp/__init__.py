"""openmm-nnp: hybrid NNP/MM molecular dynamics in OpenMM.

Importing this package loads the compiled plugin: the NNPForce class and XML serialization
(libOpenMMNNP), the TorchScript operators that openmm_nnp.models call (libOpenMMNNPTorchOps)
and the kernels of the Reference and CPU platforms (libOpenMMNNPReference).
"""

import os as _os

import openmm as _openmm
import torch as _torch  # loads libtorch before the libraries that link it

from openmm_nnp import force as _force
from openmm_nnp.force import NNPForce
from openmm_nnp.potential import NNPotential

__all__ = ['NNPForce', 'NNPotential']

_LIBRARY_DIR = _os.path.dirname(_os.path.abspath(__file__))


def _load_kernels():
    """Register the TorchScript operators with PyTorch and the NNPForce kernels with OpenMM's
    platforms (once per process)."""
    if getattr(_openmm.Platform, '_openmm_nnp_kernels_loaded', False):
        return
    _torch.ops.load_library(_os.path.join(_LIBRARY_DIR, 'libOpenMMNNPTorchOps.so'))
    for library in ['libOpenMMNNPReference.so']:
        _openmm.Platform.loadPluginLibrary(_os.path.join(_LIBRARY_DIR, library))
    _openmm.Platform._openmm_nnp_kernels_loaded = True


_load_kernels()
_force.install_force_downcasts()
