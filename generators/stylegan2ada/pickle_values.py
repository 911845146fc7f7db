"""The values a network pickle may build, each from plain data with its arguments checked:
numpy dtypes and scalars, bytes, OrderedDicts and sets, legacy torch storages (parsed byte by
byte, never through torch.load) and tensors over them, plus the memory budget every load is
charged against (what the file holds, plus 1 MiB)."""

from __future__ import annotations

import math
import struct
from collections import OrderedDict

import numpy as np
import torch

from synthgen.errors import DataError, UnsafePickleError

from synthgen.safepickle import hashable, show
from synthgen.safepickle import PickleVM, _Global


# numpy dtypes a network pickle may hold: plain little/big-endian numbers, nothing with fields,
# sub-arrays or objects. Spec strings as numpy pickles them (e.g. 'f8', 'i8', 'b1', 'u1').
_NUMPY_KINDS = {"b1": "?", "i1": "i1", "i2": "i2", "i4": "i4", "i8": "i8", "u1": "u1", "u2": "u2", "u4": "u4",
                "u8": "u8", "f2": "f2", "f4": "f4", "f8": "f8", "c8": "c8", "c16": "c16"}


class _DtypeRecord:
    """`numpy.dtype(spec, align, copy)` plus its BUILD state, kept as data until a scalar needs it."""

    __slots__ = ("spec", "byteorder")

    def __init__(self, spec, align=False, copy=False):
        if not isinstance(spec, str) or spec not in _NUMPY_KINDS:
            raise UnsafePickleError(f"numpy dtype {show(spec)} in the pickle is refused "
                                    f"(allowed: {', '.join(sorted(_NUMPY_KINDS))})")
        if align not in (False, True, 0, 1) or copy not in (False, True, 0, 1):
            raise UnsafePickleError("numpy dtype with unexpected arguments in the pickle is refused")
        self.spec, self.byteorder = spec, "<"

    def set_state(self, state) -> None:
        # numpy's dtype state: (version, byteorder, subarray, names, fields, elsize, alignment, flags[, meta])
        ok = (isinstance(state, tuple) and len(state) in (8, 9) and state[0] in (3, 4)
              and state[1] in ("<", ">", "|", "=") and state[2:5] == (None, None, None)
              and state[5:7] == (-1, -1) and isinstance(state[7], int) and state[7] == 0
              and (len(state) == 8 or state[8] is None))
        if not ok:
            raise UnsafePickleError(f"numpy dtype state {show(state)} in the pickle is refused "
                                    "(only plain numeric dtypes: no fields, sub-arrays, objects or flags)")
        self.byteorder = "<" if state[1] in ("|", "=") else state[1]

    def dtype(self) -> np.dtype:
        return np.dtype(_NUMPY_KINDS[self.spec]).newbyteorder(self.byteorder)


def _numpy_scalar(dtype, data=None):
    if not isinstance(dtype, _DtypeRecord) or not isinstance(data, bytes):
        raise UnsafePickleError("numpy scalar in the pickle is not a plain numeric value")
    dt = dtype.dtype()
    if len(data) != dt.itemsize:
        raise UnsafePickleError(f"numpy scalar of {len(data)} bytes for a {dt.itemsize}-byte dtype is refused")
    return np.frombuffer(data, dtype=dt).copy()[0]


def _codecs_encode(text, encoding="latin1"):  # protocol-2 spelling of a bytes object
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise UnsafePickleError("_codecs.encode in the pickle is only allowed for latin1 bytes")
    try:
        return text.encode("latin1")
    except UnicodeEncodeError:
        raise UnsafePickleError("_codecs.encode of a non-latin1 string is refused") from None


def _refuse(what):
    raise UnsafePickleError(f"{what}; the file was not loaded and nothing in it ran")


def _ordered_dict(items=()):
    if items == ():
        return OrderedDict()
    if isinstance(items, list) and all(isinstance(p, (list, tuple)) and len(p) == 2 for p in items):
        return OrderedDict((hashable(k, _refuse), v) for k, v in items)
    raise UnsafePickleError("collections.OrderedDict with unexpected arguments in the pickle is refused")


