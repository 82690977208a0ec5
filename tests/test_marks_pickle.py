"""Marks pickled as columns (lidc.records.Marks): the same records come back, computed centroids
included; records that are not plain are pickled one by one; columns that disagree are refused."""
import pickle

import numpy as np
import pytest

from lidc.errors import LidcError
from lidc.io import load_pickle, pickle_bytes, save_pickle, unpickle
from lidc.records import Mark, Marks, Roi, marks_from_columns


def roi(i, n, dtype=np.int32, **fields):
    points = (np.arange(2 * n, dtype=dtype).reshape(-1, 2) * (i + 1)) % 97
    return Roi(z=-100.5 + i, sop_uid=f"1.2.{i}", inclusion=i % 3 != 0, points=points,
               slice_index=None if i % 4 == 0 else i, status="" if i % 2 else "why",
               line=10 * i, note=f"note {i}" if i % 5 == 0 else "", **fields)


def mark(i, rois):
    return Mark(patient_id="LIDC-IDRI-0001", series_uid="1.2.3", xml_file=f"x/{i % 2}.xml",
                reader=f"{i % 2}:{i % 4}", radiologist_id="", label=i % 3, nodule_id=f"N{i}",
                rois=rois, characteristics={"malignancy": 1 + i % 5} if i % 2 else {},
                mark_id=i, lesion_id=i // 3, lesion_readers=1 + i % 4, line=7 * i)


def sample():
    marks = [mark(i, [roi(10 * i + k, 1 + (i + k) % 6) for k in range(i % 4)]) for i in range(9)]
    marks[2].rois[0].centroid  # computed and kept by some regions only
    marks[7].rois[2].centroid
    return marks


def assert_same_records(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert type(x) is type(y)
        assert x.__dict__.keys() == y.__dict__.keys()
        for name, value in x.__dict__.items():
            other = y.__dict__[name]
            if name == "rois":
                assert_same_records(value, other)
            elif name == "points":
                assert value.dtype == other.dtype and value.shape == other.shape
                np.testing.assert_array_equal(value, other)
                assert other.flags.writeable
            else:
                assert value == other and type(value) is type(other), name


def fresh(text):
    """An equal string that is another object."""
    return "".join(list(text))


def test_equal_records_pickle_to_the_same_bytes_whichever_strings_they_share():
    # As parsed in one process: a constant status and cached names, one object for all.
    shared = sample()
    # As loaded back series by series: each string an object of its own.
    own = pickle.loads(pickle.dumps(sample()))
    for m in own:
        m.reader, m.xml_file = fresh(m.reader), fresh(m.xml_file)
        m.characteristics = {fresh(k): v for k, v in m.characteristics.items()}
        for r in m.rois:
            r.status, r.sop_uid = fresh(r.status), fresh(r.sop_uid)
    assert own[1].characteristics.keys() == shared[1].characteristics.keys()
    assert next(iter(own[1].characteristics)) is not next(iter(own[3].characteristics))
    assert pickle_bytes(Marks(own)) == pickle_bytes(Marks(shared))
    assert pickle.dumps(Marks(own)) == pickle.dumps(Marks(shared))
    assert_same_records(own, unpickle(pickle_bytes(Marks(own)), "m.pkl"))


@pytest.mark.parametrize("plain_arrays", [False, True])
def test_marks_come_back_equal_from_columns(tmp_path, plain_arrays):
    marks = sample()
    save_pickle(tmp_path / "m.pkl", {"marks": Marks(marks)}, plain_arrays=plain_arrays)
    data = (tmp_path / "m.pkl").read_bytes()
    assert b"marks_from_columns" in data and b"Roi" not in data
    loaded = load_pickle(tmp_path / "m.pkl")["marks"]
    assert type(loaded) is Marks
    assert_same_records(marks, loaded)
    assert "centroid" in loaded[2].rois[0].__dict__ and "centroid" not in loaded[2].rois[1].__dict__
    # Loaded again and saved again, the same bytes: the columns hold every field.
    save_pickle(tmp_path / "again.pkl", {"marks": loaded}, plain_arrays=plain_arrays)
    assert (tmp_path / "again.pkl").read_bytes() == data


def test_no_marks_and_marks_without_regions_come_back(tmp_path):
    for marks in ([], [mark(1, []), mark(2, [])]):
        save_pickle(tmp_path / "m.pkl", Marks(marks))
        assert_same_records(marks, load_pickle(tmp_path / "m.pkl"))


class Flagged(Roi):
    pass


@pytest.mark.parametrize("odd", ["subclass", "attribute", "dtypes", "shape", "columns",
                                 "list"])
def test_records_that_are_not_plain_are_pickled_one_by_one(tmp_path, odd):
    marks = sample()
    first = marks[1].rois[0]
    if odd == "subclass":
        marks[1].rois[0] = Flagged(**{k: v for k, v in first.__dict__.items()})
    elif odd == "attribute":
        marks[1].extra = "kept"
    elif odd == "dtypes":
        first.points = first.points.astype(np.int64)
    elif odd == "shape":
        first.points = first.points.reshape(-1)
    elif odd == "columns":  # (n, 3): rows that do not stack with the others' (n, 2)
        first.points = np.repeat(first.points, 3, axis=1)[:, :3]
    else:
        first.points = first.points.tolist()
    save_pickle(tmp_path / "m.pkl", Marks(marks))
    assert b"marks_from_columns" not in (tmp_path / "m.pkl").read_bytes()
    if odd == "list":
        assert load_pickle(tmp_path / "m.pkl")[1].rois[0].points == first.points
    elif odd != "subclass":  # a class of a test module is not loaded back (lidc.io)
        assert_same_records(marks, load_pickle(tmp_path / "m.pkl"))


def columns():
    return Marks(sample()).__reduce__()[1][0]


@pytest.mark.parametrize("damage", ["a field less", "a region's size", "a column short",
                                    "the regions of a mark"])
def test_columns_that_disagree_are_refused(tmp_path, damage):
    c = columns()
    if damage == "a field less":
        del c["rois"]["note"]
    elif damage == "a region's size":
        c["rois"]["points"][0] += 1
    elif damage == "a column short":
        c["marks"]["reader"].pop()
    else:
        c["marks"]["rois"][1] += 1
    with pytest.raises(ValueError):
        marks_from_columns(c)
    (tmp_path / "m.pkl").write_bytes(pickle.dumps(Marks(sample())).replace(
        b"marks_from_columns", b"marks_from_columumns"))
    with pytest.raises(LidcError, match="not a pickle written by this project"):
        load_pickle(tmp_path / "m.pkl")
