"""NNPotential.createMixedSystem / createSystem on real systems, checked with numbers.

Exact checks run the Reference platform (double precision) with precision='double' models.

The embedding identity. The mixed system removes every MM interaction among region atoms: bonded terms
with all atoms in the region, and region-region nonbonded pairs (made exclusions). With PME, an
exclusion also subtracts the pair's reciprocal-space interaction, so what is removed for a pair at
distance r < cutoff is exactly its vacuum Coulomb + LJ energy (direct erfc part + erf correction), and
for r beyond the switching distance the LJ switching enters. When every region pair lies closer than the
switching distance (checked: toluene 0.5 nm, alanine dipeptide and the B2 guest < 0.8 nm, cutoffs 0.9-1.0
nm, switching 0.85 nm), the removed energy equals the MM energy of the region alone in vacuum, which the
tests build independently from the MM System's parameters (no cutoff). Hence

    E_mixed = E_MM(all) - E_MM(region alone, vacuum) + E_NNP(region)

to round-off of the ~1e5-1e6 kJ/mol totals: we require 1e-4 kJ/mol (double precision, PME terms identical
in both systems and cancel). E_NNP comes from TorchANI called directly, not from openmm-nnp.
"""

import copy
import math
from pathlib import Path

import numpy as np
import openmm
import openmm.app as app
import openmm.unit as unit
import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / 'shared'

from openmm_nnp import NNPForce, NNPotential, embedding  # noqa: E402

TOLUENE_DIR = SHARED / 'data' / 'toluene-water'
ALANINE_PDB = SHARED / 'data' / 'alanine-dipeptide-water' / 'alanine-dipeptide-explicit.pdb'

ENERGY_TOL = 1e-4  # kJ/mol, double precision identities
# kJ/mol/nm, for forces that include the NNP: openmm_nnp.models.ANI's float64 forces agree with TorchANI's to
# ~1.5e-5 kJ/mol/nm (1e-7 relative; energies exactly), the TorchANI wrapper's to 4e-12.
NNP_FORCE_TOL = 1e-4
MM_FORCE_TOL = 1e-6  # kJ/mol/nm, MM-only identities (double precision round-off)

REFERENCE = openmm.Platform.getPlatformByName('Reference')


def needs(path):
    return pytest.mark.skipif(not path.exists(), reason=f'shared test data {path} not found (expected at <repo>/../shared)')


# ---------------------------------------------------------------- helpers

def evaluate(system, positions, groups=-1, parameters=None, platform=REFERENCE, derivatives=False):
    """(energy kJ/mol, forces [n, 3] kJ/mol/nm, parameter derivatives) of ``system`` at ``positions``."""
    context = openmm.Context(system, openmm.VerletIntegrator(0.001), platform)
    context.setPositions(positions)
    for name, value in (parameters or {}).items():
        context.setParameter(name, value)
    state = context.getState(getEnergy=True, getForces=True, getParameterDerivatives=derivatives, groups=groups)
    result = (state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole),
              state.getForces(asNumpy=True).value_in_unit(unit.kilojoule_per_mole / unit.nanometer),
              dict(state.getEnergyParameterDerivatives()) if derivatives else None)
    del context
    return result


def nnp_group_mask(system):
    return 1 << next(f.getForceGroup() for f in system.getForces() if isinstance(f, NNPForce))


_torchani_cache = {}


def torchani_energy_forces(name, atomic_numbers, positions_nm):
    """ANI energy (kJ/mol) and forces (kJ/mol/nm) from TorchANI itself in float64."""
    import torchani
    if name not in _torchani_cache:
        factory = {'ani2x': torchani.models.ANI2x, 'ani1ccx': torchani.models.ANI1ccx, 'ani1x': torchani.models.ANI1x}
        _torchani_cache[name] = factory[name](periodic_table_index=True).double()
    model = _torchani_cache[name]
    species = torch.tensor([list(atomic_numbers)])
    coordinates = torch.tensor(np.asarray(positions_nm) * 10.0, dtype=torch.float64).unsqueeze(0).requires_grad_(True)
    energy = model((species, coordinates)).energies.sum()
    (gradient,) = torch.autograd.grad(energy, coordinates)
    hartree = torchani.units.hartree2kjoulepermol(1.0)
    return energy.item() * hartree, -gradient[0].numpy() * hartree * 10.0  # per Angstrom -> per nm


def region_alone_system(system, region):
    """MM System of the region's atoms alone in vacuum (no cutoff), built from ``system``'s parameters:
    bonded terms with all atoms in the region, and the region's nonbonded particles and exceptions."""
    index = {atom: k for k, atom in enumerate(region)}
    alone = openmm.System()
    for atom in region:
        alone.addParticle(system.getParticleMass(atom))
    for force in system.getForces():
        if isinstance(force, openmm.HarmonicBondForce):
            new = openmm.HarmonicBondForce()
            for k in range(force.getNumBonds()):
                i, j, r0, kb = force.getBondParameters(k)
                if i in index and j in index:
                    new.addBond(index[i], index[j], r0, kb)
        elif isinstance(force, openmm.HarmonicAngleForce):
            new = openmm.HarmonicAngleForce()
            for k in range(force.getNumAngles()):
                i, j, l, a0, ka = force.getAngleParameters(k)
                if all(p in index for p in (i, j, l)):
                    new.addAngle(index[i], index[j], index[l], a0, ka)
        elif isinstance(force, openmm.PeriodicTorsionForce):
            new = openmm.PeriodicTorsionForce()
            for k in range(force.getNumTorsions()):
                i, j, l, m, n, phase, kt = force.getTorsionParameters(k)
                if all(p in index for p in (i, j, l, m)):
                    new.addTorsion(index[i], index[j], index[l], index[m], n, phase, kt)
        elif isinstance(force, openmm.NonbondedForce):
            new = openmm.NonbondedForce()
            new.setNonbondedMethod(openmm.NonbondedForce.NoCutoff)
            for atom in region:
                new.addParticle(*force.getParticleParameters(atom))
            for k in range(force.getNumExceptions()):
                i, j, q, s, e = force.getExceptionParameters(k)
                if i in index and j in index:
                    new.addException(index[i], index[j], q, s, e)
        elif isinstance(force, (openmm.CMMotionRemover,)):
            continue
        else:
            raise AssertionError(f'region_alone_system: unexpected force {force.__class__.__name__}')
        alone.addForce(new)
    return alone


