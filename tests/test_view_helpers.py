"""What the viewer's tests share: a small work folder whose marks are known from the XML written
for it, runs exported from untrained tiny networks, and a viewer served on a free port."""
import contextlib
import json
import threading
from pathlib import Path

import numpy as np

from lidc.stages import annotations, crop, index
from tests.helpers import lidc_xml, sop_uid, square, write_series, write_slice

PATIENT, OTHER = "LIDC-IDRI-0101", "LIDC-IDRI-0102"
SERIES, OTHER_SERIES = "1.2.826.0.1.3680043.8.498.101", "1.2.826.0.1.3680043.8.498.102"
SLICES = 6
BACKGROUND_HU, BLOCK_HU = -850, 100
BLOCK = (slice(10, 30), slice(100, 120))  # rows, cols of a bright block on slice 2
# The marks, as the XML gives them: (x, y) = (column, row).
A_CONTOUR = square(40, 60, 8)   # reader A, nodule A1 on slices 2 and 3
A_POINT = (90, 100)             # reader A, small nodule A2 on slice 2
B_CONTOUR = square(45, 61, 6)   # reader B, nodule B1 on slice 2 (crossing A1)
B_LOCUS = (100, 30)             # reader B, non-nodule n1 on slice 4


def _sessions():
    z = [2.5 * k for k in range(SLICES)]

    def at(k):
        return z[k], sop_uid(SERIES, k)

    reader_a = [{"kind": "nodule", "id": "A1", "rois": [(*at(2), True, A_CONTOUR),
                                                        (*at(3), True, A_CONTOUR)]},
                {"kind": "nodule", "id": "A2", "rois": [(*at(2), True, [A_POINT])]}]
    reader_b = [{"kind": "nodule", "id": "B1", "rois": [(*at(2), True, B_CONTOUR)]},
                {"kind": "non", "id": "n1", "z": at(4)[0], "sop": at(4)[1], "xy": B_LOCUS}]
    return z, [reader_a, reader_b]


def write_work(folder):
    """Writes a LIDC root (patient PATIENT with two readers' marks, OTHER without a read) and
    runs index, annotations and crop on it; returns WORK."""
    folder = Path(folder)
    root, work = folder / "root", folder / "work"
    z, sessions = _sessions()
    images = [np.full((128, 128), BACKGROUND_HU, np.int16) for _ in z]
    images[2][BLOCK] = BLOCK_HU
    series = root / PATIENT / "study" / "series"
    series.mkdir(parents=True)
    for k, (height, hu) in enumerate(zip(z, images)):
        write_slice(series / f"1-{SLICES - k:03d}.dcm", height, k, SERIES, hu=hu,
                    patient=PATIENT)
    (series / "001.xml").write_text(lidc_xml(sessions, SERIES))
    write_series(root / OTHER / "study" / "series", [0.0, 2.5, 5.0], OTHER_SERIES, patient=OTHER)
    index.run(root, work)
    annotations.run(work)
    crop.run(work)
    return work


def xml_points(points):
    """The XML's (x, y) points as (row, col)."""
    return tuple((y, x) for x, y in points)


def export_run(runs, name, seed):
    """RUNS/NAME: a saved model of an untrained tiny network initialised with `seed` (another
    seed, other probabilities), and its config.json."""
    import tensorflow as tf

    from tests.test_training_helpers import tiny_net
    from training.model import build, export

    folder = Path(runs) / name
    folder.mkdir(parents=True)
    with tf.Graph().as_default() as graph, tf.compat.v1.Session(graph=graph) as session:
        model = build(tiny_net, (64, 64, 1), 3, seed=seed)
        session.run(tf.compat.v1.global_variables_initializer())
        export(session, model, folder / "saved_model")
    (folder / "config.json").write_text(json.dumps({"net": "tiny", "seed": seed}))
    return folder


@contextlib.contextmanager
def serving(viewer):
    """Serves `viewer` on a free port of 127.0.0.1 for the block; yields the base URL."""
    from training.viewer.server import make_server

    server = make_server(viewer, port=0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)
