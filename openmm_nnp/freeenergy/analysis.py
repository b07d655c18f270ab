"""Estimators: MBAR, thermodynamic integration, BAR and Jarzynski on reduced (kT) quantities.

Everything here works in units of kT; ``FreeEnergy`` converts to kJ/mol and kcal/mol.
"""

import dataclasses
import warnings

import numpy as np

MOLAR_GAS_CONSTANT = 8.31446261815324e-3  # kJ/(mol K)
KJ_PER_KCAL = 4.184


def kT_in_kJ_per_mol(temperature_K):
    return MOLAR_GAS_CONSTANT * float(temperature_K)


@dataclasses.dataclass
class FreeEnergy:
    """A free energy and its standard error, stored in kT at ``temperature`` (K)."""

    value_kT: float
    error_kT: float
    temperature: float
    method: str = ''

    @property
    def kJ_per_mol(self):
        return self.value_kT * kT_in_kJ_per_mol(self.temperature)

    @property
    def error_kJ_per_mol(self):
        return self.error_kT * kT_in_kJ_per_mol(self.temperature)

    @property
    def kcal_per_mol(self):
        return self.kJ_per_mol / KJ_PER_KCAL

    @property
    def error_kcal_per_mol(self):
        return self.error_kJ_per_mol / KJ_PER_KCAL

    def to_dict(self):
        return {'method': self.method, 'temperature_K': self.temperature,
                'kT': self.value_kT, 'error_kT': self.error_kT,
                'kJ/mol': self.kJ_per_mol, 'error_kJ/mol': self.error_kJ_per_mol,
                'kcal/mol': self.kcal_per_mol, 'error_kcal/mol': self.error_kcal_per_mol}

    def __str__(self):
        return (f'{self.kJ_per_mol:.3f} ± {self.error_kJ_per_mol:.3f} kJ/mol '
                f'({self.kcal_per_mol:.3f} ± {self.error_kcal_per_mol:.3f} kcal/mol; {self.method})')


def _quiet_pymbar():
    import logging
    logging.getLogger('pymbar').setLevel(logging.ERROR)


def decorrelate(series):
    """Equilibration start t0, statistical inefficiency g and the indices of uncorrelated samples of ``series``.

    Uses pymbar.timeseries.detect_equilibration and subsample_correlated_data.
    """
    from pymbar import timeseries
    _quiet_pymbar()
    series = np.asarray(series, dtype=float)
    if len(series) < 4:
        raise ValueError(f'A window has {len(series)} samples; at least 4 are needed to estimate their correlation. '
                         'Increase n_samples.')
    if np.ptp(series) == 0:  # constant series: every sample is independent
        return 0, 1.0, np.arange(len(series))
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        t0, g, _ = timeseries.detect_equilibration(series)
        indices = timeseries.subsample_correlated_data(series[t0:], g=g)
    return int(t0), float(g), t0 + np.asarray(indices, dtype=int)


def mbar(u_kn, N_k):
    """MBAR (pymbar) from reduced potentials u_kn [K, N] of samples grouped by state (N_k per state).

    Returns dict: Delta_f (state 0 to state K-1, kT), dDelta_f, f_k, df_k, overlap matrix, its eigenvalues.
    """
    from pymbar import MBAR
    _quiet_pymbar()
    u_kn = np.asarray(u_kn, dtype=float)
    N_k = np.asarray(N_k, dtype=int)
    if not np.all(np.isfinite(u_kn)):
        raise ValueError('Reduced potentials contain NaN or infinity: a window blew up. Reduce the time step or '
                         'minimize the starting structure.')
    m = MBAR(u_kn, N_k, solver_protocol='robust')
    result = m.compute_free_energy_differences(compute_uncertainty=True)
    overlap = m.compute_overlap()
    return {'Delta_f': float(result['Delta_f'][0, -1]), 'dDelta_f': float(result['dDelta_f'][0, -1]),
            'f_k': result['Delta_f'][0].tolist(), 'df_k': result['dDelta_f'][0].tolist(),
            'overlap_matrix': np.asarray(overlap['matrix']).tolist(),
            'overlap_eigenvalues': np.real(np.asarray(overlap['eigenvalues'])).tolist()}


