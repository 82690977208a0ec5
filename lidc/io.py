"""Atomic artifact writing: a killed stage leaves the old file or the new one, never half of one.

Every file is written under a temporary name in the same folder and renamed into place
(`os.replace` is atomic on POSIX within one file system).
"""
import contextlib
import copyreg
import csv
import errno
import fcntl
import glob
import io
import json
import os
import pickle
import re
import shutil
import tempfile
from pathlib import Path

import cv2
import numpy as np

from lidc.errors import LidcError


@contextlib.contextmanager
def atomic_path(path, sync=True, tidy=True):
    """Yields a temporary path beside `path`; on success renames it onto `path`.

    With `sync` the data reach the disk before the rename, so that even a power cut leaves the
    old file or the new one; without it (for many small files that can be rewritten, such as
    PNG exports, where a sync each costs more than the write) only a killed process does.

    On an exception the temporary file is removed and `path` is left untouched. The temporary is
    hidden and named `.NAME.PID.*.part`; a killed writer cannot remove its own, so the next
    successful write of `path` removes those whose process is gone (with `tidy`; a writer of
    many files in one folder tidies it once instead, with `remove_abandoned`, since a search of
    the folder after each file costs time in the square of their number).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}.", suffix=".part",
                               dir=path.parent)
    os.close(fd)
    try:
        # mkstemp makes the file private (0600); the artifact gets what any new file would.
        os.chmod(tmp, 0o666 & ~current_umask())
        yield Path(tmp)
        if sync:
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    if tidy:
        remove_abandoned(path.parent, path.name)


@contextlib.contextmanager
def atomic_folder(path):
    """Yields a new empty folder beside `path`; on success it replaces `path` (and whatever was
    in it) as a whole, so a folder of exports never mixes files of two runs. On an exception the
    new folder is removed and `path` is left as it was."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{path.name}.{os.getpid()}.", dir=path.parent))
    os.chmod(staging, 0o777 & ~current_umask())
    try:
        yield staging
        if path.exists():
            old = staging.with_name(staging.name + ".old")
            os.replace(path, old)
            os.replace(staging, path)
            shutil.rmtree(old)
        else:
            os.replace(staging, path)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def current_umask():
    """The process's umask (read by setting it and putting it back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def remove_abandoned(folder, name=None):
    """Deletes the temporaries of file `name` in `folder` (of every file, without a name) left by
    killed writers (a patches.npy one can be large)."""
    pattern = f".{glob.escape(name)}.*.part" if name else ".*.part"
    for tmp in Path(folder).glob(pattern):
        pid = tmp.name[len(name) + 2:].split(".")[0] if name else tmp.name.split(".")[-3]
        if pid.isdigit() and not _alive(int(pid)):
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's live process
    return True


@contextlib.contextmanager
def exclusive(folder, advice):
    """Holds FOLDER/.lock for the body, so that one process at a time writes the folder; a second
    one is refused with LidcError: "FOLDER: in use by pid N; ADVICE".

    The lock is an fcntl.flock: the kernel releases it when its holder exits or is killed, so a
    crashed run never leaves a stale lock behind. A second open of the file in the same process
    is refused too (flock belongs to the open file). A process forked meanwhile (a worker) does not
    keep the lock: it would hold it for as long as it lives.

    Raises:
      LidcError: the folder is in use, or cannot be used at all (a file stands in its place or
        in its path, a folder in place of its lock file, it cannot be created or written, its
        file system has no locks), each with what to do.
    """
    folder = Path(folder)
    f = _open_lock(folder)
    _held.add(f)
    try:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            if e.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                raise LidcError(folder, f"cannot be locked ({e.strerror}): its file system "
                                        "may not support locks; choose a local folder") from None
            f.seek(0)
            holder = f.read().strip() or "another process"
            raise LidcError(folder, f"in use by {holder}; {advice}") from None
        _check_writable(folder)
        f.seek(0)
        f.truncate()
        f.write(f"pid {os.getpid()}\n")
        f.flush()
        yield folder
    finally:
        _held.discard(f)
        f.close()  # closing the file releases the lock


def _open_lock(folder):
    """FOLDER/.lock opened for the lock, FOLDER created if needed; LidcError naming the cause."""
    _attempt(lambda: folder.mkdir(parents=True, exist_ok=True), folder, [
        (FileExistsError, "is a file, not a folder: choose another folder, or move the file "
                          "away"),
        (NotADirectoryError, "cannot be created: part of its path is a file, not a folder; "
                             "choose another folder"),
        (OSError, "cannot be created ({}): choose a folder you can write to")])
    return _attempt(lambda: open(folder / ".lock", "a+"), folder, [
        (IsADirectoryError, "a folder named .lock stands where this project keeps its lock "
                            "file: remove it (the lock file holds nothing but a process id)"),
        (OSError, _NOT_WRITABLE)])


_NOT_WRITABLE = "cannot be written ({}): make it writable or choose another folder"


def _check_writable(folder):
    # The lock file may already exist in a folder that has since become read-only (or a
    # read-only mount): a stage would then fail at its first output, after all its work.
    with _attempt(lambda: tempfile.TemporaryFile(dir=folder), folder,
                  [(OSError, _NOT_WRITABLE)]):
        pass


def _attempt(action, folder, reasons):
    """action(), with an OSError turned into LidcError(folder, reason): the reason of the first
    (exception type, reason) in `reasons` that matches, '{}' in it replaced by the system's
    message."""
    try:
        return action()
    except OSError as e:
        reason = next(text for kind, text in reasons if isinstance(e, kind))
        raise LidcError(folder, reason.format(e.strerror)) from None


_held = set()  # the lock files this process holds


def _drop_inherited_locks():
    # The child's copy of the file shares the lock; closing that copy leaves the parent's lock.
    for f in _held:
        f.close()
    _held.clear()


os.register_at_fork(after_in_child=_drop_inherited_locks)


def write_csv(path, rows, fieldnames):
    """Writes rows to a CSV atomically: dicts, or lists of the values in `fieldnames`' order;
    None becomes an empty cell. The bytes are csv.writer's (see write_csv_columns).

    UTF-8, with surrogate escapes written back as the bytes they stand for: a file name that
    is not UTF-8 (Python decodes such names with surrogateescape) is written as it is on disk,
    and `read_csv` gives back the same string, so the path still opens the file.
    """
    rows = [[row.get(k) for k in fieldnames] if isinstance(row, dict) else row for row in rows]
    if any(len(row) != len(fieldnames) for row in rows):
        raise ValueError(f"{path}: a row does not have the {len(fieldnames)} columns "
                         f"{fieldnames}")
    columns = list(map(list, zip(*rows))) if rows else [[] for _ in fieldnames]
    write_csv_columns(path, columns, fieldnames)


def write_csv_columns(path, columns, fieldnames):
    """Writes a CSV atomically from its columns (one list of values per name of `fieldnames`,
    all as long): the bytes csv.writer writes for the same rows (None an empty cell, other
    values by str(), a cell with a comma, a quote or a line break quoted), a column at a time:
    the checks and conversions are C loops over a column, not a call per cell. Encoded as
    write_csv says."""
    if len(columns) != len(fieldnames) or len({len(c) for c in columns}) > 1:
        raise ValueError(f"{path}: {len(columns)} columns of unequal length for the "
                         f"{len(fieldnames)} names {fieldnames}")
    alone = len(columns) == 1
    cells = [_csv_cells(column, alone) for column in columns]
    lines = [",".join(_csv_cells(list(fieldnames), alone)), *map(",".join, zip(*cells))]
    with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8",
                                        errors="surrogateescape") as f:
        f.write("\r\n".join(lines) + "\r\n")


# What makes csv.writer (the excel dialect) quote a cell: its delimiter, its quote character, a
# character of its line terminator.
_CSV_SPECIAL = re.compile(r'[,"\r\n]')


def _csv_cells(values, alone):
    """The cells csv.writer writes for `values` (a column), quoted where it would quote them;
    `alone`: the column is a row's only cell (csv.writer quotes an empty one, or the row would
    be blank)."""
    types = set(map(type, values))
    if types <= _NUMBER_TYPES:  # one C loop for a column of numbers
        values = list(map(str, values))
    elif types != {str} and values:
        values = ["" if v is None else v if type(v) is str else str(v) for v in values]
    if _CSV_SPECIAL.search("".join(values)):
        # Each distinct value once: the columns that need it (notes, paths) repeat a few values.
        cells = {v: f'"{v.replace(chr(34), chr(34) * 2)}"' if _CSV_SPECIAL.search(v) else v
                 for v in set(values)}
        values = list(map(cells.__getitem__, values))
    if alone:
        values = [v or '""' for v in values]
    return values


_NUMBER_TYPES = {int, float}


def read_csv(path):
    """Reads a CSV written by `write_csv` into a list of dicts of strings (bytes that are not
    UTF-8 come back as surrogate escapes, as Python decodes file names)."""
    with open(path, newline="", encoding="utf-8", errors="surrogateescape") as f:
        return list(csv.DictReader(f))


def write_json(path, obj):
    """Writes `obj` as indented JSON with sorted keys, atomically (numpy values as numbers)."""
    with atomic_path(path) as tmp, open(tmp, "w") as f:
        json.dump(obj, f, indent=2, sort_keys=True, default=_json_default)
        f.write("\n")


def _json_default(obj):
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def write_png(path, image):
    """Writes an 8-bit image as a lossless PNG atomically."""
    ok, encoded = cv2.imencode(".png", image)
    if not ok:
        raise LidcError(path, "could not encode the image as PNG")
    with atomic_path(path, sync=False) as tmp:
        Path(tmp).write_bytes(encoded.tobytes())


def save_npz(path, **arrays):
    """Saves arrays to an .npz atomically (uncompressed: the loaders read it whole, fast)."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, **arrays)


