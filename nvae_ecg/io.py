"""Atomic file writes shared by every module that leaves results on disk.

A crash (or a kill) in the middle of a write must never leave a half-written JSON
next to good data, so every JSON goes to a temporary file in the same folder, is
flushed to disk and then renamed over the target (``os.replace`` is atomic on
POSIX). Temporaries carry the writer's process id (``.NAME.tmp-PID...``), so that
:func:`remove_stale_temporaries` can remove those of killed runs at the next start. This
module imports only the standard library and numpy, so light-weight tools such as
``nvae_ecg.data.prepare`` can use it without importing torch.

Example::

    python -c "from nvae_ecg.io import atomic_write_json; atomic_write_json('/tmp/x.json', {'a': 1})"
"""

from __future__ import annotations

import json
import os
import re
import shutil
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
    # The process id in the name lets remove_stale_temporaries tell a killed writer's file from a live one's.
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.tmp-{os.getpid()}-", dir=path.parent)
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


#: Temporary names of this package's atomic writes: ``.NAME.tmp-PID`` (checkpoints, generated-sample folders),
#: optionally followed by ``-RANDOM`` (``atomic_write_text``).
_TEMP_NAME = re.compile(r"\.(?P<name>.+?)\.tmp-(?P<pid>\d+)(?:-\w+)?")


def pid_alive(pid: int) -> bool:
    """Whether a process with this id exists on this machine (signal 0 probes without signalling)."""
    if pid <= 0:
        return True  # not a process id of ours (0 and negatives address process groups): never treat as dead
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        return True
    except OverflowError:
        return False
    return True


def remove_stale_temporaries(folder: str | os.PathLike, name: str | None = None) -> list[Path]:
    """Remove ``.NAME.tmp-PID`` files and folders in ``folder`` whose process is gone; returns what was removed.

    A killed writer never reaches its rename or its clean-up, so its temporary stays; one of a live process (this
    one included) is kept, as it may still be written. ``name`` limits the clean-up to temporaries of that target.
    """
    folder = Path(folder)
    removed: list[Path] = []
    if not folder.is_dir():
        return removed
    for entry in sorted(folder.iterdir()):
        m = _TEMP_NAME.fullmatch(entry.name)
        if m is None or (name is not None and m.group("name") != name) or pid_alive(int(m.group("pid"))):
            continue
        try:
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
        except FileNotFoundError:  # removed meanwhile by another clean-up
            continue
        removed.append(entry)
    return removed