def max_region_distance(positions, region):
    x = np.asarray(positions.value_in_unit(unit.nanometer))[region]
    return float(np.max(np.linalg.norm(x[:, None] - x[None], axis=-1)))


# ---------------------------------------------------------------- test systems

def _toluene():
    prmtop = app.AmberPrmtopFile(str(TOLUENE_DIR / 'toluene-explicit.prm7'))
    inpcrd = app.AmberInpcrdFile(str(TOLUENE_DIR / 'toluene-explicit.rst7'))
    system = prmtop.createSystem(nonbondedMethod=app.PME, nonbondedCutoff=0.9 * unit.nanometer, constraints=app.HBonds)
    system.setDefaultPeriodicBoxVectors(*inpcrd.boxVectors)
    return prmtop.topology, system, inpcrd.positions, 'resname MBN'


def _alanine():
    pdb = app.PDBFile(str(ALANINE_PDB))
    forcefield = app.ForceField('amber14-all.xml', 'amber14/tip3pfb.xml')
    system = forcefield.createSystem(pdb.topology, nonbondedMethod=app.PME, nonbondedCutoff=0.9 * unit.nanometer,
                                     constraints=app.HBonds)
    return pdb.topology, system, pdb.positions, 'resname ACE ALA NME'


def _host_guest():
    from openmmtools.testsystems import HostGuestExplicit
    test = HostGuestExplicit()
    return test.topology, test.system, test.positions, 'resname B2'


def _vacuum():
    from openmmtools.testsystems import HostGuestVacuum
    test = HostGuestVacuum()
    return test.topology, test.system, test.positions, 'resname B2'


BUILDERS = {
    'toluene-water': pytest.param(_toluene, marks=needs(TOLUENE_DIR)),
    'alanine-dipeptide-water': pytest.param(_alanine, marks=needs(ALANINE_PDB)),
    'host-guest-water': pytest.param(_host_guest),
    'host-guest-vacuum': pytest.param(_vacuum),
}


@pytest.fixture(scope='module')
def ani_double():
    return NNPotential('ani2x', precision='double')


@pytest.fixture(scope='module', params=list(BUILDERS.values()), ids=list(BUILDERS))
def case(request, ani_double):
    """An MM system, its region, the interpolating mixed system (double precision ANI-2x, NNP in force
    group 5) and the reference numbers: MM and region-alone energies, TorchANI's region energy."""
    topology, system, positions, selection = request.param()
    import mdtraj
    region = [int(i) for i in mdtraj.Topology.from_openmm(topology).select(selection)]
    system_before = openmm.XmlSerializer.serialize(system)
    # The MM systems constrain bonds to hydrogen without bond terms: keep those constraints so that lambda = 0
    # is still the MM system (removing them is refused, see test_interpolation_refuses_unbound_constraints).
    mixed = ani_double.createMixedSystem(topology, system, selection, interpolate=True, forceGroup=5,
                                         removeConstraints=False)
    assert openmm.XmlSerializer.serialize(system) == system_before, 'createMixedSystem modified its input'
    atoms = list(topology.atoms())
    x = np.asarray(positions.value_in_unit(unit.nanometer))
    data = dict(topology=topology, system=system, positions=positions, selection=selection, region=region,
                mixed=mixed)
    data['mm'] = evaluate(system, positions)
    data['alone'] = evaluate(region_alone_system(system, region), [positions[i] for i in region])
    data['ani'] = torchani_energy_forces('ani2x', [atoms[i].element.atomic_number for i in region], x[region])
    data['lambda1'] = evaluate(mixed, positions, derivatives=True)
    data['nnp'] = evaluate(mixed, positions, groups=1 << 5)
    return data


# ---------------------------------------------------------------- the embedding identity

def test_embedding_identity(case):
    """E_mixed = E_MM(all) - E_MM(region alone) + E_NNP(region), energies and forces."""
    region = case['region']
    nb = [f for f in case['system'].getForces() if isinstance(f, openmm.NonbondedForce)][0]
    if nb.getNonbondedMethod() != openmm.NonbondedForce.NoCutoff:
        limit = nb.getSwitchingDistance() if nb.getUseSwitchingFunction() else nb.getCutoffDistance()
        # Precondition of the identity (see module docstring): all region pairs inside the LJ switch.
        assert max_region_distance(case['positions'], region) < limit.value_in_unit(unit.nanometer)
    e_mm, f_mm, _ = case['mm']
    e_alone, f_alone, _ = case['alone']
    e_ani, f_ani = case['ani']
    e_mixed, f_mixed, _ = case['lambda1']
    e_nnp, f_nnp, _ = case['nnp']
    expected_forces = f_mm.copy()
    expected_forces[region] += f_ani - f_alone
    print(f"{case['selection']}: energy deviation {e_mixed - (e_mm - e_alone + e_ani):.2e} kJ/mol, "
          f'force deviation {np.abs(f_mixed - expected_forces).max():.2e} kJ/mol/nm')
    assert e_mixed == pytest.approx(e_mm - e_alone + e_ani, abs=ENERGY_TOL, rel=0)
    assert np.abs(f_mixed - expected_forces).max() < NNP_FORCE_TOL
    # The MM part alone (mixed minus its NNP force group) at double-precision round-off.
    mm_forces = f_mm.copy()
    mm_forces[region] -= f_alone
    assert e_mixed - e_nnp == pytest.approx(e_mm - e_alone, abs=ENERGY_TOL, rel=0)
    assert np.abs((f_mixed - f_nnp) - mm_forces).max() < MM_FORCE_TOL


