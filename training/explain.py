"""Why a trained network answers as it does: Grad-CAM heat maps, and galleries of its most
confident right, most confident wrong and most uncertain test patches (fastai's
`plot_top_losses`), with the figures that show them.

Grad-CAM (Selvaraju, Cogswell, Das, Vedantam, Parikh and Batra, "Grad-CAM: Visual Explanations
from Deep Networks via Gradient-based Localization", ICCV 2017, arXiv:1610.02391): for class c
and a convolutional map A (an end point of the builder, [H', W', K]), each channel k is weighed
by the mean over the map of d logit_c / d A_k, and the heat map is ReLU(sum_k weight_k A_k),
placed on the patch (each cell on the pixels it is centred on: GradCam.placement) and scaled to
[0, 1]. It shows where in the patch the evidence for c lies, as finely as the map's grid: at 64x64
ResNet-50's last stage is 2x2 and VGG-16's 4x4, so the default end point is the last one (in the
order the network computes them) whose map is at least MIN_CAM_SIZE x MIN_CAM_SIZE: ResNet-50
'block2' (8x8), VGG-16 'conv4' (8x8), AlexNet 'conv5' (8x8), LeNet-5 'pool2' (13x13), or the
largest map when none is that large.

    cam = GradCam(predictor)                       # predictor: training.model.Predictor
    heat = cam.maps(images, classes)               # [N, H, W] in [0, 1]
    write_galleries(test, probabilities, Path("runs/demo/eval"), class_names)

Patches are drawn in the lung window (lidc.windows.LUNG), from the training window the network
reads (lidc.windows.TRAINING).
"""
import shutil

import matplotlib

matplotlib.use("Agg")  # files only: no display is needed, or wanted on a server
import matplotlib.pyplot as plt  # noqa: E402
import cv2  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from lidc.errors import LidcError  # noqa: E402
from lidc.io import atomic_folder, atomic_path, write_json  # noqa: E402
from lidc.windows import LUNG, TRAINING  # noqa: E402
from training.model import run_in_batches  # noqa: E402

v1 = tf.compat.v1

# The coarsest map the default Grad-CAM end point may have: 8x8 cells of 8x8 pixels on a 64x64
# patch, fine enough to tell a nodule from the tissue beside it.
MIN_CAM_SIZE = 8
# Patches per gallery.
GALLERY_SIZE = 8
# The galleries of each true class, in the order they are written.
KINDS = {
    "confident_right": "most confident right",
    "confident_wrong": "most confident wrong",
    "uncertain": "most uncertain (smallest margin between the top two classes)",
}
# The per-patch columns of a Split (training.data) a gallery or Grad-CAM row shows.
SHOWN_COLUMNS = ("patient_id", "series_uid", "slice_index", "lesion_id", "mark_id", "readers",
                 "patch_index")


def default_end_point(shapes, min_size=MIN_CAM_SIZE):
    """The end point Grad-CAM reads unless told: the last whose map is at least min_size x
    min_size, else the one with the largest map.

    Args:
      shapes: {name: (height, width)} of the end points that are maps, in the order the network
        computes them.
      min_size: the smallest height and width wanted.
    Returns:
      a name of `shapes`, or None when it is empty.
    """
    large = [name for name, (h, w) in shapes.items() if h >= min_size and w >= min_size]
    if large:
        return large[-1]
    if not shapes:
        return None
    return max(shapes, key=lambda name: shapes[name][0] * shapes[name][1])


def map_shapes(end_points):
    """{name: (height, width)} of the end points that are 4-D maps with a known size."""
    shapes = {}
    for name, tensor in end_points.items():
        shape = tensor.shape
        if shape.rank == 4 and shape[1] is not None and shape[2] is not None:
            shapes[name] = (int(shape[1]), int(shape[2]))
    return shapes


