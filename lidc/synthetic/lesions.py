"""Lesions of the three kinds of ARCHITECTURE.md, placed in the phantom's lungs and blended in.

- nodule >= 3 mm (kind 0): solid, part-solid, ground glass or calcified, of the form and size
  the plan (plan.py) gives; round, lobulated or spiculated; a few large solid ones cavitate;
  some sit on the pleura. Subsolid ones are hazy and uneven.
- nodule < 3 mm (kind 1): a dot blurred by the voxel size, so its peak is only partly dense: it
  barely stands out from lung, as in LIDC.
- non-nodule >= 3 mm (kind 2): what LIDC's readers marked as such: a scar or band of linear
  atelectasis, a vessel-like branching, a pleural plaque, or an irregular patchy opacity; longer,
  flatter or less round than a nodule, and often larger.

Sizes and densities are calibrated (see lidc.synthetic.calibration) so that 64x64 crops of
nodules >= 3 mm are denser at the centre than along their edges by what real ones are (-424
against -490 HU over three real patients), and non-nodules' crops like LIDC-IDRI-0003's.

Each lesion is an occupancy box (the noise-free fraction of each voxel it fills): the readers
contour it, and `blend` mixes its HU into the volume by it.

    lesions = place_lesions(rng, geometry, chest, lesion_plan(seed, k))   # into chest.hu
"""
import dataclasses
import functools
import math

import cv2
import numpy as np

from lidc.records import NODULE, NON_NODULE, SMALL_NODULE
from lidc.synthetic.geometry import Segment, blob, box, smooth_noise, soft_edge, sphere, tube

CAVITY_HU = -950.0

NODULE_SHAPES = {
    "solid": {"round": 0.55, "lobulated": 0.3, "spiculated": 0.15},
    "part-solid": {"round": 0.4, "lobulated": 0.35, "spiculated": 0.25},
    "ground glass": {"round": 0.7, "lobulated": 0.3, "spiculated": 0.0},
    "calcified": {"round": 0.9, "lobulated": 0.1, "spiculated": 0.0},
}
NODULE_HU = {"solid": (-30.0, 80.0), "part-solid": (-650.0, -400.0),
             "ground glass": (-650.0, -350.0), "calcified": (300.0, 800.0)}
# Non-nodules, as LIDC's readers marked them: mostly scars and bands, vessel-like branchings,
# pleural plaques and patchy opacities; longer, flatter or less round than nodules.
NON_NODULE_FORMS = {"scar": 0.35, "vessel-like": 0.2, "pleural plaque": 0.2,
                    "irregular opacity": 0.25}
SCAR_LENGTH_MM = (12.0, 35.0)
SCAR_RADIUS_MM = (2.0, 3.5)
BRANCH_RADIUS_MM = (2.5, 4.0)
OPACITY_RADIUS_MM = (6.0, 12.0)
PLAQUE_THICKNESS_MM = (3.0, 6.0)


