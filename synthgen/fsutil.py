"""Small file-system helpers: atomic writes and hashing."""

from __future__ import annotations

import contextlib
import hashlib
import os
from pathlib import Path


@contextlib.contextmanager
def atomic_path(path):
    """Yield a temporary path next to `path`; rename it onto `path` only if the block succeeds.

    A crash or error leaves no file under the final name, so a file that exists is complete.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def atomic_write_bytes(path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.unlink(missing_ok=True)  # a planted symlink at the (predictable) temp name is not followed
        with open(tmp, "wb") as f:
            f.write(data)


def atomic_write_text(path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def sha256_file(path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def read_csv_rows(path, fix: str) -> list[dict]:
    """A CSV file with a header as dicts; a missing or unreadable file is a one-line DataError
    ending with `fix` (what to do)."""
    import csv

    from synthgen.errors import DataError
    from synthgen.safepath import show_path

    try:
        with open(path, newline="", encoding="utf-8") as f:
            return list(csv.DictReader(f))
    except FileNotFoundError:
        raise DataError(f"{show_path(path)}: not found; {fix}") from None
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise DataError(f"{show_path(path)}: unreadable ({type(e).__name__}); {fix}") from None
