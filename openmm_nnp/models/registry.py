"""The model registry: what a name passed to NNPotential (or the CLI's --model) means.

A registered model is a ``ModelSpec``: its name, the elements it supports, whether it takes the region's net
charge, a description, the options it accepts, and how to build the TorchScript module for a region (its
atomic numbers, the floating-point type and the options). Two kinds are built in:

* ANI-1x, ANI-1ccx and ANI-2x (``ANIModelSpec``: openmm_nnp.models.ANI with TorchANI's weights);
* SO3LR (weights from the so3krates-torch wheel), MACE (mace-torch model files: MACE-OFF23 by name or any
  file) and AIMNet2 (aimnet model files), built for the region by openmm_nnp.models.so3lr, .mace and .aimnet2
  (their packages are imported only when such a model is built);
* a TorchScript file or module given by the user (``TorchScriptModelSpec``; not registered under a name).

Other packages add models through the ``openmm_nnp.models`` entry point group. Each entry point names a
ModelSpec instance, a ModelSpec subclass (instantiated without arguments), or a callable that returns a
ModelSpec or a list of them; for example, in the package's pyproject.toml::

    [project.entry-points."openmm_nnp.models"]
    mymodel = "mypackage.nnp:MyModelSpec"

Entry points are read the first time a name is looked up. One that fails to load is skipped with a warning
naming it, so a broken third-party package cannot make openmm-nnp unusable.
"""

import copy
import warnings

from openmm_nnp.models import torchscript
from openmm_nnp.models.torchani_models import ANI_ELEMENTS, ANI_MODELS

ENTRY_POINT_GROUP = 'openmm_nnp.models'
# Elements of the models built by openmm_nnp.models.so3lr, .mace and .aimnet2 (here, so that the registry needs
# neither torch nor those packages; the modules import them from here).
SO3LR_ELEMENTS = ('H', 'C', 'N', 'O', 'F', 'P', 'S', 'Cl')
MACE_OFF_ELEMENTS = ('H', 'C', 'N', 'O', 'F', 'P', 'S', 'Cl', 'Br', 'I')
AIMNET2_ELEMENTS = ('H', 'B', 'C', 'N', 'O', 'F', 'Si', 'P', 'S', 'Cl', 'As', 'Se', 'Br', 'I')


class ModelSpec:
    """What openmm-nnp needs to know about a model. Subclasses set the attributes and implement createModule.

    Attributes
    ----------
    name : str
        The registry name (looked up ignoring case, '-' and '_': 'ANI-2x' finds 'ani2x').
    label : str
        How messages name the model ('ANI-2x').
    description : str
        One line for listings: what the model is and what it is for.
    elements : set of str or None
        Element symbols the model supports; None: unknown (regions are not checked).
    supportsCharge : bool or None
        True: the model takes the region's net charge (createModule receives it); False: the model was trained
        on neutral molecules only, and a region with a net MM charge is refused; None: unknown, not checked.
    options : dict
        Option name -> one-line description. Any other option passed to NNPotential is an error that names it.
    """

    name = None
    label = None
    description = ''
    elements = None
    supportsCharge = None
    options = {}

    def checkOptions(self, options):
        """Raise ValueError naming every option this model does not take."""
        unknown = sorted(set(options) - set(self.options))
        if unknown:
            accepted = ', '.join(sorted(self.options)) or 'none'
            raise ValueError(f"Unknown option(s) {', '.join(map(repr, unknown))} for {self.label}. "
                             f'Options it accepts: {accepted}.')

    def createModule(self, atomicNumbers, dtype, charge=0, **options):
        """The torch.jit.ScriptModule for a region: forward(positions[, boxVectors]) -> energy in kJ/mol.

        atomicNumbers : list of int, the region's atoms in the order forward() receives their positions (nm).
        dtype : torch.float32 or torch.float64.
        charge : int, the region's net charge in e (always 0 for models with supportsCharge False).
        options : the options the caller gave (already checked against ``options``).
        """
        raise NotImplementedError(f'{type(self).__name__} must implement createModule().')

    def __repr__(self):
        return f'<{type(self).__name__} {self.name!r}>'


