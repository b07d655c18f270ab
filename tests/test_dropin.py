"""openmm-nnp as a drop-in for openmm-ml and openmm-torch, and the model registry.

* NNPForce takes openmm-torch's constructor forms (a dict of properties as second argument, atoms= and
  properties= keywords) and getModule(); OpenMM hands back the exported NNPForce class everywhere.
* NNPotential takes openmm-ml's signatures, its interpolation parameter name (lambda_interpolate, with
  dU/dlambda) and its ANI option modelIndex; unknown options and embeddings are errors that name them.
* The openmm-ml plugin: openmmml.MLPotential('nnp-ani2x') builds the System NNPotential('ani2x') builds.
* The registry: names, the ModelSpec interface, third-party entries via the openmm_nnp.models entry point.

Energies of the same System on the same platform are compared exactly; against TorchANI, double precision
(1e-6 kJ/mol); against openmm-ml's own ANI (TorchANI in float32), 1 kJ/mol.
"""

import copy
import importlib.metadata
import json
import pickle
import subprocess
import sys
import textwrap
import xml.etree.ElementTree as ElementTree

import numpy as np
import openmm
import openmm.app as app
import openmm.unit as unit
import pytest
import torch

from openmm_nnp import NNPForce, NNPotential
from openmm_nnp.models import registry
from test_builders import ALANINE_PDB, REPO, TOLUENE_DIR, evaluate, needs, torchani_energy_forces

REFERENCE = openmm.Platform.getPlatformByName('Reference')
PLUGIN_NAMES = ['nnp', 'nnp-ani1x', 'nnp-ani1ccx', 'nnp-ani2x']


class SquareModel(torch.nn.Module):
    """E = sum of squared coordinates (kJ/mol, nm), as openmm-torch's test models."""

    def forward(self, positions):
        return (positions ** 2).sum()


class ScaledSquareModel(torch.nn.Module):
    def __init__(self, factor: float):
        super().__init__()
        self.factor = float(factor)

    def forward(self, positions):
        return self.factor * (positions ** 2).sum()


def cloud(n=5, seed=0):
    rng = np.random.default_rng(seed)
    system = openmm.System()
    for _ in range(n):
        system.addParticle(1.0)
    return system, rng.random((n, 3))


# ---------------------------------------------------------------- NNPForce: openmm-torch's forms

def test_nnpforce_openmm_torch_constructor_forms(tmp_path):
    path = tmp_path / 'square.pt'
    torch.jit.script(SquareModel()).save(str(path))
    forces = [NNPForce(str(path), {'useCUDAGraphs': 'false'}),
              NNPForce(torch.jit.load(str(path)), {'useCUDAGraphs': 'false'}),
              NNPForce(SquareModel(), properties={'useCUDAGraphs': 'false'}),
              NNPForce(str(path), atoms=None, properties={'useCUDAGraphs': 'false'})]
    for force in forces:
        assert force.getProperties()['useCUDAGraphs'] == 'false'
        assert list(force.getAtoms()) == []
        system, x = cloud()
        system.addForce(force)
        energy, forces_, _ = evaluate(system, x)
        assert energy == pytest.approx(np.sum(x * x), rel=1e-12)
        assert np.allclose(forces_, -2 * x, rtol=1e-12, atol=0)
    # Our own form and keywords: atoms positional or by name, with properties.
    force = NNPForce(SquareModel(), [3, 1], {'numThreads': '1'})
    assert list(force.getAtoms()) == [3, 1] and force.getProperties()['numThreads'] == '1'
    force = NNPForce(model=SquareModel(), atoms=np.array([0, 2]), properties={'dtype': 'float64'})
    assert list(force.getAtoms()) == [0, 2] and force.getProperties()['dtype'] == 'float64'
    # getModule (openmm-torch) and getModel (ours): the same module.
    module = force.getModule()
    assert isinstance(module, torch.jit.ScriptModule)
    x = torch.rand(4, 3, dtype=torch.float64)
    assert float(module(x)) == pytest.approx(float(force.getModel()(x)), rel=0) == pytest.approx(float((x * x).sum()))
    NNPForce(module)  # openmm-torch's TestTorchForce: a module from getModule builds a force again


