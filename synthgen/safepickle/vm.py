"""A pickle reader with no object model: a small opcode interpreter that builds only inert data.

Python's `pickle.Unpickler` (and so any allow-list built on `find_class`) hands allowed globals
real objects: `numpy.dtype.__setstate__` then runs on attacker state during BUILD, SETITEM acts
on whatever object is on the stack, and the memo is a list an index can blow up. This reader
interprets the opcodes itself and can only ever produce:

  * atoms: None, bool, int (bounded width), float, str, bytes;
  * plain containers: tuple, list, dict (incl. OrderedDict / an EasyDict stand-in), set, frozenset;
  * the records and values that the caller's `globals` table builds from those (the table maps
    `(module, name)` to a plain Python function of plain data; nothing else is callable).

Every global goes through `globals`; BUILD is delegated to the caller's `build` hook (which
accepts only its own records); SETITEM/APPEND/ADDITEMS act only on dict/list/set; the memo is
a dict; every length is checked against the bytes actually left in the file; the object graph
is checked for cycles and bounded depth before it is returned. No Python object is ever
constructed from a class named in the file, so no code from the file can run.
"""

from __future__ import annotations

import struct
from collections import OrderedDict

from synthgen.errors import DataError, UnsafePickleError

from .limits import _check_graph, escape, hashable
from .opcodes import NO_NEW_OBJECT, OPS

MAX_LONG_BYTES = 64  # LONG1/LONG4 width; the largest legitimate value is torch's 10-byte magic


