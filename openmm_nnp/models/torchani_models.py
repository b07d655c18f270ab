"""TorchANI's built-in ANI models: their names, their elements, and where their weights come from.

If the checkout sits next to a shared model cache (``<repo>/../shared/models/torchani``) and
``TORCHANI_DATA_DIR`` is not already set, TorchANI is pointed at that cache so the built-in models load
offline. Otherwise TorchANI uses its own default location and downloads the parameters on first use.
"""

import os
from pathlib import Path

ANI_MODELS = {'ani1x': 'ANI1x', 'ani1ccx': 'ANI1ccx', 'ani2x': 'ANI2x'}  # our name -> torchani.models factory

# Elements the published ANI models were trained on.
ANI_ELEMENTS = {
    'ani1x': {'H', 'C', 'N', 'O'},
    'ani1ccx': {'H', 'C', 'N', 'O'},
    'ani2x': {'H', 'C', 'N', 'O', 'F', 'S', 'Cl'},
}

SHARED_TORCHANI_DIR = Path(__file__).resolve().parents[2].parent / 'shared' / 'models' / 'torchani'

_cache = {}


def use_shared_torchani_data():
    """Set ``TORCHANI_DATA_DIR`` to the shared cache if it exists and the variable is unset."""
    if not os.environ.get('TORCHANI_DATA_DIR') and SHARED_TORCHANI_DIR.is_dir():
        os.environ['TORCHANI_DATA_DIR'] = str(SHARED_TORCHANI_DIR)
    os.environ.setdefault('TORCHANI_NO_WARN_EXTENSIONS', '1')


def canonicalANIName(name):
    """'ANI-2x', 'ani_2x', 'ani2x' -> 'ani2x'; None if the name is not an ANI model."""
    key = str(name).lower().replace('-', '').replace('_', '')
    return key if key in ANI_MODELS else None


def load_torchani_model(name):
    """TorchANI's model ``name`` (8-member ensemble, atomic numbers as species) in float64, loaded once per process."""
    key = canonicalANIName(name)
    if key is None:
        raise ValueError(f"Unknown ANI model {name!r}; supported models are: {', '.join(ANI_MODELS)}")
    if key not in _cache:
        use_shared_torchani_data()
        import torchani
        _cache[key] = getattr(torchani.models, ANI_MODELS[key])(periodic_table_index=True).double()
    return _cache[key]
