"""Combining MM free energies with MM → NNP/MM end-state corrections.

Thermodynamic cycle: ΔG_bind^NNP(L) = ΔG_bind^MM(L) + ΔG_corr(L, complex) − ΔG_corr(L, solvent), where
ΔG_corr is the λ = 0 → 1 free energy of the ligand's interpolating mixed System in that environment. For an
edge A → B, ΔΔG^NNP = ΔΔG^MM + [ΔG_corr(B, complex) − ΔG_corr(B, solvent)] − [ΔG_corr(A, complex) −
ΔG_corr(A, solvent)]. Uncertainties of independent calculations add in quadrature.
"""

import dataclasses
import math

import openmm.unit as unit

from openmm_nnp.freeenergy.analysis import KJ_PER_KCAL, FreeEnergy

_UNITS = {'kJ/mol': 1.0, 'kcal/mol': KJ_PER_KCAL}


@dataclasses.dataclass
class Estimate:
    """A value and standard error in kJ/mol."""
    value: float
    error: float

    @property
    def kcal_per_mol(self):
        return self.value / KJ_PER_KCAL, self.error / KJ_PER_KCAL

    def to_dict(self):
        return {'kJ/mol': self.value, 'error_kJ/mol': self.error, 'kcal/mol': self.value / KJ_PER_KCAL,
                'error_kcal/mol': self.error / KJ_PER_KCAL}

    def __str__(self):
        return (f'{self.value:.2f} ± {self.error:.2f} kJ/mol ({self.value / KJ_PER_KCAL:.2f} ± '
                f'{self.error / KJ_PER_KCAL:.2f} kcal/mol)')


def as_estimate(x, units='kJ/mol'):
    """A FreeEnergy, EquilibriumResult/NonequilibriumResult (its delta_g), Estimate, (value, error) pair of numbers
    in ``units`` or of openmm Quantities, as an Estimate in kJ/mol."""
    if hasattr(x, 'delta_g'):
        x = x.delta_g
    if isinstance(x, FreeEnergy):
        return Estimate(x.kJ_per_mol, x.error_kJ_per_mol)
    if isinstance(x, Estimate):
        return x
    if units not in _UNITS:
        raise ValueError(f"units must be 'kJ/mol' or 'kcal/mol', not {units!r}.")
    try:
        value, error = x
    except (TypeError, ValueError):
        raise TypeError(f'Expected a free energy with an error: a FreeEnergy, a result object or a (value, error) '
                        f'pair, not {x!r}.') from None
    out = []
    for v in (value, error):
        if unit.is_quantity(v):
            out.append(v.value_in_unit(unit.kilojoule_per_mole))
        else:
            out.append(float(v) * _UNITS[units])
    if not (math.isfinite(out[0]) and math.isfinite(out[1]) and out[1] >= 0):
        raise ValueError(f'Invalid free energy {x!r}: the value must be finite and the error finite and >= 0.')
    return Estimate(*out)


def _sum(terms):
    return Estimate(sum(s * t.value for s, t in terms), math.sqrt(sum(t.error ** 2 for _, t in terms)))


def corrected_binding_free_energy(dg_mm, correction_complex, correction_solvent, units='kJ/mol'):
    """ΔG_bind^NNP = ΔG_bind^MM + ΔG_corr(complex) − ΔG_corr(solvent)."""
    return _sum([(1, as_estimate(dg_mm, units)), (1, as_estimate(correction_complex, units)),
                 (-1, as_estimate(correction_solvent, units))])


def corrected_relative_free_energy(ddg_mm, correction_a_complex, correction_a_solvent, correction_b_complex,
                                   correction_b_solvent, units='kJ/mol'):
    """ΔΔG^NNP(A → B) from the MM ΔΔG(A → B) and the four end-state corrections; returns a dict of Estimates:
    'ddg' (corrected), 'ddg_mm', 'correction' (the total correction to ΔΔG), 'correction_a', 'correction_b'."""
    mm = as_estimate(ddg_mm, units)
    a_c, a_s, b_c, b_s = (as_estimate(x, units) for x in (correction_a_complex, correction_a_solvent,
                                                           correction_b_complex, correction_b_solvent))
    corr_a = _sum([(1, a_c), (-1, a_s)])
    corr_b = _sum([(1, b_c), (-1, b_s)])
    total = _sum([(1, b_c), (-1, b_s), (-1, a_c), (1, a_s)])
    return {'ddg': _sum([(1, mm), (1, total)]), 'ddg_mm': mm, 'correction': total,
            'correction_a': corr_a, 'correction_b': corr_b}