@pytest.mark.parametrize('atoms, problem', [
    (['useCUDAGraphs'], r"item 0 is 'useCUDAGraphs' \(str\)"),
    ([0, 1.5], r'item 1 is 1.5 \(float\)'),
    ([True], r'item 0 is True \(bool\)'),
    ('0 1 2', r'not str'),
    (7, r'not int'),
])
def test_nnpforce_rejects_non_integer_atoms(atoms, problem):
    with pytest.raises(TypeError, match=r'^NNPForce: atoms must be .*' + problem):
        NNPForce(SquareModel(), atoms)


def test_nnpforce_bad_properties():
    with pytest.raises(TypeError, match='properties are given twice'):
        NNPForce(SquareModel(), {'numThreads': '1'}, properties={'numThreads': '2'})
    with pytest.raises(TypeError, match='properties must be a dict'):
        NNPForce(SquareModel(), properties=[('numThreads', '1')])
    with pytest.raises(openmm.OpenMMException, match="unknown property 'noSuchProperty'"):
        NNPForce(SquareModel(), {'noSuchProperty': '1'})


def test_openmm_hands_back_the_exported_class():
    """System.getForce, CustomCVForce.getCollectiveVariable, XmlSerializer, copy and pickle all give
    openmm_nnp.NNPForce, with getModule."""
    force = NNPForce(SquareModel(), [0, 1], {'numThreads': '1'})
    system, x = cloud()
    system.addForce(force)
    cv = openmm.CustomCVForce('2*e')
    cv.addCollectiveVariable('e', NNPForce(SquareModel(), [2, 3]))
    system.addForce(cv)
    copies = [system.getForce(0), cv.getCollectiveVariable(0),
              openmm.XmlSerializer.deserialize(openmm.XmlSerializer.serialize(force)),
              copy.copy(force), copy.deepcopy(force), pickle.loads(pickle.dumps(force))]
    for other in copies:
        assert type(other) is NNPForce
        assert isinstance(other.getModule(), torch.jit.ScriptModule)
    energy, _, _ = evaluate(system, x)
    assert energy == pytest.approx(np.sum(x[:2] ** 2) + 2 * np.sum(x[2:4] ** 2), rel=1e-12)


# ---------------------------------------------------------------- NNPotential: openmm-ml's signatures

def toy_topology(n=4):
    topology = app.Topology()
    residue = topology.addResidue('TOY', topology.addChain())
    atoms = [topology.addAtom(f'C{k}', app.element.carbon, residue) for k in range(n)]
    for a, b in zip(atoms[:-1], atoms[1:]):
        topology.addBond(a, b)
    return topology


def toy_mm_system(n=4):
    system = openmm.System()
    bonds = openmm.HarmonicBondForce()
    for k in range(n):
        system.addParticle(12.0)
    for k in range(n - 1):
        bonds.addBond(k, k + 1, 0.15, 1000.0)
    system.addForce(bonds)
    return system


def test_create_system_signature():
    """createSystem(topology, removeCMMotion=True, **args): positional removeCMMotion, model options as keywords."""
    topology = toy_topology()
    potential = NNPotential(SquareModel(), precision='double')
    with_remover = potential.createSystem(topology)
    without = potential.createSystem(topology, False)
    assert any(isinstance(f, openmm.CMMotionRemover) for f in with_remover.getForces())
    assert not any(isinstance(f, openmm.CMMotionRemover) for f in without.getForces())
    with pytest.raises(ValueError, match=r"Unknown option\(s\) 'modelIndex' for the model SquareModel"):
        potential.createSystem(topology, modelIndex=0)


