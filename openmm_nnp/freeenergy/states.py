"""openmmtools state support for the λ of interpolating NNP/MM Systems.

``NNPAlchemicalState`` is an openmmtools ``GlobalParameterState`` that controls the global parameter
``lambda_interpolate`` (openmm-ml's name; λ = 0: MM, λ = 1: NNP/MM). Composed with a ``ThermodynamicState`` it reads and sets λ in
Systems and Contexts and computes reduced potentials at any λ::

    from openmmtools.states import ThermodynamicState, CompoundThermodynamicState
    state = CompoundThermodynamicState(ThermodynamicState(system, 300 * unit.kelvin),
                                       [NNPAlchemicalState.from_system(system)])
    state.lambda_interpolate = 0.5
    state.apply_to_context(context)

Systems whose parameter has another name (``createMixedSystem(..., lambdaName='lam')``) get their own class from
``alchemical_state_class('lam')``.
"""

import openmm
import openmm.unit as unit
from openmmtools.states import CompoundThermodynamicState, GlobalParameterState, ThermodynamicState

from openmm_nnp.embedding import DEFAULT_LAMBDA_NAME


class NNPAlchemicalState(GlobalParameterState):
    """Controls ``lambda_interpolate``, the MM (0) to NNP/MM (1) parameter of ``createMixedSystem(interpolate=True)``.

    NNPForce lists its scale parameter among its global parameters, so openmmtools finds and sets it
    like any other force's.
    """

    lambda_interpolate = GlobalParameterState.GlobalParameter(DEFAULT_LAMBDA_NAME, standard_value=1.0)

    def set_alchemical_parameters(self, value):
        """Set λ (the name openmmtools' alchemical tools use)."""
        self.lambda_interpolate = value


_CLASSES = {DEFAULT_LAMBDA_NAME: NNPAlchemicalState}


def alchemical_state_class(lambda_name=DEFAULT_LAMBDA_NAME):
    """The GlobalParameterState class that controls the global parameter ``lambda_name``.

    The attribute that reads and sets λ on its instances has the parameter's name.
    """
    if not isinstance(lambda_name, str) or not lambda_name.isidentifier():
        raise ValueError(f'lambda_name must be a valid Python identifier (it becomes a state attribute), '
                         f'not {lambda_name!r}.')
    if lambda_name not in _CLASSES:
        name = f'NNPAlchemicalState_{lambda_name}'
        cls = type(name, (NNPAlchemicalState,), {
            lambda_name: GlobalParameterState.GlobalParameter(lambda_name, standard_value=1.0),
            'set_alchemical_parameters': lambda self, value: setattr(self, lambda_name, value),
            '__module__': __name__})
        cls.__qualname__ = name
        # The base class parameter would be searched for too: hide it.
        setattr(cls, DEFAULT_LAMBDA_NAME, None)
        globals()[name] = cls  # so that pickle finds the class in this process
        _CLASSES[lambda_name] = cls
    return _CLASSES[lambda_name]


def check_lambda_system(system, lambda_name=DEFAULT_LAMBDA_NAME, require_derivative=True):
    """Check that ``system`` has the global parameter ``lambda_name`` (and dU/dλ); raise a clear error if not."""
    if not isinstance(system, openmm.System):
        raise TypeError(f'Expected an openmm.System, not {type(system).__name__}.')
    found, derivative = False, False
    names = set()
    for force in system.getForces():
        if hasattr(force, 'getNumGlobalParameters'):
            for i in range(force.getNumGlobalParameters()):
                names.add(force.getGlobalParameterName(i))
                found |= force.getGlobalParameterName(i) == lambda_name
        if hasattr(force, 'getNumEnergyParameterDerivatives'):
            for i in range(force.getNumEnergyParameterDerivatives()):
                derivative |= force.getEnergyParameterDerivativeName(i) == lambda_name
    if not found:
        raise ValueError(f"The System has no global parameter '{lambda_name}' (it has: {sorted(names) or 'none'}). "
                         "Build it with NNPotential(...).createMixedSystem(topology, mmSystem, region, "
                         f"interpolate=True, lambdaName='{lambda_name}'), or pass the right lambda_name.")
    if require_derivative and not derivative:
        raise ValueError(f"The System defines '{lambda_name}' but no force computes dU/d{lambda_name}. Call "
                         f"addEnergyParameterDerivative('{lambda_name}') on the forces that depend on it (the "
                         'interpolating mixed System does), or use lambda_dependence="general" and no TI.')


def lambda_states(system, temperature, lambdas, lambda_name=DEFAULT_LAMBDA_NAME):
    """One ``CompoundThermodynamicState`` per λ value, sharing one System (pressure from its barostat, if any)."""
    check_lambda_system(system, lambda_name, require_derivative=False)
    if not unit.is_quantity(temperature):
        temperature = temperature * unit.kelvin
    thermo = ThermodynamicState(system, temperature)
    cls = alchemical_state_class(lambda_name)
    states = []
    for lam in lambdas:
        alchemical = cls.from_system(system)
        setattr(alchemical, lambda_name, float(lam))
        states.append(CompoundThermodynamicState(thermo, [alchemical]))
    return states
