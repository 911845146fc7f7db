"""Reading array files made by others: no code runs, memory follows the file's own size.

`safe_torch_load`: `torch.load(weights_only=True)` with one-line errors. torch's refusal text
tells the user to retry with `weights_only=False`, which would run the file's code; we never
pass that advice on. `load_npz_arrays` / `read_h5_dataset`: .npz and HDF5 arrays whose
declared sizes are checked against the bytes the file holds before anything is allocated,
with no pickles, no object dtypes and no external or virtual HDF5 storage.
"""

from __future__ import annotations

import os
import re

import numpy as np

from synthgen.errors import DataError, UsageError, escape_control
from synthgen.safepath import show

_ADVICE = ("weights_only", "weights only", "weights _only", "safe_globals", "pytorch 2.6", "documentation",
           "file an issue", "trusted source", "please use", "torch.serialization")


def refusal_reason(e: Exception, limit: int = 160) -> str:
    """The informative part of a torch.load / reader error, on one line, without advice to
    disable or widen the safe loader (torch suggests weights_only=False or add_safe_globals;
    a crafted file can put such text into the global names torch quotes)."""
    text = str(e)
    m = re.search(r"GLOBAL ([A-Za-z_][\w.]{0,100})", text)
    if m:
        name = m.group(1)
        return "it needs the global " + (name if not any(a in name.lower() for a in ("weights", "only", "safe"))
                                        else "<name withheld>") + ", which the safe loader refuses"
    lines = [ln.strip() for ln in text.replace("WeightsUnpickler error:", "\n").splitlines()]
    useful = [ln for ln in lines if ln and not any(a in ln.lower() for a in _ADVICE)]
    line = useful[0] if useful else "it holds objects that the safe loader refuses"
    line = escape_control(line)
    return line if len(line) <= limit else line[:limit] + "..."


def safe_torch_load(path, what: str, flag: str | None = None):
    """torch.load(path, weights_only=True) on CPU; a missing file is a UsageError naming `flag`,
    any other failure a one-line DataError."""
    import torch

    try:
        return torch.load(path, weights_only=True, map_location="cpu")
    except FileNotFoundError:
        raise UsageError(f"{path}: no such file, expected the {what} file; check the path", flag) from None
    except IsADirectoryError:
        raise DataError(f"{path}: is a directory, expected a {what} file") from None
    except MemoryError:
        raise DataError(f"{path}: ran out of memory reading the {what} file; it is damaged or hostile") from None
    except Exception as e:  # torch raises many types on corrupt, truncated or hostile files
        raise DataError(f"{path}: cannot read the {what} file safely ({type(e).__name__}: {refusal_reason(e)}); expected "
                        "a file written by torch.save (a .pt/.pth state dict); re-save it with "
                        "torch.save(model.state_dict(), FILE)") from None


MAX_INFLATE = 100  # a compressed array may expand at most this much (a zip/HDF5 bomb goes far beyond)


def load_npz_arrays(path, names, what: str, optional=()) -> dict:
    """Arrays `names` (and those of `optional` that are present) from an .npz without pickles,
    object dtypes or more memory than the file can honestly hold: each member's header is checked
    before numpy allocates it."""
    import zipfile

    out = {}
    try:
        with zipfile.ZipFile(path) as z:
            members = {i.filename: i for i in z.infolist()}
            for name in [*names, *(o for o in optional if f"{o}.npy" in members)]:
                info = members.get(f"{name}.npy")
                if info is None:
                    have = sorted(show(m.removesuffix(".npy")) for m in members)[:10]
                    raise DataError(f"{path}: missing array '{name}' in the {what} file (it has "
                                    f"{', '.join(have) or 'none'})")
                if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
                    # zipfile inflates bzip2/LZMA members a whole chunk at a time with no output
                    # limit, before any header can be checked; numpy.savez never writes them
                    raise DataError(f"{path}: array '{name}' uses zip compression method {info.compress_type}; "
                                    "only stored or deflated members (what numpy.savez writes) are read")
                if info.file_size > MAX_INFLATE * max(info.compress_size, 1 << 16):
                    raise DataError(f"{path}: array '{name}' inflates {info.file_size} bytes from {info.compress_size}; "
                                    "refused as a decompression bomb")
                with z.open(info) as f:
                    version = np.lib.format.read_magic(f)
                    shape, fortran, dtype = (np.lib.format.read_array_header_1_0(f) if version == (1, 0)
                                             else np.lib.format.read_array_header_2_0(f))
                    if dtype.hasobject:
                        raise DataError(f"{path}: array '{name}' has an object dtype; only plain arrays are read")
                    need = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize if shape else dtype.itemsize
                    if need > info.file_size:
                        raise DataError(f"{path}: array '{name}' declares {list(shape)} ({need} bytes) but holds "
                                        f"{info.file_size}; truncated or forged")
                    data = f.read(need)
                    if len(data) != need:
                        raise DataError(f"{path}: array '{name}' is truncated")
                    arr = np.frombuffer(data, dtype=dtype)
                    out[name] = (arr.reshape(shape[::-1]).T if fortran else arr.reshape(shape)).copy()
    except DataError:
        raise
    except MemoryError:
        raise DataError(f"{path}: ran out of memory reading the {what} file; it is damaged or hostile") from None
    except (zipfile.BadZipFile, OSError, ValueError, EOFError, NotImplementedError) as e:
        raise DataError(f"{path}: unreadable {what} file ({type(e).__name__}: {refusal_reason(e)})") from None
    return out


