"""User models: load or compile a TorchScript module from a file, a module or bytes (the one place that does it).

NNPForce stores the bytes torch.jit.save writes (``moduleBytes``); NNPotential keeps the loaded module
(``loadModule``). Both accept the same inputs and raise the same errors, prefixed with who asked.
"""

import io
import os
import re


def _firstLine(error):
    lines = [line for line in str(error).splitlines() if line.strip()]
    return lines[0] if lines else type(error).__name__


def isModelFile(model):
    """Whether ``model`` is a path (str or os.PathLike) to an existing file."""
    return isinstance(model, (str, os.PathLike)) and os.path.isfile(os.fspath(model))


def _load(data, what, owner):
    import torch
    try:
        return torch.jit.load(io.BytesIO(data), map_location='cpu')
    except Exception as e:
        message = _firstLine(e)
        unknown = re.search(r'Unknown builtin op: (openmm_nnp::\w+)', message)
        if unknown:  # the same message as the C++ loader's (plugin_cpp/core/NNPModel.cpp)
            raise ValueError(f'{owner}: {what} calls the operator {unknown.group(1)}, which this version of openmm-nnp '
                             'does not have: it was saved by an older version. Create the model again with this version '
                             '(e.g. openmm_nnp.models.ANI, NNPotential.createMixedSystem or openmm-nnp run).') from None
        raise ValueError(f'{owner}: {what} is not a TorchScript module that torch.jit.load can read '
                         f'({message}). Save the model with torch.jit.save(torch.jit.script(model), path).') from None


def loadModule(model, owner='NNPForce'):
    """``model`` as a torch.jit.ScriptModule on the CPU.

    model : str or os.PathLike (a TorchScript file), torch.jit.ScriptModule, torch.nn.Module (compiled with
        torch.jit.script) or bytes (what torch.jit.save writes).
    owner : the name that prefixes error messages ('NNPForce', 'NNPotential').
    """
    import torch
    if isinstance(model, (bytes, bytearray, memoryview)):
        return _load(bytes(model), 'the model bytes', owner)
    if isinstance(model, (str, os.PathLike)):
        path = os.fspath(model)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{owner}: model file '{path}' does not exist. Pass the path of a TorchScript "
                                    'file saved with torch.jit.save, a torch.jit.ScriptModule, or its bytes.')
        with open(path, 'rb') as f:
            return _load(f.read(), f"the model file '{path}'", owner)
    if isinstance(model, torch.jit.ScriptModule):
        return model
    if isinstance(model, torch.nn.Module):
        try:
            return torch.jit.script(model)
        except Exception as e:
            raise ValueError(f'{owner}: the model {type(model).__name__} could not be compiled with torch.jit.script '
                             f'({_firstLine(e)}). Make it TorchScript-compatible or pass a torch.jit.ScriptModule '
                             'or a TorchScript file.') from None
    raise TypeError(f'{owner}: the model must be a TorchScript file path, a torch.jit.ScriptModule, a '
                    f'torch.nn.Module or bytes, not {type(model).__name__}.')


def moduleBytes(model, owner='NNPForce'):
    """The bytes torch.jit.save writes for ``model`` (any input loadModule takes); bytes are checked, not rewritten."""
    if isinstance(model, (bytes, bytearray, memoryview)):
        data = bytes(model)
        _load(data, 'the model bytes', owner)
        return data
    if isinstance(model, (str, os.PathLike)) and os.path.isfile(os.fspath(model)):
        with open(os.fspath(model), 'rb') as f:
            data = f.read()
        _load(data, f"the model file '{os.fspath(model)}'", owner)
        return data
    import torch
    buffer = io.BytesIO()
    torch.jit.save(loadModule(model, owner), buffer)
    return buffer.getvalue()