@dataclasses.dataclass
class Lesion:
    """One physical lesion: its kind (a label of lidc.records), its look, and its occupancy.

    `occupancy` is the noise-free fraction of each voxel the lesion fills, in the box starting
    at index `origin`; readers contour it. `hole` is the same for a cavity, and `core` for the
    solid part of a part-solid nodule (of `core_hu`), or None. `center` is the voxel (slice,
    row, column) a reader clicks. `shape` is round, lobulated or spiculated for a nodule, and
    linear, flat or round for a non-nodule; `pleural` says it sits on the chest wall.
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
    """Where lesions may still go: the lung, each voxel's in-plane distance to its edge (mm),
    the lung's voxels (flat indices), and what earlier lesions have taken."""
    geometry: object
    lung: np.ndarray
    wall_mm: np.ndarray
    lung_voxels: np.ndarray
    free: np.ndarray

    @classmethod
    def of(cls, geometry, lung):
        """The whole lung free."""
        distance = np.stack([cv2.distanceTransform(m.astype(np.uint8), cv2.DIST_L2, 3)
                             for m in lung])
        return cls(geometry, lung, distance * np.float32(geometry.spacing),
                   np.flatnonzero(lung).astype(np.int64), np.ones(geometry.shape, dtype=bool))

    def pick(self, rng, min_mm, max_mm=None, z_mm=0.0):
        """A random free voxel whose in-plane distance to the lung edge is in [min_mm, max_mm],
        and at least half min_mm on every slice within z_mm of it. None when there is none.

        Lung voxels are tried at random first (most lesions fit almost anywhere, and a scan of
        the whole volume per lesion costs more than drawing the phantom); where few fit, every
        voxel is looked at."""
        reach = int(math.ceil(z_mm / self.geometry.thickness))
        if 2 * reach + 1 > self.lung.shape[0] - 2 or len(self.lung_voxels) == 0:
            return None
        for flat in rng.choice(self.lung_voxels, size=64):
            voxel = np.unravel_index(int(flat), self.lung.shape)
            if self._fits(voxel, (min_mm, max_mm), reach):
                return voxel
        return self._scan(rng, (min_mm, max_mm), reach)

    def _fits(self, voxel, wall_range, reach):
        z, y, x = voxel
        min_mm, max_mm = wall_range
        if not (max(reach, 1) <= z < min(self.lung.shape[0] - reach, self.lung.shape[0] - 1)):
            return False
        wall = self.wall_mm[z - reach:z + reach + 1, y, x]
        return bool(self.free[z, y, x] and wall[reach] >= min_mm
                    and (max_mm is None or wall[reach] <= max_mm)
                    and np.all(wall >= 0.5 * min_mm))

    def _scan(self, rng, wall_range, reach):
        """`pick` by looking at every voxel."""
        min_mm, max_mm = wall_range
        ok = (self.wall_mm >= min_mm) & self.free
        if max_mm is not None:
            ok &= self.wall_mm <= max_mm
        n = ok.shape[0]
        valid = np.zeros_like(ok)
        core = ok[reach:n - reach].copy()
        for j in range(1, reach + 1):
            core &= (self.wall_mm[reach - j:n - reach - j] >= min_mm * 0.5)
            core &= (self.wall_mm[reach + j:n - reach + j] >= min_mm * 0.5)
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


def place_lesions(rng, geometry, chest, plan):
    """Places the lesions of a LesionPlan (see plan.py) in the lungs and blends them into
    `chest.hu`. Returns the Lesions placed (one may be left out where there is no room for it).

    Nodules >= 3 mm go first, as they need the most room."""
    room = Room.of(geometry, chest.lung)
    lesions = []
    draws = [functools.partial(draw_nodule, spec=spec) for spec in plan.nodules] \
        + [draw_small_nodule] * plan.small_nodules + [draw_non_nodule] * plan.non_nodules
    for draw in draws:
        lesion = draw(rng, room)
        if lesion is None:
            continue
        blend(chest.hu, lesion)
        room.reserve(lesion)
        lesions.append(lesion)
    return lesions


def _draw_choice(rng, shares):
    """A key of `shares` ({key: probability}) drawn by its probability."""
    return str(rng.choice(list(shares), p=list(shares.values())))


def _nodule_site(rng, room, d, pleural):
    """Where a nodule of diameter d (mm) goes: (centre voxel, diameter). Where the lung has no
    room for it (a thin slab of slices, a small lung), it shrinks; (None, d) below 3 mm."""
    while d >= 3.0:
        r = d / 2
        # A pleural nodule may reach into the chest wall; any other keeps 2 mm of lung.
        centre = room.pick(rng, r * (0.5 if pleural else 1.0) + 2.0, z_mm=r)
        if centre is not None:
            return centre, d
        d *= 0.7
    return None, d