def h5_storage_problems(group, prefix: str = "") -> list[str]:
    """Links and datasets whose data could come from outside the file: external links, soft
    links, external raw storage, virtual datasets. Plain files hold plain data only."""
    import h5py

    problems = []
    for name in group:
        where = f"{prefix}{name}"
        link = group.get(name, getlink=True)
        if not isinstance(link, h5py.HardLink):
            target = getattr(link, "filename", None) or getattr(link, "path", "")
            problems.append(f"'{show(where)[1:-1]}' is a {type(link).__name__} to {show(target)}; only data inside "
                            "the file is read")
            continue
        obj = group[name]
        if isinstance(obj, h5py.Group):
            problems.extend(h5_storage_problems(obj, where + "/"))
        elif isinstance(obj, h5py.Dataset):
            if obj.external:
                files = [show(os.fsdecode(x[0]) if isinstance(x[0], bytes) else x[0]) for x in obj.external]
                problems.append(f"dataset '{show(where)[1:-1]}' stores its data in external file(s) {', '.join(files)} "
                                "(external raw storage); only data inside the file is read")
            elif obj.is_virtual:
                problems.append(f"dataset '{show(where)[1:-1]}' is a virtual dataset (data mapped from other files); "
                                "only data inside the file is read")
    return problems


def read_h5_dataset(f, name, path, what: str):
    """One HDF5 dataset (hard-linked, plain storage), with its size bounded by the file's: fixed-
    size data by its declared shape, variable-length strings by reading blocks of rows against a
    byte budget (many rows can point at one large heap string, each read as its own copy)."""
    import h5py

    link = f.get(name, getlink=True)
    if link is None:
        raise DataError(f"{path}: missing dataset '{name}' in the {what} file")
    if not isinstance(link, h5py.HardLink):
        target = getattr(link, "filename", None) or getattr(link, "path", "")
        raise DataError(f"{path}: '{name}' is a {type(link).__name__} to {show(target)}; only data inside the file "
                        "is read")
    ds = f[name]
    if not isinstance(ds, h5py.Dataset):
        raise DataError(f"{path}: '{name}' is a {type(ds).__name__}, expected a dataset")
    if ds.external or ds.is_virtual:
        raise DataError(f"{path}: dataset '{name}' stores its data outside the file (external/virtual storage); "
                        "refused: it could read any local file")
    budget = MAX_INFLATE * max(os.path.getsize(path), 1 << 16)
    vlen = h5py.check_vlen_dtype(ds.dtype) is not None or ds.dtype.kind == "O"
    if not vlen:
        if ds.dtype.hasobject or ds.size * ds.dtype.itemsize > budget:
            raise DataError(f"{path}: dataset '{name}' declares {ds.shape} x {ds.dtype}, far more than the file holds; "
                            "refused as a decompression bomb")
        return ds[()]
    if ds.ndim != 1:
        raise DataError(f"{path}: dataset '{name}' holds variable-length data in {ds.ndim} dimensions, expected [N]")
    rows, used, step = [], 0, 64
    for start in range(0, len(ds), step):
        block = ds[start : start + step]
        used += sum(len(x) for x in block)
        if used > budget:
            raise DataError(f"{path}: dataset '{name}' expands to more than {budget} bytes of strings for a "
                            f"{os.path.getsize(path)}-byte file; refused as a decompression bomb")
        rows.extend(block)
    return np.array(rows, dtype=object)
