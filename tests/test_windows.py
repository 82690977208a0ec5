"""lidc.windows: HU to network input and to grey levels, and back."""
import numpy as np

from lidc.windows import LUNG, TRAINING, Window


def test_a_window_maps_its_ends_to_0_and_1_and_clips_beyond():
    np.testing.assert_allclose(TRAINING.to_unit([-3000, -1000, -300, 400, 3000]),
                               [0, 0, 0.5, 1, 1])
    np.testing.assert_array_equal(LUNG.to_u8([-2000, -1350, -600, 150, 900]),
                                  [0, 0, 128, 255, 255])


def test_grey_levels_read_back_give_the_hu_within_half_a_level():
    hu = np.arange(-1350, 151, 7, dtype=np.int16)
    back = LUNG.from_u8(LUNG.to_u8(hu))
    assert np.abs(back - hu).max() <= LUNG.width / 255 / 2 + 1e-3
    # ... so a patch read back from its PNG gives the network nearly the same input.
    assert np.abs(TRAINING.to_unit(back) - TRAINING.to_unit(hu)).max() < 0.003


def test_width_is_the_span():
    assert Window(-10.0, 30.0).width == 40.0
