"""Mechanical embedding: take the region-internal interactions out of an MM System.

``embedRegion`` returns a copy of an MM System in which every interaction among region atoms only is
gone, so that an NNP added for the region replaces exactly those interactions:

* bonded terms (bonds, angles, torsions, CMAP, custom bonded forces) whose particles all lie in the
  region are removed; terms that cross the region boundary stay;
* region-region pairs become exclusions: zero exceptions in NonbondedForce, exclusions in every
  CustomNonbondedForce. Region-environment Coulomb and Lennard-Jones stay MM;
* constraints between region atoms are removed unless asked to keep them.

With Ewald or PME, making a pair an exception also subtracts its reciprocal-space interaction
(OpenMM's exclusion correction), so the removed energy of a pair at distance r is exactly
q_i q_j / (4 pi eps0 r) plus its Lennard-Jones energy when r is inside the cutoff (the direct-space
erfc part plus the erf part of the correction), and only the erf part beyond the cutoff.

``regionMMTerms`` returns exactly the removed terms as Custom*Forces whose energies are multiplied by a
prefactor. Interpolation (``embedRegion``'s ``lambdaName``) adds them back with (1 - lambda), which with an NNP
scaled by lambda gives U(lambda) = U_MM(all) + lambda (U_NNP - U_MM(region)); the copies register dU/dlambda.
The multiple-time-step layout (NNPotential.createMTSSystem) adds them with +1 to the MM force group and with
-1 to the NNP correction's group.
"""

import copy
import itertools
import math
import xml.etree.ElementTree as ElementTree

import openmm

# The interpolation parameter's default name, openmm-ml's: builders, free-energy protocols and state classes use it.
DEFAULT_LAMBDA_NAME = 'lambda_interpolate'

# Coulomb's constant in OpenMM's units (kJ nm / (mol e^2)), the value OpenMM's kernels use.
ONE_4PI_EPS0 = 138.93545764438198

# Forces that hold no interactions among particles, or that couple the region to its surroundings
# (implicit solvent acts on the region's MM charges as part of the environment): kept unchanged.
_ENVIRONMENT_FORCES = (
    'CMMotionRemover', 'MonteCarloBarostat', 'MonteCarloAnisotropicBarostat', 'MonteCarloMembraneBarostat',
    'MonteCarloFlexibleBarostat', 'AndersenThermostat', 'CustomExternalForce', 'GBSAOBCForce', 'CustomGBForce',
    'RMSDForce',
)


def _forceClass(force):
    # Plugin forces (e.g. an NNPForce already in the System) come back as bare openmm.Force.
    return force.__class__.__name__


def _regionPairs(region):
    ordered = sorted(region)
    return list(itertools.combinations(ordered, 2))


def _emptyCopy(force, termTag):
    """A copy of ``force`` with all its settings (expressions, parameters, functions, group, name) but no terms.

    termTag is the XML element that lists the force's terms (e.g. 'Bonds', 'Torsions').
    """
    root = ElementTree.fromstring(openmm.XmlSerializer.serialize(force))
    terms = root.find(termTag)
    if terms is None:
        raise RuntimeError(f'Unexpected XML for {_forceClass(force)}: no <{termTag}> element.')
    for child in list(terms):
        terms.remove(child)
    return openmm.XmlSerializer.deserialize(ElementTree.tostring(root, encoding='unicode'))


class OneMinusLambda:
    """The interpolation prefactor (1 - lambda): ``name`` becomes a global parameter (default ``default``) of each
    term, which registers its energy derivative."""

    def __init__(self, name, default=1.0):
        self.name = name
        self.default = default
        self.expression = f'(1-{name})'

    def register(self, force):
        force.addGlobalParameter(self.name, self.default)
        force.addEnergyParameterDerivative(self.name)


class _Constant:
    """A constant prefactor (+1, -1)."""

    def __init__(self, value):
        self.expression = f'({float(value)!r})'

    def register(self, force):
        pass


def _scaledExpression(expression, prefactor):
    # The first ';'-separated part of a custom expression is the energy; the rest are definitions.
    main, sep, definitions = expression.partition(';')
    return f'{prefactor.expression}*({main}){sep}{definitions}'