def thermodynamic_integration(lambdas, means, errors):
    """Trapezoidal integral of <dU/dλ> over λ with its propagated standard error (kT)."""
    lambdas, means, errors = (np.asarray(a, dtype=float) for a in (lambdas, means, errors))
    if len(lambdas) < 2 or np.any(np.diff(lambdas) <= 0):
        raise ValueError('TI needs at least two λ values in increasing order.')
    widths = np.diff(lambdas)
    weights = np.zeros_like(lambdas)
    weights[:-1] += widths / 2
    weights[1:] += widths / 2
    return float(weights @ means), float(np.sqrt(np.sum((weights * errors) ** 2)))


def bar(w_forward, w_reverse, n_bootstrap=200, seed=0):
    """Bennett acceptance ratio on forward (0→1) and reverse (1→0) work values in kT (pymbar).

    Returns dict: Delta_f (kT, 0→1), dDelta_f (bootstrap standard deviation), dDelta_f_analytic.
    """
    from pymbar.other_estimators import bar as pymbar_bar
    _quiet_pymbar()
    w_F = np.asarray(w_forward, dtype=float)
    w_R = np.asarray(w_reverse, dtype=float)
    if len(w_F) < 2 or len(w_R) < 2:
        raise ValueError('BAR needs at least two forward and two reverse work values.')
    if not (np.all(np.isfinite(w_F)) and np.all(np.isfinite(w_R))):
        raise ValueError('Work values contain NaN or infinity: a switching trajectory blew up. Use more switching '
                         'steps or a smaller time step.')
    if np.ptp(w_F) == 0 and np.ptp(w_R) == 0 and abs(w_F[0] + w_R[0]) <= 1e-9 * max(1.0, abs(w_F[0])):
        # Deterministic work (U(1) - U(0) is a constant): ΔG is that constant, exactly.
        return {'Delta_f': float(w_F[0]), 'dDelta_f': 0.0, 'dDelta_f_analytic': 0.0, 'n_bootstrap': 0}
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        main = pymbar_bar(w_F, w_R, compute_uncertainty=True)
        rng = np.random.default_rng(seed)
        boot = []
        for _ in range(n_bootstrap):
            f = w_F[rng.integers(0, len(w_F), len(w_F))]
            r = w_R[rng.integers(0, len(w_R), len(w_R))]
            boot.append(pymbar_bar(f, r, compute_uncertainty=False)['Delta_f'])
    return {'Delta_f': float(main['Delta_f']),
            'dDelta_f': float(np.std(boot, ddof=1)) if n_bootstrap > 1 else float(main['dDelta_f']),
            'dDelta_f_analytic': float(main['dDelta_f']), 'n_bootstrap': n_bootstrap}


def jarzynski(w_forward, n_bootstrap=200, seed=0):
    """One-sided Jarzynski estimate -ln <exp(-W)> (kT) with a bootstrap standard deviation.

    Biased when the work distribution is wide compared to 1 kT; prefer BAR when both end states are sampled.
    """
    w = np.asarray(w_forward, dtype=float)
    if len(w) < 2:
        raise ValueError('Jarzynski needs at least two work values.')

    def estimate(x):
        m = np.min(x)
        return float(m - np.log(np.mean(np.exp(-(x - m)))))

    rng = np.random.default_rng(seed)
    boot = [estimate(w[rng.integers(0, len(w), len(w))]) for _ in range(n_bootstrap)]
    return {'Delta_f': estimate(w), 'dDelta_f': float(np.std(boot, ddof=1)), 'n_bootstrap': n_bootstrap,
            'work_std': float(np.std(w, ddof=1))}
