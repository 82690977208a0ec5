"""Test-suite settings that apply to every test module.

Property tests (hypothesis) are derandomized: their examples come from a seed derived from the
test itself, so every run tries the same examples and a failure found once is found again on the
next run, on any machine. No example database is kept between runs (nothing is written under
.hypothesis/); a failure prints the falsifying example itself.
"""
import pytest
from hypothesis import settings

# The shared checks of the network tests assert; pytest explains their failures as it does a test's.
pytest.register_assert_rewrite("tests.nets_helpers")

settings.register_profile("derandomized", derandomize=True, database=None, print_blob=True)
settings.load_profile("derandomized")