class _BondedKind:
    """How to read, re-add and copy with a prefactor the terms of one bonded force class."""

    def __init__(self, termTag, numTerms, getTerm, particles, addTerm, scaledCopy):
        self.termTag = termTag
        self.numTerms = numTerms
        self.getTerm = getTerm
        self.particles = particles
        self.addTerm = addTerm
        self.scaledCopy = scaledCopy  # (force, internal terms, prefactor) -> new force


def _nativeScaledCopy(customClass, expression, perTermParameters, convert):
    """Scaled copy of a native bonded force as a Custom{Bond,Angle,Torsion}Force with the same energy."""
    def make(force, terms, prefactor):
        custom = customClass(_scaledExpression(expression, prefactor))
        for name in perTermParameters:
            getattr(custom, 'addPerBondParameter' if customClass is openmm.CustomBondForce else
                    'addPerAngleParameter' if customClass is openmm.CustomAngleForce else
                    'addPerTorsionParameter')(name)
        prefactor.register(custom)
        custom.setUsesPeriodicBoundaryConditions(force.usesPeriodicBoundaryConditions())
        for term in terms:
            particles, parameters = convert(term)
            if customClass is openmm.CustomBondForce:
                custom.addBond(*particles, parameters)
            elif customClass is openmm.CustomAngleForce:
                custom.addAngle(*particles, parameters)
            else:
                custom.addTorsion(*particles, parameters)
        return custom
    return make


def _customScaledCopy(force, terms, prefactor, kind):
    custom = _emptyCopy(force, kind.termTag)
    custom.setEnergyFunction(_scaledExpression(force.getEnergyFunction(), prefactor))
    prefactor.register(custom)
    for term in terms:
        kind.addTerm(custom, term)
    return custom


def _cmapScaledCopy(force, terms, prefactor):
    # CMAP as a CustomCompoundBondForce of two dihedrals with a periodic bicubic spline of each map.
    # The map's grid holds angles 0, 2pi/size, ...; the periodic table needs the first point repeated at 2pi.
    used = sorted({term[0] for term in terms})
    functions = []
    for m in used:
        size, energy = force.getMapParameters(m)
        energy = [e.value_in_unit(openmm.unit.kilojoule_per_mole) if openmm.unit.is_quantity(e) else e
                  for e in energy]
        values = [energy[(i % size) + size * (j % size)] for j in range(size + 1) for i in range(size + 1)]
        functions.append((m, openmm.Continuous2DFunction(size + 1, size + 1, values, 0, 2 * math.pi,
                                                         0, 2 * math.pi, True)))
    expression = ' + '.join(f'map{m}*cmap{m}(phi, psi)' for m in used)
    custom = openmm.CustomCompoundBondForce(
        8, _scaledExpression(f'{expression}; phi=dihedral(p1,p2,p3,p4); psi=dihedral(p5,p6,p7,p8)', prefactor))
    for m, function in functions:
        custom.addTabulatedFunction(f'cmap{m}', function)
        custom.addPerBondParameter(f'map{m}')
    prefactor.register(custom)
    custom.setUsesPeriodicBoundaryConditions(force.usesPeriodicBoundaryConditions())
    for term in terms:
        selector = [1.0 if term[0] == m else 0.0 for m in used]
        custom.addBond(list(term[1:]), selector)
    return custom


def _value(x):
    return x.value_in_unit_system(openmm.unit.md_unit_system) if openmm.unit.is_quantity(x) else x


