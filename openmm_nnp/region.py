"""The NNP region: which atoms it holds (indices or an MDTraj selection) and whether it is valid.

Every check raises a ValueError that names the offending atoms and says how to fix the call.
"""

import numbers

import numpy as np

# How far the summed MM partial charges of a region may be from zero and still count as neutral (e).
# Partial charges of a neutral molecule need not sum to exactly zero (AM1-BCC charges of the CB7:B2 guest
# sum to -0.002 e); anything beyond 0.01 e is a charged region.
NET_CHARGE_TOLERANCE = 0.01


def atomLabel(atom):
    """A human-readable name of a Topology atom: 'C7 (MBN 1, index 6)'."""
    return f'{atom.name} ({atom.residue.name} {atom.residue.id}, index {atom.index})'


def _describe(atoms, limit=8):
    labels = [atomLabel(a) for a in atoms[:limit]]
    more = f' and {len(atoms) - limit} more' if len(atoms) > limit else ''
    return ', '.join(labels) + more


def selectRegion(topology, atoms):
    """The region's particle indices, in the order the model will receive them.

    Parameters
    ----------
    topology : openmm.app.Topology
    atoms : sequence of int, or str
        Particle indices (kept in the given order), or an MDTraj selection string such as
        ``'resname MBN'`` (indices in ascending order).
    """
    numAtoms = topology.getNumAtoms()
    if atoms is None:
        raise ValueError('No NNP region given: pass a list of atom indices or an MDTraj selection string '
                         "such as 'resname MBN'.")
    if isinstance(atoms, str):
        import mdtraj
        try:
            selected = mdtraj.Topology.from_openmm(topology).select(atoms)
        except Exception as e:
            raise ValueError(f"The MDTraj selection '{atoms}' could not be evaluated: {e}. See "
                             'https://mdtraj.org/1.9.4/atom_selection.html for the syntax.') from None
        if len(selected) == 0:
            raise ValueError(f"The MDTraj selection '{atoms}' matches no atoms of the topology, so the NNP region "
                             'would be empty. Check the residue or atom names (e.g. print the residue names of '
                             'the topology).')
        return [int(i) for i in selected]
    if isinstance(atoms, (set, frozenset)):
        atoms = sorted(atoms)
    indices = []
    for i in np.asarray(atoms, dtype=object).reshape(-1):
        if isinstance(i, (bool, np.bool_)) or not isinstance(i, numbers.Integral):
            raise ValueError(f'NNP region atoms must be integer particle indices, got {i!r} '
                             f'({type(i).__name__}). Pass indices or an MDTraj selection string.')
        indices.append(int(i))
    if len(indices) == 0:
        raise ValueError('The NNP region is empty: pass at least one atom index or a selection that matches atoms.')
    outOfRange = [i for i in indices if i < 0 or i >= numAtoms]
    if outOfRange:
        raise ValueError(f'NNP region atom indices {outOfRange[:10]} are out of range: the topology has {numAtoms} '
                         f'atoms (valid indices 0 to {numAtoms - 1}).')
    seen, duplicates = set(), []
    for i in indices:
        if i in seen and i not in duplicates:
            duplicates.append(i)
        seen.add(i)
    if duplicates:
        raise ValueError(f'NNP region atom indices {duplicates[:10]} appear more than once; each atom may be listed '
                         'only once.')
    return indices


def regionBonds(topology, region):
    """Topology bonds with both atoms in the region, as (i, j) particle indices."""
    inside = set(region)
    return [(b[0].index, b[1].index) for b in topology.bonds()
            if b[0].index in inside and b[1].index in inside]


def cutBonds(topology, region):
    """Topology bonds with exactly one atom in the region, as (inside atom, outside atom) pairs."""
    inside = set(region)
    cut = []
    for a, b in topology.bonds():
        if (a.index in inside) != (b.index in inside):
            cut.append((a, b) if a.index in inside else (b, a))
    return cut


def regionNetCharge(system, region):
    """Sum of the region's MM partial charges (e) from the system's NonbondedForce, or None without one."""
    import openmm
    for force in system.getForces():
        if isinstance(force, openmm.NonbondedForce):
            return sum(force.getParticleParameters(i)[0].value_in_unit(openmm.unit.elementary_charge)
                       for i in region)
    return None


