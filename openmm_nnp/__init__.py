"""openmm-nnp: hybrid NNP/MM molecular dynamics in OpenMM.

`import openmm_nnp` is light (OpenMM only, no torch): NNPForce, NNPotential and getPluginLoadFailures
are imported on first use, and the compiled plugin is loaded then (see openmm_nnp._plugin), or when
OpenMM deserializes XML that holds an NNPForce; the TorchScript operators are registered when torch is
imported, so saved models that call them load with torch.jit.load.
"""

import os as _os
import sys as _sys

# torch's OpenMP threads (libgomp) spin after each parallel region, by default for about 3 ms, taking cores
# from OpenMM's own threads, which run right after the model in every step: on the CPU platform that made an
# NNP/MM step cost far more than MM plus the model. Passive waiting alone goes too far the other way: a model
# made of many small operations (SO3LR: hundreds of parallel regions a call) then pays a thread wake-up for each,
# twice its time alone. So the threads spin for OPENMP_SPIN_COUNT iterations (libgomp counts about 100,000 a
# millisecond) and then sleep. libgomp reads both once, when torch is loaded; an explicit setting of the user's
# wins, and a torch imported before openmm_nnp keeps its settings. (docs/usage.md, Performance on the CPU.)
OPENMP_SPIN_COUNT = 10000
if 'torch' not in _sys.modules:
    _os.environ.setdefault('OMP_WAIT_POLICY', 'PASSIVE')
    _os.environ.setdefault('GOMP_SPINCOUNT', str(OPENMP_SPIN_COUNT))

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
