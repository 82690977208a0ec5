"""Lesions of the three kinds of ARCHITECTURE.md, placed in the phantom's lungs and blended in.

- nodule >= 3 mm (kind 0): solid, part-solid, ground glass or calcified; round, lobulated or
  spiculated; a few large solid ones cavitate; some touch the pleura.
- nodule < 3 mm (kind 1): a dot blurred by the voxel size, so its peak is only partly dense.
- non-nodule >= 3 mm (kind 2): a scar or band of linear atelectasis, a pleural plaque, or an
  irregular patchy opacity.

Each lesion is an occupancy box (the noise-free fraction of each voxel it fills): the readers
contour it, and `blend` mixes its HU into the volume by it.

    lesions = place_lesions(rng, geometry, chest)   # blends them into chest.hu
"""
import dataclasses
import math

import cv2
import numpy as np

from lidc.records import NODULE, NON_NODULE, SMALL_NODULE
from lidc.synthetic.geometry import Segment, blob, box, soft_edge, sphere, tube

CAVITY_HU = -950.0


@dataclasses.dataclass
class Lesion:
    """One physical lesion: its kind (a label of lidc.records), its look, and its occupancy.

    `occupancy` is the noise-free fraction of each voxel the lesion fills, in the box starting
    at index `origin`; readers contour it. `hole` is the same for a cavity, and `core` for the
    solid part of a part-solid nodule (of `core_hu`), or None. `center` is the voxel (slice,
    row, column) a reader clicks.
    """
    kind: int
    form: str
    center: tuple
    diameter_mm: float
    hu: float
    origin: tuple
    occupancy: np.ndarray
    hole: np.ndarray = None
    core: np.ndarray = None
    core_hu: float = 0.0
    shape: str = "round"
    pleural: bool = False

    @property
    def conspicuity(self):
        """0 (invisible) .. 1 (obvious), from density against lung and size."""
        contrast = np.clip((self.hu + 850.0) / 800.0, 0.0, 1.0) * min(1.0, self.occupancy.max())
        return float(0.6 * contrast + 0.4 * np.clip((self.diameter_mm - 2.0) / 10.0, 0.0, 1.0))

    @property
    def index(self):
        """The volume's index slices of the occupancy box."""
        return tuple(slice(o, o + s) for o, s in zip(self.origin, self.occupancy.shape))


@dataclasses.dataclass
class Room:
    """Where lesions may still go: the lung, each voxel's in-plane distance to its edge
    (pixels), and what earlier lesions have taken."""
    geometry: object
    lung: np.ndarray
    wall_distance: np.ndarray
    free: np.ndarray

    @classmethod
    def of(cls, geometry, lung):
        """The whole lung free."""
        distance = np.stack([cv2.distanceTransform(m.astype(np.uint8), cv2.DIST_L2, 3)
                             for m in lung])
        return cls(geometry, lung, distance, np.ones(geometry.shape, dtype=bool))

    def pick(self, rng, min_mm, max_mm=None, z_mm=0.0):
        """A random free voxel whose in-plane distance to the lung edge is in [min_mm, max_mm],
        and at least half min_mm on every slice within z_mm of it. None when there is none."""
        geometry, wall_mm = self.geometry, self.wall_distance * self.geometry.spacing
        ok = (wall_mm >= min_mm) & self.free
        if max_mm is not None:
            ok &= wall_mm <= max_mm
        reach = int(math.ceil(z_mm / geometry.thickness))
        n = ok.shape[0]
        if 2 * reach + 1 > n - 2:
            return None
        valid = np.zeros_like(ok)
        core = ok[reach:n - reach].copy()
        for j in range(1, reach + 1):
            core &= (wall_mm[reach - j:n - reach - j] >= min_mm * 0.5)
            core &= (wall_mm[reach + j:n - reach + j] >= min_mm * 0.5)
        valid[reach:n - reach] = core
        valid[0] = valid[-1] = False
        flat = np.flatnonzero(valid)
        if len(flat) == 0:
            return None
        return np.unravel_index(int(rng.choice(flat)), ok.shape)

    def reserve(self, lesion):
        """Keeps later lesions a few millimetres away from this one."""
        margin = np.ceil(np.array([4.0, 4.0, 4.0]) / self.geometry.scale).astype(int)
        lo = np.maximum(np.asarray(lesion.origin) - margin, 0)
        hi = np.asarray(lesion.origin) + np.asarray(lesion.occupancy.shape) + margin
        self.free[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]] = False

    def lung_over(self, origin, shape, grow=True):
        """The lung mask over a box, grown by a pixel so lesions may touch the pleura; all ones
        without `grow` (a pleural lesion may bulge into the wall)."""
        index = tuple(slice(o, o + s) for o, s in zip(origin, shape))
        mask = self.lung[index].astype(np.uint8)
        if not grow:
            return np.ones_like(mask, dtype=np.float32)
        mask = np.stack([cv2.dilate(p, np.ones((3, 3), np.uint8)) for p in mask])
        return mask.astype(np.float32)


