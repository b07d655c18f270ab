"""NNPForce in Python: the class the package exports (the SWIG class with openmm-torch's constructor forms and
getModule) and the glue that makes OpenMM hand back NNPForce objects.

OpenMM's Python wrappers turn the Force pointers they return (System.getForce, XmlSerializer,
CustomCVForce.getCollectiveVariable) into the most derived class they know, which for a plugin's force
is the bare openmm.Force. `installDowncasts` wraps those methods so an NNPForce comes back as an NNPForce;
every other force is returned unchanged (openmm_nnp.integrators does the same for its integrator).
`install_context_check` makes a Context refused for want of NNPForce kernels say so, instead of OpenMM's
generic "does not support all required kernels".
"""

import functools
import numbers
from collections.abc import Iterable, Mapping

import numpy
import openmm

from openmm_nnp import _plugin

_plugin.loadLibraries()

from openmm_nnp import nnp_swig  # noqa: E402
from openmm_nnp.models import torchscript


def _model_to_bytes(model):
    """The bytes of a TorchScript module (what torch.jit.save writes) from a path, module or bytes."""
    return torchscript.moduleBytes(model, 'NNPForce')


def _atomList(atoms):
    """``atoms`` as a list of ints, or None; anything else is an error that says what is wrong."""
    if atoms is None:
        return None
    if isinstance(atoms, (str, bytes)) or not isinstance(atoms, Iterable):
        raise TypeError(f'NNPForce: atoms must be a sequence of integer particle indices, not '
                        f'{type(atoms).__name__} ({atoms!r}). Platform properties go in a dict: '
                        "NNPForce(model, {'useCUDAGraphs': 'false'}) or NNPForce(model, properties={...}).")
    indices = []
    for k, atom in enumerate(atoms):
        if isinstance(atom, (bool, numpy.bool_)) or not isinstance(atom, numbers.Integral):
            raise TypeError(f'NNPForce: atoms must be integer particle indices, but item {k} is {atom!r} '
                            f'({type(atom).__name__}). Platform properties go in a dict: '
                            "NNPForce(model, {'useCUDAGraphs': 'false'}) or NNPForce(model, properties={...}).")
        indices.append(int(atom))
    return indices


class NNPForce(nnp_swig.NNPForce):
    """NNPForce evaluates a TorchScript model on a region of the System's particles.

    ``NNPForce(model, atoms=None, properties=None)``, also in openmm-torch's forms
    ``NNPForce(model, {'useCUDAGraphs': 'false'})`` (a dict as second argument is the properties) and with
    the keywords ``atoms=`` and ``properties=``.

    Parameters
    ----------
    model : str or os.PathLike, torch.jit.ScriptModule, torch.nn.Module, or bytes
        A TorchScript file written by torch.jit.save, a scripted module, a module that torch.jit.script can
        compile, or the bytes torch.jit.save writes.
    atoms : sequence of int, optional
        Particle indices of the region, in the order the model receives them. None or empty means every
        particle of the System.
    properties : dict, optional
        Platform properties (see setProperty), e.g. ``{'numThreads': '4'}``.
    """

    def __init__(self, model, atoms=None, properties=None):
        if isinstance(atoms, Mapping):
            if properties is not None:
                raise TypeError('NNPForce: the properties are given twice (a dict as second argument and '
                                'properties=); pass them once.')
            atoms, properties = None, atoms
        indices = _atomList(atoms)
        if properties is not None and not isinstance(properties, Mapping):
            raise TypeError(f'NNPForce: properties must be a dict of platform properties, not '
                            f'{type(properties).__name__}.')
        super().__init__(model)
        if indices is not None:
            self.setAtoms(indices)
        for name, value in (properties or {}).items():
            self.setProperty(str(name), str(value))

    def getModule(self):
        """The model as a torch.jit.ScriptModule (openmm-torch's name for getModel)."""
        return self.getModel()


def _downcaster(base, swigClass, pythonClass):
    """A function that returns a `base` object whose C++ object is a `swigClass` as a `pythonClass`, and anything
    else as it is."""
    def downcast(obj):
        if type(obj) is base and swigClass.isinstance(obj):
            derived = swigClass.cast(obj)
            derived.__class__ = pythonClass  # the Python class, with its constructor forms and units
            if obj.thisown:  # a new object owned by Python (deserialize, clone): pass ownership on
                obj.thisown = False
                derived.thisown = True
            else:  # owned by a System, Context or CustomCVForce: keep that alive while the view is in use
                derived._owner_reference = obj
            return derived
        return obj
    return downcast


def installDowncasts(base, swigClass, pythonClass, methods):
    """Make OpenMM's methods ``(owner, name, isStatic)`` that return `base` objects hand back `pythonClass` objects
    where the C++ object is a `swigClass` (idempotent)."""
    downcast = _downcaster(base, swigClass, pythonClass)
    for owner, name, static in methods:
        method = getattr(owner, name)
        if getattr(method, '_nnp_downcast_' + swigClass.__name__, False):
            continue

        def wrapper(*args, _method=method, **kwargs):
            return downcast(_method(*args, **kwargs))
        functools.update_wrapper(wrapper, method)
        setattr(wrapper, '_nnp_downcast_' + swigClass.__name__, True)
        setattr(owner, name, staticmethod(wrapper) if static else wrapper)


def _platforms_with_nnp_kernels():
    return [openmm.Platform.getPlatform(i).getName() for i in range(openmm.Platform.getNumPlatforms())
            if openmm.Platform.getPlatform(i).supportsKernels(['CalcNNPForce'])]


def _missing_kernels_message(system, platform):
    """The error for a Context on `platform` that lacks NNPForce kernels, or None when that is not the problem."""
    if platform is None or platform.supportsKernels(['CalcNNPForce']):
        return None
    if not any(nnp_swig.NNPForce.isinstance(force) for force in system.getForces()):
        return None
    message = (f"NNPForce has no kernels for the {platform.getName()} platform; it runs on "
               f"{', '.join(_platforms_with_nnp_kernels())}. Choose one of those platforms.")
    failures = _plugin.getPluginLoadFailures()
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


installDowncasts(openmm.Force, nnp_swig.NNPForce, NNPForce,
                 [(openmm.System, 'getForce', False), (openmm.CustomCVForce, 'getCollectiveVariable', False),
                  (openmm.XmlSerializer, '_deserializeForce', True), (openmm.XmlSerializer, '_cloneForce', True)])
install_context_check()