def test_create_mixed_system_signature_and_lambda_interpolate():
    """openmm-ml's positional order (topology, system, atoms, removeConstraints, forceGroup, interpolate,
    embedding, returnInfo); the parameter is lambda_interpolate, with dU/dlambda; lambdaName renames it."""
    topology, system = toy_topology(), toy_mm_system()
    system.addConstraint(0, 1, 0.15)
    potential = NNPotential(SquareModel(), precision='double')
    info = potential.createMixedSystem(topology, system, [0, 1, 2, 3], False, 3, True, 'mechanical', True)
    assert set(info) == {'system', 'topology', 'oldToNew'}
    assert info['topology'] is topology and info['oldToNew'] == [0, 1, 2, 3]
    mixed = info['system']
    assert mixed.getNumConstraints() == 1  # removeConstraints=False
    nnp = [f for f in mixed.getForces() if isinstance(f, NNPForce)]
    assert len(nnp) == 1 and nnp[0].getForceGroup() == 3 and nnp[0].getScaleParameter() == 'lambda_interpolate'
    x = np.array([[0.0, 0, 0], [0.16, 0, 0], [0.3, 0.05, 0], [0.45, 0.05, 0.02]])
    e_mm, _, _ = evaluate(system, x)
    e_nnp = float(np.sum(x * x))
    for lam in (0.0, 0.4, 1.0):
        energy, _, derivatives = evaluate(mixed, x, parameters={'lambda_interpolate': lam}, derivatives=True)
        assert energy == pytest.approx((1 - lam) * e_mm + lam * e_nnp, abs=1e-9)
        assert derivatives['lambda_interpolate'] == pytest.approx(e_nnp - e_mm, abs=1e-9)
    renamed = potential.createMixedSystem(topology, system, [0, 1, 2, 3], interpolate=True, lambdaName='lam')
    _, _, derivatives = evaluate(renamed, x, parameters={'lam': 0.5}, derivatives=True)
    assert set(derivatives) == {'lam'}


def test_unknown_options_and_embeddings_are_named():
    topology, system = toy_topology(), toy_mm_system()
    potential = NNPotential(SquareModel())
    with pytest.raises(ValueError, match=r"Unsupported embedding 'electrostatic'.*'mechanical'"):
        potential.createMixedSystem(topology, system, [0, 1], embedding='electrostatic', allowCutBonds=True)
    with pytest.raises(ValueError, match=r"Unknown option\(s\) 'cutoff', 'device'.*accepts: none"):
        potential.createMixedSystem(topology, system, [0, 1], allowCutBonds=True, device='cpu', cutoff=1.0)
    with pytest.raises(ValueError, match=r"Unknown option\(s\) 'modelindex' for ANI-2x.*accepts: modelIndex"):
        NNPotential('ani2x', modelindex=0)
    with pytest.raises(ValueError, match='mlLongRange=True is not supported'):
        potential.createMixedSystem(topology, system, [0, 1], allowCutBonds=True, mlLongRange=True)
    potential.createMixedSystem(topology, system, [0, 1], allowCutBonds=True, mlLongRange=False)
    with pytest.raises(ValueError, match='modelIndex must be an integer from 0 to 7'):
        NNPotential('ani2x').createSystem(toy_topology(2), modelIndex=8)


@needs(TOLUENE_DIR)
def test_model_index_selects_one_ensemble_member():
    """modelIndex=k is member k of TorchANI's ensemble (openmm-ml's meaning), in the constructor or per call."""
    import torchani
    pdb = app.PDBFile(str(TOLUENE_DIR / 'toluene.pdb'))
    numbers = [a.element.atomic_number for a in pdb.topology.atoms()]
    x = pdb.positions.value_in_unit(unit.nanometer)
    ensemble = torchani.models.ANI2x(periodic_table_index=True).double()
    species = torch.tensor([numbers])
    coordinates = torch.tensor(np.asarray(x) * 10.0).unsqueeze(0)
    hartree = torchani.units.hartree2kjoulepermol(1.0)
    members = []
    for k in (0, 5):
        expected = float(ensemble[k]((species, coordinates)).energies) * hartree
        for system in (NNPotential('ani2x', precision='double', modelIndex=k).createSystem(pdb.topology),
                       NNPotential('ani2x', precision='double').createSystem(pdb.topology, modelIndex=k)):
            energy, _, _ = evaluate(system, x)
            assert energy == pytest.approx(expected, abs=1e-6, rel=1e-12)
        members.append(energy)
    mean, _ = torchani_energy_forces('ani2x', numbers, x)
    assert abs(members[0] - members[1]) > 0.01 and abs(members[0] - mean) > 0.01  # the members differ