def place_lesions(rng, geometry, chest):
    """Draws a few lesions of each kind, places them in the lungs and blends them into
    `chest.hu`. Returns the Lesions placed (a kind may come out short where there is no room)."""
    room = Room.of(geometry, chest.lung)
    lesions = []
    plan = ([NODULE] * int(rng.integers(3, 7)) + [SMALL_NODULE] * int(rng.integers(3, 8))
            + [NON_NODULE] * int(rng.integers(4, 10)))
    for kind in plan:
        draw = {NODULE: draw_nodule, SMALL_NODULE: draw_small_nodule,
                NON_NODULE: draw_non_nodule}[kind]
        lesion = draw(rng, room)
        if lesion is None:
            continue
        blend(chest.hu, lesion)
        room.reserve(lesion)
        lesions.append(lesion)
    return lesions


def draw_nodule(rng, room):
    """A nodule >= 3 mm: solid, part-solid, ground glass or calcified; round, lobulated or
    spiculated; a few large ones cavitate. None when the lung has no room for it."""
    geometry = room.geometry
    d = float(np.clip(rng.lognormal(np.log(9.0), 0.45), 3.0, 25.0))
    form = str(rng.choice(["solid", "part-solid", "ground glass", "calcified"],
                          p=[0.55, 0.15, 0.25, 0.05]))
    if form == "calcified":
        d = min(d, 9.0)
    r = d / 2
    shape = str(rng.choice(["round", "lobulated", "spiculated"], p=[0.6, 0.25, 0.15]))
    pleural = rng.random() < 0.15
    centre = room.pick(rng, r * (0.5 if pleural else 1.0) + 2.0, z_mm=r)
    if centre is None:
        return None
    hu = {"solid": rng.uniform(-100.0, 60.0), "part-solid": rng.uniform(-650.0, -400.0),
          "ground glass": rng.uniform(-650.0, -300.0), "calcified": rng.uniform(250.0, 700.0)}[form]
    axes = r * np.array([1.0, rng.uniform(0.8, 1.0), rng.uniform(0.8, 1.0)])
    spikes = int(rng.integers(4, 9)) if shape == "spiculated" else 0
    extent = r * 1.5 + (8.0 if spikes else 0.0) + 2 * geometry.thickness
    body = blob(rng, geometry, centre, axes, extent, bumps=4 if shape == "lobulated" else 0)
    c_mm = np.asarray(centre) * geometry.scale
    for _ in range(spikes):
        u = rng.standard_normal(3)
        u /= np.linalg.norm(u)
        tip = c_mm + u * (r + rng.uniform(3.0, 8.0))
        tube(body.occupancy, geometry, Segment(c_mm, tip, rng.uniform(0.5, 0.9)),
             origin=body.origin, value=0.9)
    body.occupancy *= room.lung_over(body.origin, body.occupancy.shape, grow=not pleural)
    lesion = Lesion(kind=NODULE, form=form, center=tuple(int(v) for v in centre),
                    diameter_mm=d, hu=float(hu), origin=body.origin, occupancy=body.occupancy,
                    shape=shape, pleural=bool(pleural))
    if form == "part-solid":
        lesion.core = sphere(geometry, body.grid, c_mm, r * rng.uniform(0.35, 0.6))
        lesion.core_hu = float(rng.uniform(-80.0, 40.0))
    if form == "solid" and d >= 12.0 and rng.random() < 0.35:
        shift = rng.standard_normal(3) * np.array([0.0, 1.0, 1.0])
        shift *= 0.25 * r / max(np.linalg.norm(shift), 1e-6)
        lesion.hole = sphere(geometry, body.grid, c_mm + shift,
                             r * rng.uniform(0.25, 0.4)) * (body.occupancy > 0.9)
    return lesion