class PickleVM:
    """Interpret one pickle starting at `pos` of `data`.

    globals_: {(module, name): callable(*args)}; newobj: {(module, name): callable()} for NEWOBJ;
    build(obj, state) -> obj or raise; persistent(pid) -> obj or raise (None: refused).
    kind: what the file should be, for messages. py2_str: how Python 2 `str` (BINSTRING) reads:
    "ascii" (pickle's default) or "bytes" (pickle.load(encoding="bytes"): binary data written by
    Python 2, such as the images of insightface's .bin files).
    """

    def __init__(self, data, where: str, globals_: dict, newobj: dict | None = None, build=None, persistent=None,
                 kind: str = "network snapshot", py2_str: str = "ascii", view_bytes_from: int | None = None):
        self.data = memoryview(data)
        # Objects a load may create: ~16 bytes of file each (plus slack). A genuine snapshot
        # creates about one object per kilobyte; 1-byte opcodes like EMPTY_SET would otherwise
        # turn a 20 MB file into gigabytes of Python objects.
        self.max_objects = len(self.data) // 16 + 100_000
        self.where = where
        self.globals = globals_
        self.newobj = newobj or {}
        self.build_hook = build
        self.persistent = persistent
        self.kind = kind
        self.py2_str = py2_str
        # BINBYTES/BINBYTES8 payloads of at least this many bytes are pushed as read-only memoryviews
        # of `data` (no copy) instead of bytes; for callers whose builders take them (tensor storages)
        self.view_bytes_from = view_bytes_from

    # -- byte reading ------------------------------------------------------------------------
    def _take(self, n: int) -> memoryview:
        if n < 0 or self.pos + n > len(self.data):
            raise DataError(f"{self.where}: truncated or corrupt pickle (an opcode at byte {self.pos} needs {n} bytes, "
                            f"{len(self.data) - self.pos} left)")
        b = self.data[self.pos : self.pos + n]
        self.pos += n
        return b

    def _u(self, fmt: str) -> int:
        s = struct.Struct(fmt)
        return s.unpack(self._take(s.size))[0]

    def _line(self, limit: int = 256) -> str:
        end = bytes(self.data[self.pos : self.pos + limit + 1]).find(b"\n")
        if end < 0:
            raise DataError(f"{self.where}: truncated or corrupt pickle (unterminated text argument at byte {self.pos})")
        text = bytes(self._take(end + 1))[:-1]
        try:
            return text.decode("ascii")
        except UnicodeDecodeError:
            raise DataError(f"{self.where}: truncated or corrupt pickle (non-ASCII name at byte {self.pos})") from None

    def _refuse(self, what: str):
        raise UnsafePickleError(f"{what}; synthgen's pickle reader builds only plain data, so the file was not "
                                "loaded and nothing in it ran")

    # -- stack helpers -----------------------------------------------------------------------
    def _pop(self):
        if not self.stack:
            raise DataError(f"{self.where}: truncated or corrupt pickle (stack underflow at byte {self.pos})")
        return self.stack.pop()

    def _pop_mark(self) -> list:
        if not self.marks:
            raise DataError(f"{self.where}: truncated or corrupt pickle (no MARK before byte {self.pos})")
        k = self.marks.pop()
        items = self.stack[k:]
        del self.stack[k:]
        return items

    def _top(self):
        if not self.stack:
            raise DataError(f"{self.where}: truncated or corrupt pickle (stack underflow at byte {self.pos})")
        return self.stack[-1]

    def _hashable(self, x):
        """Dict keys and set items: strings (hashes are randomised) or integers below 2**61 - 1
        (hashed to themselves): no crafted hash collisions, no expensive hashing."""
        return hashable(x, self._refuse)

    def _tuple(self, items) -> tuple:
        return tuple(items)

    def _global(self, module: str, name: str):
        fn = self.globals.get((module, name)) or self.newobj.get((module, name))
        if fn is None:
            self._refuse(f"refused global '{escape(module)}.{escape(name)}': it is not on the allow-list of "
                         f"what a {self.kind} holds")
        return _Global(module, name)

    # -- the interpreter ---------------------------------------------------------------------
    def run(self, pos: int = 0):
        """Return (object, position after STOP)."""
        self.pos, self.stack, self.marks, self.memo = pos, [], [], {}
        op_names = OPS
        created = 0
        while True:
            if self.pos >= len(self.data):
                raise DataError(f"{self.where}: truncated or corrupt pickle (no STOP opcode)")
            code = self.data[self.pos]
            self.pos += 1
            name = op_names.get(code)
            if name is None:
                self._refuse(f"pickle opcode 0x{code:02x} at byte {self.pos - 1} is not supported")
            if name not in NO_NEW_OBJECT:
                created += 1
                if created > self.max_objects:
                    raise DataError(f"{self.where}: creates more than {self.max_objects} objects for a "
                                    f"{len(self.data)}-byte file; not a genuine {self.kind}")
            if name == "STOP":
                obj = self._pop()
                _check_graph(obj, self.where, self.kind)
                return obj, self.pos
            getattr(self, "op_" + name)()

    # framing / protocol
    def op_PROTO(self):
        p = self._take(1)[0]
        if not 2 <= p <= 5:
            raise DataError(f"{self.where}: pickle protocol {p} (expected 2-5)")

    def op_FRAME(self):
        n = self._u("<Q")
        if n > len(self.data) - self.pos:
            raise DataError(f"{self.where}: truncated or corrupt pickle (frame of {n} bytes at byte {self.pos})")

    # stack
    def op_MARK(self):
        self.marks.append(len(self.stack))

    def op_POP(self):
        if self.stack:
            self.stack.pop()
        else:
            self._pop_mark()

    def op_POP_MARK(self):
        self._pop_mark()

    def op_DUP(self):
        self.stack.append(self._top())

    # atoms
    def op_NONE(self):
        self.stack.append(None)

    def op_NEWTRUE(self):
        self.stack.append(True)

    def op_NEWFALSE(self):
        self.stack.append(False)

    def op_BININT(self):
        self.stack.append(self._u("<i"))

    def op_BININT1(self):
        self.stack.append(self._take(1)[0])

    def op_BININT2(self):
        self.stack.append(self._u("<H"))

    def _long(self, n):
        if n > MAX_LONG_BYTES:
            raise DataError(f"{self.where}: a {n}-byte integer (at most {MAX_LONG_BYTES}); not a {self.kind}")
        self.stack.append(int.from_bytes(self._take(n), "little", signed=True))

    def op_LONG1(self):
        self._long(self._take(1)[0])

    def op_LONG4(self):
        self._long(self._u("<i"))

    def op_BINFLOAT(self):
        self.stack.append(self._u(">d"))

    def _text(self, n):
        try:
            self.stack.append(str(self._take(n), "utf-8", "surrogatepass"))
        except UnicodeDecodeError:
            raise DataError(f"{self.where}: truncated or corrupt pickle (invalid UTF-8 text at byte {self.pos})") from None

    def op_SHORT_BINUNICODE(self):
        self._text(self._take(1)[0])

    def op_BINUNICODE(self):
        self._text(self._u("<I"))

    def op_BINUNICODE8(self):
        self._text(self._u("<Q"))

    def op_SHORT_BINBYTES(self):
        self.stack.append(bytes(self._take(self._take(1)[0])))

    def _bytes(self, n):
        b = self._take(n)
        self.stack.append(b.toreadonly() if self.view_bytes_from is not None and n >= self.view_bytes_from
                          else bytes(b))

    def op_BINBYTES(self):
        self._bytes(self._u("<I"))

    def op_BINBYTES8(self):
        self._bytes(self._u("<Q"))

    def op_SHORT_BINSTRING(self):  # Python 2 str: ASCII text (pickle's default) or bytes (py2_str)
        self._ascii(self._take(1)[0])

    def op_BINSTRING(self):
        self._ascii(self._u("<i"))

    def _ascii(self, n):
        if self.py2_str == "bytes":
            self.stack.append(bytes(self._take(n)))
            return
        try:
            self.stack.append(str(self._take(n), "ascii"))
        except UnicodeDecodeError:
            raise DataError(f"{self.where}: truncated or corrupt pickle (non-ASCII Python 2 string at byte {self.pos})") from None

    # containers
    def op_EMPTY_TUPLE(self):
        self.stack.append(())

    def op_TUPLE(self):
        self.stack.append(self._tuple(self._pop_mark()))

    def op_TUPLE1(self):
        self.stack.append(self._tuple([self._pop()]))

    def op_TUPLE2(self):
        b, a = self._pop(), self._pop()
        self.stack.append(self._tuple([a, b]))

    def op_TUPLE3(self):
        c, b, a = self._pop(), self._pop(), self._pop()
        self.stack.append(self._tuple([a, b, c]))

    def op_EMPTY_LIST(self):
        self.stack.append([])

    def op_LIST(self):
        self.stack.append(self._pop_mark())

    def op_EMPTY_DICT(self):
        self.stack.append({})

    def op_DICT(self):
        items = self._pop_mark()
        if len(items) % 2:
            raise DataError(f"{self.where}: truncated or corrupt pickle (odd number of dict items at byte {self.pos})")
        self.stack.append({self._hashable(items[i]): items[i + 1] for i in range(0, len(items), 2)})

    def op_EMPTY_SET(self):
        self.stack.append(set())

    def op_FROZENSET(self):
        self.stack.append(frozenset(self._hashable(x) for x in self._pop_mark()))

    def _target(self, kind, opname):
        t = self._top()
        if not (type(t) in kind or (kind is _DICTS and isinstance(t, dict))):
            self._refuse(f"{opname} on a {type(t).__name__} is not allowed")
        return t

    def op_APPEND(self):
        v = self._pop()
        self._target((list,), "APPEND").append(v)

    def op_APPENDS(self):
        items = self._pop_mark()
        self._target((list,), "APPENDS").extend(items)

    def op_SETITEM(self):
        v, k = self._pop(), self._pop()
        self._target(_DICTS, "SETITEM")[self._hashable(k)] = v

    def op_SETITEMS(self):
        items = self._pop_mark()
        if len(items) % 2:
            raise DataError(f"{self.where}: truncated or corrupt pickle (odd number of dict items at byte {self.pos})")
        d = self._target(_DICTS, "SETITEMS")
        for i in range(0, len(items), 2):
            d[self._hashable(items[i])] = items[i + 1]

    def op_ADDITEMS(self):
        items = self._pop_mark()
        s = self._target((set,), "ADDITEMS")
        s.update(self._hashable(x) for x in items)

    # memo: a dict, so a huge index costs nothing
    def _put(self, i):
        self.memo[i] = self._top()

    def op_PUT(self):
        self._put(int(self._line(20)))

    def op_BINPUT(self):
        self._put(self._take(1)[0])

    def op_LONG_BINPUT(self):
        self._put(self._u("<I"))

    def op_MEMOIZE(self):
        self._put(len(self.memo))

    def _get(self, i):
        try:
            self.stack.append(self.memo[i])
        except KeyError:
            raise DataError(f"{self.where}: truncated or corrupt pickle (memo entry {i} read before it was written)") from None

    def op_GET(self):
        self._get(int(self._line(20)))

    def op_BINGET(self):
        self._get(self._take(1)[0])

    def op_LONG_BINGET(self):
        self._get(self._u("<I"))

    # globals and calls
    def op_GLOBAL(self):
        module = self._line()
        name = self._line()
        self.stack.append(self._global(module, name))

    def op_STACK_GLOBAL(self):
        name, module = self._pop(), self._pop()
        if not isinstance(module, str) or not isinstance(name, str):
            raise DataError(f"{self.where}: truncated or corrupt pickle (STACK_GLOBAL needs two strings)")
        self.stack.append(self._global(module, name))

    def op_REDUCE(self):
        args, fn = self._pop(), self._pop()
        if not isinstance(fn, _Global) or (fn.module, fn.name) not in self.globals:
            self._refuse(f"REDUCE on a {type(fn).__name__} is not allowed")
        if not isinstance(args, tuple):
            self._refuse("REDUCE with non-tuple arguments is not allowed")
        self.stack.append(self.globals[(fn.module, fn.name)](*args))

    def op_NEWOBJ(self):
        args, cls = self._pop(), self._pop()
        if not isinstance(cls, _Global) or (cls.module, cls.name) not in self.newobj:
            what = f"{escape(cls.module)}.{escape(cls.name)}" if isinstance(cls, _Global) else type(cls).__name__
            self._refuse(f"NEWOBJ of '{what}' is not allowed")
        if args != ():
            self._refuse("NEWOBJ with arguments is not allowed")
        self.stack.append(self.newobj[(cls.module, cls.name)]())

    def op_BUILD(self):
        state = self._pop()
        obj = self._top()
        if self.build_hook is None:
            self._refuse(f"BUILD on a {type(obj).__name__} is not allowed")
        self.build_hook(obj, state)

    def op_BINPERSID(self):
        pid = self._pop()
        if self.persistent is None:
            raise DataError(f"{self.where}: pickle uses persistent ids (a torch.save file?); not a {self.kind}")
        self.stack.append(self.persistent(pid))


class _Global:
    """A name from the file's allow-list; only the VM's own table decides what it does."""

    __slots__ = ("module", "name")

    def __init__(self, module, name):
        self.module, self.name = module, name


_DICTS = (dict, OrderedDict)