def draw_nodule(rng, room, spec):
    """A nodule >= 3 mm of the NoduleSpec's form (solid, part-solid, ground glass, calcified)
    and diameter; round, lobulated or spiculated; a few large solid ones cavitate. None when the
    lung has no room for it, even shrunk."""
    geometry = room.geometry
    form, d = spec.form, spec.diameter_mm
    shape = _draw_choice(rng, NODULE_SHAPES[form])
    pleural = bool(rng.random() < 0.2)
    centre, d = _nodule_site(rng, room, d, pleural)
    if centre is None:
        return None
    body = _nodule_body(rng, room, centre, d, shape)
    body.occupancy *= room.lung_over(body.origin, body.occupancy.shape, grow=not pleural)
    if form in ("ground glass", "part-solid"):
        # Subsolid nodules are hazy and uneven, with vessels showing through.
        cell = max(2, int(round(2.0 / geometry.spacing)))
        haze = smooth_noise(rng, body.occupancy.shape, cell)
        body.occupancy *= np.clip(0.85 + 0.2 * haze, 0.5, 1.0).astype(np.float32)
    lesion = Lesion(kind=NODULE, form=form, center=tuple(int(v) for v in centre),
                    diameter_mm=d, hu=float(rng.uniform(*NODULE_HU[form])), origin=body.origin,
                    occupancy=body.occupancy, shape=shape, pleural=pleural)
    c_mm, r = np.asarray(centre) * geometry.scale, d / 2
    if form == "part-solid":
        lesion.core = sphere(geometry, body.grid, c_mm, r * rng.uniform(0.5, 0.75))
        lesion.core_hu = float(rng.uniform(-80.0, 40.0))
    if form == "solid" and d >= 15.0 and rng.random() < 0.15:
        shift = rng.standard_normal(3) * np.array([0.0, 1.0, 1.0])
        shift *= 0.25 * r / max(np.linalg.norm(shift), 1e-6)
        lesion.hole = sphere(geometry, body.grid, c_mm + shift,
                             r * rng.uniform(0.25, 0.4)) * (body.occupancy > 0.9)
    return lesion


def _nodule_body(rng, room, centre, d, shape):
    """The nodule's occupancy: an ellipsoid, with lobes when lobulated and thin spikes
    radiating into the lung when spiculated. Returns a Blob."""
    geometry, r = room.geometry, d / 2
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
    return body


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
    """A non-nodule >= 3 mm: a scar or band of linear atelectasis, a vessel-like branching
    opacity, a pleural plaque, or an irregular patchy opacity. None when there is no room."""
    form = _draw_choice(rng, NON_NODULE_FORMS)
    if form == "pleural plaque":
        return _plaque(rng, room)
    draw = {"scar": _scar, "vessel-like": _branching, "irregular opacity": _opacity}[form]
    drawn = draw(rng, room)
    if drawn is None:
        return None
    occupancy, origin, hu = drawn
    occupancy *= room.lung_over(origin, occupancy.shape)
    return Lesion(kind=NON_NODULE, form=form, center=_click_point(occupancy, origin),
                  diameter_mm=_extent_mm(occupancy, room.geometry), hu=float(hu),
                  origin=origin, occupancy=occupancy,
                  shape="round" if form == "irregular opacity" else "linear")


def _empty_box(room, centre, extent):
    """A zero occupancy box of half-side `extent` mm around the voxel `centre`:
    (occupancy, origin, centre in mm)."""
    c_mm = np.asarray(centre) * room.geometry.scale
    index, _ = box(room.geometry, c_mm - extent, c_mm + extent)
    occupancy = np.zeros(tuple(s.stop - s.start for s in index), dtype=np.float32)
    return occupancy, tuple(s.start for s in index), c_mm


def _in_plane_direction(rng, tilt=0.25):
    """A unit vector (z, row, column) mostly in the slice plane."""
    u = np.array([rng.uniform(-tilt, tilt), rng.standard_normal(), rng.standard_normal()])
    return u / np.linalg.norm(u)


