"""The NNP region: which atoms it holds (indices or an MDTraj selection) and whether it is valid.

``Region`` is a region as the user gave it, parsed once: ``Region.parse`` reads the text the command line
takes ('resname LIG', '0-14,20', '0 1 2'), ``Region.of`` what the Python API takes (an MDTraj selection string
or particle indices). ``select`` gives the particle indices, ``describe`` a short text for logs and summaries.
Every check raises a ValueError that names the offending atoms and says how to fix the call.
"""

import numbers
import re

import numpy as np

from openmm_nnp.errors import InputError

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


class Region:
    """An NNP region: an MDTraj selection or a sequence of particle indices, as given.

    Build one with ``Region.of`` (API values) or ``Region.parse`` (command-line text). Exactly one of
    ``selection`` (str) and ``indices`` (the given sequence, unchecked until ``select``) is set.
    """

    def __init__(self, selection=None, indices=None):
        if (selection is None) == (indices is None):
            raise ValueError('A Region is a selection or indices: pass exactly one.')
        self.selection = selection
        self.indices = indices
        self._selected = None  # (topology, particle indices) of the last select

    def __repr__(self):
        return f'Region(selection={self.selection!r})' if self.selection is not None else f'Region({self.describe()})'

    @classmethod
    def of(cls, atoms):
        """The region ``atoms``: a Region, an MDTraj selection string, or particle indices (a set is sorted)."""
        if isinstance(atoms, Region):
            return atoms
        if atoms is None:
            raise ValueError('No NNP region given: pass a list of atom indices or an MDTraj selection string '
                             "such as 'resname MBN'.")
        if isinstance(atoms, str):
            return cls(selection=atoms)
        return cls(indices=sorted(atoms) if isinstance(atoms, (set, frozenset)) else atoms)

    @classmethod
    def parse(cls, text):
        """'resname LIG' -> a selection; '0-14,20' or '0 1 2' -> those indices; anything else as ``Region.of``."""
        if not isinstance(text, str):
            return cls.of(text)
        text = text.strip()
        tokens = text.replace(',', ' ').split()
        if not tokens or not all(_INDEX_TOKEN.fullmatch(t) for t in tokens):
            return cls(selection=text)
        indices = []
        for token in tokens:
            first, _, last = token.partition('-')
            last = last or first
            if int(last) < int(first):
                raise InputError(f"The index range '{token}' is empty (its end is before its start).")
            indices.extend(range(int(first), int(last) + 1))
        return cls(indices=indices)

    def select(self, topology):
        """The region's particle indices in ``topology``, checked, in the order the model will receive them:
        as given, or ascending for a selection. The selection runs once per topology."""
        if self._selected is None or self._selected[0] is not topology:
            self._selected = (topology, self._select(topology))
        return list(self._selected[1])

    def describe(self):
        """"'resname LIG'", 'atoms 0..14' (a contiguous ascending range) or 'atom list'."""
        if self.selection is not None:
            return f"'{self.selection}'"
        indices = [int(i) for i in np.asarray(self.indices, dtype=object).reshape(-1)]
        if indices and indices == list(range(indices[0], indices[-1] + 1)):
            return f'atoms {indices[0]}..{indices[-1]}'
        return 'atom list'

    def _select(self, topology):
        if self.selection is not None:
            return _selectMDTraj(topology, self.selection)
        return _checkIndices(topology, self.indices)


_INDEX_TOKEN = re.compile(r'\d+(-\d+)?')


def selectRegion(topology, atoms):
    """The region's particle indices, in the order the model will receive them.

    Parameters
    ----------
    topology : openmm.app.Topology
    atoms : sequence of int, str or Region
        Particle indices (kept in the given order), or an MDTraj selection string such as
        ``'resname MBN'`` (indices in ascending order).
    """
    return Region.of(atoms).select(topology)


def _selectMDTraj(topology, selection):
    import mdtraj
    try:
        selected = mdtraj.Topology.from_openmm(topology).select(selection)
    except Exception as e:
        raise ValueError(f"The MDTraj selection '{selection}' could not be evaluated: "
                         f'{_selectionError(selection, e)}. See https://mdtraj.org/1.9.4/atom_selection.html for '
                         'the syntax.') from None
    if len(selected) == 0:
        raise ValueError(f"The MDTraj selection '{selection}' matches no atoms of the topology, so the NNP region "
                         'would be empty. Check the residue or atom names (e.g. print the residue names of '
                         'the topology).')
    return [int(i) for i in selected]