def test_nnp_part_matches_torchani(case):
    """The NNPForce alone (its force group) against TorchANI called directly, float64."""
    e_nnp, f_nnp, _ = case['nnp']
    e_ani, f_ani = case['ani']
    region = case['region']
    assert e_nnp == pytest.approx(e_ani, abs=1e-6, rel=1e-12)
    assert np.abs(f_nnp[region] - f_ani).max() < NNP_FORCE_TOL
    outside = np.setdiff1d(np.arange(len(f_nnp)), region)
    assert np.all(f_nnp[outside] == 0)


def test_lambda_endpoints_and_derivative(case, ani_double):
    """lambda=0 is the MM system, lambda=1 the mixed system (exactly, same platform); dU/dlambda equals
    finite differences (U is linear in lambda, so the difference quotient is exact) and U_NNP - U_MM(region)."""
    mixed, positions = case['mixed'], case['positions']
    e_mm, f_mm, _ = case['mm']
    e0, f0, d0 = evaluate(mixed, positions, parameters={'lambda_interpolate': 0.0}, derivatives=True)
    assert e0 == pytest.approx(e_mm, abs=1e-6, rel=1e-11)
    assert np.abs(f0 - f_mm).max() < 1e-6

    plain = ani_double.createMixedSystem(case['topology'], case['system'], case['region'], forceGroup=5)
    assert not any(isinstance(f, openmm.CustomBondForce) for f in plain.getForces())
    e_plain, f_plain, _ = evaluate(plain, positions)
    e1, f1, d1 = case['lambda1']
    assert e1 == pytest.approx(e_plain, abs=1e-6, rel=1e-11)
    assert np.abs(f1 - f_plain).max() < 1e-6

    e_a, _, _ = evaluate(mixed, positions, parameters={'lambda_interpolate': 0.3})
    e_b, _, d_mid = evaluate(mixed, positions, parameters={'lambda_interpolate': 0.7}, derivatives=True)
    finite_difference = (e_b - e_a) / 0.4
    for d in (d0, d1, d_mid):
        assert d['lambda_interpolate'] == pytest.approx(finite_difference, abs=1e-3, rel=1e-9)
        assert d['lambda_interpolate'] == pytest.approx(case['ani'][0] - case['alone'][0], abs=ENERGY_TOL, rel=0)


def test_structure_of_mixed_system(case):
    """Region constraints gone, environment constraints kept; NNPForce has the region's topology bonds, the
    force group, periodicity of the system; no bonded MM term inside the region is left."""
    mixed, system, region = case['mixed'], case['system'], set(case['region'])
    nnp = [f for f in mixed.getForces() if isinstance(f, NNPForce)]
    assert len(nnp) == 1
    nnp = nnp[0]
    assert nnp.getForceGroup() == 5
    assert list(nnp.getAtoms()) == case['region']
    assert nnp.usesPeriodicBoundaryConditions() == system.usesPeriodicBoundaryConditions()
    bonds = {tuple(sorted(b)) for b in nnp.getBonds()}
    expected = {tuple(sorted((a.index, b.index))) for a, b in case['topology'].bonds()
                if a.index in region and b.index in region}
    assert bonds == expected and bonds
    # Constraints: kept on request (the interpolating system here), else the region's are removed.
    original = [system.getConstraintParameters(k)[:2] for k in range(system.getNumConstraints())]
    assert [mixed.getConstraintParameters(k)[:2] for k in range(mixed.getNumConstraints())] == original
    embedded = embedding.embedRegion(system, case['region'])
    constraints = [embedded.getConstraintParameters(k)[:2] for k in range(embedded.getNumConstraints())]
    assert not any(i in region and j in region for i, j in constraints)
    assert len(constraints) == len([c for c in original if not (c[0] in region and c[1] in region)])
    for force in mixed.getForces():
        if isinstance(force, openmm.HarmonicBondForce):
            assert not any(all(p in region for p in force.getBondParameters(k)[:2]) for k in range(force.getNumBonds()))
        if isinstance(force, openmm.PeriodicTorsionForce):
            assert not any(all(p in region for p in force.getTorsionParameters(k)[:4])
                           for k in range(force.getNumTorsions()))


def test_region_mm_terms_complete_the_embedded_system(case):
    """embedRegion + regionMMTerms(+1) is the MM System again; the terms' energy scales with the prefactor."""
    system, region, positions = case['system'], case['region'], case['positions']
    e_mm, f_mm, _ = case['mm']
    embedded = embedding.embedRegion(system, region, removeConstraints=False)
    e_embedded, _, _ = evaluate(embedded, positions)
    restored = openmm.XmlSerializer.clone(embedded)
    for term in embedding.regionMMTerms(system, region, 1.0, 'Restored'):
        assert term.getName().startswith('Restored')
        restored.addForce(term)
    e, f, _ = evaluate(restored, positions)
    assert e == pytest.approx(e_mm, abs=1e-6, rel=1e-11)
    assert np.abs(f - f_mm).max() < 1e-6
    removed = openmm.XmlSerializer.clone(embedded)
    for term in embedding.regionMMTerms(system, region, -1.0, 'Removed'):
        removed.addForce(term)
    e_removed, _, _ = evaluate(removed, positions)
    assert e_removed - e_embedded == pytest.approx(-(e_mm - e_embedded), abs=1e-6, rel=1e-11)


# ---------------------------------------------------------------- precision, createSystem, models

