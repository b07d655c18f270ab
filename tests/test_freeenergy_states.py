"""openmmtools states read and set the λ of a System whose NNPForce is scaled by it (openmm-torch issue 147)."""

import numpy as np
import openmm
import pytest
import torch
from openmm import unit
from openmmtools.states import CompoundThermodynamicState, ThermodynamicState

from openmm_nnp import NNPForce
from openmm_nnp.freeenergy.states import NNPAlchemicalState


class Spring(torch.nn.Module):
    def forward(self, positions):
        return 50.0 * ((positions[0] - positions[1]) ** 2).sum()


def lambda_system(default):
    """U(λ) = λ U_NNP + (1 - λ) U_MM for two particles: the shape of an interpolating mixed System."""
    system = openmm.System()
    for _ in range(2):
        system.addParticle(12.0)
    nnp = NNPForce(Spring())
    nnp.setScaleParameter('lambda_interpolate', default)
    nnp.addEnergyParameterDerivative('lambda_interpolate')
    system.addForce(nnp)
    mm = openmm.CustomBondForce('(1-lambda_interpolate)*200*r^2')
    mm.addGlobalParameter('lambda_interpolate', default)
    mm.addEnergyParameterDerivative('lambda_interpolate')
    mm.addBond(0, 1)
    system.addForce(mm)
    return system


def test_compound_state_sets_lambda_in_system_and_context():
    system = lambda_system(1.0)
    alchemical = NNPAlchemicalState.from_system(system)
    assert alchemical.lambda_interpolate == 1.0
    state = CompoundThermodynamicState(ThermodynamicState(system, 300 * unit.kelvin), [alchemical])
    state.lambda_interpolate = 0.25
    # The System the state hands out has the new default in every force, the NNPForce included.
    created = state.system
    defaults = {type(f).__name__: f.getGlobalParameterDefaultValue(0) for f in created.getForces()
                if type(f).__name__ in ('NNPForce', 'CustomBondForce')}
    assert defaults == {'NNPForce': 0.25, 'CustomBondForce': 0.25}

    positions = np.array([[0.0, 0.0, 0.0], [0.1, 0.05, -0.02]])
    r2 = float((positions[1] ** 2).sum())
    integrator = openmm.VerletIntegrator(0.001)
    context = state.create_context(integrator, openmm.Platform.getPlatformByName('Reference'))
    context.setPositions(positions)
    for lam in (0.0, 0.6, 1.0):
        state.lambda_interpolate = lam
        state.apply_to_context(context)
        assert context.getParameter('lambda_interpolate') == lam
        expected = lam * 50.0 * r2 + (1 - lam) * 200.0 * r2
        energy = context.getState(getEnergy=True).getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
        assert energy == pytest.approx(expected, rel=1e-12)
        kT = (unit.MOLAR_GAS_CONSTANT_R * 300 * unit.kelvin).value_in_unit(unit.kilojoule_per_mole)
        assert state.reduced_potential(context) == pytest.approx(expected / kT, rel=1e-12)
    # Reading λ back from a Context.
    assert NNPAlchemicalState.from_system(lambda_system(0.3)).lambda_interpolate == 0.3