# ---------------------------------------------------------------- the registry

class ChargedToySpec(registry.ModelSpec):
    """A third-party-style entry: carbon only, takes the region's net charge, one option."""

    name = 'toy-charged'
    label = 'Toy-Charged'
    description = 'E = (charge + scale) * sum x^2, for tests'
    elements = {'C'}
    supportsCharge = True
    options = {'scale': 'added to the charge'}

    def __init__(self):
        self.calls = []

    def createModule(self, atomicNumbers, dtype, charge=0, scale=0.0):
        self.calls.append((list(atomicNumbers), dtype, charge, scale))
        return torch.jit.script(ScaledSquareModel(charge + scale)).to(dtype)


@pytest.fixture
def toy_registered():
    spec = ChargedToySpec()
    registry.registerModel(spec)
    yield spec
    del registry._registry[registry.modelKey(spec.name)]


def test_builtin_entries():
    models = registry.registeredModels()
    assert {'ani1x', 'ani1ccx', 'ani2x'} <= set(models)
    spec = registry.findModel('ANI-2x')
    assert spec is models['ani2x'] and registry.findModel('ani_1ccx') is models['ani1ccx']
    assert spec.elements == {'H', 'C', 'N', 'O', 'F', 'S', 'Cl'} and spec.supportsCharge is False
    assert 'modelIndex' in spec.options and spec.label == 'ANI-2x' and spec.description
    assert registry.findModel('ani3x') is None
    user = registry.resolveModel(SquareModel())
    assert isinstance(user, registry.TorchScriptModelSpec) and user.elements is None and user.supportsCharge is None


def test_registered_model_gets_elements_charge_and_options(toy_registered):
    topology = toy_topology(3)
    system = toy_mm_system(3)
    nonbonded = openmm.NonbondedForce()
    for q in (0.6, 0.5, 0.9):
        nonbonded.addParticle(q, 0.3, 0.1)
    system.addForce(nonbonded)
    potential = NNPotential('TOY_CHARGED', precision='double', scale=0.5)
    mixed = potential.createMixedSystem(topology, system, [0, 1, 2], forceGroup=1)
    assert toy_registered.calls[-1] == ([6, 6, 6], torch.float64, 2, 0.5)  # net MM charge 2.0 e, rounded
    x = np.array([[0.1, 0, 0], [0.2, 0.1, 0], [0.3, 0, 0.1]])
    energy, _, _ = evaluate(mixed, x, groups=1 << 1)
    assert energy == pytest.approx(2.5 * np.sum(x * x), rel=1e-12)
    potential.createSystem(topology, scale=1.0)
    assert toy_registered.calls[-1] == ([6, 6, 6], torch.float64, 0, 1.0)  # no MM System: charge 0
    topology = app.Topology()
    residue = topology.addResidue('X', topology.addChain())
    topology.addAtom('N1', app.element.nitrogen, residue)
    with pytest.raises(ValueError, match=r'Toy-Charged does not support the element\(s\) N'):
        potential.createSystem(topology)
    with pytest.raises(ValueError, match='already registered'):
        registry.registerModel(ChargedToySpec())


def test_entry_point_models(tmp_path, monkeypatch):
    """A package that declares an openmm_nnp.models entry point adds its model; a broken one is skipped with a
    warning that names it."""
    (tmp_path / 'thirdparty_nnp.py').write_text(textwrap.dedent('''
        from openmm_nnp.models.registry import ModelSpec

        class ThirdPartySpec(ModelSpec):
            name = 'third-party'
            description = 'registered from an entry point'

            def createModule(self, atomicNumbers, dtype, charge=0):
                raise NotImplementedError
    '''))
    info = tmp_path / 'thirdparty_nnp-1.0.dist-info'
    info.mkdir()
    (info / 'METADATA').write_text('Metadata-Version: 2.1\nName: thirdparty-nnp\nVersion: 1.0\n')
    (info / 'entry_points.txt').write_text('[openmm_nnp.models]\nthird = thirdparty_nnp:ThirdPartySpec\n'
                                           'broken = thirdparty_nnp:NoSuchThing\n')
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(registry, '_entryPointsLoaded', False)
    monkeypatch.setattr(registry, '_registry', dict(registry._registry))
    with pytest.warns(UserWarning, match="entry point 'broken = thirdparty_nnp:NoSuchThing'"):
        spec = registry.findModel('Third-Party')
    assert type(spec).__name__ == 'ThirdPartySpec' and NNPotential('third-party').spec is spec