class GradCam:
    """Grad-CAM heat maps of a loaded model (training.model.Predictor) at one end point.

    Args:
      predictor: the model; its graph gains the gradient ops.
      end_point: the end point's name; None: default_end_point.
    Raises:
      LidcError: the model records no end points (trained before they were recorded), or has
        no map of that name.
    """

    def __init__(self, predictor, end_point=None):
        points = predictor.end_points()
        if not points:
            raise LidcError(predictor.source, "records no end points for Grad-CAM (saved before "
                                              "they were recorded); train the run again")
        shapes = map_shapes(points)
        self.end_point = end_point or default_end_point(shapes)
        if self.end_point not in shapes:
            raise LidcError(predictor.source, f"has no map end point {self.end_point!r} for "
                                              f"Grad-CAM; it has: {', '.join(shapes)}")
        self.predictor = predictor
        self._placement = None
        self.feature_map = feature_map = points[self.end_point]
        with predictor.graph.as_default():
            self.classes = v1.placeholder(tf.int32, [None], name="grad_cam_classes")
            logits = tf.cast(predictor.logits, tf.float32)  # bfloat16 under --precision
            # The sum over the batch: each example's logit depends on its own map only (batch
            # norm reads its moving averages here), so one gradient gives every example's.
            target = tf.reduce_sum(logits * tf.one_hot(self.classes, logits.shape[-1]))
            (gradient,) = tf.gradients(target, feature_map)
            gradient, feature_map = (tf.cast(t, tf.float32) for t in (gradient, feature_map))
            weights = tf.reduce_mean(gradient, axis=[1, 2], keepdims=True)
            self.heat = tf.nn.relu(tf.reduce_sum(weights * feature_map, axis=-1))

    def maps(self, images, classes, batch_size=64):
        """[N, H, W] float32 heat maps in [0, 1] (each divided by its maximum; all 0 where
        nothing speaks for the class), placed on the images' H x W pixels (see `placement`).

        Args:
          images: [N, H, W, C] float32, as Predictor.predict takes them.
          classes: [N] int, the class each map explains.
          batch_size: images per run.
        """
        images = np.asarray(images, np.float32)
        if not len(images):
            return np.zeros(images.shape[:3], np.float32)
        (heat,) = run_in_batches(self.predictor.session, [self.heat],
                                 {self.predictor.images: images,
                                  self.classes: np.asarray(classes, np.int32)}, batch_size)
        rows, columns = self.placement()
        # Inverse map: a patch pixel x reads the map at (x - offset) / step.
        warp = np.array([[1 / columns[0], 0, -columns[1] / columns[0]],
                         [0, 1 / rows[0], -rows[1] / rows[0]]], np.float64)
        out = np.stack([cv2.warpAffine(h.astype(np.float32), warp, (images.shape[2],
                                                                     images.shape[1]),
                                       flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                                       borderMode=cv2.BORDER_REPLICATE) for h in heat])
        peak = out.max(axis=(1, 2), keepdims=True)
        return np.divide(out, peak, out=np.zeros_like(out), where=peak > 0)

    def placement(self):
        """((step, offset) of the rows, (step, offset) of the columns): the map's cell i is
        centred on patch pixel offset + step * i.

        Where the patch's size is a multiple of the map's, the cells tile the patch (SAME
        padding: ResNet, VGG, AlexNet): step = size / cells, offset = (step - 1) / 2, which
        is what resizing the map does. Otherwise (VALID convolutions: LeNet-5's 13x13 'pool2'
        sits on pixels 7.5, 11.5, ... 55.5 of 64, not spread over 0-63) the centres are
        measured: the centroid of each cell's gradient with respect to the patch (its effective
        receptive field) over seeded random patches, a line fitted through them.
        """
        if self._placement is None:
            feature_map, images = self.feature_map, self.predictor.images
            size, cells = (int(images.shape[1]), int(images.shape[2])), \
                (int(feature_map.shape[1]), int(feature_map.shape[2]))
            if all(s % c == 0 for s, c in zip(size, cells)):
                self._placement = tuple((s / c, (s / c - 1) / 2) for s, c in zip(size, cells))
            else:
                self._placement = self._measured_placement(size, cells)
        return self._placement

    def _measured_placement(self, size, cells):
        """The (step, offset) of rows and columns, fitted to the cells' gradient centroids
        along the map's middle column and middle row."""
        with self.predictor.graph.as_default():
            mask = v1.placeholder(tf.float32, [cells[0], cells[1]])
            (gradient,) = tf.gradients(
                tf.reduce_sum(self.feature_map * mask[None, :, :, None]), self.predictor.images)
        shape = [8, *size, int(self.predictor.images.shape[3])]
        probes = np.random.default_rng(0).random(shape).astype(np.float32)
        fitted = []
        for axis in (0, 1):
            centroids = []
            for i in range(cells[axis]):
                cell = np.zeros(cells, np.float32)
                cell[(i, cells[1] // 2) if axis == 0 else (cells[0] // 2, i)] = 1
                weight = np.abs(self.predictor.session.run(
                    gradient, {self.predictor.images: probes, mask: cell})).sum(axis=(0, 3))
                profile = weight.sum(axis=1 - axis)
                centroids.append(float((profile * np.arange(size[axis])).sum()
                                       / max(profile.sum(), 1e-30)))
            step, offset = np.polyfit(np.arange(cells[axis]), centroids, 1) \
                if cells[axis] > 1 else (float(size[axis]), centroids[0])
            fitted.append((float(step), float(offset)))
        return tuple(fitted)


def select_galleries(labels, probabilities, k=GALLERY_SIZE):
    """Which patches each gallery shows: per true class, the k most confident right (highest
    probability of the class among those predicted as it), the k most confident wrong (highest
    probability of the predicted class among those predicted as another class) and the k most
    uncertain (smallest margin between the two highest probabilities, right or wrong). Ties go
    to the earlier row.

    Args:
      labels: [N] int true classes.
      probabilities: [N, K] class probabilities.
      k: patches per gallery at most.
    Returns:
      list of {"class": c, "kind": one of KINDS, "rows": [row, ...]}, by class then kind.
    """
    labels = np.asarray(labels)
    probabilities = np.asarray(probabilities, np.float64)
    predicted = probabilities.argmax(axis=1)
    confidence = probabilities.max(axis=1)
    ordered = np.sort(probabilities, axis=1)
    margin = ordered[:, -1] - (ordered[:, -2] if probabilities.shape[1] > 1 else 0.0)
    galleries = []
    for c in range(probabilities.shape[1]):
        rows = np.flatnonzero(labels == c)
        right, wrong = rows[predicted[rows] == c], rows[predicted[rows] != c]
        for kind, members, key in (("confident_right", right, -confidence[right]),
                                   ("confident_wrong", wrong, -confidence[wrong]),
                                   ("uncertain", rows, margin[rows])):
            chosen = members[np.lexsort((members, key))][:k]
            galleries.append({"class": c, "kind": kind, "rows": [int(r) for r in chosen]})
    return galleries


def cam_rows(labels, num_classes, per_class):
    """The test rows whose Grad-CAM evaluate draws: per true class, `per_class` rows evenly
    spaced through that class's rows (first and last included), so that every run evaluated on
    one test set shows the same patches.

    Returns:
      {class: [row, ...]} for every class (empty lists for a class without rows).
    """
    labels = np.asarray(labels)
    chosen = {}
    for c in range(num_classes):
        rows = np.flatnonzero(labels == c)
        count = min(per_class, len(rows))
        picks = np.unique(np.linspace(0, len(rows) - 1, count).round().astype(int)) \
            if count else []
        chosen[c] = [int(rows[i]) for i in picks]
    return chosen


def patch_record(split, row, probabilities, names):
    """What a gallery or Grad-CAM figure says of one test patch, JSON-ready: row, the Split's
    columns in SHOWN_COLUMNS that it has, class and label (true), predicted and predicted_label,
    probabilities (a list in class order)."""
    p = np.asarray(probabilities[row], np.float64)
    record = {"row": int(row)}
    for column in SHOWN_COLUMNS:
        if column in split.columns:
            value = split.columns[column][row]
            record[column] = value.item() if hasattr(value, "item") else value
    true, predicted = int(split.label[row]), int(p.argmax())
    record.update({"class": true, "label": names[true], "predicted": predicted,
                   "predicted_label": names[predicted], "probabilities": p.tolist()})
    return record


def caption(record):
    """Three short lines under a patch: where it comes from (patient and slice, else its row),
    its readers and classes, its probabilities."""
    where = [str(record["patient_id"])] if "patient_id" in record else []
    if "slice_index" in record:
        where.append(f"slice {record['slice_index']}")
    where = ", ".join(where) or f"test row {record['row']}"
    readers = record.get("readers")
    who = f"{readers} reader{'s' * (readers != 1)}; " if readers is not None else ""
    probabilities = " ".join(f"{p:.2f}" for p in record["probabilities"])
    return f"{where}\n{who}true {record['class']}, said {record['predicted']}\n" \
           f"p {probabilities}"


def legend(names):
    """The line saying which class each number and probability column is."""
    return "classes: " + " · ".join(f"{c} {name}" for c, name in enumerate(names))


def lung_grey(x):
    """[H, W] lung-window grey levels in [0, 1] of a training-window image (the network's
    input, [H, W] or [H, W, 1] in [0, 1]); HU beyond the training window stay at its ends."""
    hu = TRAINING.low + np.asarray(x, np.float32).reshape(x.shape[0], x.shape[1]) * TRAINING.width
    return LUNG.to_unit(hu)


def save_figure(fig, path):
    """Writes a matplotlib figure as a PNG atomically and closes it."""
    with atomic_path(path, sync=False) as tmp:
        # zlib level 2: a third of the default's time to encode, the file barely larger.
        fig.savefig(tmp, format="png", dpi=100, pil_kwargs={"compress_level": 2})
    plt.close(fig)


def patch_grid(rows, title, path):
    """A grid of patches, drawn in the lung window, each under its caption and optionally under
    its heat map; `title` above; written to `path`.

    Args:
      rows: list of rows, each a list of (image, heat, caption): image a training-window patch
        ([H, W] or [H, W, 1] in [0, 1]), heat None or [H, W] in [0, 1], caption a string.
      title: the figure's title (may hold several lines).
      path: the PNG to write.
    """
    # One picture of all the patches on one axes, captions as figure text, laid out in inches:
    # an axes per patch (and a tight bounding box) made a gallery 4x slower to draw.
    columns = max(len(row) for row in rows)
    caption_lines = max(text.count("\n") + 1 for row in rows for _, _, text in row)
    cell, top = 1.8 + 0.14 * caption_lines + 0.1, 0.16 * (title.count("\n") + 1) + 0.15
    width, height = 1.95 * columns + 0.1, top + cell * len(rows)
    fig = plt.figure(figsize=(width, height))
    ax = fig.add_axes([0, 0, 1, 1])
    ax.axis("off")
    ax.set_xlim(0, width)
    ax.set_ylim(0, height)
    for r, panels in enumerate(rows):
        bottom = height - top - cell * (r + 1)
        for c, (image, heat, text) in enumerate(panels):
            left = 0.1 + 1.95 * c
            ax.imshow(_shown(image, heat), extent=(left, left + 1.8, bottom, bottom + 1.8),
                      interpolation="nearest")
            ax.text(left + 0.9, bottom + 1.85, text, fontsize=7, ha="center", va="bottom")
    ax.text(width / 2, height - 0.05, title, fontsize=8, ha="center", va="top")
    save_figure(fig, path)


def _shown(image, heat):
    """[H, W, 3] RGB in [0, 1]: the patch in the lung window, blended with the heat map in the
    jet colours (45%) when there is one."""
    grey = np.repeat(lung_grey(image)[..., None], 3, axis=2)
    if heat is None:
        return grey
    # Clipped: float32 rounding takes a blend of 1s a hair past 1, which imshow warns about.
    return np.clip(0.55 * grey + 0.45 * matplotlib.colormaps["jet"](np.asarray(heat))[..., :3],
                   0, 1)


def cam_panels(images, heat, captions, per_row=4):
    """The patch_grid rows of Grad-CAM figures: each patch plain (with its caption) above the
    patch under its heat map, `per_row` patches across."""
    rows = []
    for start in range(0, len(images), per_row):
        chunk = range(start, min(start + per_row, len(images)))
        rows.append([(images[i], None, captions[i]) for i in chunk])
        rows.append([(images[i], heat[i], "Grad-CAM") for i in chunk])
    return rows


def draw_cams(cam, images, classes, figures, batch_size=64):
    """Draws one figure per image: the patch beside it under its Grad-CAM heat map of its class
    in `classes`.

    Args:
      cam: a GradCam.
      images: [N, H, W, C] the model's inputs.
      classes: [N] int, the class each map explains.
      figures: N (path, title) pairs.
      batch_size: images per run.
    """
    heat = cam.maps(images, classes, batch_size)
    for image, h, (path, title) in zip(images, heat, figures):
        patch_grid([[(image, None, "patch"), (image, h, "Grad-CAM")]], title, path)


def write_galleries(test, probabilities, eval_dir, names, k=GALLERY_SIZE):
    """Writes eval_dir/gallery/class{C}_{kind}.png (no file for an empty gallery) and
    eval_dir/galleries.json: `galleries`, one per class and kind (class, label, kind, title,
    image path relative to eval_dir or None, and its patches as patch_record gives them), and
    `rows`, the same patches as one flat table (table_row).

    Returns:
      the path of galleries.json.
    """
    galleries = []
    with atomic_folder(eval_dir / "gallery") as folder:
        for chosen in select_galleries(test.label, probabilities, k):
            c, kind = chosen["class"], chosen["kind"]
            records = [patch_record(test, r, probabilities, names) for r in chosen["rows"]]
            title = f"true {names[c]}: {KINDS[kind]}"
            image = f"gallery/class{c}_{kind}.png" if records else None
            if records:
                panels = [(test.x[r["row"]], None, caption(r)) for r in records]
                patch_grid([panels[i:i + 4] for i in range(0, len(panels), 4)],
                           f"{title}\n{legend(names)}", folder / f"class{c}_{kind}.png")
            galleries.append({"class": c, "label": names[c], "kind": kind, "title": title,
                              "image": image, "patches": records})
    path = eval_dir / "galleries.json"
    write_json(path, {
        "class_names": list(names), "per_gallery": k, "galleries": galleries,
        "rows": [table_row(r, g["image"], gallery=g["title"]) for g in galleries
                 for r in g["patches"]],
        "selection": "per true class: highest probability of the class among those right; "
                     "highest probability of the predicted class among those wrong; smallest "
                     "margin between the top two"})
    return path


def table_row(record, image, **extra):
    """A patch_record as a row of a flat table for people (a report lists them): the image it
    is shown in, `extra`, where it comes from, its true and predicted labels, and its
    probabilities as one string ('0.910 0.050 0.040')."""
    hidden = ("class", "predicted", "explained", "probabilities")
    return {"image": image, **extra, **{k: v for k, v in record.items() if k not in hidden},
            "probabilities": " ".join(f"{p:.3f}" for p in record["probabilities"])}


def write_cams(predictor, test, probabilities, eval_dir, options, names):
    """Writes eval_dir/cam/class{C}.png, Grad-CAM of the predicted class on options.cam_per_class
    test patches of true class C (cam_rows), and eval_dir/cam.json (end point, and per class
    its image path relative to eval_dir and its patches' records, each with the class its map
    explains).

    Args:
      predictor: the loaded model.
      test: the test Split.
      probabilities: [N, K] the model's test probabilities.
      eval_dir: the run's eval/ folder.
      options: training.evaluation.EvalOptions (cam_end_point, cam_per_class, batch_size).
      names: the class names.
    Returns:
      the path of cam.json, or None when options.cam_per_class is 0 (an earlier evaluation's
      Grad-CAM files are then removed).
    Raises:
      LidcError: no end point for Grad-CAM (GradCam).
    """
    if not options.cam_per_class:
        shutil.rmtree(eval_dir / "cam", ignore_errors=True)
        (eval_dir / "cam.json").unlink(missing_ok=True)
        return None
    cam = GradCam(predictor, options.cam_end_point)
    classes = []
    with atomic_folder(eval_dir / "cam") as folder:
        for c, rows in cam_rows(test.label, len(names), options.cam_per_class).items():
            explained = np.asarray(probabilities)[rows].argmax(axis=1)
            records = [{**patch_record(test, row, probabilities, names), "explained": int(e)}
                       for row, e in zip(rows, explained)]
            image = f"cam/class{c}.png" if rows else None
            if rows:
                heat = cam.maps(test.x[rows], explained, options.batch_size)
                patch_grid(cam_panels(test.x[rows], heat, [caption(r) for r in records]),
                           f"true {names[c]}: Grad-CAM of the predicted class at "
                           f"{cam.end_point}\n{legend(names)}", folder / f"class{c}.png")
            classes.append({"class": c, "label": names[c], "image": image, "patches": records})
    path = eval_dir / "cam.json"
    write_json(path, {"end_point": cam.end_point, "per_class": options.cam_per_class,
                      "class_names": list(names), "classes": classes,
                      "rows": [table_row(r, e["image"]) for e in classes for r in e["patches"]],
                      "selection": "per true class, rows evenly spaced through the class's "
                                   "rows of the test set; the map explains the predicted class"})
    return path
