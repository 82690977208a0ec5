"""lidc.io's CSV writing: a column at a time, the bytes csv.writer writes for the same rows.

Every stage's table goes through write_csv (and annotations.csv through write_csv_columns), so
cells that need quoting (commas, quotes, line breaks in paths and notes), empty and missing
cells, numbers of every kind and file names that are not UTF-8 are checked against csv.writer
itself, on random tables of them.
"""
import csv
import io
import random

import numpy as np
import pytest

from lidc.io import read_csv, write_csv, write_csv_columns

PIECES = ["", " ", ",", '"', "\r", "\n", "\r\n", "a", "é", "x,y", 'say "hi"', "\udcff", "None",
          "0", "-", "\t"]


def random_value(rng):
    kind = rng.random()
    if kind < 0.5:
        return "".join(rng.choice(PIECES) for _ in range(rng.randint(0, 4)))
    if kind < 0.6:
        return None
    if kind < 0.7:
        return rng.randint(-10 ** 6, 10 ** 6)
    if kind < 0.8:
        return rng.uniform(-1e9, 1e9) * rng.choice([1, 1e-20, 1e20])
    if kind < 0.85:
        return rng.choice([True, False])
    if kind < 0.9:
        return np.float64(rng.random())
    if kind < 0.95:
        return np.int64(rng.randint(0, 9))
    return rng.choice([float("nan"), float("inf")])


def csv_writer_bytes(names, rows):
    f = io.StringIO(newline="")
    writer = csv.writer(f)
    writer.writerow(names)
    writer.writerows(rows)
    return f.getvalue().encode("utf-8", "surrogateescape")


def test_the_bytes_are_csv_writers_for_random_tables(tmp_path):
    rng = random.Random(0)
    for _ in range(400):
        width = rng.randint(1, 4)
        names = [rng.choice(["a", "b", "", "c,d", 'q"']) for _ in range(width)]
        rows = [[random_value(rng) for _ in range(width)] for _ in range(rng.randint(0, 5))]
        write_csv(tmp_path / "t.csv", rows, names)
        assert (tmp_path / "t.csv").read_bytes() == csv_writer_bytes(names, rows), (names, rows)
        columns = [list(c) for c in zip(*rows)] if rows else [[] for _ in names]
        write_csv_columns(tmp_path / "c.csv", columns, names)
        assert (tmp_path / "c.csv").read_bytes() == (tmp_path / "t.csv").read_bytes()


def test_dict_rows_and_a_cell_alone_read_back(tmp_path):
    rows = [{"path": "a,b.dcm", "reason": 'says "no"\nthen stops'}, {"path": "", "reason": None}]
    write_csv(tmp_path / "t.csv", rows, ["path", "reason"])
    assert read_csv(tmp_path / "t.csv") == [{"path": "a,b.dcm", "reason": 'says "no"\nthen stops'},
                                            {"path": "", "reason": ""}]
    # One column: an empty cell is quoted, or its row would read as no row at all.
    write_csv(tmp_path / "one.csv", [[""], ["x"], [None]], ["only"])
    assert (tmp_path / "one.csv").read_bytes() == b'only\r\n""\r\nx\r\n""\r\n'
    assert [r["only"] for r in read_csv(tmp_path / "one.csv")] == ["", "x", ""]


def test_rows_and_columns_of_the_wrong_size_are_refused(tmp_path):
    with pytest.raises(ValueError, match="2 columns"):
        write_csv(tmp_path / "t.csv", [[1, 2], [3]], ["a", "b"])
    with pytest.raises(ValueError, match="unequal length"):
        write_csv_columns(tmp_path / "t.csv", [[1, 2], [3]], ["a", "b"])
    with pytest.raises(ValueError, match="unequal length"):
        write_csv_columns(tmp_path / "t.csv", [[1]], ["a", "b"])
    assert not (tmp_path / "t.csv").exists()