def test_user_models_load_in_one_place(tmp_path):
    """NNPotential and NNPForce read files and compile modules through openmm_nnp.models.torchscript: the same
    errors, named after the caller."""
    bad = tmp_path / 'bad.pt'
    bad.write_bytes(b'not a model')
    for owner, make in (('NNPotential', NNPotential), ('NNPForce', NNPForce)):
        with pytest.raises(ValueError, match=f'^{owner}: the model file .* not a TorchScript module'):
            make(str(bad))
        with pytest.raises(FileNotFoundError if owner == 'NNPForce' else ValueError, match=f'^{owner}: '):
            make(str(tmp_path / 'missing.pt'))
        with pytest.raises(TypeError, match=f'^{owner}: the model must be'):
            make(3.5)


# ---------------------------------------------------------------- the openmm-ml plugin

@pytest.fixture(scope='module')
def MLPotential():
    """openmm-ml's MLPotential with our potentials: registered by the entry points of the installed package,
    or here when the installed metadata is an older build's."""
    openmmml = pytest.importorskip('openmmml')
    import openmm_nnp_openmmml
    for name in PLUGIN_NAMES:
        if name not in openmmml.MLPotential._implFactories:
            openmmml.MLPotential.registerImplFactory(name, openmm_nnp_openmmml.NNPPotentialImplFactory())
    return openmmml.MLPotential


def _alanine_no_constraints():
    pdb = app.PDBFile(str(ALANINE_PDB))
    system = app.ForceField('amber14-all.xml', 'amber14/tip3pfb.xml').createSystem(
        pdb.topology, nonbondedMethod=app.PME, nonbondedCutoff=0.9 * unit.nanometer, constraints=None)
    return pdb, system, [a.index for a in next(pdb.topology.chains()).atoms()]


def _without_model_bytes(system):
    """The System's XML with NNPForce model bytes blanked (scripting the same model twice need not give the
    same archive bytes; the energies are compared instead)."""
    root = ElementTree.fromstring(openmm.XmlSerializer.serialize(system))
    for force in root.iter('Force'):
        for key in list(force.attrib):
            if key.lower().startswith('model'):
                force.attrib[key] = ''
        for child in list(force):
            if child.tag.lower().startswith('model'):
                child.text, child.attrib = '', {}
    return ElementTree.tostring(root, encoding='unicode')


@needs(ALANINE_PDB)
def test_openmm_ml_plugin_builds_our_system(MLPotential):
    """MLPotential('nnp-ani2x').createMixedSystem(...) is NNPotential('ani2x').createMixedSystem(...): the same
    XML (model bytes aside), the same energies and dU/dlambda; it agrees with openmm-ml's own ANI-2x."""
    pdb, system, atoms = _alanine_no_constraints()
    assert 'mechanical' in MLPotential('nnp-ani2x').getSupportedEmbeddings()
    theirs = MLPotential('nnp-ani2x', precision='double').createMixedSystem(pdb.topology, system, atoms,
                                                                            interpolate=True)
    ours = NNPotential('ani2x', precision='double').createMixedSystem(pdb.topology, system, atoms, interpolate=True)
    assert _without_model_bytes(theirs) == _without_model_bytes(ours)
    for lam in (0.0, 0.5, 1.0):
        a = evaluate(theirs, pdb.positions, parameters={'lambda_interpolate': lam}, derivatives=True)
        b = evaluate(ours, pdb.positions, parameters={'lambda_interpolate': lam}, derivatives=True)
        assert a[0] == b[0] and np.array_equal(a[1], b[1]) and a[2] == b[2]
    # openmm-ml's own ANI-2x (TorchANI in float32 through a PythonForce): energies only (its 1.8 forces are
    # 10x too small). Differences are float32 round-off of ~1e6 kJ/mol ANI energies.
    reference = MLPotential('ani2x').createMixedSystem(pdb.topology, system, atoms, interpolate=True)
    for lam in (0.0, 1.0):
        e_ref = evaluate(reference, pdb.positions, parameters={'lambda_interpolate': lam})[0]
        e_ours = evaluate(ours, pdb.positions, parameters={'lambda_interpolate': lam})[0]
        assert e_ours == pytest.approx(e_ref, abs=1.0, rel=0)