# Only what the stages themselves pickle may come back out of a pickle: builtins, numpy arrays and
# the project's record types. Anything else (os.system, subprocess, ...) is refused before it runs.
_SAFE_BUILTINS = {"dict", "list", "tuple", "set", "frozenset", "str", "bytes", "int", "float",
                  "bool", "complex", "slice", "range", "NoneType", "object"}
_SAFE_NUMPY = {("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "_reconstruct"),
               ("numpy._core.multiarray", "_reconstruct"), ("numpy.core.multiarray", "scalar"),
               ("numpy._core.multiarray", "scalar"), ("numpy._core.numeric", "_frombuffer"),
               ("numpy.core.numeric", "_frombuffer")}
# Exact names only: pickle protocol 4 resolves dotted names ("np.testing...os.system") through
# a module's attributes, so admitting a whole module would admit everything it imports.
_SAFE_RECORDS = {("lidc.records", name) for name in (
    "Roi", "Mark", "Marks", "marks_from_columns", "SliceHeader", "Series", "PatchOrigin")} | \
    {("lidc.io", "_array")}


class _SafeUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        """The class of an allowed name; UnpicklingError for any other."""
        if (module == "builtins" and name in _SAFE_BUILTINS) or (module, name) in _SAFE_NUMPY \
                or (module, name) in _SAFE_RECORDS:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")


def save_pickle(path, obj, sync=True, tidy=True, plain_arrays=False):
    """Pickles `obj` atomically (load it back with `load_pickle`); `sync` and `tidy` as
    atomic_path's. With `plain_arrays`, numpy arrays of numbers are written as their bytes, dtype
    and shape, in a quarter of the time numpy's own pickling takes for the small arrays of
    regions' points (for files only this project reads: stage parts)."""
    with atomic_path(path, sync, tidy) as tmp, open(tmp, "wb") as f:
        _pickler(f, plain_arrays).dump(obj)


def pickle_bytes(obj):
    """`obj` pickled as save_pickle(plain_arrays=True) would write it (load it with `unpickle`)."""
    f = io.BytesIO()
    _pickler(f, True).dump(obj)
    return f.getvalue()


def _pickler(f, plain_arrays):
    return (_PlainArrays if plain_arrays else pickle.Pickler)(f, protocol=pickle.HIGHEST_PROTOCOL)


def _array(data, dtype, shape):
    """The array `_PlainArrays` wrote (writable, as numpy's own unpickling gives)."""
    dtype = np.dtype(dtype)
    if dtype.kind not in "biuf":
        raise pickle.UnpicklingError(f"refusing an array of {dtype}")
    return np.frombuffer(bytearray(data), dtype).reshape(shape)


def _reduce_array(a):
    if a.dtype.kind in "biuf" and not a.dtype.metadata:
        return _array, (a.tobytes(), a.dtype.str, a.shape)
    return a.__reduce_ex__(pickle.HIGHEST_PROTOCOL)


class _PlainArrays(pickle.Pickler):
    dispatch_table = {**copyreg.dispatch_table, np.ndarray: _reduce_array}


def load_pickle(path):
    """Loads a pickle this project wrote; anything else raises LidcError naming the file."""
    try:
        with open(path, "rb") as f:
            return _SafeUnpickler(f).load()
    except FileNotFoundError:
        raise
    except Exception as e:  # a tampered or truncated pickle can raise almost anything
        raise LidcError(path, f"not a pickle written by this project ({e})") from None


def unpickle(data, path):
    """Loads the pickle `data` that this project wrote (read from `path`), as load_pickle."""
    try:
        return _SafeUnpickler(io.BytesIO(data)).load()
    except Exception as e:
        raise LidcError(path, f"not a pickle written by this project ({e})") from None
