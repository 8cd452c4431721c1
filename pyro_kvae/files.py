# SPDX-License-Identifier: Apache-2.0
"""
Files that must never be half-written or silently wrong: atomic writes, strict
JSON (no NaN), and loading with errors that name the file and say what to do.

Every write goes to a temporary ``.<name>.<random>.tmp`` beside the target and
is renamed over it, so a reader (or a run killed at any moment) sees the old
file or the new one, never a mixture; :func:`remove_temporaries` clears what a
killed writer left behind.
"""

import json
import math
import os
import tempfile
from typing import Any, Callable, Iterable

TMP_SUFFIX = ".tmp"


def atomic_write(path: str, write: Callable[[Any], None], mode: str = "wb") -> None:
    """Calls ``write(f)`` on a temporary file beside ``path``, flushes it to disk, then renames it to ``path``."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{os.path.basename(path)}.", suffix=TMP_SUFFIX)
    try:
        with os.fdopen(fd, mode) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def remove_temporaries(directory: str) -> list:
    """Deletes the ``.<name>.<random>.tmp`` files that an interrupted :func:`atomic_write` left; returns their names."""
    if not os.path.isdir(directory):
        return []
    names = [n for n in os.listdir(directory) if n.startswith(".") and n.endswith(TMP_SUFFIX)]
    for n in names:
        os.unlink(os.path.join(directory, n))
    return names


def check_finite(record: Any, where: str) -> None:
    """Raises ``ValueError`` naming ``where`` and the key if ``record`` holds a NaN or infinite number."""

    def walk(x, key):
        if isinstance(x, float) and not math.isfinite(x):
            raise ValueError(f"{where}: {key} is {x}; refusing to write a non-finite number")
        if isinstance(x, dict):
            for k, v in x.items():
                walk(v, f"{key}.{k}" if key else str(k))
        elif isinstance(x, (list, tuple)):
            for i, v in enumerate(x):
                walk(v, f"{key}[{i}]")

    walk(record, "")


def write_json(path: str, obj: Any) -> None:
    """Strict JSON (never NaN or Infinity, which strict parsers reject), written atomically."""
    check_finite(obj, path)
    text = json.dumps(obj, indent=2, allow_nan=False) + "\n"
    atomic_write(path, lambda f: f.write(text), mode="w")


def write_jsonl(path: str, rows: Iterable[dict]) -> None:
    """Replaces ``path`` with one strict JSON object a line, atomically."""
    rows = list(rows)
    check_finite(rows, path)
    text = "".join(json.dumps(r, allow_nan=False) + "\n" for r in rows)
    atomic_write(path, lambda f: f.write(text), mode="w")


def append_jsonl(path: str, row: dict) -> None:
    """Appends one strict JSON line to ``path`` (a single write, flushed to disk)."""
    check_finite(row, path)
    line = json.dumps(row, allow_nan=False) + "\n"
    with open(path, "a") as f:
        f.write(line)
        f.flush()
        os.fsync(f.fileno())


def unreadable(path: str, what: str, error: BaseException, fix: str) -> ValueError:
    """The error for a file that exists but cannot be read as ``what``: names the file, the cause
    (the first line of ``error``'s message) and the fix."""
    first = str(error).strip().splitlines()[0][:200] if str(error).strip() else ""
    cause = f"{type(error).__name__}: {first}" if first else type(error).__name__
    return ValueError(f"{path} is not a readable {what} ({cause}). {fix}")
