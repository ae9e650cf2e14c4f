"""Writing outputs under a temporary name and renaming them when complete,
so a killed job never leaves a file or folder that looks finished."""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path


@contextlib.contextmanager
def atomic_path(path: str | Path):
    """Yield a temporary path beside ``path``; rename it to ``path`` on success.

    Works for files and for folders (the caller creates what it needs at the
    temporary path). On an exception the temporary is removed and ``path`` is
    left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp{os.getpid()}")
    _remove(temporary)
    try:
        yield temporary
    except BaseException:
        _remove(temporary)
        raise
    if path.is_dir() and temporary.is_dir():
        # A folder cannot be replaced by rename; move the old one away first.
        old = path.with_name(f".{path.name}.old{os.getpid()}")
        os.replace(path, old)
        os.replace(temporary, path)
        _remove(old)
    else:
        os.replace(temporary, path)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def write_table(table, path: str | Path, **to_csv) -> Path:
    """A pandas table as CSV (``to_csv``'s options), written atomically;
    scores are written with 6 decimals unless said otherwise."""
    options = {"index": False, "float_format": "%.6f", **to_csv}
    with atomic_path(path) as temporary:
        table.to_csv(temporary, **options)
    return Path(path)


def write_json(value, path: str | Path) -> Path:
    """``value`` as indented JSON with a final newline, written atomically."""
    import json

    with atomic_path(path) as temporary:
        temporary.write_text(json.dumps(value, indent=2) + "\n")
    return Path(path)