def regionCharge(system, region, charge=None):
    """The region's net charge (an int, e) that a charge-aware model receives.

    Without ``charge``: the sum of the region's MM partial charges (NonbondedForce), which must be an integer
    within NET_CHARGE_TOLERANCE; 0 when the System has no NonbondedForce. With ``charge`` (the user's option):
    it must be an integer and, when the MM charges sum to an integer, equal it; when they do not (e.g. charges
    smeared over a boundary), ``charge`` overrides them.
    """
    total = regionNetCharge(system, region) if system is not None else None
    nearest = None if total is None else round(total)
    integral = total is not None and abs(total - nearest) <= NET_CHARGE_TOLERANCE
    if charge is not None:
        if isinstance(charge, (bool, np.bool_)) or not isinstance(charge, numbers.Real) or \
                abs(charge - round(charge)) > 1e-9:
            raise ValueError(f'charge={charge!r} is not an integer; pass the net charge of the NNP region in '
                             'elementary charges, e.g. charge=-1.')
        charge = int(round(charge))
        if integral and charge != nearest:
            raise ValueError(f'charge={charge} contradicts the MM partial charges of the NNP region, which sum to '
                             f'{total:+.4f} e; pass charge={nearest} or leave charge out to use the MM charge.')
        return charge
    if total is None:
        return 0
    if not integral:
        raise ValueError(f'The MM partial charges of the NNP region sum to {total:+.4f} e, which is not an integer '
                         f'(within {NET_CHARGE_TOLERANCE} e): the region probably cuts a molecule or a charge group. '
                         'Put whole molecules in the region, or pass charge=N to state its net charge.')
    return int(nearest)


def checkChargeSupport(charge, modelName, supportsCharge, chargeModels=()):
    """Refuse a charged region for a model trained on neutral molecules only (``supportsCharge`` False).

    chargeModels : names of models that take a net charge, listed in the message.
    """
    if supportsCharge is False and charge != 0:
        others = f" Models that take a net charge: {', '.join(chargeModels)}." if chargeModels else ''
        raise ValueError(f'The NNP region has a net charge of {charge:+d} e, but {modelName} was trained on neutral '
                         'molecules only and would describe a charged region wrongly. Choose a neutral region '
                         f'(e.g. include the counter-ion) or a model that takes a net charge.{others}')


def validateRegion(topology, system, region, supportedElements=None, requiresNeutral=False,
                   allowCutBonds=False, modelName='the model'):
    """Raise ValueError if the region cannot be handed to the model.

    supportedElements : set of str or None
        Element symbols the model supports (None: the model's elements are unknown, not checked).
    requiresNeutral : bool
        Whether the model was trained on neutral molecules only (then the region's MM charge must be zero).
    """
    atoms = list(topology.atoms())
    if system is not None and system.getNumParticles() != len(atoms):
        raise ValueError(f'The topology has {len(atoms)} atoms but the System has {system.getNumParticles()} '
                         'particles; pass the Topology the System was created from.')
    if supportedElements is not None:
        noElement = [atoms[i] for i in region if atoms[i].element is None]
        if noElement:
            raise ValueError(f'NNP region atoms {_describe(noElement)} have no element (virtual sites or extra '
                             f'particles); {modelName} needs real atoms. Leave them out of the region.')
        unsupported = {}
        for i in region:
            symbol = atoms[i].element.symbol
            if symbol not in supportedElements:
                unsupported.setdefault(symbol, []).append(atoms[i])
        if unsupported:
            details = '; '.join(f'{symbol}: {_describe(found, 3)}' for symbol, found in sorted(unsupported.items()))
            raise ValueError(f'{modelName} does not support the element(s) {", ".join(sorted(unsupported))} found in '
                             f'the NNP region ({details}). It supports {", ".join(sorted(supportedElements))}. '
                             'Choose a region without these elements or a model that supports them.')
    if requiresNeutral and system is not None:
        charge = regionNetCharge(system, region)
        if charge is not None and abs(charge) > NET_CHARGE_TOLERANCE:
            raise ValueError(f'The NNP region has a net MM charge of {charge:+.4f} e, but {modelName} was trained on '
                             'neutral molecules only and would describe a charged region wrongly. Choose a neutral '
                             'region (e.g. include the counter-ion or the whole molecule) or a model for charged '
                             'systems.')
    if not allowCutBonds:
        cut = cutBonds(topology, region)
        if cut:
            pairs = ', '.join(f'{atomLabel(a)} - {atomLabel(b)}' for a, b in cut[:5])
            more = f' and {len(cut) - 5} more' if len(cut) > 5 else ''
            raise ValueError(f'The NNP region boundary cuts {len(cut)} covalent bond(s): {pairs}{more} (inside - '
                             'outside). The NNP would see an unsaturated fragment. Put whole molecules in the region, '
                             'or pass allowCutBonds=True if you know what you are doing (e.g. you add link atoms '
                             'yourself).')