def _set_of(kind):
    def make(items=()):
        if not isinstance(items, (list, tuple)):
            raise UnsafePickleError(f"builtins.{kind.__name__} of a {type(items).__name__} in the pickle is refused")
        return kind(hashable(x, _refuse) for x in items)

    return make


def _charged(fn, budget, where, per_item=1):
    """Wrap a builder whose output grows with a (possibly memo-shared) input: each call is
    charged against the load's memory budget, so one stored string or list cannot be copied
    a million times for a few bytes each."""
    def call(*args):
        budget.charge(per_item * (len(args[0]) if args and hasattr(args[0], "__len__") else 0), where)
        return fn(*args)

    return call


class _Budget:
    """Bytes a load may allocate for tensors and copied data: what the file holds (plus 1 MiB)."""

    def __init__(self, file_bytes: int):
        self.left = file_bytes + (1 << 20)

    def charge(self, nbytes: int, where: str) -> None:
        self.left -= nbytes
        if self.left < 0:
            raise DataError(f"{where}: its tensors and copies would need more memory than the file holds data "
                            "for (repeated or expanded storages); not a genuine network snapshot")


# -- tensors: legacy torch.save storages, parsed here (never through torch.load) --------------

_STORAGE_DTYPES = {
    "FloatStorage": torch.float32, "DoubleStorage": torch.float64, "HalfStorage": torch.float16,
    "BFloat16Storage": torch.bfloat16, "LongStorage": torch.int64, "IntStorage": torch.int32,
    "ShortStorage": torch.int16, "CharStorage": torch.int8, "ByteStorage": torch.uint8, "BoolStorage": torch.bool,
}
_TORCH_SAVE_MAGIC = 0x1950A86A20F9469CFC6C
_LEGACY_PROTOCOL = 1001


class _StorageRecord:
    __slots__ = ("flat", "claimed")

    def __init__(self, flat: torch.Tensor):
        self.flat, self.claimed = flat, False  # claimed: a tensor already uses this memory as is


class _StorageRef:
    """The persistent id a storage pickle names: ('storage', type, key, location, numel, view)."""

    __slots__ = ("dtype", "key", "numel")


def _storage_type(name):
    def token():
        return name

    return token


def _parse_storage(blob, where: str, budget: _Budget) -> _StorageRecord:
    """One legacy `torch.save(storage)` stream: five small pickles, int64 count, raw data.

    `blob` is bytes, or a read-only memoryview of the file's buffer (read_pickle reads the file
    into one bytearray); the storage's tensor then views that buffer instead of copying it. Its
    size is still charged to the budget, so a crafted file cannot allocate more than before."""
    globals_ = {("torch", n): _storage_type(n) for n in _STORAGE_DTYPES}
    refs = []

    def persistent(pid):
        ok = (isinstance(pid, tuple) and len(pid) == 6 and pid[0] == "storage" and isinstance(pid[1], _Global)
              and pid[1].name in _STORAGE_DTYPES and isinstance(pid[2], str) and isinstance(pid[3], str)
              and (pid[3] == "cpu" or pid[3].startswith("cuda")) and type(pid[4]) is int and pid[4] >= 0
              and pid[5] is None)
        if not ok:
            raise UnsafePickleError(f"storage record {show(pid)} is refused (expected one whole "
                                    "CPU/CUDA storage: no views)")
        ref = _StorageRef()
        ref.dtype, ref.key, ref.numel = _STORAGE_DTYPES[pid[1].name], pid[2], pid[4]
        refs.append(ref)
        return ref

    sub = f"{where} (tensor storage)"
    pos = 0
    values = []
    for i in range(5):
        vm = PickleVM(blob, sub, globals_, persistent=persistent if i == 3 else None)
        obj, pos = vm.run(pos)
        values.append(obj)
    magic, proto, sysinfo, ref, keys = values
    if magic != _TORCH_SAVE_MAGIC or proto != _LEGACY_PROTOCOL:
        raise DataError(f"{sub}: not a legacy torch.save storage stream (magic/protocol differ)")
    if not isinstance(sysinfo, dict) or sysinfo.get("little_endian") is not True:
        raise DataError(f"{sub}: storage written big-endian or without system info; not supported")
    if not isinstance(ref, _StorageRef) or len(refs) != 1 or keys != [ref.key]:
        raise DataError(f"{sub}: expected exactly one storage, declared and listed once")
    (count,) = struct.unpack("<q", blob[pos : pos + 8]) if len(blob) >= pos + 8 else (None,)
    elsize = torch.empty(0, dtype=ref.dtype).element_size()
    data = memoryview(blob)[pos + 8 :]
    if count != ref.numel or len(data) != ref.numel * elsize:
        raise DataError(f"{sub}: storage declares {ref.numel} elements but holds "
                        f"{'no count' if count is None else count} / {len(data)} bytes of data; truncated or forged")
    budget.charge(len(data), where)
    if not len(data):
        return _StorageRecord(torch.empty(0, dtype=ref.dtype))
    if isinstance(blob, memoryview) and isinstance(blob.obj, np.ndarray) and blob.obj.dtype == np.uint8 \
            and blob.obj.ndim == 1 and blob.obj.flags.writeable:
        # a view of the file's own (writable) buffer: no copy. torch needs a writable buffer object,
        # so the tensor views that array at the blob's offset (the VM hands out read-only views)
        whole = blob.obj
        start = np.frombuffer(data, np.uint8).ctypes.data - whole.ctypes.data
        if not 0 <= start <= len(whole) - data.nbytes:
            raise DataError(f"{sub}: storage outside the file's buffer")
        flat = torch.frombuffer(whole, dtype=ref.dtype, count=ref.numel, offset=start)
    else:
        flat = torch.frombuffer(bytearray(data), dtype=ref.dtype)
    return _StorageRecord(flat)


