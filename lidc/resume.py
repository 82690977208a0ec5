"""Per-unit results of a stage, kept so that a killed or repeated run does only what is left.

Each unit of work (a folder, a series) is stored under WORK/.parts/STAGE/ as a pickle holding
its key, a fingerprint of its inputs and its result; a unit whose inputs changed is redone.
The folder may be deleted at any time: the next run redoes the work. A part is written
atomically but not synced to the disk (a sync each cost more than the rest of a unit of the
XML reads): a killed process leaves the old part or the new one, and a part a power cut damaged
fails to load and is redone.
"""
import hashlib
import os
import shutil
from pathlib import Path

from lidc.io import load_pickle, remove_abandoned, save_pickle
from lidc.errors import LidcError


def fingerprint(*parts):
    """A short stable hash of the reprs of `parts` (inputs that decide a unit's result)."""
    h = hashlib.sha1()
    for part in parts:
        h.update(repr(part).encode())
        h.update(b"\0")
    return h.hexdigest()


def file_stat(path):
    """(size, mtime_ns) of a file, the part of a unit's fingerprint that says it changed;
    (None, None) for a file that is gone."""
    try:
        st = os.stat(path)
        return st.st_size, st.st_mtime_ns
    except OSError:
        return None, None


class Parts:
    """The stored unit results of one stage."""

    def __init__(self, work, stage, force=False, keep=False):
        """With `keep`, the results this process saves are also kept in memory and loaded from
        there (for a stage that holds every result at the end anyway); those saved by worker
        processes are read from their files."""
        self.stage = stage
        self.folder = Path(work) / ".parts" / stage
        if force and self.folder.exists():
            shutil.rmtree(self.folder)
        elif self.folder.is_dir():
            remove_abandoned(self.folder)
        self._kept, self._owner = {}, os.getpid() if keep else None

    def _path(self, key):
        # A key may hold a file name that is not UTF-8 (decoded with surrogate escapes).
        digest = hashlib.sha1(key.encode("utf-8", "surrogateescape")).hexdigest()
        return self.folder / (digest[:20] + ".pkl")

    def load(self, key, fp):
        """The stored result of `key` if its fingerprint is `fp`, else None."""
        # Once: a caller may change what it gets, and the next gets the file's fresh copy.
        kept = self._kept.pop(key, None)
        if kept is not None and kept[0] == fp:
            return kept[1]
        path = self._path(key)
        if not path.exists():
            return None
        try:
            stored = load_pickle(path)
        except LidcError:
            return None  # damaged part: redo the unit
        if not isinstance(stored, dict) or stored.get("key") != key or stored.get("fp") != fp:
            return None
        return stored["result"]

    def save(self, key, fp, result):
        """Stores the result of `key` computed from inputs of fingerprint `fp`."""
        save_pickle(self._path(key), {"key": key, "fp": fp, "result": result}, sync=False,
                    tidy=False, plain_arrays=True)
        if self._owner == os.getpid():
            self._kept[key] = (fp, result)

    def __getstate__(self):
        # A worker process gets the folder, not what this process keeps.
        return dict(self.__dict__, _kept={})
