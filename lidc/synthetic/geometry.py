"""Where a phantom's voxels are, and the partial-volume shapes drawn into it.

A CT voxel covers `spacing` x `spacing` millimetres in plane and a whole slice thickness in z, so
an edge that crosses it fills it only in part. Every shape here is drawn as an occupancy (the
fraction of each voxel it fills, 0..1) from a signed distance to its surface, with a ramp about a
voxel wide, wider where the surface runs obliquely through thick slices; anatomy and lesions then
blend their HU in by that fraction.

    geometry = Geometry(size=128, spacing=2.8125, thickness=2.5, z=z, origin=(-180.0, -180.0))
    field = np.zeros(geometry.shape, np.float32)
    tube(field, geometry, Segment(p, q, radius=2.0))
"""
import dataclasses

import cv2
import numpy as np


@dataclasses.dataclass
class Geometry:
    """Where the voxels are: `z` ascending (mm), square slices of `size` pixels."""
    size: int
    spacing: float
    thickness: float
    z: np.ndarray
    origin: tuple  # ImagePositionPatient x, y of the top-left pixel

    @property
    def shape(self):
        """(slices, rows, columns) of the volume."""
        return (len(self.z), self.size, self.size)

    @property
    def scale(self):
        """Millimetres per index step along (z, row, column)."""
        return np.array([self.thickness, self.spacing, self.spacing])


@dataclasses.dataclass
class Grid:
    """Broadcastable millimetre coordinates: z (Z,1,1), y (1,N,1), x (1,1,N)."""
    z: np.ndarray
    y: np.ndarray
    x: np.ndarray


@dataclasses.dataclass
class Segment:
    """A straight tube from `p` to `q` (mm, volume frame: z, row, column) of `radius` mm."""
    p: np.ndarray
    q: np.ndarray
    radius: float


def centred_grid(geometry):
    """Image-centred millimetre coordinates of the whole volume (the anatomy's frame)."""
    c = (np.arange(geometry.size, dtype=np.float32) - (geometry.size - 1) / 2) * geometry.spacing
    z = (geometry.z - geometry.z.mean()).astype(np.float32)
    return Grid(z[:, None, None], c[None, :, None], c[None, None, :])


def ellipse(grid, centre, a, b):
    """In-plane mask of an axis-aligned ellipse with centre (x, y) and half-axes a, b (mm)."""
    return ((grid.x - centre[0]) / a) ** 2 + ((grid.y - centre[1]) / b) ** 2 <= 1.0


def box(geometry, lo_mm, hi_mm, shape=None):
    """Index slices and millimetre Grid (volume frame, from index 0) of a box in the volume.

    `shape` bounds the box (default the volume's). Returns (None, None) when the box is empty.
    """
    shape = geometry.shape if shape is None else shape
    lo = np.maximum(np.floor(np.asarray(lo_mm) / geometry.scale).astype(int), 0)
    hi = np.minimum(np.ceil(np.asarray(hi_mm) / geometry.scale).astype(int) + 1, shape)
    if np.any(hi <= lo):
        return None, None
    index = tuple(slice(a, b) for a, b in zip(lo, hi))
    coords = [np.arange(a, b, dtype=np.float32) * s for a, b, s in zip(lo, hi, geometry.scale)]
    return index, Grid(coords[0][:, None, None], coords[1][None, :, None],
                       coords[2][None, None, :])


def soft_edge(inside_mm, dz, d, geometry):
    """Voxel occupancy from a signed distance: a ramp about one voxel wide across the surface,
    wider where the surface runs across thick slices (partial volume)."""
    width = 0.5 * geometry.spacing + 0.5 * geometry.thickness * np.abs(dz) / np.maximum(d, 1e-3)
    return np.clip(0.5 + inside_mm / width, 0.0, 1.0).astype(np.float32)


