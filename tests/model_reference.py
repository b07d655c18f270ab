"""Helpers shared by the tests that compare our model modules with their packages' own calculators.

Positions and boxes are in Å (as the packages' ASE calculators take them); energies in kJ/mol, forces in kJ/mol/nm.
"""

import numpy as np
import openmm
import pytest
import torch

from openmm_nnp.nnp_swig import NNPForce


def evaluateModule(module, positions, box=None):
    """Energy and forces of a module (forward(positions nm, box nm)) in float64."""
    x = torch.tensor(positions / 10.0, dtype=torch.float64, requires_grad=True)
    energy = module(x, None if box is None else torch.tensor(np.asarray(box) / 10.0, dtype=torch.float64))
    energy.backward()
    return energy.item(), -x.grad.numpy()


def evaluateInNNPForce(module, positions):
    """Energy and forces of the module in an NNPForce of a System on the Reference platform, float64."""
    system = openmm.System()
    for _ in range(len(positions)):
        system.addParticle(1.0)
    force = NNPForce(module, list(range(len(positions))))
    force.setProperty('dtype', 'float64')
    system.addForce(force)
    context = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName('Reference'))
    context.setPositions(positions / 10.0)
    state = context.getState(getEnergy=True, getForces=True)
    energy = state.getPotentialEnergy().value_in_unit(openmm.unit.kilojoule_per_mole)
    forces = state.getForces(asNumpy=True).value_in_unit(openmm.unit.kilojoule_per_mole / openmm.unit.nanometer)
    return energy, np.asarray(forces)


def assertSame(ours, theirs, rtol):
    """Energies within rtol relative; every force component within rtol of the largest reference component."""
    assert ours[0] == pytest.approx(theirs[0], rel=rtol, abs=1e-9)
    np.testing.assert_allclose(ours[1], theirs[1], rtol=0, atol=rtol * np.abs(theirs[1]).max())


def wrapIntoBox(positions, box):
    """Positions centred on the origin and wrapped into the box (rows a, b, c): a molecule split across faces."""
    centred = positions - positions.mean(axis=0)
    return centred, centred - np.floor(centred @ np.linalg.inv(box)) @ box


def exportRandomAIMNet2File(folder, seed=1):
    """The path of a v2 model file as aimnet publishes them, written by aimnet's own exporter from random weights of
    its aimnet2_dftd3_wb97m.yaml architecture (the published wB97M-D3 model's): the exporter strips the long-range
    Coulomb and D3 modules from the network and records them in the metadata (needs_coulomb, needs_dispersion)
    for the calculator to add. Random weights: right for checking the code and timing it, not for chemistry."""
    import importlib.resources
    from aimnet.config import build_module, load_yaml
    from aimnet.train.export_model import export_model
    architecture = str(importlib.resources.files('aimnet') / 'models' / 'aimnet2_dftd3_wb97m.yaml')
    torch.manual_seed(seed)
    torch.save(build_module(load_yaml(architecture)).state_dict(), folder / 'weights.pt')
    # Self-atomic energies (eV) for the exporter: any values, the same file feeds both sides of a comparison.
    (folder / 'model.sae').write_text('\n'.join(f'{z}: {-13.6 * z}' for z in (1, 6, 7, 8, 9, 16, 17)))
    export_model.callback(str(folder / 'weights.pt'), str(folder / 'model.pt'), architecture,
                          str(folder / 'model.sae'), None, None)
    return folder / 'model.pt'
