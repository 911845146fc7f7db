"""Reading array files made by others: no code runs, memory follows the file's own size.

`safe_torch_load`: `torch.load(weights_only=True)` with one-line errors. torch's refusal text
tells the user to retry with `weights_only=False`, which would run the file's code; we never
pass that advice on. `load_npz_arrays` / `read_h5_dataset`: .npz and HDF5 arrays whose
declared sizes are checked against the bytes the file holds before anything is allocated,
with no pickles, no object dtypes and no external or virtual HDF5 storage.
"""

from __future__ import annotations

from synthgen.errors import DataError

_ADVICE = ("weights_only", "weights only", "pytorch 2.6", "documentation", "file an issue", "trusted source")


def refusal_reason(e: Exception, limit: int = 160) -> str:
    """The informative line of a torch.load error, without advice to disable the safe loader."""
    lines = [ln.strip() for ln in str(e).replace("WeightsUnpickler error:", "\n").splitlines()]
    useful = [ln for ln in lines if ln and not any(a in ln.lower() for a in _ADVICE)]
    text = useful[0] if useful else "it holds objects that the safe loader refuses"
    text = text.encode("unicode_escape").decode("ascii")
    return text if len(text) <= limit else text[:limit] + "..."


def safe_torch_load(path, what: str):
    """torch.load(path, weights_only=True) on CPU; any failure is a one-line DataError."""
    import torch

    try:
        return torch.load(path, weights_only=True, map_location="cpu")
    except FileNotFoundError:
        raise DataError(f"{path}: {what} file not found") from None
    except IsADirectoryError:
        raise DataError(f"{path}: is a directory, expected a {what} file") from None
    except MemoryError:
        raise DataError(f"{path}: ran out of memory reading the {what} file; it is damaged or hostile") from None
    except Exception as e:  # torch raises many types on corrupt, truncated or hostile files
        raise DataError(f"{path}: cannot read the {what} file safely ({type(e).__name__}: {refusal_reason(e)})") from None


MAX_INFLATE = 100  # a compressed array may expand at most this much (a zip/HDF5 bomb goes far beyond)


def load_npz_arrays(path, names, what: str) -> dict:
    """Arrays `names` from an .npz without pickles, object dtypes or more memory than the file
    can honestly hold: each member's header is checked before numpy allocates it."""
    import zipfile

    import numpy as np

    out = {}
    try:
        with zipfile.ZipFile(path) as z:
            members = {i.filename: i for i in z.infolist()}
            for name in names:
                info = members.get(f"{name}.npy")
                if info is None:
                    raise DataError(f"{path}: missing array '{name}' in the {what} file (it has "
                                    f"{', '.join(sorted(m.removesuffix('.npy') for m in members)) or 'none'})")
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
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as e:
        raise DataError(f"{path}: unreadable {what} file ({type(e).__name__}: {refusal_reason(e)})") from None
    return out


def read_h5_dataset(f, name, path, what: str):
    """One HDF5 dataset, refusing external/virtual storage and declared sizes the file cannot hold."""
    import os

    if name not in f:
        raise DataError(f"{path}: missing dataset '{name}' in the {what} file")
    ds = f[name]
    if getattr(ds, "external", None) or getattr(ds, "is_virtual", False):
        raise DataError(f"{path}: dataset '{name}' stores its data outside the file (external/virtual storage); "
                        "refused: it could read any local file")
    if ds.dtype.hasobject and ds.dtype.kind != "O":
        raise DataError(f"{path}: dataset '{name}' has an unsupported dtype {ds.dtype}")
    itemsize = 64 if ds.dtype.kind == "O" else ds.dtype.itemsize  # variable-length strings: rough bound
    if ds.size * itemsize > MAX_INFLATE * max(os.path.getsize(path), 1 << 16):
        raise DataError(f"{path}: dataset '{name}' declares {ds.shape} items, far more than the file holds; "
                        "refused as a decompression bomb")
    return ds[()]
