"""The chest phantom: a CT volume in Hounsfield units that looks like a thorax at a lung window.

Air around a body of fat and muscle, a scanner table under the back, two lungs (about -850 HU,
denser toward the back) with vessel trees from each hilum and vessels crossing from above and
below the scanned range, a heart, aorta and mediastinum, a vertebra with its arch, ribs along the
chest wall and a sternum; then scanner noise, slightly correlated between neighbouring pixels.
Everything is in millimetres, so a slice of 64 pixels and one of 512 show the same chest.

    chest = draw_chest(rng, geometry)     # chest.hu float32 [z, y, x], chest.lung bool
    add_noise(rng, chest.hu)
"""
import dataclasses

import cv2
import numpy as np

from lidc.synthetic.geometry import Segment, centred_grid, ellipse, smooth_noise, tube


@dataclasses.dataclass
class Torso:
    """The inner chest wall: an ellipse centred at (cx, cy) mm with half-axes a, b mm."""
    cx: float
    cy: float
    a: float
    b: float


@dataclasses.dataclass
class Chest:
    """A drawn phantom: `hu` float32 [z, y, x] and the `lung` mask where lesions may go."""
    hu: np.ndarray
    lung: np.ndarray


def draw_chest(rng, geometry):
    """Draws a chest phantom, smooth in z, without noise. Returns a Chest."""
    grid = centred_grid(geometry)
    a = rng.uniform(135.0, 158.0)
    b = a * rng.uniform(0.62, 0.74)
    cx, cy = rng.uniform(-8, 8), rng.uniform(-5, 12)
    fat = rng.uniform(6.0, 22.0)
    torso = Torso(cx, cy, a - fat, b - 0.8 * fat)
    body = ellipse(grid, (cx, cy), a, b)
    inner = ellipse(grid, (cx, cy), torso.a, torso.b)
    hu = np.full(geometry.shape, -1000.0, dtype=np.float32)
    hu[:] = np.where(body, -100.0, -1000.0) + np.where(inner, 140.0, 0.0)
    _table(hu, grid, (cx, cy + b), a)
    organs = _mediastinum(rng, grid, hu, torso)
    spine, spine_hu = _spine(rng, grid, (cx, cy + 0.62 * torso.b))
    ribs = _ribs(rng, grid, torso)
    sternum = ellipse(grid, (cx, cy - torso.b + 9.0), 13.0, 5.0)

    lung = _lungs(rng, grid, torso)
    lung &= ~(organs | spine | ribs | sternum)
    hu[:] = np.where(lung, _parenchyma(rng, geometry, grid, torso), hu)
    _vessels(rng, geometry, hu, lung, torso)

    # Bones go on after the lungs and vessels, so no vessel runs through a rib.
    hu[:, spine[0]] = spine_hu[0][spine[0]]
    hu[:, sternum[0]] = 350.0
    hu[ribs] = rng.uniform(380.0, 520.0)
    return Chest(hu, lung)


def _table(hu, grid, bottom, a):
    """The scanner table: two thin shells below the back (at `bottom` = (x, y)) with foam
    between."""
    under = np.abs(grid.x - bottom[0]) < 0.85 * a
    for top, depth, value in ((bottom[1] + 10, 3.0, 150.0), (bottom[1] + 13, 14.0, -850.0),
                              (bottom[1] + 27, 3.0, 150.0)):
        hu[:, under[0] & (grid.y[0] >= top) & (grid.y[0] < top + depth)] = value


def _mediastinum(rng, grid, hu, torso):
    """Draws the mediastinum, heart and aorta into `hu`; returns where they are (no lung)."""
    mediastinum = ellipse(grid, (torso.cx, torso.cy - 0.15 * torso.b), 0.22 * torso.a,
                          0.55 * torso.b)
    hu[:, mediastinum[0]] = -80.0
    heart = _heart(rng, grid, torso)
    hu[heart] = rng.uniform(30.0, 60.0)
    aorta = ellipse(grid, (torso.cx + 0.12 * torso.a, torso.cy + 0.42 * torso.b), 11.0, 11.0)
    hu[:, aorta[0]] = rng.uniform(40.0, 180.0)
    return heart | mediastinum | aorta