@needs(TOLUENE_DIR)
def test_single_precision_against_torchani():
    """precision='single' (float32) on the CPU platform: forces within float32 round-off of TorchANI."""
    topology, system, positions, selection = _toluene()
    mixed = NNPotential('ani2x').createMixedSystem(topology, system, selection, forceGroup=3)
    region = [a.index for a in topology.atoms() if a.residue.name == 'MBN']
    e, f, _ = evaluate(mixed, positions, groups=1 << 3, platform=openmm.Platform.getPlatformByName('CPU'))
    x = np.asarray(positions.value_in_unit(unit.nanometer))
    e_ani, f_ani = torchani_energy_forces('ani2x', [a.element.atomic_number for a in topology.atoms()
                                                    if a.residue.name == 'MBN'], x[region])
    # float32 energies of ~7e5 kJ/mol carry ~0.05 kJ/mol of round-off. Forces: coordinates of ~4 nm are rounded
    # to ~2e-7 nm in float32, which with bond force constants of ~3e5 kJ/mol/nm^2 moves forces by ~0.06 kJ/mol/nm.
    print(f'float32: energy deviation {e - e_ani:.3f} kJ/mol, force deviation {np.abs(f[region] - f_ani).max():.3f} kJ/mol/nm')
    assert e == pytest.approx(e_ani, abs=0.2)
    assert np.abs(f[region] - f_ani).max() < 0.25


@needs(TOLUENE_DIR)
def test_create_system_toluene_vacuum():
    """createSystem: all atoms NNP, masses from elements, CMMotionRemover, non-periodic; ANI-1ccx vs TorchANI."""
    pdb = app.PDBFile(str(TOLUENE_DIR / 'toluene.pdb'))
    system = NNPotential('ANI-1ccx', precision='double').createSystem(pdb.topology)
    assert system.getNumParticles() == 15 and not system.usesPeriodicBoundaryConditions()
    assert any(isinstance(f, openmm.CMMotionRemover) for f in system.getForces())
    assert system.getParticleMass(0).value_in_unit(unit.dalton) == pytest.approx(
        list(pdb.topology.atoms())[0].element.mass.value_in_unit(unit.dalton))
    e, f, _ = evaluate(system, pdb.positions)
    e_ani, f_ani = torchani_energy_forces('ani1ccx', [a.element.atomic_number for a in pdb.topology.atoms()],
                                          pdb.positions.value_in_unit(unit.nanometer))
    assert e == pytest.approx(e_ani, rel=1e-9)
    assert np.abs(f - f_ani).max() < NNP_FORCE_TOL


class ToyModel(torch.nn.Module):
    """E = sum of squared distances from the region's first atom (kJ/mol); enough to check the plumbing."""

    def forward(self, positions):
        return ((positions - positions[0]) ** 2).sum() * 100.0


def test_module_and_torchscript_file_models(tmp_path):
    """A torch.nn.Module and a TorchScript file work as models; their energy is what forward returns."""
    topology, system, positions, region = _chain_system()
    x = torch.tensor(np.asarray(positions)[region], dtype=torch.float64)
    expected = float(ToyModel()(x))
    path = tmp_path / 'toy.pt'
    torch.jit.save(torch.jit.script(ToyModel()), str(path))
    for model in (ToyModel(), str(path), torch.jit.script(ToyModel())):
        mixed = NNPotential(model, precision='double').createMixedSystem(topology, system, region, forceGroup=2,
                                                                     allowCutBonds=True)
        e, _, _ = evaluate(mixed, positions, groups=1 << 2)
        assert e == pytest.approx(expected, rel=1e-12)


# ---------------------------------------------------------------- every force type, synthetic

def _chain_system():
    """A vacuum chain of 10 carbons (region: atoms 2-6) with every kind of bonded and nonbonded force.
    Every term carries a strength parameter so the expected mixed system is the original with the
    region-internal terms' strengths set to zero."""
    n = 10
    region = [2, 3, 4, 5, 6]
    topology = app.Topology()
    chain = topology.addChain()
    residue = topology.addResidue('MOL', chain)
    atoms = [topology.addAtom(f'C{i}', app.element.carbon, residue) for i in range(n)]
    for i in range(n - 1):
        topology.addBond(atoms[i], atoms[i + 1])
    rng = np.random.default_rng(7)
    positions = [openmm.Vec3(0.15 * i, 0.05 * math.sin(1.3 * i), 0.04 * math.cos(0.7 * i)) + openmm.Vec3(*rng.normal(0, 0.01, 3))
                 for i in range(n)]
    system = openmm.System()
    for _ in range(n):
        system.addParticle(12.0)
    bonds = openmm.HarmonicBondForce()
    angles = openmm.HarmonicAngleForce()
    torsions = openmm.PeriodicTorsionForce()
    rb = openmm.RBTorsionForce()
    custom_bond = openmm.CustomBondForce('kb*(r-0.1)^2')
    custom_bond.addPerBondParameter('kb')
    custom_angle = openmm.CustomAngleForce('ka*cos(theta)^2 + shift')
    custom_angle.addPerAngleParameter('ka')
    custom_angle.addGlobalParameter('shift', 0.0)
    custom_torsion = openmm.CustomTorsionForce('kt*(1-cos(2*theta)); ')
    custom_torsion.addPerTorsionParameter('kt')
    compound = openmm.CustomCompoundBondForce(3, 'kc*distance(p1,p3)*angle(p1,p2,p3)')
    compound.addPerBondParameter('kc')
    centroid = openmm.CustomCentroidBondForce(2, 'kg*distance(g1,g2)^2')
    centroid.addPerBondParameter('kg')
    for i in range(n - 1):
        bonds.addBond(i, i + 1, 0.15, 1000.0 + i)
        custom_bond.addBond(i, i + 1, [50.0 + i])
    for i in range(n - 2):
        angles.addAngle(i, i + 1, i + 2, 1.9, 100.0 + i)
        custom_angle.addAngle(i, i + 1, i + 2, [3.0 + i])
        compound.addBond([i, i + 1, i + 2], [2.0 + 0.1 * i])
    for i in range(n - 3):
        torsions.addTorsion(i, i + 1, i + 2, i + 3, 3, 0.3, 2.0 + i)
        rb.addTorsion(i, i + 1, i + 2, i + 3, 1.0 + i, 0.5, -0.7, 0.2, 0.1 * i, -0.05)
        custom_torsion.addTorsion(i, i + 1, i + 2, i + 3, [1.5 + i])
    for i in range(0, n - 1, 2):
        centroid.addGroup([i, i + 1], [1.0, 2.0])
    for g in range(centroid.getNumGroups() - 1):
        centroid.addBond([g, g + 1], [10.0 + g])
    cmap = openmm.CMAPTorsionForce()
    size = 12
    grid = [5 * math.sin(2 * math.pi * i / size) * math.cos(4 * math.pi * j / size) + 0.5 * math.cos(2 * math.pi * (i - j) / size)
            for j in range(size) for i in range(size)]
    cmap.addMap(size, grid)
    cmap.addMap(size, [0.0] * size * size)  # map 1: zero, used to switch terms off in the expectation
    for i in range(n - 4):
        cmap.addTorsion(0, i, i + 1, i + 2, i + 3, i + 1, i + 2, i + 3, i + 4)
    nonbonded = openmm.NonbondedForce()
    custom_nb = openmm.CustomNonbondedForce('4*eps*((0.3/r)^12-(0.3/r)^6)')
    custom_nb.addGlobalParameter('eps', 0.4)
    for i in range(n):
        nonbonded.addParticle(0.3 * (-1) ** i * (1 if i not in region else 0.5), 0.3, 0.5)
        custom_nb.addParticle([])
    nonbonded.createExceptionsFromBonds([(i, i + 1) for i in range(n - 1)], 0.5, 0.5)
    custom_nb.createExclusionsFromBonds([(i, i + 1) for i in range(n - 1)], 2)
    for force in (bonds, angles, torsions, rb, custom_bond, custom_angle, custom_torsion, compound, centroid, cmap,
                  nonbonded, custom_nb):
        system.addForce(force)
    return topology, system, positions, region