class ANIModelSpec(ModelSpec):
    """TorchANI's ANI-1x, ANI-1ccx or ANI-2x, computed by openmm_nnp.models.ANI (compiled operators on the CPU)."""

    supportsCharge = False  # ANI was trained on neutral molecules only
    options = {'modelIndex': 'use one member of the 8-model ensemble (0-7) instead of their mean, as in openmm-ml'}

    _LABELS = {'ani1x': 'ANI-1x', 'ani1ccx': 'ANI-1ccx', 'ani2x': 'ANI-2x'}

    def __init__(self, name):
        self.name = name
        self.label = self._LABELS[name]
        self.elements = set(ANI_ELEMENTS[name])
        self.description = (f"{self.label}: TorchANI's 8-model ensemble for neutral organic molecules "
                            f"({' '.join(sorted(self.elements))})")

    def createModule(self, atomicNumbers, dtype, charge=0, modelIndex=None):
        import torch
        from openmm_nnp.models.ani import ANI
        return torch.jit.script(ANI(self.name, atomicNumbers, dtype=dtype, modelIndex=modelIndex))


class TorchScriptModelSpec(ModelSpec):
    """A user's model: a TorchScript file, a torch.jit.ScriptModule, a torch.nn.Module (compiled with
    torch.jit.script) or the bytes torch.jit.save writes. Its elements and charge support are unknown.

    The module receives the region's positions in nm ([n, 3], in the order of the region's atoms) and, if its
    forward takes a second argument and the System is periodic, the box vectors in nm ([3, 3]); it returns the
    energy in kJ/mol. The same module serves every region (it is not rebuilt per region).
    """

    def __init__(self, model, owner='NNPotential'):
        module = torchscript.loadModule(model, owner)
        # A module the caller passed is copied, so converting it to the requested dtype leaves theirs alone.
        self._module = copy.deepcopy(module) if module is model else module
        if torchscript.isModelFile(model):
            self.name = str(model)
        else:
            self.name = type(model).__name__
        self.label = f'the model {self.name}'
        self.description = f'TorchScript model {self.name}'

    def createModule(self, atomicNumbers, dtype, charge=0):
        return self._module.to(dtype)


class SO3LRModelSpec(ModelSpec):
    """SO3LR from the so3krates-torch wheel (openmm_nnp.models.so3lr): charged regions, long-range terms inside."""

    name = 'so3lr'
    label = 'SO3LR'
    description = ('SO3LR: So3krates network with learned-charge electrostatics, dispersion and ZBL; total charge '
                   'and spin as inputs (H C N O F P S Cl)')
    elements = set(SO3LR_ELEMENTS)
    supportsCharge = True
    options = {'spin': 'total spin of the region (default 0)'}

    def createModule(self, atomicNumbers, dtype, charge=0, spin=0.0):
        from openmm_nnp.models.so3lr import createSO3LRModel
        return createSO3LRModel(atomicNumbers, charge=charge, dtype=dtype, spin=spin)


class MACEModelSpec(ModelSpec):
    """A MACE model (openmm_nnp.models.mace): MACE-OFF23 by name (mace-torch's download), or a user's file."""

    supportsCharge = None  # a MACE-OFF23 model takes none; a file with a total-charge embedding does
    options = {'modelPath': 'a mace-torch .model file (MACE-OFF23 models: instead of the download)'}

    def __init__(self, name):
        self.name = name
        self.label = name.upper().replace('MACE-OFF23-', 'MACE-OFF23 ') if name != 'mace' else 'MACE'
        if name != 'mace':
            self.elements = set(MACE_OFF_ELEMENTS)
            self.supportsCharge = False
        self.description = (f'{self.label}: equivariant message passing for organic molecules (mace-torch)'
                            if name != 'mace' else 'MACE: a mace-torch model file given as modelPath=')

    def createModule(self, atomicNumbers, dtype, charge=0, modelPath=None):
        from openmm_nnp.models.mace import createMACEModel
        if self.name == 'mace' and modelPath is None:
            raise ValueError("NNPotential('mace') needs modelPath= (a mace-torch .model file).")
        return createMACEModel(atomicNumbers, charge=charge, dtype=dtype, name=None if self.name == 'mace' else self.name,
                               modelPath=modelPath)


