#!/usr/bin/env bash
# T4 lysozyme L99A with p-xylene, from files to NNP/MM dynamics with the two commands:
#
#   1. openmm-nnp prepare: PDBFixer on the receptor PDB, GAFF2 + AM1-BCC for the ligand MOL2 (AmberTools),
#      amber14 + TIP3P, 0.15 M NaCl, a dodecahedral box; writes output/t4-l99a/prepared/{complex,solvent}.
#   2. openmm-nnp run: p-xylene (resname LIG, 18 atoms) under ANI-2x, the protein and water under amber14.
#
# Files: openmmtools ships them (data/T4-lysozyme-L99A-implicit: receptor.pdb and ligand.tripos.mol2, the
# ligand docked in the L99A cavity). Runs as is in a few minutes on 2 CPU cores (0.2 ps; ~25,000 atoms);
# full length: --time 1000 --equilibration 100 (1 ns after 100 ps), ideally with --mts 2.
#
#   bash examples/t4_lysozyme_ligand.sh [TIME_PS]
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python )}
OPENMM_NNP="$PYTHON -m openmm_nnp"          # or just `openmm-nnp` once installed
DATA=$($PYTHON -c 'import openmmtools, os; print(os.path.join(os.path.dirname(openmmtools.__file__), "data", "T4-lysozyme-L99A-implicit"))')
OUT=output/t4-l99a
TIME=${1:-0.2}

if [ ! -f "$OUT/prepared/complex/prepared.json" ]; then
  $OPENMM_NNP prepare --protein "$DATA/receptor.pdb" --ligand "$DATA/ligand.tripos.mol2" \
      --ph 7.0 --padding 1.0 --ionic-strength 0.15 --box-shape dodecahedron -o "$OUT/prepared"
fi
if [ -f "$OUT/run/run.json" ]; then
  $OPENMM_NNP run --resume -o "$OUT/run"
else
  $OPENMM_NNP run "$OUT/prepared/complex" --time "$TIME" --equilibration-steps 50 --report-interval 50 --minimize-iterations 100 \
      --checkpoint-interval 100 -o "$OUT/run"
fi
