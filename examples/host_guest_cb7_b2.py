#!/usr/bin/env python
"""CB7:B2 host-guest in explicit water (openmmtools data): ANI-2x for the 30-atom guest, GAFF/TIP3P for the rest.

    python examples/host_guest_cb7_b2.py                # 0.5 ps after 0.05 ps: about 3 minutes on 2 busy CPU cores
    python examples/host_guest_cb7_b2.py --time 1000 --equilibration 100 --mts 2    # full length: 1 ns

This is `openmm-nnp run` called from Python (openmm_nnp.run.simulate) on the Amber files openmmtools ships
(complex-explicit.prmtop and .inpcrd, 4,491 atoms; the guest is residue B2). Results go to --output:
trajectory.dcd, energies.csv, energies.png, ensemble_std.png (ANI-2x ensemble disagreement on the guest) and
summary.json. Rerunning with the same --output continues the run from its last checkpoint. ANI weights come from
TORCHANI_DATA_DIR (the Makefile exports ../shared/models/torchani) or are downloaded. The same from a shell:

    openmm-nnp run $CB7/complex-explicit.prmtop $CB7/complex-explicit.inpcrd --region 'resname B2' --time 2 -o out
"""

import argparse
from pathlib import Path

import openmmtools

from openmm_nnp.run import simulate

DATA = Path(openmmtools.__file__).parent / 'data' / 'cb7-b2'


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--time', type=float, default=0.5, help='production in ps (default 0.5)')
    parser.add_argument('--equilibration', type=float, default=0.05, help='ps (default 0.05)')
    parser.add_argument('--mts', type=int, help='evaluate the NNP correction every N steps')
    parser.add_argument('--output', default='output/host-guest-cb7-b2')
    parser.add_argument('--threads', type=int, help='CPU threads (default: all)')
    args = parser.parse_args()
    if Path(args.output, 'run.json').exists():
        return simulate(None, args.output, resume=True)  # continue (or just re-summarize) an earlier run
    return simulate([DATA / 'complex-explicit.prmtop', DATA / 'complex-explicit.inpcrd'], args.output,
                    region='resname B2', time=args.time, equilibration=args.equilibration, mts=args.mts,
                    reportInterval=50 * (args.mts or 1), checkpointInterval=500, threads=args.threads)


if __name__ == '__main__':
    main()
