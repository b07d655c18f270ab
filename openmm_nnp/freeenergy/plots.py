"""PNG plots of the free-energy results (matplotlib, non-interactive backend)."""

import numpy as np


def _pyplot():
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    return plt


def plot_overlap(matrix, lambdas, path):
    """MBAR overlap matrix as a heat map with the values written in the cells."""
    plt = _pyplot()
    matrix = np.asarray(matrix)
    k = len(matrix)
    fig, ax = plt.subplots(figsize=(1 + 0.5 * k, 1 + 0.5 * k))
    ax.imshow(matrix, cmap='Blues', vmin=0, vmax=1)
    for i in range(k):
        for j in range(k):
            if matrix[i, j] >= 0.01:
                ax.text(j, i, f'{matrix[i, j]:.2f}', ha='center', va='center', fontsize=7,
                        color='white' if matrix[i, j] > 0.5 else 'black')
    labels = [f'{x:.2g}' for x in lambdas]
    ax.set_xticks(range(k), labels, rotation=90)
    ax.set_yticks(range(k), labels)
    ax.set_xlabel('λ')
    ax.set_ylabel('λ')
    ax.set_title('MBAR overlap matrix')
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_dudl(lambdas, means, sems, offset_kT, path):
    """<dU/dλ> (kT, minus the constant offset β(U1 − U0) of the starting structure) against λ."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.errorbar(lambdas, np.asarray(means) - offset_kT, yerr=sems, marker='o', capsize=3)
    ax.set_xlabel('λ')
    ax.set_ylabel(f'<dU/dλ> − ({offset_kT:.1f}) [kT]')
    ax.set_title('dU/dλ profile (TI integrand)')
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_work(forward, reverse, delta_g_kT, path):
    """Histograms of the forward work and of minus the reverse work, centred on ΔG (kT)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5, 3.5))
    forward = np.asarray(forward) - delta_g_kT
    ax.hist(forward, bins='auto', alpha=0.6, density=True, label='forward W (MM → NNP/MM)')
    if len(reverse):
        ax.hist(-np.asarray(reverse) - delta_g_kT, bins='auto', alpha=0.6, density=True,
                label='−W reverse (NNP/MM → MM)')
    ax.axvline(0, color='k', lw=1, label='ΔG')
    ax.set_xlabel(f'work − ΔG [kT] (ΔG = {delta_g_kT:.2f} kT)')
    ax.set_ylabel('density')
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