def draw_small_nodule(rng, room):
    """A nodule < 3 mm: a dot blurred by the voxel size, so its peak is only partly dense."""
    geometry = room.geometry
    d = float(rng.uniform(1.5, 3.0))
    form = "solid" if rng.random() < 0.7 else "ground glass"
    hu = rng.uniform(-150.0, 60.0) if form == "solid" else rng.uniform(-600.0, -400.0)
    centre = room.pick(rng, 4.0, z_mm=2.0)
    if centre is None:
        return None
    r = d / 2
    # The scanner's blur: a ball of radius r seen through a pixel and a slice profile.
    sxy = math.sqrt((r / 2) ** 2 + (geometry.spacing / 2) ** 2)
    sz = math.sqrt((r / 2) ** 2 + (geometry.thickness / 2.35) ** 2)
    peak = min(1.0, (4 / 3 * math.pi * r ** 3) / ((2 * math.pi) ** 1.5 * sxy * sxy * sz))
    c_mm = np.asarray(centre) * geometry.scale
    extent = np.array([3 * sz + geometry.thickness, 3 * sxy + geometry.spacing,
                       3 * sxy + geometry.spacing])
    index, grid = box(geometry, c_mm - extent, c_mm + extent)
    occupancy = peak * np.exp(-((grid.y - c_mm[1]) ** 2 + (grid.x - c_mm[2]) ** 2)
                              / (2 * sxy * sxy) - (grid.z - c_mm[0]) ** 2 / (2 * sz * sz))
    return Lesion(kind=SMALL_NODULE, form=form, center=tuple(int(v) for v in centre),
                  diameter_mm=d, hu=float(hu), origin=tuple(s.start for s in index),
                  occupancy=occupancy.astype(np.float32))


def draw_non_nodule(rng, room):
    """A non-nodule >= 3 mm: a scar or band of linear atelectasis, a pleural plaque, or an
    irregular patchy opacity. None when the lung has no room for it."""
    form = str(rng.choice(["scar", "pleural plaque", "irregular opacity"], p=[0.5, 0.25, 0.25]))
    if form == "pleural plaque":
        return _plaque(rng, room)
    draw = _scar if form == "scar" else _opacity
    drawn = draw(rng, room)
    if drawn is None:
        return None
    occupancy, origin, hu = drawn
    occupancy *= room.lung_over(origin, occupancy.shape)
    return Lesion(kind=NON_NODULE, form=form, center=_click_point(occupancy, origin),
                  diameter_mm=_extent_mm(occupancy, room.geometry), hu=float(hu),
                  origin=origin, occupancy=occupancy)


def _scar(rng, room):
    """A bent band (scar, linear atelectasis): (occupancy, origin, HU), or None."""
    geometry = room.geometry
    length = rng.uniform(10.0, 30.0)
    centre = room.pick(rng, 5.0, z_mm=3.0)
    if centre is None:
        return None
    c_mm = np.asarray(centre) * geometry.scale
    u = np.array([rng.uniform(-0.25, 0.25), rng.standard_normal(), rng.standard_normal()])
    u /= np.linalg.norm(u)
    bend = rng.standard_normal(3) * np.array([0.2, 1, 1]) * rng.uniform(1.0, 3.0)
    extent = length / 2 + 4.0 + 2 * geometry.thickness
    index, _ = box(geometry, c_mm - extent, c_mm + extent)
    origin = tuple(s.start for s in index)
    occupancy = np.zeros(tuple(s.stop - s.start for s in index), dtype=np.float32)
    radius = rng.uniform(1.2, 3.0)
    ends = (c_mm - u * length / 2, c_mm + bend, c_mm + u * length / 2)
    for p, q in zip(ends[:-1], ends[1:]):
        tube(occupancy, geometry, Segment(p, q, radius), origin=origin)
    return occupancy, origin, rng.uniform(-100.0, 60.0)


