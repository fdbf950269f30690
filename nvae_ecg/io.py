"""Atomic file writes shared by every module that leaves results on disk.

A crash (or a kill) in the middle of a write must never leave a half-written JSON
next to good data, so every JSON goes to a temporary file in the same folder, is
flushed to disk and then renamed over the target (``os.replace`` is atomic on
POSIX). This module imports only the standard library and numpy, so light-weight
tools such as ``nvae_ecg.data.prepare`` can use it without importing torch.

Example::

    python -c "from nvae_ecg.io import atomic_write_json; atomic_write_json('/tmp/x.json', {'a': 1})"
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

# mkstemp creates files with mode 0600; give them the permissions an ordinary open() would.
_UMASK = os.umask(0o022)
os.umask(_UMASK)


def _json_default(o):
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Write ``obj`` as indented JSON to ``path`` through a temporary file, fsync and an atomic rename."""
    return atomic_write_text(path, json.dumps(obj, indent=2, default=_json_default) + "\n")


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to ``path`` through a temporary file in the same folder, fsync and an atomic rename."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path
