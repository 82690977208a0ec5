"""Per-unit results of a stage, kept so that a killed or repeated run does only what is left.

Each unit of work (a folder, a series) is stored under WORK/.parts/STAGE/ as a record holding
its key, a fingerprint of its inputs and its result; a unit whose inputs changed is redone.
The folder may be deleted at any time: the next run redoes the work.

Each process that saves results appends them to a journal of its own (`PID-TOKEN.journal`), one
record after another, instead of writing a file a unit: creating a thousand files cost more than
reading the thousand series' XML, and more still on a shared file system. A record is written
whole before the next begins but not synced to the disk (a sync each cost more than the rest of a
unit of the XML reads). It carries its length and a CRC-32 of its key and result, so a record
that a killed process left half-written, or that a power cut damaged, is not read: its unit is
redone.
"""
import hashlib
import os
import secrets
import shutil
import struct
import zlib
from pathlib import Path

from lidc.errors import LidcError
from lidc.io import pickle_bytes, remove_abandoned, unpickle

JOURNAL = ".journal"
# A record: this header (magic, key length, result length, CRC-32 of the key and the result), the
# key and fingerprint pickled, the result pickled (lidc.io.pickle_bytes).
_HEADER = struct.Struct("<4sIQI")
_MAGIC = b"LPR1"


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


# The journal each process appends to, by folder: (pid, path). Kept across Parts objects, so that
# a Ray worker, which gets a new copy of them with every task, writes one file.
_journals = {}