def _scar(rng, room):
    """A scar or band of linear atelectasis: a bent band, thickest in its middle and tapering
    to its ends, now and then with a side strand: (occupancy, origin, HU), or None."""
    geometry = room.geometry
    length = rng.uniform(*SCAR_LENGTH_MM)
    centre = room.pick(rng, 5.0, z_mm=3.0)
    if centre is None:
        return None
    occupancy, origin, c_mm = _empty_box(room, centre, length / 2 + 6.0 + 2 * geometry.thickness)
    u = _in_plane_direction(rng)
    radius = rng.uniform(*SCAR_RADIUS_MM)
    # Five points along the band, each pushed sideways a little: four segments.
    along = np.linspace(-0.5, 0.5, 5)[:, None] * length * u
    wander = rng.standard_normal((5, 3)) * np.array([0.2, 1, 1]) * rng.uniform(0.5, 2.0)
    points = c_mm + along + wander
    for (p, q), taper in zip(zip(points[:-1], points[1:]), (0.55, 1.0, 1.0, 0.55)):
        tube(occupancy, geometry, Segment(p, q, taper * radius), origin=origin)
    if rng.random() < 0.5:
        tip = points[2] + _in_plane_direction(rng) * rng.uniform(5.0, 10.0)
        tube(occupancy, geometry, Segment(points[2], tip, 0.4 * radius), origin=origin)
    return occupancy, origin, rng.uniform(-150.0, 40.0)


def _branching(rng, room):
    """A vessel-like opacity: a short thick trunk forking in two, at blood density:
    (occupancy, origin, HU), or None."""
    geometry = room.geometry
    centre = room.pick(rng, 6.0, z_mm=3.0)
    if centre is None:
        return None
    trunk_mm = rng.uniform(6.0, 12.0)
    occupancy, origin, c_mm = _empty_box(room, centre, trunk_mm + 4.0 + 2 * geometry.thickness)
    u = _in_plane_direction(rng, tilt=0.4)
    radius = rng.uniform(*BRANCH_RADIUS_MM)
    fork = c_mm + u * trunk_mm / 2
    tube(occupancy, geometry, Segment(c_mm - u * trunk_mm / 2, fork, radius), origin=origin)
    side = np.cross(u, _in_plane_direction(rng, tilt=1.0))
    side /= max(np.linalg.norm(side), 1e-6)
    for turn in (1, -1):
        angle = np.radians(rng.uniform(20.0, 40.0))
        d = np.cos(angle) * u + turn * np.sin(angle) * side
        tube(occupancy, geometry, Segment(fork, fork + d * rng.uniform(5.0, 9.0), 0.75 * radius),
             origin=origin)
    return occupancy, origin, rng.uniform(0.0, 60.0)


def _opacity(rng, room):
    """An irregular patchy opacity (a patch of consolidation or ground glass): a flattened
    ellipsoid whose density varies in blotches, so that it is ill-defined rather than a round
    nodule: (occupancy, origin, HU), or None."""
    geometry = room.geometry
    radius = rng.uniform(*OPACITY_RADIUS_MM)
    centre = room.pick(rng, 0.6 * radius, z_mm=0.5 * radius)
    if centre is None:
        return None
    axes = radius * np.array([0.5, 1.0, rng.uniform(0.5, 0.9)])
    body = blob(rng, geometry, centre, axes, 1.4 * radius + 2 * geometry.thickness, bumps=3)
    cell = max(2, int(round(3.0 / geometry.spacing)))  # blotches about 3 mm across
    blotches = smooth_noise(rng, body.occupancy.shape, cell)
    occupancy = body.occupancy * np.clip(0.75 + 0.4 * blotches, 0.2, 1.0)
    return occupancy.astype(np.float32), body.origin, rng.uniform(-250.0, 0.0)


def _plaque(rng, room):
    """A flat pleural-based plaque or thickening on the chest wall."""
    geometry = room.geometry
    centre = room.pick(rng, 0.5 * geometry.spacing, max_mm=1.5 * geometry.spacing, z_mm=4.0)
    if centre is None:
        return None
    rows, cols = np.nonzero(room.lung[centre[0]])
    normal = np.array([centre[1] - rows.mean(), centre[2] - cols.mean()], dtype=float)
    normal /= max(np.linalg.norm(normal), 1e-6)
    thick, wide, tall = (rng.uniform(*PLAQUE_THICKNESS_MM), rng.uniform(6.0, 16.0),
                         rng.uniform(4.0, 10.0))
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
    return Lesion(kind=NON_NODULE, form="pleural plaque",
                  center=_click_point(occupancy, origin),
                  diameter_mm=_extent_mm(occupancy, geometry), hu=float(rng.uniform(-40.0, 80.0)),
                  origin=origin, occupancy=occupancy, shape="flat", pleural=True)


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
