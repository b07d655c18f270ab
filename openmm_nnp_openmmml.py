"""openmm-ml plugin: ``openmmml.MLPotential('nnp-ani2x')`` builds Systems with openmm-nnp's compiled NNPForce.

Registered through openmm-ml's ``openmmml.potentials`` entry point group (setup.py) under the names

* ``nnp-ani1x``, ``nnp-ani1ccx``, ``nnp-ani2x``: the model of that name, e.g. ``MLPotential('nnp-ani2x')``;
* ``nnp``: any model NNPotential takes, ``MLPotential('nnp', model='model.pt')`` (a TorchScript file or
  module, or the name of a model from openmm-nnp's registry, third-party entries included).

``MLPotential(name, precision='double', modelIndex=0)``: keyword arguments are NNPotential's (precision and
model options). Mixed Systems use openmm-nnp's mechanical embedding (``embedding='mechanical'``, the
default), which adds dU/dλ for ``interpolate=True``; so ``MLPotential('nnp-ani2x').createMixedSystem(...)``
builds the System that ``NNPotential('ani2x').createMixedSystem(...)`` builds.

``import openmmml`` imports this module (every registered plugin is imported). It lives outside the
openmm_nnp package, whose import loads torch and the compiled plugin, and imports nothing at all, so it is
cheap and cannot fail: openmm_nnp is imported when a potential is created. Not even openmm-ml is imported:
openmm-ml calls the methods of its MLPotentialImplFactory and MLPotentialImpl interfaces without checking
the class, and importing openmmml from here would be circular (openmm-ml imports its plugins while it is
being imported).
"""

NAME_PREFIX = 'nnp-'


class NNPPotentialImplFactory:
    """Creates the openmm-ml implementation of an openmm-nnp potential (openmm-ml's factory interface)."""

    def createImpl(self, name, **args):
        return NNPPotentialImpl(name, **args)


class NNPPotentialImpl:
    """An NNPotential behind openmm-ml's MLPotentialImpl interface (addForces, getMLLongRange,
    getSupportedEmbeddings, createMixedSystem)."""

    def __init__(self, name, model=None, **args):
        from openmm_nnp.potential import NNPotential
        if name == NAME_PREFIX.rstrip('-'):
            if model is None:
                raise ValueError("MLPotential('nnp') needs the model: MLPotential('nnp', model='model.pt') (a "
                                 "TorchScript file or module, or a registered model name), or MLPotential('nnp-ani2x').")
        elif model is not None:
            raise ValueError(f"MLPotential('{name}') already names its model; model= goes with MLPotential('nnp').")
        else:
            model = name[len(NAME_PREFIX):] if name.startswith(NAME_PREFIX) else name
        self.potential = NNPotential(model, **args)

    def addForces(self, topology, system, atoms, forceGroup, **args):
        atoms = list(range(topology.getNumAtoms())) if atoms is None else list(atoms)
        self.potential.checkRegion(topology, None, atoms, allowCutBonds=True)
        periodic = topology.getPeriodicBoxVectors() is not None or system.usesPeriodicBoundaryConditions()
        system.addForce(self.potential.createForce(topology, atoms, periodic, forceGroup, **args))

    def getMLLongRange(self):
        return False  # the models are short-ranged: the MM force field keeps the periodic images' interactions

    def getSupportedEmbeddings(self):
        from openmm_nnp.potential import EMBEDDINGS
        return list(EMBEDDINGS)

    def createMixedSystem(self, topology, system, atoms, forceGroup, interpolate, embedding, returnInfo=False,
                          **args):
        # MLPotential.createMixedSystem removes the region's constraints itself when asked (removeConstraints).
        return self.potential.createMixedSystem(topology, system, atoms, removeConstraints=False,
                                                forceGroup=forceGroup, interpolate=interpolate,
                                                embedding=embedding, returnInfo=returnInfo, **args)