def tube(field, geometry, segment, origin=(0, 0, 0), value=1.0):
    """Raises `field` to the occupancy of a tube (times `value`), with partial volume.

    `origin` is the index of field[0, 0, 0] in the volume, for fields that are boxes. A tube
    thinner than a pixel fills its pixels only in part: it looks fainter, as on a scanner.
    """
    p, q, r = segment.p, segment.q, segment.radius
    pad = r + 2.0 * geometry.thickness
    off = np.asarray(origin) * geometry.scale
    index, grid = box(geometry, np.minimum(p, q) - pad - off, np.maximum(p, q) + pad - off,
                      field.shape)
    if index is None:
        return
    zz, yy, xx = grid.z + off[0], grid.y + off[1], grid.x + off[2]
    w = q - p
    t = ((zz - p[0]) * w[0] + (yy - p[1]) * w[1] + (xx - p[2]) * w[2]) / max(w.dot(w), 1e-9)
    t = np.clip(t, 0.0, 1.0)
    dz, dy, dx = zz - (p[0] + t * w[0]), yy - (p[1] + t * w[1]), xx - (p[2] + t * w[2])
    d = np.sqrt(dz ** 2 + dy ** 2 + dx ** 2)
    occupancy = soft_edge(r - d, dz, d, geometry) * (value * min(1.0, 2.0 * r / geometry.spacing))
    field[index] = np.maximum(field[index], occupancy)


def sphere(geometry, grid, centre_mm, radius):
    """Occupancy of a ball of `radius` mm around `centre_mm` over the box `grid`."""
    dz, dy, dx = grid.z - centre_mm[0], grid.y - centre_mm[1], grid.x - centre_mm[2]
    d = np.sqrt(dz ** 2 + dy ** 2 + dx ** 2)
    return soft_edge(radius - d, dz, d, geometry)


def rotation(rng):
    """A uniformly random 3-D rotation matrix."""
    q, r = np.linalg.qr(rng.standard_normal((3, 3)))
    return q * np.sign(np.diag(r))


@dataclasses.dataclass
class Blob:
    """A lesion-sized box: its occupancy, the index of its first voxel, its millimetre Grid."""
    occupancy: np.ndarray
    origin: tuple
    grid: Grid


def blob(rng, geometry, centre, axes, extent, bumps=0):
    """A rotated ellipsoid (half-axes `axes`, mm) with `bumps` lobes, in a box of half-side
    `extent` mm around the voxel `centre`. Returns a Blob."""
    c_mm = np.asarray(centre) * geometry.scale
    index, grid = box(geometry, c_mm - extent, c_mm + extent)
    dz, dy, dx = grid.z - c_mm[0], grid.y - c_mm[1], grid.x - c_mm[2]
    rot = rotation(rng)
    local = [rot[i, 0] * dz + rot[i, 1] * dy + rot[i, 2] * dx for i in range(3)]
    rho = np.sqrt(sum((v / a) ** 2 for v, a in zip(local, axes)))
    d = np.sqrt(dz ** 2 + dy ** 2 + dx ** 2)
    reach = np.ones_like(rho)
    for _ in range(bumps):
        u = rng.standard_normal(3)
        u /= np.linalg.norm(u)
        cos = (u[0] * dz + u[1] * dy + u[2] * dx) / np.maximum(d, 1e-3)
        reach += rng.uniform(0.15, 0.3) * np.clip(cos, 0, 1) ** 4
    inside = (reach - rho) * float(np.mean(axes))
    return Blob(soft_edge(inside, dz, d, geometry), tuple(s.start for s in index), grid)


def smooth_noise(rng, shape, cell):
    """Gaussian noise of `shape` (z, rows, columns), smooth over about `cell` pixels in plane
    and two slices in z, with unit standard deviation."""
    zs, rows, cols = shape
    coarse = rng.standard_normal((max(2, zs // 2 + 1), max(2, rows // cell + 1),
                                  max(2, cols // cell + 1))).astype(np.float32)
    planes = np.stack([cv2.resize(p, (cols, rows), interpolation=cv2.INTER_CUBIC)
                       for p in coarse])
    pos = np.linspace(0, len(planes) - 1, zs)
    lo = np.floor(pos).astype(int)
    hi = np.minimum(lo + 1, len(planes) - 1)
    w = (pos - lo)[:, None, None].astype(np.float32)
    out = planes[lo] * (1 - w) + planes[hi] * w
    return out / max(float(out.std()), 1e-6)