class Parts:
    """The stored unit results of one stage."""

    def __init__(self, work, stage, force=False, keep=False):
        """With `keep`, the results this process saves are also kept in memory and loaded from
        there (for a stage that holds every result at the end anyway); those saved by worker
        processes are read from their journals."""
        self.stage = stage
        self.folder = Path(work) / ".parts" / stage
        if force and self.folder.exists():
            shutil.rmtree(self.folder)
        elif self.folder.is_dir():
            _remove_old_parts(self.folder)
        self._kept, self._owner = {}, os.getpid() if keep else None
        # (key, fp) -> (journal, where its key begins, the key's length, the result's, the
        # CRC); journal -> where its records read so far end.
        self._index, self._scanned = {}, {}

    def load(self, key, fp):
        """The stored result of `key` if its fingerprint is `fp`, else None."""
        # Once: a caller may change what it gets, and the next gets the journal's fresh copy.
        kept = self._kept.pop(key, None)
        if kept is not None and kept[0] == fp:
            return kept[1]
        where = self._index.get((key, fp))
        if where is None and self._scan():
            where = self._index.get((key, fp))
        if where is None:
            return None
        path, offset, head, length, crc = where
        data = _read_record(path, offset, head + length, crc)
        try:
            # The key read again with its result: the CRC covers both, so a result is never
            # taken for another unit's.
            if data is None or unpickle(data[:head], path) != (key, fp):
                return None  # damaged, or its journal removed meanwhile: redo the unit
            return unpickle(data[head:], path)
        except LidcError:
            return None

    def save(self, key, fp, result):
        """Stores the result of `key` computed from inputs of fingerprint `fp`."""
        head, body = pickle_bytes((key, fp)), pickle_bytes(result)
        self._index[(key, fp)] = self._append(head, body, zlib.crc32(body, zlib.crc32(head)))
        if self._owner == os.getpid():
            self._kept[key] = (fp, result)

    def _append(self, head, body, crc):
        """Appends a record to this process's journal; returns its index entry. The
        journal is opened for each record and closed after it, so that no process holds one
        open between its units (one deleted meanwhile is then never written on)."""
        f, path = self._journal()
        with f:
            start = f.seek(0, os.SEEK_END)
            try:
                f.write(_HEADER.pack(_MAGIC, len(head), len(body), crc))
                f.write(head)
                f.write(body)
                f.flush()
            except BaseException:
                # A record half-written would end every scan of this journal before the
                # records after it: the next one goes to a new journal.
                _journals.pop(self.folder, None)
                raise
        return path, start + _HEADER.size, len(head), len(body), crc

    def stored(self):
        """The (key, fingerprint) pairs of every record read well so far, from every journal."""
        self._scan()
        return set(self._index)

    def compact(self, live):
        """Rewrites the journals with only the records of `live` (key, fingerprint) pairs, when
        the others (of units whose inputs have changed since, or redone) take more room than
        those: a journal only grows. Call it when no other process is saving."""
        self._scan()
        total = sum(self._scanned.values())
        keep = {k: w for k, w in self._index.items() if k in live}
        size = sum(_HEADER.size + head + length for _, _, head, length, _ in keep.values())
        if total - size <= max(size, 1 << 20):
            return
        old, index = set(self._scanned), {}
        _journals.pop(self.folder, None)  # the records go to a new journal, every old one goes
        for key_fp, (path, offset, head, length, crc) in sorted(keep.items(),
                                                                 key=lambda i: i[1]):
            data = _read_record(path, offset, head + length, crc)
            if data is not None:
                index[key_fp] = self._append(data[:head], data[head:], crc)
        for path in old:
            path.unlink(missing_ok=True)
        self._index = index
        self._scanned = {path: offset + head + length
                         for path, offset, head, length, _ in index.values()}

    def _journal(self):
        """This process's journal of the folder, opened for appending; created when the process
        has none yet, or when its own was removed (by a compaction, or by --force)."""
        pid, path = _journals.get(self.folder, (None, None))
        if pid == os.getpid():
            try:
                return open(os.open(path, os.O_WRONLY | os.O_APPEND), "ab"), path
            except FileNotFoundError:
                pass
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / f"{os.getpid()}-{secrets.token_hex(4)}{JOURNAL}"
        f = open(path, "xb")
        _journals[self.folder] = (os.getpid(), path)
        return f, path

    def _scan(self):
        """Indexes the records the journals gained since the last scan; True if there were any.
        A record not yet whole (being written, or left half-written) ends a journal's scan: the
        next scan starts there again."""
        try:
            names = sorted(n for n in os.listdir(self.folder) if n.endswith(JOURNAL))
        except OSError:
            return False
        found = False
        for name in names:
            path = self.folder / name
            start = self._scanned.get(path, 0)
            try:
                if os.stat(path).st_size <= start:
                    continue
                with open(path, "rb") as f:
                    f.seek(start)
                    for record in _records(f, start):
                        key_fp, where, end = record
                        self._index.setdefault(key_fp, (path, *where))
                        self._scanned[path] = end
                        found = True
            except OSError:
                continue
        return found

    def __getstate__(self):
        # A worker process gets the folder and the index, not what this process keeps.
        return dict(self.__dict__, _kept={})


def _read_record(path, offset, length, crc):
    """The `length` bytes of a record's key and result at `offset` of the journal `path`, or
    None when they are not all there or their CRC is not `crc`."""
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            data = f.read(length)
    except OSError:
        return None
    return data if len(data) == length and zlib.crc32(data) == crc else None


def _records(f, offset):
    """((key, fp), (where its key begins, the key's length, the result's, the CRC), end of the
    record) of each whole record of the journal `f` from `offset` on, up to the first that is
    not."""
    while True:
        header = f.read(_HEADER.size)
        if len(header) < _HEADER.size:
            return
        magic, head_length, length, crc = _HEADER.unpack(header)
        head = f.read(head_length)
        if magic != _MAGIC or len(head) < head_length:
            return
        try:
            key, fp = unpickle(head, f.name)
            hash((key, fp))
        except (LidcError, TypeError, ValueError):
            return
        start = offset + _HEADER.size
        f.seek(length, os.SEEK_CUR)
        if f.tell() > os.fstat(f.fileno()).st_size:
            return  # the result is not all there yet
        offset = start + head_length + length
        yield (key, fp), (start, head_length, length, crc), offset


def _remove_old_parts(folder):
    """Removes the files an earlier version stored a unit each in, and their temporaries left by
    killed writers: their units are redone."""
    remove_abandoned(folder)
    for path in folder.glob("*.pkl"):
        path.unlink(missing_ok=True)
