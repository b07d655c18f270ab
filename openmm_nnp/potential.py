"""NNPotential: build OpenMM Systems in which a neural network potential describes all or part of the atoms.

The interface follows openmm-ml's MLPotential, so moving from it means changing an import::

    from openmm_nnp import NNPotential
    potential = NNPotential('ani2x')
    mixed = potential.createMixedSystem(topology, mmSystem, 'resname MBN')
    system = potential.createSystem(topology)
"""

import openmm
import torch

from openmm_nnp import embedding as _embedding, region as _region
from openmm_nnp.force import NNPForce
from openmm_nnp.models.registry import chargeModelNames, resolveModel

_PRECISIONS = {'single': torch.float32, 'double': torch.float64}

# The embeddings createMixedSystem implements. 'mechanical' (openmm-ml's default and name): the NNP computes
# the interactions inside the region, the MM force field everything else.
EMBEDDINGS = ('mechanical',)


def _acceptsBoxVectors(module):
    """Whether a ScriptModule's forward takes a second argument (the periodic box vectors)."""
    arguments = module.forward.schema.arguments  # the first one is self
    return len(arguments) >= 3


class NNPotential:
    """A neural network potential that builds OpenMM Systems (openmm-ml's MLPotential interface).

    Parameters
    ----------
    model : str, os.PathLike, torch.nn.Module or ModelSpec
        A registered model name (``'ani1x'``, ``'ani1ccx'``, ``'ani2x'``; case, '-' and '_' are ignored, so
        ``'ANI-2x'`` works; others come from the ``openmm_nnp.models`` entry point, see
        openmm_nnp.models.registry), the path of a TorchScript file, or a torch.nn.Module /
        torch.jit.ScriptModule. A file or module receives the region's positions in nm ([n, 3], in the order
        of the region's atoms) and, if its forward takes a second argument and the System is periodic, the box
        vectors in nm ([3, 3]); it returns the energy in kJ/mol.
    precision : 'single' or 'double'
        Floating-point type the model computes in (float32 or float64).
    options
        Model options, e.g. ``modelIndex=0`` (one member of an ANI ensemble). They are the defaults of every
        System this potential builds; createSystem and createMixedSystem take them too. An option the model
        does not take is an error that names it.
    """

    def __init__(self, model, precision='single', **options):
        if precision not in _PRECISIONS:
            raise ValueError(f"precision must be 'single' or 'double', not {precision!r}.")
        self.precision = precision
        self.dtype = _PRECISIONS[precision]
        self.spec = resolveModel(model, 'NNPotential')
        self.charge = options.pop('charge', None)
        self.spec.checkOptions(options)
        self.options = dict(options)
        self.name = self.spec.name

    def __repr__(self):
        options = ''.join(f', {name}={value!r}' for name, value in self.options.items())
        return f'NNPotential({self.name!r}, precision={self.precision!r}{options})'

    # Model for a given region -------------------------------------------------------------------

    def _modelOptions(self, args):
        self.spec.checkOptions(args)
        return {**self.options, **args}

    def createModel(self, atomicNumbers, charge=0, **options):
        """The TorchScript module for a region with these atomic numbers (in the region's order)."""
        return self.spec.createModule(list(atomicNumbers), self.dtype, charge, **self._modelOptions(options))

    def checkRegion(self, topology, system, atoms, *, allowCutBonds=False):
        """Raise ValueError if the model cannot describe the region ``atoms`` (particle indices): elements it does
        not support, a net MM charge for a neutral-only model, cut bonds unless allowed (region.validateRegion)."""
        _region.validateRegion(topology, system, atoms, supportedElements=self.spec.elements,
                               requiresNeutral=self.spec.supportsCharge is False, allowCutBonds=allowCutBonds,
                               modelName=self.spec.label, chargeModels=chargeModelNames())

    def _regionCharge(self, system, atoms, charge=None):
        """The region's net charge (e) handed to the model. Models that take one get the MM charge of the region
        (an integer within region.NET_CHARGE_TOLERANCE) or the caller's ``charge`` option, checked against it;
        a neutral-only model refuses a non-zero ``charge``; a model of unknown charge support takes none."""
        charge = self.charge if charge is None else charge
        if self.spec.supportsCharge:
            return _region.regionCharge(system, atoms, charge)
        if charge is not None:
            if self.spec.supportsCharge is None:
                raise ValueError(f'charge={charge!r} was given, but {self.spec.label} does not take a net charge.')
            _region.checkChargeSupport(_region.regionCharge(None, atoms, charge), self.spec.label, False,
                                       chargeModelNames())
        return 0

    def createForce(self, topology, atoms, periodic, forceGroup=0, charge=0, **options):
        """The NNPForce for the region ``atoms`` (particle indices) of ``topology``, with the region's bonds."""
        atomList = list(topology.atoms())
        model = self.createModel([atomList[i].element.atomic_number for i in atoms], charge, **options)
        force = NNPForce(model, list(atoms))
        force.setProperty('dtype', 'float64' if self.dtype == torch.float64 else 'float32')
        force.setBonds(_region.regionBonds(topology, atoms))
        force.setUsesPeriodicBoundaryConditions(bool(periodic) and _acceptsBoxVectors(model))
        force.setForceGroup(forceGroup)
        force.setName('NNPForce')
        return force

    # Systems --------------------------------------------------------------------------------------

    def createSystem(self, topology, removeCMMotion=True, forceGroup=0, **args):
        """A System in which the NNP describes every atom of ``topology`` (openmm-ml's createSystem).

        Masses come from the elements; the System is periodic when the topology has a periodic box.
        ``args`` are model options (e.g. ``modelIndex``).
        """
        options = self._modelOptions(args)
        atoms = list(range(topology.getNumAtoms()))
        if not atoms:
            raise ValueError('The topology has no atoms.')
        self.checkRegion(topology, None, atoms, allowCutBonds=True)
        system = openmm.System()
        for atom in topology.atoms():
            if atom.element is None:
                raise ValueError(f'Atom {_region.atomLabel(atom)} has no element, so it has no mass.')
            system.addParticle(atom.element.mass)
        box = topology.getPeriodicBoxVectors()
        if box is not None:
            system.setDefaultPeriodicBoxVectors(*box)
        system.addForce(self.createForce(topology, atoms, box is not None, forceGroup, **options))
        if removeCMMotion:
            system.addForce(openmm.CMMotionRemover())
        return system

    def createMixedSystem(self, topology, system, atoms=None, removeConstraints=True, forceGroup=0,
                          interpolate=False, embedding='mechanical', returnInfo=False, *,
                          lambdaName=_embedding.DEFAULT_LAMBDA_NAME, allowCutBonds=False, region=None, **args):
        """A copy of an MM System in which the NNP describes the interactions inside a region
        (openmm-ml's createMixedSystem, same arguments and defaults).

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
        atoms : sequence of int, str or region.Region
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
        embedding : str
            ``'mechanical'`` (the only one; any other name is an error).
        returnInfo : bool
            Return openmm-ml's dictionary ``{'system', 'topology', 'oldToNew'}`` instead of the System. The
            topology is the one given (no atoms are added) and oldToNew the identity.
        lambdaName : str
            Name of the interpolation parameter, ``'lambda_interpolate'`` (openmm-ml's name) by default.
        allowCutBonds : bool
            Allow covalent bonds between region and environment (the NNP then sees an unsaturated fragment).
        args
            Model options (e.g. ``modelIndex``). ``mlLongRange=False`` is accepted (openmm-ml's option; the
            NNP is short-ranged, so that is what it is), ``mlLongRange=True`` is an error.
        """
        if embedding not in EMBEDDINGS:
            raise ValueError(f"Unsupported embedding {embedding!r}: openmm-nnp builds the "
                             f"{' and '.join(map(repr, EMBEDDINGS))} embedding only.")
        if args.pop('mlLongRange', None):
            raise ValueError('mlLongRange=True is not supported: the models openmm-nnp builds are short-ranged, '
                             'so the MM force field keeps every interaction between periodic images.')
        charge = args.pop('charge', None)
        options = self._modelOptions(args)
        if region is not None:
            if atoms is not None:
                raise ValueError("Pass the region once, as 'atoms' or as 'region', not both.")
            atoms = region
        atomIndices = _region.selectRegion(topology, atoms)
        self.checkRegion(topology, system, atomIndices, allowCutBonds=allowCutBonds)
        if not 0 <= forceGroup <= 31:
            raise ValueError(f'forceGroup must be between 0 and 31, not {forceGroup}.')
        mixed = _embedding.embedRegion(system, atomIndices, removeConstraints=removeConstraints,
                                       lambdaName=lambdaName if interpolate else None)
        force = self.createForce(topology, atomIndices, system.usesPeriodicBoundaryConditions(), forceGroup,
                                 self._regionCharge(system, atomIndices, charge), **options)
        if interpolate:
            # NNP energy and forces multiplied by lambda; dU/dlambda gets the unscaled NNP energy.
            force.setScaleParameter(lambdaName, 1.0)
            force.addEnergyParameterDerivative(lambdaName)
        mixed.addForce(force)
        if returnInfo:
            return {'system': mixed, 'topology': topology, 'oldToNew': list(range(topology.getNumAtoms()))}
        return mixed

    def createMTSSystem(self, topology, system, atoms, **args):
        """A mixed System laid out for multiple time steps: integrate it with
        ``openmm_nnp.NNPMTSLangevinMiddleIntegrator(T, friction, dt, N)`` (dt the inner step; or OpenMM's
        ``MTSLangevinIntegrator(T, friction, N*dt, [(1, 1), (0, N)])``, slower on the CPU platform).

        Force group 0 is the complete MM force field, the region's own MM terms included (+U_MM(region)); group
        1 is the NNP correction U_NNP(region) - U_MM(region), evaluated once per outer step. Together they are
        createMixedSystem's System. ``atoms`` and ``args`` are createMixedSystem's (not forceGroup or
        interpolate).
        """
        for name in ('forceGroup', 'interpolate', 'returnInfo'):
            if args.get(name):
                raise ValueError(f'createMTSSystem lays out the force groups itself; it does not take {name}.')
        atomIndices = _region.selectRegion(topology, atoms)
        if args.get('removeConstraints', True):
            _embedding.checkRegionConstraintsHaveTerms(system, atomIndices)
        mixed = self.createMixedSystem(topology, system, atomIndices, forceGroup=1, **args)
        for force in mixed.getForces():
            if not NNPForce.isinstance(force):
                force.setForceGroup(0)
        for prefactor, group, namePrefix in ((1.0, 0, 'NNPMTSRegionMM'), (-1.0, 1, 'NNPMTSCorrectionRegionMM')):
            for term in _embedding.regionMMTerms(system, atomIndices, prefactor, namePrefix):
                term.setForceGroup(group)
                mixed.addForce(term)
        return mixed
