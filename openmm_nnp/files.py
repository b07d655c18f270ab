"""Files a run or a protocol writes and reads back: JSON that names a damaged file, atomic writes."""

import json
import os
from pathlib import Path

from openmm_nnp.errors import InputError


def readJSON(path, fix):
    """The content of a JSON file; a damaged one raises an InputError that names it and says ``fix``."""
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise InputError(f"'{path}' is damaged (not valid JSON: {e}). {fix}.") from None


def atomicWrite(path, data):
    """Write ``data`` (bytes) to ``path`` so that a crash leaves the old file or the new one, never a part."""
    tmp = Path(str(path) + '.tmp')
    with open(tmp, 'wb') as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