def _bondedKinds():
    mm = openmm
    kinds = {}
    kinds['HarmonicBondForce'] = _BondedKind(
        'Bonds', lambda f: f.getNumBonds(), lambda f, i: [_value(x) for x in f.getBondParameters(i)],
        lambda t: t[:2], lambda f, t: f.addBond(*t),
        _nativeScaledCopy(mm.CustomBondForce, '0.5*k*(r-r0)^2', ['r0', 'k'], lambda t: (t[:2], t[2:])))
    kinds['HarmonicAngleForce'] = _BondedKind(
        'Angles', lambda f: f.getNumAngles(), lambda f, i: [_value(x) for x in f.getAngleParameters(i)],
        lambda t: t[:3], lambda f, t: f.addAngle(*t),
        _nativeScaledCopy(mm.CustomAngleForce, '0.5*k*(theta-theta0)^2', ['theta0', 'k'], lambda t: (t[:3], t[3:])))
    kinds['PeriodicTorsionForce'] = _BondedKind(
        'Torsions', lambda f: f.getNumTorsions(), lambda f, i: [_value(x) for x in f.getTorsionParameters(i)],
        lambda t: t[:4], lambda f, t: f.addTorsion(*t),
        _nativeScaledCopy(mm.CustomTorsionForce, 'k*(1+cos(n*theta-phase))', ['n', 'phase', 'k'],
                          lambda t: (t[:4], t[4:])))
    # Ryckaert-Bellemans: sum_k c_k cos(psi)^k with psi = phi - 180 degrees, i.e. cos(psi) = -cos(theta).
    kinds['RBTorsionForce'] = _BondedKind(
        'Torsions', lambda f: f.getNumTorsions(), lambda f, i: [_value(x) for x in f.getTorsionParameters(i)],
        lambda t: t[:4], lambda f, t: f.addTorsion(*t),
        _nativeScaledCopy(mm.CustomTorsionForce, 'c0+c*(c1+c*(c2+c*(c3+c*(c4+c*c5)))); c=-cos(theta)',
                          ['c0', 'c1', 'c2', 'c3', 'c4', 'c5'], lambda t: (t[:4], t[4:])))
    kinds['CMAPTorsionForce'] = _BondedKind(
        'Torsions', lambda f: f.getNumTorsions(), lambda f, i: list(f.getTorsionParameters(i)),
        lambda t: t[1:], lambda f, t: f.addTorsion(*t), _cmapScaledCopy)

    def custom(tag, count, get, particles, add):
        kind = _BondedKind(tag, count, get, particles, add, None)
        kind.scaledCopy = lambda f, terms, prefactor: _customScaledCopy(f, terms, prefactor, kind)
        return kind

    kinds['CustomBondForce'] = custom(
        'Bonds', lambda f: f.getNumBonds(), lambda f, i: list(f.getBondParameters(i)),
        lambda t: t[:2], lambda f, t: f.addBond(t[0], t[1], t[2]))
    kinds['CustomAngleForce'] = custom(
        'Angles', lambda f: f.getNumAngles(), lambda f, i: list(f.getAngleParameters(i)),
        lambda t: t[:3], lambda f, t: f.addAngle(t[0], t[1], t[2], t[3]))
    kinds['CustomTorsionForce'] = custom(
        'Torsions', lambda f: f.getNumTorsions(), lambda f, i: list(f.getTorsionParameters(i)),
        lambda t: t[:4], lambda f, t: f.addTorsion(t[0], t[1], t[2], t[3], t[4]))
    kinds['CustomCompoundBondForce'] = custom(
        'Bonds', lambda f: f.getNumBonds(), lambda f, i: list(f.getBondParameters(i)),
        lambda t: t[0], lambda f, t: f.addBond(t[0], t[1]))
    # Centroid bonds act on groups of particles; a bond is region-internal when all its groups' particles are.
    kinds['CustomCentroidBondForce'] = custom(
        'Bonds', lambda f: f.getNumBonds(),
        lambda f, i: list(f.getBondParameters(i)) + [
            [p for g in f.getBondParameters(i)[0] for p in f.getGroupParameters(g)[0]]],
        lambda t: t[2], lambda f, t: f.addBond(t[0], t[1]))
    return kinds


_BONDED = _bondedKinds()


def _splitBonded(force, inside, kind):
    """(force without the region-internal terms, list of the internal terms)."""
    kept = _emptyCopy(force, kind.termTag)
    internal = []
    for i in range(kind.numTerms(force)):
        term = kind.getTerm(force, i)
        if all(p in inside for p in kind.particles(term)):
            internal.append(term)
        else:
            kind.addTerm(kept, term)
    return kept, internal


def _regionNonbondedPairs(force, region):
    """The region-region pairs of a NonbondedForce: [(i, j, exception index or None, exception parameters
    (chargeProd, sigma, epsilon) or None for an ordinary pair)]."""
    exceptions = {}
    for k in range(force.getNumExceptions()):
        i, j, chargeProd, sigma, epsilon = force.getExceptionParameters(k)
        exceptions[(min(i, j), max(i, j))] = (k, (_value(chargeProd), _value(sigma), _value(epsilon)))
    return [(i, j, *exceptions.get((i, j), (None, None))) for i, j in _regionPairs(region)]