def _heart(rng, grid, torso):
    """The heart fills the anterior left chest in the lower half of the scan."""
    hz = rng.uniform(-60.0, -20.0)
    hr = rng.uniform(55.0, 75.0)
    scale = np.sqrt(np.clip(1.0 - ((grid.z - hz) / hr) ** 2, 0.0, 1.0))
    scale = np.maximum(scale, 1e-3)
    return (((grid.x - torso.cx - 0.12 * torso.a) / (0.30 * torso.a * scale)) ** 2
            + ((grid.y - torso.cy + 0.18 * torso.b) / (0.40 * torso.b * scale)) ** 2) <= 1.0


def _spine(rng, grid, centre):
    """A vertebra at `centre` (x, y): cancellous body with a cortical rim, canal, posterior arch.
    Returns (mask, HU)."""
    cx, vy = centre
    r = rng.uniform(15.0, 19.0)
    d = np.sqrt((grid.x - cx) ** 2 + (grid.y - vy) ** 2)
    vertebra = d <= r
    canal = ellipse(grid, (cx, vy + r + 8.0), 7.0, 7.0)
    arch = ellipse(grid, (cx, vy + r + 12.0), 16.0, 9.0) & ~canal
    value = np.where(d > r - 2.0, 700.0, 250.0).astype(np.float32)
    value = np.where(arch, 500.0, value)
    return vertebra | arch, value


def _ribs(rng, grid, torso):
    """Ribs as oblique bands along the chest wall: posterior arcs long, anterior ones short."""
    ex, ey = (grid.x - torso.cx) / torso.a, (grid.y - torso.cy) / torso.b
    rho = np.sqrt(ex ** 2 + ey ** 2)
    depth = (1.0 - rho) * 0.5 * (torso.a + torso.b)
    theta = np.arctan2(ey, ex)
    wall = (depth > 1.0) & (depth < 9.0) & (np.abs(np.cos(theta)) > 0.2)
    pitch = rng.uniform(24.0, 30.0)
    phase = (grid.z + 110.0 * (1.0 - np.sin(theta)) / 2.0 + rng.uniform(0, pitch)) / pitch
    return wall & (phase - np.floor(phase) < 0.38)


def _lungs(rng, grid, torso):
    """Two lungs, the right one larger, narrowing toward apex and base."""
    zc, az = rng.uniform(-20.0, 20.0), rng.uniform(150.0, 190.0)
    scale = np.sqrt(np.clip(1.0 - ((grid.z - zc) / az) ** 2, 1e-3, 1.0))
    lung = np.zeros(np.broadcast_shapes(grid.z.shape, grid.y.shape, grid.x.shape), dtype=bool)
    for side, share in ((-1, 1.05), (1, 0.95)):
        lx, ly = torso.cx + side * 0.50 * torso.a, torso.cy + 0.02 * torso.b
        ax, ay = 0.38 * torso.a * share, 0.80 * torso.b
        theta = np.arctan2(grid.y - ly, grid.x - lx)
        wobble = 1.0 + 0.04 * np.cos(2 * theta + rng.uniform(0, 6.3)) \
            + 0.03 * np.cos(3 * theta + rng.uniform(0, 6.3))
        rho = np.sqrt(((grid.x - lx) / ax) ** 2 + ((grid.y - ly) / ay) ** 2)
        lung |= rho <= scale * wobble
    inside = ((grid.x - torso.cx) / (torso.a - 10.0)) ** 2 \
        + ((grid.y - torso.cy) / (torso.b - 10.0)) ** 2 <= 1.0
    return lung & inside


def _parenchyma(rng, geometry, grid, torso):
    """Lung tissue: about -850 HU, denser toward the back (gravity), with a patchy texture."""
    base = rng.uniform(-875.0, -840.0)
    gradient = 30.0 * (grid.y - torso.cy) / torso.b
    return base + gradient + 18.0 * smooth_noise(rng, geometry.shape, 6)


