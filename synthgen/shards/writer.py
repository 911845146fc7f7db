"""Writing one shard: an HDF5 file under a temporary name, renamed when complete.

A full disk (or any other write error) never reaches HDF5: the shard is written through a file
object that records the first OSError and swallows the rest, so HDF5 closes its file cleanly
(HDF5 left with a failed flush crashes later with SIGSEGV/SIGBUS at close), the temp file is
removed and a one-line DataError names it; a rerun resumes.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np

from synthgen.encodings import encode
from synthgen.errors import DataError
from synthgen.imageio import UnreadableImage, load_rgb
from synthgen.safepath import show, show_path

from .format import PROVENANCE, plan_hash


class _GuardedFile:
    """Unbuffered file object for h5py's `fileobj` driver that never lets a write error reach HDF5.

    HDF5 cannot recover from a failed write: its metadata flush fails again at close and the
    library then crashes (SIGSEGV/SIGBUS) at interpreter exit. So the first OSError (ENOSPC,
    EDQUOT, EFBIG, EIO) is recorded, later writes are dropped, HDF5 closes cleanly, and the
    caller raises `error` as a DataError and deletes the file.
    """

    def __init__(self, path: Path):
        self.fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o644)
        self.pos, self.error = 0, None

    def seek(self, offset, whence=0):
        self.pos = os.lseek(self.fd, offset, whence)
        return self.pos

    def tell(self):
        return self.pos

    def readinto(self, buf):
        data = os.pread(self.fd, len(buf), self.pos)
        buf[: len(data)] = data
        self.pos += len(data)
        return len(data)

    def read(self, n=-1):
        data = os.pread(self.fd, n if n >= 0 else os.fstat(self.fd).st_size, self.pos)
        self.pos += len(data)
        return data

    def write(self, buf):
        view = memoryview(buf).cast("B")
        if self.error is None:
            try:
                done = 0
                while done < len(view):
                    done += os.pwrite(self.fd, view[done:], self.pos + done)
            except OSError as e:
                self.error = e
        self.pos += len(view)
        return len(view)

    def truncate(self, size=None):
        if self.error is None:
            try:
                os.ftruncate(self.fd, self.pos if size is None else size)
            except OSError as e:
                self.error = e
        return size

    def flush(self):
        pass

    def close(self):
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def write_error(path: Path, e: BaseException, need: int | None = None) -> DataError:
    what = getattr(e, "strerror", None) or show(str(e)) or type(e).__name__
    room = f" (this shard needs about {need / 1e6:.0f} MB)" if need else ""
    return DataError(f"{show_path(path)}: cannot write ({what}); free disk space or fix permissions{room}, then "
                     "rerun the same command: finished shards are kept")


def write_shard(path: Path, root: Path, part, cfg, size, index: int, meta: dict) -> None:
    import h5py

    n = len(part)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    comp = None if cfg.compression == "none" else cfg.compression
    need = n * size[0] * size[1] * 3
    if cfg.encoding == "raw" and comp is None:  # exact size: refuse up front (libhdf5 can crash mid-allocation)
        free = shutil.disk_usage(path.parent).free
        if free < need + (1 << 20):
            raise DataError(f"{show_path(path)}: not enough disk space (this shard needs about {need / 1e6:.0f} MB, "
                            f"{free / 1e6:.0f} MB free); free disk space, then rerun the same command: finished "
                            "shards are kept")
    guard = None
    try:
        guard = _GuardedFile(tmp)
        try:
            with h5py.File(guard, "w") as f:
                if cfg.encoding == "raw":
                    ds = f.create_dataset("images", (n, size[0], size[1], 3), np.uint8, chunks=(1, size[0], size[1], 3),
                                          compression=comp)
                else:
                    ds = f.create_dataset("images", (n,), h5py.vlen_dtype(np.uint8))
                for i, (key, _, _) in enumerate(part):
                    try:
                        img = load_rgb(root / key)
                    except UnreadableImage as e:
                        raise DataError(f"{e}; fix or remove the file and rerun") from None
                    if img.shape[:2] != tuple(size):
                        raise DataError(f"{root / key}: image is {img.shape[1]}x{img.shape[0]}, but the set is "
                                        f"{size[1]}x{size[0]}; shards hold one size (align first to get equal crops)")
                    ds[i] = img if cfg.encoding == "raw" else np.frombuffer(encode(img, cfg.encoding, cfg.jpeg_quality), np.uint8)
                    if guard.error is not None:
                        break  # the disk is full: stop; HDF5 still closes cleanly below
                if guard.error is None:
                    f.create_dataset("labels", data=np.array([l for _, l, _ in part], np.int64))
                    f.create_dataset("keys", data=[k for k, _, _ in part], dtype=h5py.string_dtype())
                    _write_provenance(f, part)
                    f.attrs.update(meta)
                    f.attrs.update(shard_index=index, count=n, plan_hash=plan_hash(meta["config_hash"], part))
        except (OSError, RuntimeError, ValueError) as e:
            if guard.error is None:
                raise
            raise write_error(tmp, guard.error, need) from None
        finally:
            guard.close()
        if guard.error is not None:
            raise write_error(tmp, guard.error, need)
        os.replace(tmp, path)
    except OSError as e:  # creating the temp file, renaming it
        raise write_error(Path(e.filename) if e.filename else tmp, e, need) from None
    finally:
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass


def _write_provenance(f, part) -> None:
    import h5py

    present = {k for _, _, r in part for k in r} & set(PROVENANCE)
    for field in sorted(present):
        name, kind = PROVENANCE[field]
        vals = [r.get(field) for _, _, r in part]
        if kind == "int":
            f.create_dataset(name, data=np.array([-1 if v is None else int(v) for v in vals], np.int64))
        elif kind == "float":
            f.create_dataset(name, data=np.array([np.nan if v is None else float(v) for v in vals], np.float64))
        elif kind == "str":
            f.create_dataset(name, data=["" if v is None else str(v) for v in vals], dtype=h5py.string_dtype())
        elif kind == "points":
            arr = np.full((len(vals), 5, 2), np.nan, np.float32)
            for i, v in enumerate(vals):
                if v is not None:
                    arr[i] = np.asarray(v, np.float32).reshape(5, 2)
            f.create_dataset(name, data=arr)


