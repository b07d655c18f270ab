"""openmm-nnp: hybrid NNP/MM molecular dynamics in OpenMM.

`import openmm_nnp` is light (OpenMM only, no torch): NNPForce, NNPotential and getPluginLoadFailures
are imported on first use, and the compiled plugin is loaded then (see openmm_nnp._plugin), or when
OpenMM deserializes XML that holds an NNPForce; the TorchScript operators are registered when torch is
imported, so saved models that call them load with torch.jit.load.
"""

import os as _os
import sys as _sys

# torch's OpenMP threads spin after each parallel region (libgomp's default), taking cores from OpenMM's
# own threads, which run right after the model in every step: on the CPU platform that made an NNP/MM
# step cost far more than MM plus the model. libgomp reads this once, when torch is loaded; an explicit
# setting of the user's wins, and a torch imported before openmm_nnp keeps its policy.
if 'torch' not in _sys.modules:
    _os.environ.setdefault('OMP_WAIT_POLICY', 'PASSIVE')

from openmm_nnp import _plugin  # noqa: E402

__all__ = ['NNPForce', 'NNPotential', 'NNPMTSLangevinMiddleIntegrator', 'getPluginLoadFailures']

getPluginLoadFailures = _plugin.getPluginLoadFailures
_plugin.installDeserializationHook()
_plugin.registerOperatorsWithTorch()


def __getattr__(name):
    if name == 'NNPForce':
        from openmm_nnp.force import NNPForce
        return NNPForce
    if name == 'NNPotential':
        from openmm_nnp.potential import NNPotential
        return NNPotential
    if name == 'NNPMTSLangevinMiddleIntegrator':
        from openmm_nnp.integrators import NNPMTSLangevinMiddleIntegrator
        return NNPMTSLangevinMiddleIntegrator
    raise AttributeError(f"module 'openmm_nnp' has no attribute '{name}'")
