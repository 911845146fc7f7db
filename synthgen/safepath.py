"""Paths read from files stay inside their root.

Every path synthgen reads from a file it did not just compute (manifest `path` / `source`,
shard `keys`, index.json `file`, the align journal) goes through `safe_relpath` before it
is joined to a directory. Accepted: a `str` that is relative and normalised, i.e. '/'-separated
non-empty components, none of them '.' or '..', no backslash, no NUL or other control /
format / line-separator characters, no leading '/' and no drive letter ('C:'); and, when a
root is given, `root / value` with every symlink followed must lie inside `root` (also
resolved). Anything else is a `DataError` whose message is one line: the file, the entry, the
value as `repr` (so a newline in it cannot start a forged line), what was expected, the fix.
"""

from __future__ import annotations

import re
import unicodedata
from pathlib import Path

from synthgen.errors import DataError, UsageError

_DRIVE = re.compile(r"^[A-Za-z]:")
# Cc: control (NUL, newline, ESC ...), Cf: format (bidi overrides), Zl/Zp: line/paragraph
# separators, Cs: lone surrogates (undecodable bytes smuggled through surrogateescape).
_BAD_CATEGORIES = ("Cc", "Cf", "Zl", "Zp", "Cs")
# Common paths ("000123/000045.png") pass without the per-character check.
_PLAIN = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]*(?:/[A-Za-z0-9_-][A-Za-z0-9_.-]*)*")
EXPECTED = ("a relative path like 'identity/file.png': '/'-separated, no '.', '..' or empty parts, "
            "no backslash, drive letter or control characters")


def show(value, limit: int = 120) -> str:
    """One-line, escaped rendering of an untrusted value for a message."""
    r = repr(value)
    return r if len(r) <= limit else r[: limit - 5] + "...'" + f"({len(r)} chars)"


def show_path(path) -> str:
    """A path for a message: as is when printable, else escaped."""
    s = str(path)
    return s if s.isprintable() else repr(s)


def path_problem(value) -> str | None:
    """Why `value` is not a safe normalised relative path (None when it is)."""
    if not isinstance(value, str):
        return f"a {type(value).__name__}, not a string"
    if _PLAIN.fullmatch(value):
        return None
    if not value:
        return "empty"
    for ch in value:
        if unicodedata.category(ch) in _BAD_CATEGORIES:
            return f"contains the control character {ch!r}"
    if "\\" in value:
        return "contains a backslash"
    if value.startswith("/"):
        return "absolute"
    if _DRIVE.match(value):
        return "starts with a drive letter"
    parts = value.split("/")
    if "" in parts:
        return "has an empty component ('//' or a trailing '/')"
    if ".." in parts:
        return "has a '..' component"
    if "." in parts:
        return "has a '.' component"
    return None


def safe_relpath(value, root, file, entry: str, fix: str = "") -> str:
    """Return `value` if it is a safe relative path (inside `root` when one is given), else raise.

    value: the raw value read from `file` (bytes are decoded as UTF-8); root: the directory it
    is relative to, or None to check the spelling only; file: where it was read (for the
    message); entry: which entry (e.g. "line 3 'path'", "keys[17]"); fix: how to repair it.
    """
    if isinstance(value, (bytes, bytearray)):
        try:
            value = bytes(value).decode("utf-8")
        except UnicodeDecodeError:
            _fail(file, entry, value, "not valid UTF-8", fix)
    why = path_problem(value)
    if why is None and root is not None:
        base = Path(root).resolve()
        target = (base / value).resolve()
        if target != base and base not in target.parents:
            why = f"resolves (following symlinks) to {show_path(target)}, outside {show_path(base)}"
    if why is not None:
        _fail(file, entry, value, why, fix)
    return value


def _fail(file, entry, value, why, fix):
    fix = fix or "regenerate the file with synthgen, or correct the entry by hand"
    raise DataError(f"{show_path(file)}: {entry} is {show(value)}: {why}; expected {EXPECTED}; {fix}")


def require_input(path, flag: str, expected: str) -> None:
    """The one rule for a path the user named that does not exist: a usage error (exit 2), in
    every command. (A file that exists but is wrong is a DataError, exit 1.)"""
    if not Path(path).exists() and not Path(path).is_symlink():
        raise UsageError(f"{show_path(Path(path))}: no such file or directory, expected {expected}; check the path",
                         flag)


class NotARegularFile(Exception):
    """A path inside a root that is a symlink (in any component), a FIFO, a device, a folder, or
    larger than the reader's limit; the message says which."""


def open_inside(root, rel: str, limit: int | None = None) -> int:
    """A file descriptor for root/rel, opened without following links and checked on the open
    descriptor: every component below `root` must be a real folder and the last a regular file (no
    FIFO that would block, no /dev/zero that never ends) of at most `limit` bytes. Race-free: each
    folder is opened relative to its parent's descriptor, never looked up again by name."""
    import os
    import stat

    parts = [p for p in str(rel).split("/") if p not in ("", ".")]
    if not parts or any(p == ".." for p in parts):
        raise NotARegularFile(f"{rel}: not a relative path inside the folder")
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    fd = os.open(root, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | getattr(os, "O_CLOEXEC", 0))
    try:
        for p in parts[:-1]:
            try:
                nxt = os.open(p, flags | getattr(os, "O_DIRECTORY", 0), dir_fd=fd)
            except FileNotFoundError:
                raise
            except OSError as e:
                raise NotARegularFile(f"{rel}: {p} is not a real folder ({e.strerror})") from None
            os.close(fd)
            fd = nxt
        try:
            f = os.open(parts[-1], flags | getattr(os, "O_NONBLOCK", 0), dir_fd=fd)
        except FileNotFoundError:
            raise
        except OSError as e:
            import errno

            why = "a symlink" if e.errno in (errno.ELOOP, getattr(errno, "EMLINK", -1)) else e.strerror
            raise NotARegularFile(f"{rel}: cannot be opened as a plain file ({why})") from None
    finally:
        os.close(fd)
    try:
        st = os.fstat(f)
    except OSError:
        os.close(f)
        raise
    if not stat.S_ISREG(st.st_mode) or (limit is not None and st.st_size > limit):
        os.close(f)
        what = "not a regular file (a FIFO, device or folder)" if not stat.S_ISREG(st.st_mode) else \
            f"{st.st_size:,} bytes, over the {limit:,}-byte limit for this file"
        raise NotARegularFile(f"{rel}: {what}")
    return f


def read_inside(root, rel: str, limit: int) -> bytes:
    """The bytes of root/rel (see open_inside), at most `limit`."""
    import os

    fd = open_inside(root, rel, limit)
    with os.fdopen(fd, "rb") as f:
        data = f.read(limit + 1)
    if len(data) > limit:
        raise NotARegularFile(f"{rel}: grew past the {limit:,}-byte limit while read")
    return data


def sha256_inside(root, rel: str) -> str:
    """sha256 of root/rel (see open_inside), read in blocks."""
    import hashlib
    import os

    h = hashlib.sha256()
    with os.fdopen(open_inside(root, rel), "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()