def _switch_off_region_terms(system, region):
    """The expected mixed MM system: region-internal terms with zero strength, region pairs excluded."""
    system = copy.deepcopy(system)
    inside = set(region)
    for force in system.getForces():
        name = force.__class__.__name__
        if name == 'HarmonicBondForce':
            for k in range(force.getNumBonds()):
                i, j, r0, kb = force.getBondParameters(k)
                if i in inside and j in inside:
                    force.setBondParameters(k, i, j, r0, 0.0)
        elif name == 'HarmonicAngleForce':
            for k in range(force.getNumAngles()):
                *p, a0, ka = force.getAngleParameters(k)
                if set(p) <= inside:
                    force.setAngleParameters(k, *p, a0, 0.0)
        elif name == 'PeriodicTorsionForce':
            for k in range(force.getNumTorsions()):
                *p, per, phase, kt = force.getTorsionParameters(k)
                if set(p) <= inside:
                    force.setTorsionParameters(k, *p, per, phase, 0.0)
        elif name == 'RBTorsionForce':
            for k in range(force.getNumTorsions()):
                p = force.getTorsionParameters(k)[:4]
                if set(p) <= inside:
                    force.setTorsionParameters(k, *p, 0, 0, 0, 0, 0, 0)
        elif name == 'CMAPTorsionForce':
            for k in range(force.getNumTorsions()):
                m, *p = force.getTorsionParameters(k)
                if set(p) <= inside:
                    force.setTorsionParameters(k, 1, *p)
        elif name in ('CustomBondForce', 'CustomAngleForce', 'CustomTorsionForce'):
            what = {'CustomBondForce': 'Bond', 'CustomAngleForce': 'Angle', 'CustomTorsionForce': 'Torsion'}[name]
            count = getattr(force, f'getNum{what}s')()
            for k in range(count):
                *p, params = getattr(force, f'get{what}Parameters')(k)
                if set(p) <= inside:
                    getattr(force, f'set{what}Parameters')(k, *p, [0.0])
        elif name == 'CustomCompoundBondForce':
            for k in range(force.getNumBonds()):
                p, params = force.getBondParameters(k)
                if set(p) <= inside:
                    force.setBondParameters(k, p, [0.0])
        elif name == 'CustomCentroidBondForce':
            for k in range(force.getNumBonds()):
                groups, params = force.getBondParameters(k)
                if all(set(force.getGroupParameters(g)[0]) <= inside for g in groups):
                    force.setBondParameters(k, groups, [0.0])
        elif name == 'NonbondedForce':
            pairs = {tuple(sorted(force.getExceptionParameters(k)[:2])): k for k in range(force.getNumExceptions())}
            for i in region:
                for j in region:
                    if i < j:
                        if (i, j) in pairs:
                            force.setExceptionParameters(pairs[(i, j)], i, j, 0.0, 1.0, 0.0)
                        else:
                            force.addException(i, j, 0.0, 1.0, 0.0)
        elif name == 'CustomNonbondedForce':
            excluded = {tuple(sorted(force.getExclusionParticles(k))) for k in range(force.getNumExclusions())}
            for i in region:
                for j in region:
                    if i < j and (i, j) not in excluded:
                        force.addExclusion(i, j)
    return system


def test_every_force_type():
    """All bonded force types (native and custom, CMAP, centroid) and both nonbonded forces: the mixed MM part
    equals the system with region-internal terms switched off, force by force; lambda=0 equals the original,
    lambda=1 the mixed system, and dU/dlambda = U_NNP - U_MM(region)."""
    topology, system, positions, region = _chain_system()
    for k, force in enumerate(system.getForces()):
        force.setForceGroup(k)
    potential = NNPotential(ToyModel(), precision='double')
    mixed = potential.createMixedSystem(topology, system, region, forceGroup=31, allowCutBonds=True)
    expected = _switch_off_region_terms(system, region)
    for k, force in enumerate(system.getForces()):
        e_mixed, f_mixed, _ = evaluate(mixed, positions, groups=1 << k)
        e_expected, f_expected, _ = evaluate(expected, positions, groups=1 << k)
        e_original, _, _ = evaluate(system, positions, groups=1 << k)
        assert e_mixed == pytest.approx(e_expected, abs=1e-9, rel=1e-12), force.__class__.__name__
        assert np.abs(f_mixed - f_expected).max() < 1e-8, force.__class__.__name__
        assert abs(e_original - e_expected) > 1e-3, f'{force.__class__.__name__}: test term has no region part'

    interpolating = potential.createMixedSystem(topology, system, region, forceGroup=31, allowCutBonds=True,
                                                interpolate=True, lambdaName='lam')
    e_mm, f_mm, _ = evaluate(system, positions)
    e_mix, f_mix, _ = evaluate(mixed, positions)
    e0, f0, _ = evaluate(interpolating, positions, parameters={'lam': 0.0})
    e1, f1, d1 = evaluate(interpolating, positions, parameters={'lam': 1.0}, derivatives=True)
    # CMAP is re-expressed as a periodic bicubic spline table (Continuous2DFunction); OpenMM fits both from
    # the same grid with periodic splines, so they agree to round-off.
    assert e0 == pytest.approx(e_mm, abs=1e-8, rel=1e-10)
    assert np.abs(f0 - f_mm).max() < 1e-6
    assert e1 == pytest.approx(e_mix, abs=1e-8, rel=1e-10)
    assert np.abs(f1 - f_mix).max() < 1e-8
    e_nnp = float(ToyModel()(torch.tensor(np.asarray(positions)[region])))
    assert d1['lam'] == pytest.approx(e_nnp - (e_mm - (e_mix - e_nnp)), abs=1e-7)


