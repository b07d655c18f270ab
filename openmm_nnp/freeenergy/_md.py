"""What the tasks share: a Context for a λ state from the protocol's MDSettings, and reduced potentials."""

import hashlib
import json

import numpy as np
import openmm
import openmm.unit as unit

import openmm_nnp  # noqa: F401  (in worker processes: loads the plugin when a System with an NNPForce is deserialized)
from openmm_nnp.freeenergy.analysis import kT_in_kJ_per_mol
from openmm_nnp.freeenergy.parallel import share_properties
from openmm_nnp.freeenergy.states import lambda_states


def to_nm_array(positions):
    if unit.is_quantity(positions):
        positions = positions.value_in_unit(unit.nanometer)
    array = np.array([[float(c) for c in (p.x, p.y, p.z)] if hasattr(p, 'x') else list(p) for p in positions],
                     dtype=float)
    if array.ndim != 2 or array.shape[1] != 3:
        raise ValueError(f'positions must be a list of 3-vectors, got shape {array.shape}.')
    return array


def box_array(box):
    if box is None:
        return None
    if unit.is_quantity(box):
        box = box.value_in_unit(unit.nanometer)
    return np.array([[float(c) for c in (v.x, v.y, v.z)] if hasattr(v, 'x') else list(v) for v in box], dtype=float)


def quantity(value, default_unit):
    return value.value_in_unit(default_unit) if unit.is_quantity(value) else float(value)


def system_xml(system):
    return openmm.XmlSerializer.serialize(system)


def fingerprint(obj):
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


class LambdaSimulation:
    """A Langevin simulation of ``md`` (protocol.MDSettings) whose λ can be set, with reduced potentials in kT at
    each λ of ``lambdas``."""

    def __init__(self, md, lam, lambdas=(0.0, 1.0), seed=1):
        self.md = md
        self.seed = int(seed) % 2**31
        self.system = openmm.XmlSerializer.deserialize(md.system_xml)
        self.name = md.lambda_name
        self.temperature = md.temperature
        self.beta = 1.0 / kT_in_kJ_per_mol(self.temperature)
        self.lambdas = list(lambdas)
        self.states = lambda_states(self.system, self.temperature, self.lambdas, self.name)
        self.state = lambda_states(self.system, self.temperature, [lam], self.name)[0]
        self.pressure = self.state.pressure
        integrator = openmm.LangevinMiddleIntegrator(self.temperature * unit.kelvin,
                                                     md.collision_rate / unit.picosecond,
                                                     md.timestep * unit.picosecond)
        integrator.setRandomNumberSeed(self.seed)
        self.integrator = integrator
        platform = openmm.Platform.getPlatformByName(md.platform)
        self.context = self.state.create_context(integrator, platform,
                                                 share_properties(platform.getName(), md.platform_properties))
        if md.box is not None:
            self.context.setPeriodicBoxVectors(*[openmm.Vec3(*row) for row in md.box])
        self.context.setPositions(np.asarray(md.positions) * unit.nanometer)
        self.lam = lam

    def set_lambda(self, lam):
        self.context.setParameter(self.name, lam)
        self.lam = lam

    def set_velocities(self, velocities=None):
        if velocities is None:
            self.context.setVelocitiesToTemperature(self.temperature * unit.kelvin, self.seed)
        else:
            self.context.setVelocities(np.asarray(velocities) * unit.nanometer / unit.picosecond)

    def energy_and_derivative(self):
        """β(U + pV) at the current λ and β dU/dλ."""
        state = self.context.getState(getEnergy=True, getParameterDerivatives=True)
        u = self.beta * state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
        if self.pressure is not None:
            volume = state.getPeriodicBoxVolume()
            pv = (self.pressure * volume * unit.AVOGADRO_CONSTANT_NA).value_in_unit(unit.kilojoule_per_mole)
            u += self.beta * pv
        derivatives = state.getEnergyParameterDerivatives()
        if self.name not in derivatives:
            raise ValueError(f'The Context does not report dU/d{self.name}; add addEnergyParameterDerivative('
                             f"'{self.name}') to the forces that depend on it.")
        return u, self.beta * derivatives[self.name]

    def reduced_potentials(self, linear):
        """Reduced potentials of the current configuration at every λ of ``self.lambdas``, and β dU/dλ."""
        u, dudl = self.energy_and_derivative()
        if linear:
            return [u + (lam - self.lam) * dudl for lam in self.lambdas], dudl
        current = self.lam
        values = self.states[0].reduced_potential_at_states(self.context, self.states)
        self.set_lambda(current)
        return list(values), dudl

    def energy_at(self, lam):
        self.set_lambda(lam)
        return self.energy_and_derivative()[0]

    def snapshot(self):
        state = self.context.getState(getPositions=True, getVelocities=True)
        box = state.getPeriodicBoxVectors(asNumpy=True).value_in_unit(unit.nanometer) \
            if self.system.usesPeriodicBoundaryConditions() else None
        return {'positions': state.getPositions(asNumpy=True).value_in_unit(unit.nanometer),
                'velocities': state.getVelocities(asNumpy=True).value_in_unit(unit.nanometer / unit.picosecond),
                'box': None if box is None else np.asarray(box)}


def probe(md):
    """β(U(1) − U(0)) at the starting positions of ``md`` and whether U is linear in λ (checked at λ = 0, ½, 1)."""
    sim = LambdaSimulation(md, 0.0, [0.0, 0.5, 1.0])
    values = []
    for lam in (0.0, 0.5, 1.0):
        sim.set_lambda(lam)
        values.append(sim.energy_and_derivative())
    (u0, d0), (uh, dh), (u1, d1) = values
    scale = max(1.0, abs(u1 - u0))
    tolerance = 1e-3 + 2e-6 * scale  # float32 NNP energies are good to ~1e-7 relative
    linear = (abs(uh - 0.5 * (u0 + u1)) < tolerance and abs(d0 - (u1 - u0)) < tolerance
              and abs(d1 - (u1 - u0)) < tolerance and abs(dh - (u1 - u0)) < tolerance)
    return u1 - u0, linear