def _embedNonbonded(force, region):
    """NonbondedForce copy with every region-region pair a zero exception."""
    kept = copy.deepcopy(force)
    zeroed = set()
    for i, j, k, parameters in _regionNonbondedPairs(force, region):
        if k is not None:
            kept.setExceptionParameters(k, i, j, 0.0, parameters[1], 0.0)
            zeroed.add(k)
        else:
            kept.addException(i, j, 0.0, 1.0, 0.0)
    # Parameter offsets on a region exception would bring the removed interaction back: zero them.
    for k in range(force.getNumExceptionParameterOffsets()):
        parameter, exception, chargeScale, sigmaScale, epsilonScale = force.getExceptionParameterOffset(k)
        if exception in zeroed:
            kept.setExceptionParameterOffset(k, parameter, exception, 0.0, 0.0, 0.0)
    return kept


def _nonbondedScaledCopies(force, region, prefactor, namePrefix):
    """The region-region energy that _embedNonbonded removes, times ``prefactor``, as CustomBondForces."""
    method = force.getNonbondedMethod()
    NB = openmm.NonbondedForce
    if method == NB.LJPME:
        raise NotImplementedError('The region-region MM terms of NonbondedForce.LJPME have no closed form here, so '
                                  'interpolate=True and the multiple-time-step layout do not support it yet. Use '
                                  'PME for the MM system.')
    regionSet = set(region)
    for k in range(force.getNumParticleParameterOffsets()):
        parameter, particle = force.getParticleParameterOffset(k)[:2]
        if particle in regionSet:
            raise NotImplementedError(f"The NonbondedForce has a parameter offset ('{parameter}') on region particle "
                                      f'{particle}; interpolate=True and the multiple-time-step layout need fixed '
                                      'region charges.')
    forces = []
    removed = _regionNonbondedPairs(force, region)
    exceptionTerms = [(i, j, p) for i, j, k, p in removed if p is not None and (p[0] != 0 or p[2] != 0)]
    if exceptionTerms:
        # Exceptions are plain Coulomb + LJ with no cutoff (their reciprocal-space part is unchanged).
        exceptionForce = openmm.CustomBondForce(_scaledExpression(
            f'{ONE_4PI_EPS0}*chargeProd/r + 4*epsilon*((sigma/r)^12-(sigma/r)^6)', prefactor))
        for name in ('chargeProd', 'sigma', 'epsilon'):
            exceptionForce.addPerBondParameter(name)
        exceptionForce.setUsesPeriodicBoundaryConditions(force.getExceptionsUsePeriodicBoundaryConditions())
        for i, j, parameters in exceptionTerms:
            exceptionForce.addBond(i, j, list(parameters))
        exceptionForce.setName(f'{namePrefix}RegionExceptions')
        forces.append(exceptionForce)
    pairs = [(i, j) for i, j, k, p in removed if k is None]
    if pairs:
        cutoff = _value(force.getCutoffDistance())
        definitions = ''
        if method == NB.NoCutoff:
            coulomb, lj = '1/r', '1'
        elif method in (NB.CutoffNonPeriodic, NB.CutoffPeriodic):
            dielectric = force.getReactionFieldDielectric()
            krf = (dielectric - 1) / ((2 * dielectric + 1) * cutoff ** 3)
            crf = 3 * dielectric / ((2 * dielectric + 1) * cutoff)
            coulomb, lj = f'step({cutoff}-r)*(1/r+{krf}*r^2-{crf})', f'step({cutoff}-r)'
        else:  # Ewald, PME: direct-space erfc/r inside the cutoff plus the erf/r exclusion correction
            alpha = _ewaldAlpha(force)
            coulomb, lj = f'(1-step(r-{cutoff})*erfc({alpha}*r))/r', f'step({cutoff}-r)'
        if method != NB.NoCutoff and force.getUseSwitchingFunction():
            switch = _value(force.getSwitchingDistance())
            lj += f'*select(step(r-{switch}), 1-x^3*(10-15*x+6*x^2), 1)'
            definitions = f'; x=(r-{switch})/{cutoff - switch}'
        pairForce = openmm.CustomBondForce(_scaledExpression(
            f'{ONE_4PI_EPS0}*qq*{coulomb} + 4*epsilon*((sigma/r)^12-(sigma/r)^6)*{lj}' + definitions, prefactor))
        for name in ('qq', 'sigma', 'epsilon'):
            pairForce.addPerBondParameter(name)
        pairForce.setUsesPeriodicBoundaryConditions(method in (NB.CutoffPeriodic, NB.Ewald, NB.PME))
        for i, j in pairs:
            qi, si, ei = (_value(x) for x in force.getParticleParameters(i))
            qj, sj, ej = (_value(x) for x in force.getParticleParameters(j))
            pairForce.addBond(i, j, [qi * qj, 0.5 * (si + sj), math.sqrt(ei * ej)])
        pairForce.setName(f'{namePrefix}RegionPairs')
        forces.append(pairForce)
    for f in forces:
        prefactor.register(f)
    return forces