def test_custom_nonbonded_interaction_groups():
    """A CustomNonbondedForce restricted to interaction groups: region pairs excluded, and lambda=0 (whose copy
    keeps only the groups' region-region parts) reproduces the MM energy."""
    topology, system, positions, region = _chain_system()
    for k in reversed(range(system.getNumForces())):
        if not isinstance(system.getForce(k), openmm.CustomNonbondedForce):
            system.removeForce(k)
    system.getForce(0).addInteractionGroup([0, 1, 2, 3, 4], [3, 4, 5, 6, 7, 8, 9])
    system.getForce(0).addInteractionGroup([5], [6, 9])
    potential = NNPotential(ToyModel(), precision='double')
    mixed = potential.createMixedSystem(topology, system, region, interpolate=True, allowCutBonds=True, forceGroup=1)
    e_mm, f_mm, _ = evaluate(system, positions)
    e0, f0, _ = evaluate(mixed, positions, parameters={'lambda_interpolate': 0.0})
    e1, _, _ = evaluate(mixed, positions, parameters={'lambda_interpolate': 1.0}, groups=1)
    # Expected mixed MM energy: only group pairs with at least one atom outside the region.
    x = np.asarray(positions)
    pairs = {tuple(sorted((i, j))) for i in [0, 1, 2, 3, 4] for j in [3, 4, 5, 6, 7, 8, 9] if i != j}
    pairs |= {(5, 6), (5, 9)}
    pairs = [(i, j) for i, j in pairs if abs(i - j) > 2 and not (i in region and j in region)]  # minus exclusions
    r = np.array([np.linalg.norm(x[i] - x[j]) for i, j in pairs])
    assert e1 == pytest.approx(np.sum(4 * 0.4 * ((0.3 / r) ** 12 - (0.3 / r) ** 6)), rel=1e-10)
    assert e0 == pytest.approx(e_mm, abs=1e-10, rel=1e-10)
    assert np.abs(f0 - f_mm).max() < 1e-8


@pytest.mark.parametrize('method', ['CutoffNonPeriodic', 'CutoffPeriodic', 'Ewald', 'PME'])
def test_interpolation_nonbonded_methods(method):
    """lambda=0 reproduces the MM system for every NonbondedForce method, with a switching function, a cutoff
    shorter than some region pairs (so the beyond-cutoff erf terms matter), and reaction field."""
    topology, system, positions, region = _chain_system()
    system = copy.deepcopy(system)
    for k in reversed(range(system.getNumForces())):
        if not isinstance(system.getForce(k), openmm.NonbondedForce):
            system.removeForce(k)
    nb = system.getForce(0)
    nb.setNonbondedMethod(getattr(openmm.NonbondedForce, method))
    nb.setCutoffDistance(0.4)
    nb.setUseSwitchingFunction(True)
    nb.setSwitchingDistance(0.33)
    nb.setUseDispersionCorrection(True)
    system.setDefaultPeriodicBoxVectors(openmm.Vec3(2.0, 0, 0), openmm.Vec3(0, 2.0, 0), openmm.Vec3(0, 0, 2.0))
    assert max_region_distance(positions * unit.nanometer, region) > 0.4
    potential = NNPotential(ToyModel(), precision='double')
    mixed = potential.createMixedSystem(topology, system, region, interpolate=True, allowCutBonds=True)
    e_mm, f_mm, _ = evaluate(system, positions)
    e0, f0, _ = evaluate(mixed, positions, parameters={'lambda_interpolate': 0.0})
    assert e0 == pytest.approx(e_mm, abs=1e-8, rel=1e-10)
    assert np.abs(f0 - f_mm).max() < 1e-6


# ---------------------------------------------------------------- periodic boundary, serialization, dynamics

@pytest.fixture(scope='module')
def toluene_single():
    """Toluene in water, single-precision ANI-2x on the toluene (NNP in force group 1)."""
    if not TOLUENE_DIR.exists():
        pytest.skip(f'shared test data {TOLUENE_DIR} not found (expected at <repo>/../shared)')
    topology, system, positions, selection = _toluene()
    mixed = NNPotential('ani2x').createMixedSystem(topology, system, selection, forceGroup=1)
    return topology, system, positions, mixed