class AIMNet2ModelSpec(ModelSpec):
    """An AIMNet2 model file (openmm_nnp.models.aimnet2): charged regions."""

    name = 'aimnet2'
    label = 'AIMNet2'
    description = 'AIMNet2: atoms-in-molecules network with the total charge as input (an aimnet model file, modelPath=)'
    elements = set(AIMNET2_ELEMENTS)
    supportsCharge = True
    options = {'modelPath': 'an aimnet model file (.pt, or a legacy .jpt)'}

    def createModule(self, atomicNumbers, dtype, charge=0, modelPath=None):
        from openmm_nnp.models.aimnet2 import createAIMNet2Model
        if modelPath is None:
            raise ValueError("NNPotential('aimnet2') needs modelPath= (an aimnet model file): AIMNet2 weights are "
                             'not bundled with any package openmm-nnp can install.')
        return createAIMNet2Model(atomicNumbers, charge=charge, dtype=dtype, modelPath=modelPath)


_registry = {}
_entryPointsLoaded = False


def modelKey(name):
    """The lookup key of a model name: lower case without '-' and '_' ('ANI-2x' -> 'ani2x')."""
    return str(name).lower().replace('-', '').replace('_', '')


def registerModel(spec, replace=False):
    """Add a ModelSpec to the registry under ``spec.name``. An existing name is an error unless ``replace``."""
    if not isinstance(spec, ModelSpec):
        raise TypeError(f'registerModel takes a ModelSpec, not {type(spec).__name__}.')
    if not spec.name or not isinstance(spec.name, str):
        raise ValueError(f'{spec!r} has no name; set ModelSpec.name.')
    key = modelKey(spec.name)
    if key in _registry and not replace and _registry[key] is not spec:
        raise ValueError(f"A model named '{spec.name}' is already registered ({_registry[key]!r}); pass "
                         'replace=True to replace it.')
    if spec.label is None:
        spec.label = spec.name
    _registry[key] = spec


def _specsFrom(loaded):
    if isinstance(loaded, ModelSpec):
        return [loaded]
    if isinstance(loaded, type) and issubclass(loaded, ModelSpec):
        return [loaded()]
    if callable(loaded):
        result = loaded()
        return [result] if isinstance(result, ModelSpec) else list(result)
    raise TypeError(f'expected a ModelSpec, a ModelSpec subclass or a callable returning them, not '
                    f'{type(loaded).__name__}')


def _loadEntryPoints():
    global _entryPointsLoaded
    if _entryPointsLoaded:
        return
    _entryPointsLoaded = True
    from importlib.metadata import entry_points
    for entryPoint in entry_points(group=ENTRY_POINT_GROUP):
        try:
            for spec in _specsFrom(entryPoint.load()):
                registerModel(spec)
        except Exception as e:
            warnings.warn(f"openmm-nnp: the model entry point '{entryPoint.name} = {entryPoint.value}' "
                          f'({ENTRY_POINT_GROUP}) could not be registered and is skipped: {e}', stacklevel=2)


def registeredModels():
    """{name: ModelSpec} of every registered model, the entry points' included."""
    _loadEntryPoints()
    return {spec.name: spec for spec in _registry.values()}


def findModel(name):
    """The registered ModelSpec called ``name`` (ignoring case, '-' and '_'), or None."""
    _loadEntryPoints()
    return _registry.get(modelKey(name))


def resolveModel(model, owner='NNPotential'):
    """The ModelSpec for what a user passed as a model: a registered name, a TorchScript file (a path that
    exists wins over a registered name), a module, bytes, or a ModelSpec."""
    if isinstance(model, ModelSpec):
        return model
    if torchscript.isModelFile(model):
        return TorchScriptModelSpec(model, owner)
    if isinstance(model, str):
        spec = findModel(model)
        if spec is None:
            raise ValueError(f"{owner}: unknown model '{model}': it is neither a registered model name "
                             f"({', '.join(sorted(registeredModels()))}) nor an existing TorchScript file.")
        return spec
    return TorchScriptModelSpec(model, owner)


def chargeModelNames():
    """Names of the registered models that take the region's net charge."""
    return sorted(spec.name for spec in registeredModels().values() if spec.supportsCharge)


for _name in ANI_MODELS:
    registerModel(ANIModelSpec(_name))
registerModel(SO3LRModelSpec())
for _name in ('mace-off23-small', 'mace-off23-medium', 'mace-off23-large', 'mace'):
    registerModel(MACEModelSpec(_name))
registerModel(AIMNet2ModelSpec())
