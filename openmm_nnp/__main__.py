"""`python -m openmm_nnp ...` is the `openmm-nnp` command line."""

import sys

from openmm_nnp.cli import main

sys.exit(main())