@needs(TOLUENE_DIR)
def test_region_across_periodic_boundary(ani_double):
    """Toluene centred on a box corner, so it straddles three faces.

    * Each toluene atom wrapped into the box separately (the ring split across the box): the NNP, made whole
      through the region's bonds, gives the same energy and forces as for the intact molecule, and TorchANI's.
    * OpenMM treats the toluene as one molecule (NNPForce bonds; its MM bonds and constraints are gone):
      wrapping with enforcePeriodicBox keeps it whole, and the energy of the wrapped state is unchanged.
    (OpenMM's MM terms, e.g. PME exclusion corrections, expect molecules whole, so the total energy is only
    compared for whole molecules.)"""
    topology, system, positions, selection = _toluene()
    mixed = ani_double.createMixedSystem(topology, system, selection, forceGroup=1)
    region = [a.index for a in topology.atoms() if a.residue.name == 'MBN']
    lengths = np.array([v.value_in_unit(unit.nanometer)[k] for k, v in enumerate(system.getDefaultPeriodicBoxVectors())])
    x = np.asarray(positions.value_in_unit(unit.nanometer))
    shifted = x - x[region].mean(axis=0) - 0.05   # toluene centred just outside the corner (0, 0, 0)
    split = shifted.copy()                        # each toluene atom into [0, L): the ring is split
    split[region] -= np.floor(shifted[region] / lengths) * lengths
    assert np.ptp(split[region], axis=0).max() > 0.5 * lengths.min()
    n_whole, nf_whole, _ = evaluate(mixed, shifted, groups=1 << 1)
    n_split, nf_split, _ = evaluate(mixed, split, groups=1 << 1)
    assert n_split == pytest.approx(n_whole, abs=1e-6, rel=1e-12)
    assert np.abs(nf_split - nf_whole).max() < 1e-6
    e_ani, f_ani = torchani_energy_forces('ani2x', [a.element.atomic_number for a in topology.atoms()
                                                    if a.residue.name == 'MBN'], shifted[region])
    assert n_split == pytest.approx(e_ani, abs=1e-6, rel=1e-12)
    assert np.abs(nf_split[region] - f_ani).max() < NNP_FORCE_TOL

    context = openmm.Context(mixed, openmm.VerletIntegrator(0.001), REFERENCE)
    context.setPositions(shifted)
    state = context.getState(getPositions=True, getEnergy=True, enforcePeriodicBox=True)
    wrapped = state.getPositions(asNumpy=True).value_in_unit(unit.nanometer)
    assert np.ptp(wrapped[region], axis=0).max() < 0.8  # still whole
    assert not np.allclose(wrapped[region], shifted[region])  # but moved by a box vector
    e_wrapped, _, _ = evaluate(mixed, wrapped)
    assert e_wrapped == pytest.approx(state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole), abs=1e-3)


@needs(TOLUENE_DIR)
def test_serialization_and_reload(toluene_single, tmp_path):
    """The (interpolating) mixed system survives XmlSerializer: same energies and forces, NNPForce settings and
    lambda derivative, and it runs after reload."""
    topology, system, positions, _ = toluene_single
    mixed = NNPotential('ani2x').createMixedSystem(topology, system, 'resname MBN', interpolate=True, forceGroup=2,
                                                   removeConstraints=False)
    path = tmp_path / 'mixed.xml'
    path.write_text(openmm.XmlSerializer.serialize(mixed))
    reloaded = openmm.XmlSerializer.deserialize(path.read_text())
    nnp = [f for f in reloaded.getForces() if isinstance(f, NNPForce)]
    assert len(nnp) == 1 and nnp[0].getForceGroup() == 2 and nnp[0].getScaleParameter() == 'lambda_interpolate'
    assert nnp[0].usesPeriodicBoundaryConditions() and len(nnp[0].getBonds()) == 15
    e1, f1, d1 = evaluate(mixed, positions, parameters={'lambda_interpolate': 0.5}, derivatives=True)
    e2, f2, d2 = evaluate(reloaded, positions, parameters={'lambda_interpolate': 0.5}, derivatives=True)
    assert e2 == pytest.approx(e1, abs=1e-6, rel=1e-12)
    assert np.abs(f2 - f1).max() < 1e-6
    assert d2['lambda_interpolate'] == pytest.approx(d1['lambda_interpolate'], rel=1e-12)
    integrator = openmm.LangevinMiddleIntegrator(300, 1.0, 0.001)
    context = openmm.Context(reloaded, integrator, openmm.Platform.getPlatformByName('CPU'))
    context.setPositions(positions)
    integrator.step(10)
    state = context.getState(getEnergy=True, getPositions=True)
    assert np.isfinite(state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole))
    assert np.all(np.isfinite(state.getPositions(asNumpy=True).value_in_unit(unit.nanometer)))


@needs(TOLUENE_DIR)
def test_dynamics_stay_finite_and_thermalized(toluene_single):
    """200 fs of Langevin dynamics (1 fs, 300 K) with a multiple-time-step integrator (NNP group once per step,
    MM group twice): energies finite, temperature back near 300 K, the toluene's bonds intact."""
    topology, system, positions, mixed = toluene_single
    mixed = copy.deepcopy(mixed)
    for force in mixed.getForces():
        if isinstance(force, NNPForce):
            force.setProperty('numThreads', '1')  # robust timing on a busy 2-core CI machine
    region = [a.index for a in topology.atoms() if a.residue.name == 'MBN']
    integrator = openmm.MTSLangevinIntegrator(300 * unit.kelvin, 20.0 / unit.picosecond, 1.0 * unit.femtosecond,
                                              [(1, 1), (0, 2)])
    context = openmm.Context(mixed, integrator, openmm.Platform.getPlatformByName('CPU'))
    context.setPositions(positions)
    context.setVelocitiesToTemperature(300 * unit.kelvin, 1)
    dof = 3 * mixed.getNumParticles() - mixed.getNumConstraints() - 3
    gas_constant = unit.MOLAR_GAS_CONSTANT_R.value_in_unit(unit.kilojoule_per_mole / unit.kelvin)
    temperatures = []
    for _ in range(10):
        integrator.step(20)
        state = context.getState(getEnergy=True)
        assert np.isfinite(state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole))
        temperatures.append(2 * state.getKineticEnergy().value_in_unit(unit.kilojoule_per_mole) / (dof * gas_constant))
    # The input structure is minimized, so half the initial kinetic energy first flows into the potential
    # (T -> ~150 K); the thermostat (20/ps) restores 300 K with a ~0.05-0.1 ps time constant. T fluctuations of
    # 6,495 atoms are ~3 K.
    print(f'temperatures (K) every 20 fs: {np.round(temperatures, 1)}')
    assert abs(np.mean(temperatures[-3:]) - 300) < 25
    x = context.getState(getPositions=True).getPositions(asNumpy=True).value_in_unit(unit.nanometer)
    bonds = [(a.index, b.index) for a, b in topology.bonds() if a.residue.name == 'MBN']
    lengths = [np.linalg.norm(x[i] - x[j]) for i, j in bonds]
    assert 0.09 < min(lengths) and max(lengths) < 0.17  # C-H ~0.11 nm, C-C ~0.14-0.15 nm