@dataclasses.dataclass
class _VesselTree:
    """A vessel tree growing from `hilum` (mm): each branch splits in two until it is thin, has
    branched eight times, or has left the lung."""
    rng: np.random.Generator
    geometry: object
    lung: np.ndarray
    hilum: np.ndarray
    segments: list

    def grow(self, p, d, r, length, depth):
        """Adds the branch from `p` along unit `d` (radius r, length mm) and its children."""
        q = p + d * length
        self.segments.append(Segment(p, q, r))
        idx = np.round(q / self.geometry.scale).astype(int)
        inside = np.all(idx >= 0) and np.all(idx < np.array(self.geometry.shape))
        if r < 0.6 or depth >= 8 or (depth >= 1 and not (inside and self.lung[tuple(idx)])):
            return
        outward = (q - self.hilum) / max(np.linalg.norm(q - self.hilum), 1e-6)
        for turn in (1, -1):
            e = self.rng.standard_normal(3)
            e -= e.dot(d) * d
            e /= np.linalg.norm(e)
            angle = np.radians(self.rng.uniform(18.0, 40.0))
            # Branches keep heading away from the hilum, so the tree fills the lung.
            nd = np.cos(angle) * d + turn * np.sin(angle) * e + 0.4 * outward
            self.grow(q, nd / np.linalg.norm(nd), r * self.rng.uniform(0.68, 0.8),
                      length * self.rng.uniform(0.72, 0.85), depth + 1)


def _vessels(rng, geometry, hu, lung, torso):
    """Vessels blended into the lungs: trees from each hilum thinning toward the periphery,
    and vessels from above and below the scanned range, seen mostly as dots."""
    frac = np.zeros(geometry.shape, dtype=np.float32)
    centre = np.array([(len(geometry.z) - 1) / 2, (geometry.size - 1) / 2,
                       (geometry.size - 1) / 2]) * geometry.scale
    segments = []
    for side in (-1, 1):
        hilum = centre + np.array([rng.uniform(-10, 10), torso.cy - 0.05 * torso.b,
                                   torso.cx + side * 0.24 * torso.a])
        tree = _VesselTree(rng, geometry, lung, hilum, segments)
        for _ in range(int(rng.integers(5, 8))):
            d = np.array([rng.uniform(-1, 1), rng.uniform(-0.7, 0.7), side * rng.uniform(0.3, 1)])
            tree.grow(hilum, d / np.linalg.norm(d), rng.uniform(3.5, 5.5),
                      rng.uniform(20.0, 30.0), 0)
    segments += _through_vessels(rng, geometry, lung)
    for segment in segments:
        tube(frac, geometry, segment)
    frac *= lung
    hu += frac * (rng.uniform(20.0, 60.0) - hu)


def _through_vessels(rng, geometry, lung):
    """Bent tubes running roughly head to foot through the lungs, from trees not scanned."""
    zs, rows, cols = np.nonzero(lung[::4, ::4, ::4])
    if len(zs) == 0:
        return []
    span = len(geometry.z) * geometry.thickness
    segments = []
    for i in rng.choice(len(zs), size=min(len(zs), int(rng.integers(50, 80))), replace=False):
        p = np.array([zs[i], rows[i], cols[i]]) * 4 * geometry.scale
        r = float(np.clip(rng.lognormal(np.log(1.0), 0.4), 0.5, 2.5))
        for _ in range(3):
            d = np.array([1.0, *rng.normal(0, 0.5, 2)])
            q = p + d / np.linalg.norm(d) * rng.uniform(0.15, 0.4) * span * rng.choice([-1, 1])
            segments.append(Segment(p, q, r))
            p = q
    return segments


def add_noise(rng, hu):
    """Scanner noise: gaussian, slightly correlated between neighbouring pixels, like CT's."""
    sigma = rng.uniform(15.0, 30.0)
    for plane in hu:
        white = rng.standard_normal(plane.shape).astype(np.float32)
        plane += cv2.GaussianBlur(white, (0, 0), 0.6) * (sigma / 0.45)
