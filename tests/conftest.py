"""Shared pytest setup.

TorchANI model parameters: when the checkout sits next to a shared cache
(<repo>/../shared/models/torchani) and TORCHANI_DATA_DIR is not set, TorchANI is pointed at
that cache so its built-in models load offline; otherwise TorchANI downloads them.
"""

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DIR = REPO_ROOT.parent / "shared"

_shared_torchani = SHARED_DIR / "models" / "torchani"
if not os.environ.get("TORCHANI_DATA_DIR") and _shared_torchani.is_dir():
    os.environ["TORCHANI_DATA_DIR"] = str(_shared_torchani)
os.environ.setdefault("TORCHANI_NO_WARN_EXTENSIONS", "1")
