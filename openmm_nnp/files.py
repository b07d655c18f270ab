"""Files a run or a protocol writes and reads back: JSON that names a damaged file, atomic writes."""

import json
import os
import tempfile
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
    """Write ``data`` (bytes) to ``path`` so that a crash leaves the old file or the new one, never a part. The
    temporary file is unique, so concurrent writers of one path (e.g. a retried task) cannot mix their bytes."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix='.' + path.name, suffix='.tmp')
    try:
        with os.fdopen(fd, 'wb') as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def writeJSON(path, data):
    """``data`` as indented JSON, written atomically."""
    atomicWrite(path, json.dumps(data, indent=2).encode())
