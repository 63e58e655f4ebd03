"""Where derived data lives and how it is keyed: by the content of the files it was made from.

Caches go under ``$CELLGEN_CACHE`` (default ``~/.cache/cellgen``), never the working directory, and their names
carry a fingerprint of every source file's name, size and modification time: repairing a frame makes a new key,
so a stale crop or patch cache is never trained on.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

AUTO = "auto"


def cache_root() -> Path:
    """``$CELLGEN_CACHE`` or ``~/.cache/cellgen``."""
    value = os.environ.get("CELLGEN_CACHE")
    return Path(value).expanduser() if value else Path.home() / ".cache" / "cellgen"


def resolve_cache_dir(value: str | os.PathLike | None, kind: str) -> Path | None:
    """``None`` disables caching, ``"auto"`` means ``cache_root()/kind``, anything else is the folder itself."""
    if value is None or str(value) == "":
        return None
    return cache_root() / kind if str(value) == AUTO else Path(value).expanduser()


def folder_fingerprint(*folders: Path) -> str:
    """A short hash of the names, sizes and modification times of every file under ``folders`` (recursively).

    Reads no file contents, so it costs one ``stat`` per file even for a 1000-frame sequence.
    """
    digest = hashlib.sha1()
    for folder in folders:
        digest.update(str(folder.resolve()).encode())
        if not folder.is_dir():
            continue
        for dirpath, dirnames, filenames in os.walk(folder):
            dirnames.sort()
            for name in sorted(filenames):
                if name.startswith("."):
                    continue
                stat = os.stat(os.path.join(dirpath, name))
                rel = os.path.relpath(os.path.join(dirpath, name), folder)
                digest.update(f"{rel}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:16]