def _checkIndices(topology, atoms):
    numAtoms = topology.getNumAtoms()
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


def _selectionError(selection, error):
    """MDTraj's error without the grammar its parser lists: what it found where, and what came before."""
    text = str(error).split('\n')[0]
    found = re.search(r'(found .*?) +\(at char (\d+)\)', text)
    if found:
        at = int(found.group(2))
        return f"syntax error at character {at + 1} ({found.group(1)} after '{selection[:at].rstrip()}')"
    return text if len(text) <= 200 else text[:200] + '...'


def regionBonds(topology, region):
    """Topology bonds with both atoms in the region, as (i, j) particle indices."""
    inside = set(region)
    return [(b[0].index, b[1].index) for b in topology.bonds()
            if b[0].index in inside and b[1].index in inside]


def systemBonds(system):
    """(i, j) pairs the System bonds: HarmonicBondForce terms and constraints."""
    import openmm
    pairs = [tuple(system.getConstraintParameters(k)[:2]) for k in range(system.getNumConstraints())]
    for force in system.getForces():
        if isinstance(force, openmm.HarmonicBondForce):
            pairs.extend(tuple(force.getBondParameters(k)[:2]) for k in range(force.getNumBonds()))
    return pairs


def cutBonds(topology, region, system=None):
    """Bonds with exactly one atom in the region, as (inside atom, outside atom) pairs.

    The bonds are the Topology's; for residues of several atoms without Topology bonds (a ligand from a PDB
    without CONECT records), those of ``system`` (see systemBonds). Raises ValueError when the region splits
    a residue whose bonds neither of them knows."""
    inside = set(region)
    atoms = list(topology.atoms())

    def withoutBonds(bonds):
        bonded = {i for bond in bonds for i in bond}
        return [r for r in topology.residues() if len(r) > 1 and not any(a.index in bonded for a in r.atoms())]

    bonds = [(a.index, b.index) for a, b in topology.bonds()]
    unknown = {a.index for r in withoutBonds(bonds) for a in r.atoms()}
    if unknown and system is not None:
        bonds += [(i, j) for i, j in systemBonds(system) if i in unknown or j in unknown]
    split = [r for r in withoutBonds(bonds) if 0 < sum(a.index in inside for a in r.atoms()) < len(r)]
    if split:
        raise ValueError(f'The NNP region holds part of residue {split[0].name} {split[0].id}, whose bonds are unknown '
                         '(neither the topology, e.g. a PDB without CONECT records, nor the System has any for it), '
                         'so whether the region cuts covalent bonds cannot be checked. Put whole residues in the '
                         'region, or pass a topology with bonds.')
    pairs = sorted({(min(i, j), max(i, j)) for i, j in bonds if (i in inside) != (j in inside)})
    return [(atoms[i], atoms[j]) if i in inside else (atoms[j], atoms[i]) for i, j in pairs]


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


def validateRegion(topology, system, region, *, supportedElements=None, requiresNeutral=False,
                   allowCutBonds=False, modelName='the model', chargeModels=()):
    """Raise ValueError if the region cannot be handed to the model.

    supportedElements : set of str or None
        Element symbols the model supports (None: the model's elements are unknown, not checked).
    requiresNeutral : bool
        Whether the model was trained on neutral molecules only (then the region's MM charge must be zero).
    chargeModels : names of the models that take a net charge, named when a charged region is refused.
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
                             'regions' + (f": {', '.join(chargeModels)}." if chargeModels else '.'))
    if not allowCutBonds:
        cut = cutBonds(topology, region, system)
        if cut:
            pairs = ', '.join(f'{atomLabel(a)} - {atomLabel(b)}' for a, b in cut[:5])
            more = f' and {len(cut) - 5} more' if len(cut) > 5 else ''
            raise ValueError(f'The NNP region boundary cuts {len(cut)} covalent bond(s): {pairs}{more} (inside - '
                             'outside). The NNP would see an unsaturated fragment. Put whole molecules in the region, '
                             'or pass allowCutBonds=True if you know what you are doing (e.g. you add link atoms '
                             'yourself).')
