"""The limits a pickle's object graph must stay within, and how file values appear in messages.

Depth and cycles (checked once the graph is built, without recursion), hashable keys (strings
or integers below 2**61: no crafted collisions, no expensive hashing), and escape/show: every
value from a file is printed on one line, atoms only (str() of a crafted nested tuple can take
exponential time).
"""

from __future__ import annotations

from synthgen.errors import DataError

MAX_DEPTH = 64  # nesting of containers/records; NVIDIA snapshots use about 20
ATOMS = (type(None), bool, int, float, str, bytes)


def escape(text, limit: int = 120) -> str:
    """Printable one-line form of a value taken from a file (no control characters, bounded
    length). Only atoms are spelt out; anything else is named by its type, because str() of a
    crafted nested tuple can take exponential time."""
    if isinstance(text, BaseException):
        text = str(text)
    if not isinstance(text, ATOMS):
        return f"<{type(text).__name__}>"
    s = text[: limit * 2] if isinstance(text, (str, bytes)) else text
    out = (s if isinstance(s, str) else repr(s)).encode("unicode_escape").decode("ascii")
    return out if len(out) <= limit else out[:limit] + "..."


def show(value, limit: int = 80) -> str:
    """repr-like one-line form of a file value for messages: quoted strings, atoms, else the type."""
    if isinstance(value, str):
        return "'" + escape(value, limit) + "'"
    return escape(value, limit)


_MAX_KEY_INT = (1 << 61) - 1  # CPython hashes ints modulo this prime


def hashable(x, refuse):
    if isinstance(x, str) or (type(x) is int and -_MAX_KEY_INT < x < _MAX_KEY_INT):
        return x
    refuse(f"a dict key or set item of type {type(x).__name__} is not allowed (only strings and integers "
           "below 2**61)")

def children(x):
    """The objects a value refers to (for graph checks); records expose `_children()`."""
    if isinstance(x, (list, tuple, set, frozenset)):
        return x
    if isinstance(x, dict):
        return [*x.keys(), *x.values()]
    kids = getattr(x, "_children", None)
    return kids() if kids is not None else ()


def _check_graph(root, where: str, kind: str = "network snapshot") -> None:
    """Refuse cycles and nesting deeper than MAX_DEPTH, without recursion."""
    depth: dict[int, int] = {}
    on_path: set[int] = set()
    keep = []  # keeps every visited object alive, so ids stay unique during the walk
    stack = [(root, False)]
    while stack:
        x, done = stack.pop()
        if isinstance(x, ATOMS):
            continue
        i = id(x)
        if done:
            on_path.discard(i)
            depth[i] = 1 + max((depth.get(id(c), 0) for c in children(x) if not isinstance(c, ATOMS)), default=0)
            if depth[i] > MAX_DEPTH:
                raise DataError(f"{where}: objects nested more than {MAX_DEPTH} deep; not a {kind}")
            continue
        if i in depth:
            continue
        if i in on_path:
            raise DataError(f"{where}: the pickle's object graph has a cycle; not a {kind}")
        on_path.add(i)
        keep.append(x)
        stack.append((x, True))
        for c in children(x):
            if not isinstance(c, ATOMS):
                if id(c) in on_path:
                    raise DataError(f"{where}: the pickle's object graph has a cycle; not a {kind}")
                stack.append((c, False))
