"""TorchANI's built-in ANI models: their names, their elements, and where their weights come from.

TorchANI reads the parameters from ``TORCHANI_DATA_DIR`` when it is set (an offline cache; the Makefile and
tests/conftest.py point it at ``../shared/models/torchani`` next to a checkout), else from its own default
location, downloading them on first use.
"""

import os

ANI_MODELS = {'ani1x': 'ANI1x', 'ani1ccx': 'ANI1ccx', 'ani2x': 'ANI2x'}  # our name -> torchani.models factory

# Elements the published ANI models were trained on.
ANI_ELEMENTS = {
    'ani1x': {'H', 'C', 'N', 'O'},
    'ani1ccx': {'H', 'C', 'N', 'O'},
    'ani2x': {'H', 'C', 'N', 'O', 'F', 'S', 'Cl'},
}

_cache = {}


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
        os.environ.setdefault('TORCHANI_NO_WARN_EXTENSIONS', '1')
        import torchani
        _cache[key] = getattr(torchani.models, ANI_MODELS[key])(periodic_table_index=True).double()
    return _cache[key]
