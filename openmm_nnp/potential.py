"""NNPotential: build OpenMM Systems in which a neural network potential describes all or part of the atoms.

The interface follows openmm-ml's MLPotential, so moving from it means changing an import::

    from openmm_nnp import NNPotential
    potential = NNPotential('ani2x')
    mixed = potential.createMixedSystem(topology, mmSystem, 'resname MBN')
    system = potential.createSystem(topology)
"""

import copy
import os

import openmm
import torch

from openmm_nnp import embedding, region as _region
from openmm_nnp.nnp_swig import NNPForce
from openmm_nnp.models import ANI
from openmm_nnp.models.torchani_models import ANI_ELEMENTS, ANI_MODELS, canonicalANIName

_PRECISIONS = {'single': torch.float32, 'double': torch.float64}


def createANIModel(name, atomicNumbers, dtype=torch.float32):
    """The ANI model for a fixed list of atomic numbers (openmm_nnp.models.ANI: TorchANI's physics and weights,
    static shapes, checked against TorchANI in tests/test_ani_models.py)."""
    return ANI(name, atomicNumbers, dtype=dtype)


def _acceptsBoxVectors(module):
    """Whether a ScriptModule's forward takes a second argument (the periodic box vectors)."""
    arguments = module.forward.schema.arguments  # the first one is self
    return len(arguments) >= 3


