"""Where TorchANI finds its model parameters.

If the checkout sits next to a shared model cache (``<repo>/../shared/models/torchani``)
and ``TORCHANI_DATA_DIR`` is not already set, point TorchANI at that cache so the
built-in models load offline. Otherwise TorchANI uses its own default location and
downloads the parameters on first use.
"""

import os
from pathlib import Path

SHARED_TORCHANI_DIR = Path(__file__).resolve().parents[2].parent / "shared" / "models" / "torchani"


def use_shared_torchani_data() -> None:
    """Set ``TORCHANI_DATA_DIR`` to the shared cache if it exists and the variable is unset."""
    if not os.environ.get("TORCHANI_DATA_DIR") and SHARED_TORCHANI_DIR.is_dir():
        os.environ["TORCHANI_DATA_DIR"] = str(SHARED_TORCHANI_DIR)