def _ewaldAlpha(force):
    """The Ewald splitting parameter OpenMM uses for this force (nm^-1)."""
    if force.getNonbondedMethod() == openmm.NonbondedForce.PME:
        alpha = _value(force.getPMEParameters()[0])
    else:
        alpha = 0.0
    if alpha == 0.0:  # chosen automatically from the Ewald error tolerance, as OpenMM does
        alpha = math.sqrt(-math.log(2 * force.getEwaldErrorTolerance())) / _value(force.getCutoffDistance())
    return alpha


def _embedCustomNonbonded(force, region):
    kept = copy.deepcopy(force)
    excluded = set()
    for k in range(force.getNumExclusions()):
        i, j = force.getExclusionParticles(k)
        excluded.add((min(i, j), max(i, j)))
    for pair in _regionPairs(region):
        if pair not in excluded:
            kept.addExclusion(*pair)
    return kept


def _customNonbondedScaledCopy(force, region, prefactor):
    """The region-region pairs of a CustomNonbondedForce times ``prefactor`` (None if it has none)."""
    regionSet = set(region)
    if force.getNumInteractionGroups() == 0:
        groups = [(set(region), set(region))]
    else:
        groups = []
        for k in range(force.getNumInteractionGroups()):
            set1, set2 = force.getInteractionGroupParameters(k)
            set1, set2 = set(set1) & regionSet, set(set2) & regionSet
            if set1 and set2 and (len(set1) > 1 or set1 != set2):
                groups.append((set1, set2))
    if not groups:
        return None
    scaled = _emptyCopy(force, 'InteractionGroups') if force.getNumInteractionGroups() else copy.deepcopy(force)
    scaled.setEnergyFunction(_scaledExpression(force.getEnergyFunction(), prefactor))
    # The long-range correction is a property of the whole system; the mixed force keeps it unchanged.
    scaled.setUseLongRangeCorrection(False)
    for set1, set2 in groups:
        scaled.addInteractionGroup(sorted(set1), sorted(set2))
    prefactor.register(scaled)
    return scaled


def _regionConstraints(system, inside):
    """Indices and particle pairs of the constraints between two region atoms."""
    return [(k, tuple(system.getConstraintParameters(k)[:2])) for k in range(system.getNumConstraints())
            if all(p in inside for p in system.getConstraintParameters(k)[:2])]


def checkRegionConstraintsHaveTerms(system, region):
    """ValueError unless every constraint between two region atoms has a HarmonicBondForce term.

    The region's MM terms (interpolation at lambda = 0, the MM force group of the multiple-time-step layout)
    must bind the atoms whose region constraints are removed. Force-field loaders omit the bond terms of
    constrained bonds (constraints=HBonds), so check."""
    bonded = set()
    for force in system.getForces():
        if isinstance(force, openmm.HarmonicBondForce):
            for k in range(force.getNumBonds()):
                i, j = force.getBondParameters(k)[:2]
                bonded.add((min(i, j), max(i, j)))
    missing = [(i, j) for _, (i, j) in _regionConstraints(system, set(region)) if (min(i, j), max(i, j)) not in bonded]
    if missing:
        shown = ', '.join(f'{i}-{j}' for i, j in missing[:5]) + (', ...' if len(missing) > 5 else '')
        raise ValueError(f'Removing the region constraints would remove {len(missing)} constraint(s) that have no '
                         f'HarmonicBondForce term ({shown}), so the region\'s MM terms (interpolate=True at lambda = 0, '
                         'the MM force group of multiple time steps) would leave those atoms unbound. Build the MM '
                         'System with constraints=None (rigidWater=True keeps water rigid), or pass '
                         'removeConstraints=False to keep the region constraints.')