class NNPotential:
    """A neural network potential that builds OpenMM Systems.

    Parameters
    ----------
    model : str, os.PathLike or torch.nn.Module
        ``'ani1x'``, ``'ani1ccx'`` or ``'ani2x'`` (TorchANI's models; ``'ANI-2x'`` works too), the path of a
        TorchScript file, or a torch.nn.Module / torch.jit.ScriptModule. A file or module receives the
        region's positions in nm ([n, 3], in the order of the region's atoms) and, if its forward takes a
        second argument and the System is periodic, the box vectors in nm ([3, 3]); it returns the energy
        in kJ/mol.
    precision : 'single' or 'double'
        Floating-point type the model computes in (float32 or float64).
    """

    def __init__(self, model, precision='single'):
        if precision not in _PRECISIONS:
            raise ValueError(f"precision must be 'single' or 'double', not {precision!r}.")
        self.precision = precision
        self.dtype = _PRECISIONS[precision]
        self._aniName = None
        self._module = None
        if isinstance(model, (str, os.PathLike)) and canonicalANIName(os.fspath(model)) is not None \
                and not os.path.isfile(os.fspath(model)):
            self._aniName = canonicalANIName(os.fspath(model))
            self.name = self._aniName
        elif isinstance(model, (str, os.PathLike)):
            path = os.fspath(model)
            if not os.path.isfile(path):
                raise ValueError(f"Unknown model '{path}': it is neither an ANI model name "
                                 f"({', '.join(ANI_MODELS)}) nor an existing TorchScript file.")
            try:
                module = torch.jit.load(path, map_location='cpu')
            except Exception as e:
                raise ValueError(f"'{path}' is not a TorchScript file that torch.jit.load can read ({e}). Save "
                                 'the model with torch.jit.save(torch.jit.script(model), path).') from None
            self._module = module.to(self.dtype)
            self.name = path
        elif isinstance(model, torch.nn.Module):
            module = model if isinstance(model, torch.jit.ScriptModule) else self._script(model)
            self._module = copy.deepcopy(module).to(self.dtype)
            self.name = type(model).__name__
        else:
            raise TypeError(f'model must be an ANI model name, a TorchScript file or a torch.nn.Module, not '
                            f'{type(model).__name__}.')

    @staticmethod
    def _script(module):
        try:
            return torch.jit.script(module)
        except Exception as e:
            raise ValueError(f'The model {type(module).__name__} cannot be compiled with torch.jit.script '
                             f'({str(e).splitlines()[0]}). Make it TorchScript-compatible or pass a '
                             'torch.jit.ScriptModule.') from None

    def __repr__(self):
        return f'NNPotential({self.name!r}, precision={self.precision!r})'

    # Model for a given region -------------------------------------------------------------------

    def _supportedElements(self):
        return ANI_ELEMENTS[self._aniName] if self._aniName is not None else None

    def _requiresNeutral(self):
        return self._aniName is not None  # ANI was trained on neutral molecules only

    def _modelDescription(self):
        return {'ani1x': 'ANI-1x', 'ani1ccx': 'ANI-1ccx', 'ani2x': 'ANI-2x'}.get(self._aniName, f'the model {self.name}')

    def createModel(self, atomicNumbers):
        """The TorchScript module for a region with these atomic numbers (in the region's order)."""
        if self._aniName is not None:
            return torch.jit.script(createANIModel(self._aniName, atomicNumbers, self.dtype))
        return self._module

    def _createForce(self, topology, atoms, periodic, forceGroup):
        atomList = list(topology.atoms())
        model = self.createModel([atomList[i].element.atomic_number for i in atoms])
        force = NNPForce(model, list(atoms))
        force.setProperty('dtype', 'float64' if self.dtype == torch.float64 else 'float32')
        force.setBonds(_region.regionBonds(topology, atoms))
        force.setUsesPeriodicBoundaryConditions(bool(periodic) and _acceptsBoxVectors(model))
        force.setForceGroup(forceGroup)
        force.setName('NNPForce')
        return force

    # Systems --------------------------------------------------------------------------------------

    def createSystem(self, topology, removeCMMotion=True, forceGroup=0):
        """A System in which the NNP describes every atom of ``topology``.

        Masses come from the elements; the System is periodic when the topology has a periodic box.
        """
        atoms = list(range(topology.getNumAtoms()))
        if not atoms:
            raise ValueError('The topology has no atoms.')
        _region.validateRegion(topology, None, atoms, self._supportedElements(), False, True,
                               self._modelDescription())
        system = openmm.System()
        for atom in topology.atoms():
            if atom.element is None:
                raise ValueError(f'Atom {_region.atomLabel(atom)} has no element, so it has no mass.')
            system.addParticle(atom.element.mass)
        box = topology.getPeriodicBoxVectors()
        if box is not None:
            system.setDefaultPeriodicBoxVectors(*box)
        system.addForce(self._createForce(topology, atoms, box is not None, forceGroup))
        if removeCMMotion:
            system.addForce(openmm.CMMotionRemover())
        return system

    def createMixedSystem(self, topology, system, atoms=None, removeConstraints=True, forceGroup=0,
                          interpolate=False, lambdaName='lambda_nnp', allowCutBonds=False, region=None):
        """A copy of an MM System in which the NNP describes the interactions inside a region.

        Mechanical embedding: the NNP computes every interaction among region atoms; the MM force field
        keeps everything else, including Coulomb and Lennard-Jones between region and environment and
        bonded terms that cross the region boundary. MM terms whose atoms all lie in the region are
        removed and region-region nonbonded pairs are excluded. ``system`` is not modified.

        Parameters
        ----------
        topology : openmm.app.Topology
            The topology of ``system`` (its bonds tell which region bonds the NNP keeps whole).
        system : openmm.System
            The MM System.
        atoms : sequence of int or str
            The region: particle indices (the model receives them in this order) or an MDTraj selection
            string such as ``'resname MBN'``. ``region=`` is accepted as another name for it.
        removeConstraints : bool
            Remove constraints between region atoms (default). Keep them with False.
        forceGroup : int
            Force group of the NNP force, e.g. for multiple-time-step integrators.
        interpolate : bool
            Add a global parameter ``lambdaName`` (default 1) that interpolates between the MM System (0) and
            the mixed System (1): U = U_MM(all) + lambda (U_NNP(region) - U_MM(region)). dU/dlambda is
            available from ``getState(parameterDerivatives=True)``. Note that at lambda = 0 the region's
            constraints are still removed unless removeConstraints=False.
        lambdaName : str
            Name of that global parameter.
        allowCutBonds : bool
            Allow covalent bonds between region and environment (the NNP then sees an unsaturated fragment).
        """
        if region is not None:
            if atoms is not None:
                raise ValueError("Pass the region once, as 'atoms' or as 'region', not both.")
            atoms = region
        atomIndices = _region.selectRegion(topology, atoms)
        _region.validateRegion(topology, system, atomIndices, self._supportedElements(), self._requiresNeutral(),
                               allowCutBonds, self._modelDescription())
        if not 0 <= forceGroup <= 31:
            raise ValueError(f'forceGroup must be between 0 and 31, not {forceGroup}.')
        mixed = embedding.embedRegion(system, atomIndices, removeConstraints,
                                      lambdaName if interpolate else None, 1.0)
        force = self._createForce(topology, atomIndices, system.usesPeriodicBoundaryConditions(), forceGroup)
        if interpolate:
            # NNP energy and forces multiplied by lambda; dU/dlambda gets the unscaled NNP energy.
            force.setScaleParameter(lambdaName, 1.0)
            force.addEnergyParameterDerivative(lambdaName)
        mixed.addForce(force)
        return mixed