@needs(TOLUENE_DIR)
def test_openmm_ml_plugin_create_system_and_options(MLPotential, tmp_path):
    pdb = app.PDBFile(str(TOLUENE_DIR / 'toluene.pdb'))
    theirs = MLPotential('nnp-ani1ccx', precision='double').createSystem(pdb.topology, modelIndex=2)
    ours = NNPotential('ani1ccx', precision='double', modelIndex=2).createSystem(pdb.topology)
    assert [type(f) for f in theirs.getForces()] == [NNPForce, openmm.CMMotionRemover]
    assert evaluate(theirs, pdb.positions)[0] == evaluate(ours, pdb.positions)[0]
    path = tmp_path / 'square.pt'
    torch.jit.script(SquareModel()).save(str(path))
    system = MLPotential('nnp', model=str(path), precision='double').createSystem(pdb.topology)
    x = pdb.positions.value_in_unit(unit.nanometer)
    assert evaluate(system, x)[0] == pytest.approx(np.sum(np.asarray(x) ** 2), rel=1e-12)
    with pytest.raises(ValueError, match=r"MLPotential\('nnp'\) needs the model"):
        MLPotential('nnp')
    with pytest.raises(ValueError, match=r"Unknown option\(s\) 'foo' for ANI-2x"):
        MLPotential('nnp-ani2x', foo=1)
    with pytest.raises(ValueError, match="Unsupported embedding 'mechanical-ish'"):
        NNPotential('ani2x').createMixedSystem(pdb.topology, openmm.System(), [0], embedding='mechanical-ish')


def test_openmm_ml_plugin_imports_cheaply():
    """`import openmmml` imports every registered plugin: ours imports neither torch nor openmm_nnp (nor openmm-ml,
    so that importing it first is no circular import)."""
    code = textwrap.dedent('''
        import sys, json
        import openmm_nnp_openmmml
        loaded = {name: name in sys.modules for name in ('torch', 'openmm_nnp', 'openmmml')}
        import openmmml
        loaded['registered'] = 'nnp-ani2x' in openmmml.MLPotential._implFactories
        print(json.dumps(loaded))
    ''')
    pytest.importorskip('openmmml')
    result = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, cwd=REPO,
                            env={'PYTHONPATH': str(REPO), 'PATH': ''}, timeout=120)
    assert result.returncode == 0, result.stderr
    loaded = json.loads(result.stdout)
    assert not loaded['torch'] and not loaded['openmm_nnp'] and not loaded['openmmml']
    print('registered through the installed entry points:', loaded['registered'])


def test_openmm_ml_entry_points_are_declared():
    """setup.py declares the openmmml.potentials entry points; an installed build of this checkout has them."""
    setup = (REPO / 'setup.py').read_text()
    assert "'openmmml.potentials'" in setup and 'openmm_nnp_openmmml:NNPPotentialImplFactory' in setup
    for name in PLUGIN_NAMES:
        assert f"'{name}'" in setup
    try:
        distribution = importlib.metadata.distribution('openmm-nnp')
    except importlib.metadata.PackageNotFoundError:
        pytest.skip('openmm-nnp is not installed')
    direct = distribution.read_text('direct_url.json')
    if direct is None or json.loads(direct).get('url') != REPO.as_uri():
        pytest.skip(f'the installed openmm-nnp is not an editable install of {REPO}')
    declared = {ep.name: ep.value for ep in distribution.entry_points if ep.group == 'openmmml.potentials'}
    assert declared == {name: 'openmm_nnp_openmmml:NNPPotentialImplFactory' for name in PLUGIN_NAMES}
