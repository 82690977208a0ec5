"""HU windows: the one place where Hounsfield units become network inputs or grey levels.

A window maps HU in [low, high] linearly onto [0, 1] (the network's input) or onto 0..255 (an
8-bit PNG), clipping outside. Every writer and reader of windowed values uses one of the two
windows here, so that a patch read back from a PNG the project wrote gives the network the same
input as the patch itself, up to the 8-bit rounding.

    x = TRAINING.to_unit(hu)          # float32 in [0, 1], what the networks see
    grey = LUNG.to_u8(hu)             # uint8, what the PNG exports hold
    hu_again = LUNG.from_u8(grey)     # float32 HU, each grey level's centre
"""
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Window:
    """The HU range [low, high] a window spans."""
    low: float
    high: float

    @property
    def width(self):
        """high - low, in HU."""
        return self.high - self.low

    def to_unit(self, hu):
        """float32 in [0, 1]: low -> 0, high -> 1, clipped."""
        return np.clip((np.asarray(hu, np.float32) - self.low) / self.width, 0.0, 1.0)

    def to_u8(self, hu):
        """uint8 grey levels: low -> 0, high -> 255, rounded and clipped."""
        scaled = (np.asarray(hu, np.float32) - self.low) * (255.0 / self.width)
        return np.clip(scaled, 0, 255).round().astype(np.uint8)

    def from_u8(self, grey):
        """float32 HU of 8-bit grey levels of this window (the inverse of to_u8 up to its
        rounding; grey 0 and 255 stand for everything at or beyond the window's ends)."""
        return np.asarray(grey, np.float32) * np.float32(self.width / 255.0) + np.float32(self.low)


# The network's input: lung (-1000 HU) to 0, dense soft tissue and the onset of bone (+400 HU)
# to 1. It keeps every grey level nodules and vessels take and saturates only bone and metal.
TRAINING = Window(-1000.0, 400.0)
# The usual lung window for looking at slices and patches (centre -600 HU, width 1500 HU).
LUNG = Window(-1350.0, 150.0)
