"""Error types shared by every stage, and the one-line rendering of any error.

The CLI maps them to exit codes: usage errors (a bad flag value) exit 2, data errors
(a file that is not what it should be) exit 1. Messages say what was received, what was
expected and how to fix it; the CLI prints them without a traceback unless `--debug`.

`describe_exception` turns *any* exception (ours, OSError, MemoryError, RecursionError,
anything unexpected) into `(exit_code, one line)`; `clean_message` escapes control characters
(a newline inside a file-supplied name cannot forge a second `Error:` line) and drops advice we
never give (retrying `torch.load` with `weights_only=False` runs code from the file).
"""

from __future__ import annotations

import errno
import re
import unicodedata
from pathlib import Path


class SynthgenError(Exception):
    """Base class; `exit_code` is what the CLI returns."""

    exit_code = 1


class UsageError(SynthgenError):
    """A flag or argument has a value we cannot use (exit code 2)."""

    exit_code = 2

    def __init__(self, message: str, flag: str | None = None):
        self.flag = flag
        self.message = message  # without the flag, so a caller can name the setting differently
        super().__init__(f"{flag}: {message}" if flag else message)


class DataError(SynthgenError):
    """An input file is unreadable or of the wrong kind, or a file it refers to is missing (exit code 1)."""

    exit_code = 1


class UnsafePickleError(DataError):
    """A pickle asked for a global outside the allow-list; nothing from it was run."""


# ----------------------------------------------------------------------------------------------
# One-line rendering

MAX_MESSAGE = 600  # characters; longer messages are cut (a crafted file can make them huge)
_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def escape_control(text: str) -> str:
    """Replace control, format (bidi overrides...), line/paragraph separator and surrogate
    characters by visible escapes, so a message is exactly one printable line."""
    out = []
    for ch in text:
        if ch in _ESCAPES:
            out.append(_ESCAPES[ch])
        elif unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp", "Cs"):
            o = ord(ch)
            out.append(f"\\x{o:02x}" if o < 0x100 else f"\\u{o:04x}" if o < 0x10000 else f"\\U{o:08x}")
        else:
            out.append(ch)
    return "".join(out)


# torch's weights_only failure text tells the user to retry with weights_only=False (which runs
# code from the file) or to allow-list the global: we keep only the reason.
_UNSAFE_ADVICE = re.compile(r"weights_only[`'\"\s]*(?:=|set to|to)?[`'\"\s]*False|safe_globals", re.I)
_ADVICE_SENTENCE = re.compile(r"`weights_only|weights_only`|weights_only\s*=|safe_globals|trust|can still be loaded|"
                              r"documentation of torch\.load|allowlist", re.I)


def scrub_unsafe_advice(text: str) -> str:
    """Remove any suggestion to load with `weights_only=False` or to allow-list globals."""
    if not _UNSAFE_ADVICE.search(text):
        return text
    sentences = re.split(r"(?<=[.;])\s+|\n+", text)
    kept = [s.strip() for s in sentences if s.strip() and not _ADVICE_SENTENCE.search(s)]
    return " ".join(kept) or "torch refused to load the file"


def clean_message(text: str) -> str:
    text = escape_control(scrub_unsafe_advice(str(text)))
    if len(text) > MAX_MESSAGE:
        text = text[: MAX_MESSAGE - 25] + f"... ({len(text)} characters)"
    return text


_TEMP_NAME = re.compile(r"^\.(.+)\.tmp-\d+$")

# errno -> (what was found, what was expected, how to fix)
_OS_ERRORS = {
    errno.ENOSPC: ("no space left on device", "room for the output",
                   "free some space (or choose another output folder) and rerun the same command to resume"),
    errno.EDQUOT: ("disk quota exceeded", "room for the output",
                   "free some space (or choose another output folder) and rerun the same command to resume"),
    errno.EACCES: ("permission denied", "a location this user can read and write",
                   "fix its permissions or choose another folder"),
    errno.EPERM: ("operation not permitted", "a location this user can read and write",
                  "fix its permissions or choose another folder"),
    errno.EROFS: ("read-only file system", "a writable folder", "choose an output folder on a writable file system"),
    errno.ENOENT: ("no such file or directory", "an existing path", "check the path"),
    errno.ENOTDIR: ("a path component is not a directory", "a directory", "check the path"),
    errno.EISDIR: ("is a directory", "a file", "check the path"),
    errno.EMFILE: ("too many open files", "fewer open files", "raise the limit (ulimit -n) or use fewer --workers"),
    errno.ENAMETOOLONG: ("file name too long", "a shorter path", "use a shorter output path"),
    errno.EIO: ("input/output error", "a healthy disk", "check the disk (dmesg) and rerun the same command to resume"),
    errno.ELOOP: ("too many levels of symbolic links", "a path without symlink loops", "fix the symlinks"),
}


def _display_path(filename) -> str:
    if filename is None:
        return ""
    p = Path(str(filename) if not isinstance(filename, bytes) else filename.decode("utf-8", "replace"))
    m = _TEMP_NAME.match(p.name)
    return str(p.with_name(m.group(1))) if m else str(p)  # name the real file, not its temp twin


def describe_os_error(e: OSError, where: str) -> str:
    path = _display_path(e.filename) or where
    code = errno.errorcode.get(e.errno, "") if e.errno else ""
    found, expected, fix = _OS_ERRORS.get(e.errno, (e.strerror or str(e), "", "check the path and rerun"))
    found = f"{found} ({code})" if code else found
    return f"{path}: {found}" + (f", expected {expected}" if expected else "") + f"; {fix}"


def describe_exception(e: BaseException, where: str = "synthgen") -> tuple[int, str]:
    """-> (exit code, one-line message without the `Error: ` prefix) for any exception.

    `where` names the command (e.g. "synthgen align") for errors that carry no file name.
    """
    if isinstance(e, SynthgenError):
        return e.exit_code, clean_message(str(e))
    if isinstance(e, MemoryError):
        detail = f": {e}" if str(e) else ""
        return 1, clean_message(f"{where}: ran out of memory (MemoryError{detail}), expected the job to fit in RAM; "
                                "use smaller inputs or a smaller --batch-size, free memory, or rerun with --debug "
                                "for the traceback")
    if isinstance(e, RecursionError):
        return 1, clean_message(f"{where}: input nested too deeply (RecursionError), expected a well-formed file; "
                                "the input is malformed or crafted, do not use it (rerun with --debug for the traceback)")
    if isinstance(e, OSError):
        return 1, clean_message(describe_os_error(e, where))
    text = str(e).strip()
    return 1, clean_message(f"{where}: unexpected {type(e).__name__}" + (f": {text}" if text else "")
                            + "; rerun with --debug for the traceback")