def _ints(x, what) -> tuple:
    if not isinstance(x, tuple) or len(x) > 8 or not all(type(v) is int and v >= 0 for v in x):
        raise UnsafePickleError(f"tensor {what} {show(x)} is refused (expected up to 8 non-negative ints)")
    return x


def _contiguous_strides(size: tuple) -> tuple:
    """torch's strides of a contiguous tensor of `size` (a meta tensor would say the same, but its
    first use imports torch._dynamo, ~2 s)."""
    out, step = [], 1
    for n in reversed(size):
        out.append(step)
        step *= max(n, 1)
    return tuple(reversed(out))


def _make_tensor_builders(where: str, budget: _Budget):
    def load_from_bytes(blob):
        if not isinstance(blob, (bytes, memoryview)):
            raise UnsafePickleError("torch.storage._load_from_bytes of something other than bytes is refused")
        return _parse_storage(blob, where, budget)

    def rebuild_tensor_v2(storage, offset, size, stride, requires_grad=False, hooks=None, metadata=None):
        if not isinstance(storage, _StorageRecord):
            raise UnsafePickleError("tensor storage in the pickle is not a torch storage")
        size, stride = _ints(size, "size"), _ints(stride, "stride")
        if type(offset) is not int or offset < 0 or len(size) != len(stride):
            raise UnsafePickleError("tensor offset/size/stride in the pickle are inconsistent")
        if hooks not in (None, {}) or metadata not in (None, {}) or requires_grad not in (False, True):
            raise UnsafePickleError("tensor with hooks or metadata in the pickle is refused")
        flat = storage.flat
        numel = math.prod(size)
        if numel:
            last = offset + sum((n - 1) * s for n, s in zip(size, stride))
            if last >= flat.numel():
                raise DataError(f"{where}: a tensor of shape {list(size)} reaches past its storage of "
                                f"{flat.numel()} elements; truncated or forged")
        if numel > flat.numel():
            raise DataError(f"{where}: a tensor of shape {list(size)} would expand a storage of {flat.numel()} "
                            "elements (overlapping strides); not a genuine snapshot")
        contiguous = stride == _contiguous_strides(size)
        if offset == 0 and numel == flat.numel() and contiguous and not storage.claimed:
            storage.claimed = True  # the first whole view shares the storage's (already charged) memory
            return flat.view(size)
        budget.charge(numel * flat.element_size(), where)
        return torch.as_strided(flat, size, stride, offset).clone()

    def rebuild_parameter(data, requires_grad=False, hooks=None):
        if not isinstance(data, torch.Tensor) or hooks not in (None, {}):
            raise UnsafePickleError("parameter in the pickle is not a plain tensor")
        return data

    return load_from_bytes, rebuild_tensor_v2, rebuild_parameter


