"""Sets of artifacts that only mean something together, committed as one.

A stage that writes several files another stage reads together (patches.npy with patches.csv;
index.csv with slices.csv; train/val/test.npz with split.csv) writes them inside `file_set`: the
set's manifest is removed first and written last, listing each file's size and SHA-1 and the
digests of the sets the stage read. A kill anywhere in between leaves no manifest, and every
reader checks the manifest (`check`) before it trusts the files: a half-replaced set, a file
changed by hand, or a set made from inputs that have changed since (an older index under newer
annotations) is refused with a message that says which stage to run again.

    with file_set(work / "patches", "manifest.json", stage="crop",
                  inputs={"annotations": digest_of(work, "annotations.manifest.json")}) as files:
        ... write patches.npy and patches.csv ...
        files.extend(["patches.npy", "patches.csv"])
    digest = check(work / "patches", "manifest.json", ["patches.npy", "patches.csv"])
"""
import contextlib
import hashlib
import json
from pathlib import Path

from lidc.errors import LidcError
from lidc.io import write_json


def file_sha1(path):
    """The SHA-1 of a file's bytes, read in blocks."""
    h = hashlib.sha1()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


@contextlib.contextmanager
def file_set(folder, manifest, stage, inputs=None):
    """Removes FOLDER/MANIFEST, runs the block, then writes the manifest of the files the block
    lists (names relative to `folder`, appended to the yielded list), with `inputs` (name ->
    digest of each set the stage read) and the stage that writes the set."""
    folder = Path(folder)
    (folder / manifest).unlink(missing_ok=True)
    names = []
    yield names
    files = {name: {"bytes": (folder / name).stat().st_size, "sha1": file_sha1(folder / name)}
             for name in names}
    write_json(folder / manifest, {"stage": stage, "files": files, "inputs": inputs or {}})


def read(folder, manifest):
    """The manifest's content, or None when there is none."""
    path = Path(folder) / manifest
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        raise LidcError(path, f"unreadable ({e}); run the stage that writes it again") from None


def digest(content):
    """A short digest of a manifest's content: what a set made from it records as its input."""
    return hashlib.sha1(json.dumps(content, sort_keys=True).encode()).hexdigest()[:16]


def check(folder, manifest, names, stage, verify_bytes=True):
    """Checks that the files `names` of FOLDER are the set its manifest describes; returns the
    manifest's content.

    Args:
      folder, manifest: where the set is.
      names: the files the caller is about to read together.
      stage: the command that writes the set, for the message.
      verify_bytes: also compare each file's SHA-1 (else its size only).
    Raises:
      LidcError: no manifest (an interrupted write, or files from an older version), a file
        missing from it, or a file whose size or content differs.
    """
    folder = Path(folder)
    content = read(folder, manifest)
    again = f"run the {stage} stage again"
    if content is None:
        raise LidcError(folder / manifest, f"missing: the {stage} stage was interrupted, or its "
                                           f"files come from an older version; {again}")
    for name in names:
        entry = content["files"].get(name)
        path = folder / name
        if entry is None or not path.is_file():
            raise LidcError(path, f"is not part of the set its manifest lists; {again}")
        if path.stat().st_size != entry["bytes"] or (verify_bytes
                                                      and file_sha1(path) != entry["sha1"]):
            raise LidcError(path, f"changed since the {stage} stage wrote it (it does not "
                                  f"belong with the other files of {folder}); {again}")
    return content


def check_inputs(content, path, current, stage):
    """Refuses a set made from other inputs than the current ones: `current` maps each input's
    name to its digest now; `content` is the set's manifest, read at `path`.

    Raises:
      LidcError: an input changed since the set was made ("run STAGE again").
    """
    for name, now in current.items():
        made_from = content.get("inputs", {}).get(name)
        if made_from != now:
            raise LidcError(path, f"was made from another {name} than the current one (it "
                                  f"changed since); run the {stage} stage again")