def _opacity(rng, room):
    """An irregular patchy opacity, a few overlapping balls: (occupancy, origin, HU), or None."""
    geometry = room.geometry
    centre = room.pick(rng, 8.0, z_mm=4.0)
    if centre is None:
        return None
    c_mm = np.asarray(centre) * geometry.scale
    body = blob(rng, geometry, centre, np.full(3, rng.uniform(2.5, 4.5)), 14.0)
    occupancy = body.occupancy
    for _ in range(int(rng.integers(2, 5))):
        offset = rng.standard_normal(3) * np.array([0.5, 1, 1]) * 3.5
        occupancy = np.maximum(occupancy, sphere(geometry, body.grid, c_mm + offset,
                                                 rng.uniform(2.0, 4.0)))
    return occupancy, body.origin, rng.uniform(-300.0, 0.0)


def _plaque(rng, room):
    """A flat pleural-based plaque on the lateral or posterior wall."""
    geometry = room.geometry
    centre = room.pick(rng, 0.5 * geometry.spacing, max_mm=1.5 * geometry.spacing, z_mm=4.0)
    if centre is None:
        return None
    rows, cols = np.nonzero(room.lung[centre[0]])
    normal = np.array([centre[1] - rows.mean(), centre[2] - cols.mean()], dtype=float)
    normal /= max(np.linalg.norm(normal), 1e-6)
    thick, wide, tall = rng.uniform(2.0, 4.0), rng.uniform(5.0, 12.0), rng.uniform(3.0, 8.0)
    c_mm = np.asarray(centre) * geometry.scale + np.array([0.0, *normal]) * thick * 0.5
    extent = max(wide, tall) + 2 * geometry.thickness
    index, grid = box(geometry, c_mm - extent, c_mm + extent)
    dz, dy, dx = grid.z - c_mm[0], grid.y - c_mm[1], grid.x - c_mm[2]
    across = dy * normal[0] + dx * normal[1]
    along = -dy * normal[1] + dx * normal[0]
    rho = np.sqrt((across / thick) ** 2 + (along / wide) ** 2 + (dz / tall) ** 2)
    d = np.sqrt(dz ** 2 + dy ** 2 + dx ** 2)
    occupancy = soft_edge((1.0 - rho) * thick, dz, d, geometry)
    origin = tuple(s.start for s in index)
    return Lesion(kind=NON_NODULE, form="pleural plaque", center=_click_point(occupancy, origin),
                  diameter_mm=_extent_mm(occupancy, geometry), hu=float(rng.uniform(-40.0, 80.0)),
                  origin=origin, occupancy=occupancy)


def _click_point(occupancy, origin):
    """The point a reader marks: on the slice where the lesion is largest, the lesion voxel
    nearest its centroid (a bent scar's centroid may lie off the scar)."""
    zi = int(np.argmax(occupancy.reshape(len(occupancy), -1).sum(axis=1)))
    plane = occupancy[zi]
    rows, cols = np.nonzero(plane >= 0.5 * plane.max())
    weights = plane[rows, cols]
    r0, c0 = np.average(rows, weights=weights), np.average(cols, weights=weights)
    best = int(np.argmin((rows - r0) ** 2 + (cols - c0) ** 2))
    return (int(origin[0] + zi), int(origin[1] + rows[best]), int(origin[2] + cols[best]))


def _extent_mm(occupancy, geometry):
    """The longest side (mm) of the lesion's bounding box on the slice where it is largest."""
    zi = int(np.argmax(occupancy.reshape(len(occupancy), -1).sum(axis=1)))
    rows, cols = np.nonzero(occupancy[zi] >= 0.5)
    if len(rows) == 0:
        return 0.0
    return float(max(np.ptp(rows) + 1, np.ptp(cols) + 1) * geometry.spacing)


def blend(hu, lesion):
    """Mixes the lesion's HU (with its core and cavity) into `hu` by its occupancy."""
    value = np.full(lesion.occupancy.shape, lesion.hu, dtype=np.float32)
    if lesion.core is not None:
        value += lesion.core * (lesion.core_hu - value)
    if lesion.hole is not None:
        value += lesion.hole * (CAVITY_HU - value)
    hu[lesion.index] += lesion.occupancy * (value - hu[lesion.index])
