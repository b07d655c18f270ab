"""NNPForce in Python: model conversion and the glue that makes OpenMM hand back NNPForce objects.

OpenMM's Python wrappers turn the Force pointers they return (System.getForce, XmlSerializer,
CustomCVForce.getCollectiveVariable) into the most derived class they know, which for a plugin's force
is the bare openmm.Force. `install_force_downcasts` wraps those methods so an NNPForce comes back as
an NNPForce; every other force is returned unchanged. `install_context_check` makes a Context refused
for want of NNPForce kernels say so, instead of OpenMM's generic "does not support all required kernels".
"""

import functools
import io
import os

import openmm

from openmm_nnp import nnp_swig


def _model_to_bytes(model):
    """The bytes of a TorchScript module (what torch.jit.save writes) from a path, module or bytes."""
    if isinstance(model, (bytes, bytearray, memoryview)):
        data = bytes(model)
        _check_torchscript(data, 'the model bytes')
        return data
    if isinstance(model, (str, os.PathLike)):
        path = os.fspath(model)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"NNPForce: model file '{path}' does not exist. Pass the path of a TorchScript "
                                    "file saved with torch.jit.save, a torch.jit.ScriptModule, or its bytes.")
        with open(path, 'rb') as f:
            data = f.read()
        _check_torchscript(data, f"the model file '{path}'")
        return data
    import torch
    if isinstance(model, torch.jit.ScriptModule):
        buffer = io.BytesIO()
        torch.jit.save(model, buffer)
        return buffer.getvalue()
    if isinstance(model, torch.nn.Module):
        try:
            scripted = torch.jit.script(model)
        except Exception as e:
            raise ValueError(f"NNPForce: the model {type(model).__name__} could not be compiled with torch.jit.script "
                             f"({_first_line(e)}). Pass a torch.jit.ScriptModule or a TorchScript file.") from e
        return _model_to_bytes(scripted)
    raise TypeError(f"NNPForce: model must be a TorchScript file path, a torch.jit.ScriptModule, a torch.nn.Module "
                    f"or bytes, not {type(model).__name__}.")


def _first_line(error):
    lines = [line for line in str(error).splitlines() if line.strip()]
    return lines[0] if lines else type(error).__name__


def _check_torchscript(data, what):
    import torch
    try:
        torch.jit.load(io.BytesIO(data))
    except Exception as e:
        raise ValueError(f"NNPForce: {what} is not a TorchScript module that torch.jit.load can read "
                         f"({_first_line(e)}). Save the model with torch.jit.save(torch.jit.script(model), path).") from None


def _as_nnp_force(force):
    """`force` as an NNPForce when the C++ object is one; anything else is returned as it is."""
    if type(force) is openmm.Force and nnp_swig.NNPForce.isinstance(force):
        nnp = nnp_swig.NNPForce.cast(force)
        if force.thisown:  # a new object owned by Python (deserialize, clone): pass ownership on
            force.thisown = False
            nnp.thisown = True
        else:  # owned by a System or CustomCVForce: keep that alive while the view is in use
            nnp._owner_reference = force
        return nnp
    return force


def _returning_nnp_force(method):
    @functools.wraps(method)
    def wrapper(*args, **kwargs):
        return _as_nnp_force(method(*args, **kwargs))
    wrapper._nnp_downcast = True
    return wrapper


def install_force_downcasts():
    """Make OpenMM's force-returning methods hand back NNPForce objects (idempotent)."""
    for owner, name, static in [(openmm.System, 'getForce', False),
                                (openmm.CustomCVForce, 'getCollectiveVariable', False),
                                (openmm.XmlSerializer, '_deserializeForce', True),
                                (openmm.XmlSerializer, '_cloneForce', True)]:
        method = getattr(owner, name)
        if getattr(method, '_nnp_downcast', False):
            continue
        wrapped = _returning_nnp_force(method)
        setattr(owner, name, staticmethod(wrapped) if static else wrapped)


def _platforms_with_nnp_kernels():
    return [openmm.Platform.getPlatform(i).getName() for i in range(openmm.Platform.getNumPlatforms())
            if openmm.Platform.getPlatform(i).supportsKernels(['CalcNNPForce'])]


def _missing_kernels_message(system, platform):
    """The error for a Context on `platform` that lacks NNPForce kernels, or None when that is not the problem."""
    if platform is None or platform.supportsKernels(['CalcNNPForce']):
        return None
    if not any(nnp_swig.NNPForce.isinstance(force) for force in system.getForces()):
        return None
    import openmm_nnp
    message = (f"NNPForce has no kernels for the {platform.getName()} platform; it runs on "
               f"{', '.join(_platforms_with_nnp_kernels())}. Choose one of those platforms.")
    failures = openmm_nnp.getPluginLoadFailures()
    if failures:
        message += ' Kernel libraries that failed to load: ' + '; '.join(failures)
    return message


def install_context_check():
    """Make openmm.Context name NNPForce and the platforms that have its kernels when the chosen platform
    has none (idempotent)."""
    original = openmm.Context.__init__
    if getattr(original, '_nnp_context_check', False):
        return

    @functools.wraps(original)
    def __init__(self, system, integrator, *args, **kwargs):
        try:
            original(self, system, integrator, *args, **kwargs)
        except openmm.OpenMMException as e:
            platform = args[0] if args else kwargs.get('platform')
            message = _missing_kernels_message(system, platform) if 'required kernels' in str(e) else None
            if message is None:
                raise
            raise openmm.OpenMMException(message) from None

    __init__._nnp_context_check = True
    openmm.Context.__init__ = __init__