# ---------------------------------------------------------------- validation errors

@pytest.fixture(scope='module')
def ani2x():
    return NNPotential('ani2x')


def _two_atom(elements, charges):
    topology = app.Topology()
    residue = topology.addResidue('X', topology.addChain())
    for k, e in enumerate(elements):
        topology.addAtom(f'A{k}', app.element.Element.getBySymbol(e), residue)
    system = openmm.System()
    nb = openmm.NonbondedForce()
    for q in charges:
        system.addParticle(10.0)
        nb.addParticle(q, 0.3, 0.1)
    system.addForce(nb)
    return topology, system


@needs(TOLUENE_DIR)
@pytest.mark.parametrize('atoms, message', [
    ([], 'empty'),
    ([0, 1, 99999], 'out of range'),
    ([-1], 'out of range'),
    ([0, 1, 1], 'more than once'),
    ([0.5], 'integer'),
    ('resname XYZ', 'matches no atoms'),
    ('resname ((', 'could not be evaluated'),
    (None, 'No NNP region'),
])
def test_bad_region(ani2x, atoms, message):
    topology, system, _, _ = _toluene()
    with pytest.raises(ValueError, match=message):
        ani2x.createMixedSystem(topology, system, atoms)


def test_unsupported_elements_are_named(ani2x):
    topology, system = _two_atom(['C', 'Na', 'Zn'], [0.0, 1.0, -1.0])
    with pytest.raises(ValueError, match=r'ANI-2x does not support the element\(s\) Na, Zn'):
        ani2x.createMixedSystem(topology, system, [0, 1, 2])
    topology, system = _two_atom(['C', 'S'], [0.0, 0.0])
    with pytest.raises(ValueError, match=r'ANI-1x does not support the element\(s\) S'):
        NNPotential('ani1x').createMixedSystem(topology, system, [0, 1])
    NNPotential('ani2x').createMixedSystem(topology, system, [0, 1])  # ANI-2x has sulfur


def test_charged_region(ani2x):
    topology, system = _two_atom(['C', 'O', 'H'], [0.3, -0.5, 0.4])
    with pytest.raises(ValueError, match=r'net MM charge of \+0.2000 e'):
        ani2x.createMixedSystem(topology, system, [0, 1, 2])
    # Models of unknown training data are not checked.
    NNPotential(ToyModel()).createMixedSystem(topology, system, [0, 1, 2])


@needs(ALANINE_PDB)
def test_cut_bonds(ani2x):
    topology, system, positions, _ = _alanine()
    with pytest.raises(ValueError, match=r'cuts 2 covalent bond\(s\).*allowCutBonds=True'):
        ani2x.createMixedSystem(topology, system, 'resname ALA')
    mixed = ani2x.createMixedSystem(topology, system, 'resname ALA', allowCutBonds=True)
    assert any(isinstance(f, NNPForce) for f in mixed.getForces())


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match='neither a registered model name'):
        NNPotential('ani3x')
    with pytest.raises(ValueError, match="precision must be 'single' or 'double'"):
        NNPotential('ani2x', precision='half')
    bad = tmp_path / 'bad.pt'
    bad.write_bytes(b'not a model')
    with pytest.raises(ValueError, match='torch.jit.load'):
        NNPotential(str(bad))
    topology, system, positions, region = _chain_system()
    with pytest.raises(ValueError, match='already has a global parameter'):
        NNPotential(ToyModel()).createMixedSystem(topology, system, region, allowCutBonds=True, interpolate=True,
                                                  lambdaName='eps')
    system.addForce(openmm.CustomHbondForce('r'))
    with pytest.raises(ValueError, match='CustomHbondForce'):
        NNPotential(ToyModel()).createMixedSystem(topology, system, region, allowCutBonds=True)
    with pytest.raises(ValueError, match='particles'):
        topology, system = _two_atom(['C', 'O'], [0.0, 0.0])
        system.addParticle(1.0)
        NNPotential(ToyModel()).createMixedSystem(topology, system, [0, 1])


def test_keep_constraints():
    topology, system, positions, region = _chain_system()
    system.addConstraint(3, 4, 0.15)   # inside the region
    system.addConstraint(0, 1, 0.15)   # outside
    potential = NNPotential(ToyModel())
    removed = potential.createMixedSystem(topology, system, region, allowCutBonds=True)
    kept = potential.createMixedSystem(topology, system, region, allowCutBonds=True, removeConstraints=False)
    assert [removed.getConstraintParameters(k)[:2] for k in range(removed.getNumConstraints())] == [[0, 1]]
    assert kept.getNumConstraints() == 2


@needs(TOLUENE_DIR)
def test_interpolation_refuses_unbound_constraints():
    """With constraints=HBonds the force field leaves no bond term for X-H bonds: removing the region's
    constraints would leave those hydrogens unbound at lambda = 0, so interpolate=True refuses (plain
    mixed systems may remove them: the NNP binds the hydrogens)."""
    topology, system, _, selection = _toluene()
    potential = NNPotential(ToyModel())
    with pytest.raises(ValueError, match='constraints=None'):
        potential.createMixedSystem(topology, system, selection, interpolate=True)
    kept = potential.createMixedSystem(topology, system, selection, interpolate=True, removeConstraints=False)
    assert kept.getNumConstraints() == system.getNumConstraints()
    mixed = potential.createMixedSystem(topology, system, selection)
    assert mixed.getNumConstraints() == system.getNumConstraints() - 8