def globalParameterNames(system):
    names = set()
    for force in system.getForces():
        if hasattr(force, 'getNumGlobalParameters'):
            names.update(force.getGlobalParameterName(k) for k in range(force.getNumGlobalParameters()))
    return names


def _unknownForce(force):
    return ValueError(f"Cannot build a mixed NNP/MM system: the System holds a {_forceClass(force)} "
                      f"('{force.getName()}'), and openmm-nnp does not know how to take the region-internal "
                      'interactions out of it. Remove that force from the MM System (and add it back to the mixed '
                      'System yourself if it does not act inside the region).')


def regionMMTerms(system, region, prefactor, namePrefix):
    """The MM energy terms among the region's atoms, multiplied by ``prefactor``, as new forces.

    These are exactly the interactions embedRegion removes: bonded terms whose particles all lie in the region
    and the region-region nonbonded pairs. Each force keeps the force group of the force it comes from and is
    named ``namePrefix`` + what it holds.

    Parameters
    ----------
    system : openmm.System
    region : sequence of int
        Particle indices of the region.
    prefactor : float or OneMinusLambda
        A constant (+1, -1) or OneMinusLambda(name, default) for interpolation.
    namePrefix : str
    """
    prefactor = prefactor if isinstance(prefactor, OneMinusLambda) else _Constant(prefactor)
    inside = set(region)
    terms = []
    for force in system.getForces():
        name = _forceClass(force)
        scaled = []
        if name in _BONDED:
            internal = _splitBonded(force, inside, _BONDED[name])[1]
            if internal:
                scaled.append(_BONDED[name].scaledCopy(force, internal, prefactor))
                scaled[-1].setName(f'{namePrefix}{name}')
        elif name == 'NonbondedForce':
            scaled.extend(_nonbondedScaledCopies(force, region, prefactor, namePrefix))
        elif name == 'CustomNonbondedForce':
            copyForce = _customNonbondedScaledCopy(force, region, prefactor)
            if copyForce is not None:
                copyForce.setName(f'{namePrefix}{name}')
                scaled.append(copyForce)
        elif name not in _ENVIRONMENT_FORCES:
            raise _unknownForce(force)
        for term in scaled:
            term.setForceGroup(force.getForceGroup())
        terms.extend(scaled)
    return terms


def embedRegion(system, region, *, removeConstraints=True, lambdaName=None, lambdaDefault=1.0):
    """A copy of ``system`` without the interactions among the region's atoms (the input is not modified).

    Parameters
    ----------
    system : openmm.System
    region : sequence of int
        Particle indices of the region.
    removeConstraints : bool
        Remove constraints between two region atoms (the NNP describes those bonds).
    lambdaName : str or None
        If given, add the removed terms back scaled by (1 - lambdaName), a new global parameter with
        default ``lambdaDefault``, with energy derivatives registered (regionMMTerms).

    Returns
    -------
    openmm.System
    """
    inside = set(region)
    if lambdaName is not None and lambdaName in globalParameterNames(system):
        raise ValueError(f"The System already has a global parameter '{lambdaName}'; choose another lambdaName.")
    if lambdaName is not None and removeConstraints:
        checkRegionConstraintsHaveTerms(system, region)
    newSystem = copy.deepcopy(system)
    while newSystem.getNumForces() > 0:
        newSystem.removeForce(newSystem.getNumForces() - 1)
    if removeConstraints:
        for k, _ in reversed(_regionConstraints(system, inside)):
            newSystem.removeConstraint(k)
    for force in system.getForces():
        name = _forceClass(force)
        if name in _BONDED:
            kept = _splitBonded(force, inside, _BONDED[name])[0]
        elif name == 'NonbondedForce':
            kept = _embedNonbonded(force, region)
        elif name == 'CustomNonbondedForce':
            kept = _embedCustomNonbonded(force, region)
        elif name in _ENVIRONMENT_FORCES:
            kept = copy.deepcopy(force)
        else:
            raise _unknownForce(force)
        newSystem.addForce(kept)
    if lambdaName is not None:
        for term in regionMMTerms(system, region, OneMinusLambda(lambdaName, lambdaDefault), 'NNPInterpolation'):
            newSystem.addForce(term)
    return newSystem
