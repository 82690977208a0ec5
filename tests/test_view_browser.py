"""The case viewer in a real headless Chromium: the page loads, shows a slice in the window asked
for, draws each reader's contours where the XML puts them (checked on the pixels of
screenshots), tells a mark's reader and lesion on hover, and shows another model's probabilities
when another run is chosen; the static export does the same from the file system.

The browser is driven through the Chrome DevTools Protocol over --remote-debugging-pipe (JSON
messages ending in a NUL byte on file descriptors 3 and 4): the standard library only. Skipped
where no Chromium is installed (apt-get install chromium).
"""
import base64
import fcntl
import json
import os
import select
import shutil
import subprocess
import sys
import time
import urllib.request

import cv2
import numpy as np
import pytest

from tests import test_view_helpers as data
from training.viewer.models import Models
from training.viewer.server import Viewer
from training.viewer.static import write_static

BROWSER = next(filter(None, map(shutil.which, ("chromium", "chromium-browser", "google-chrome"))),
               None)
pytestmark = pytest.mark.skipif(BROWSER is None, reason="no Chromium installed (apt-get install "
                                                        "chromium)")
# Without the background-networking flags a closed network refuses the browser's own calls.
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--force-device-scale-factor=1", "--force-color-profile=srgb", "--hide-scrollbars"]
WIDTH, HEIGHT = 1400, 1000
SCALE = 5  # the page shows 128 pixels on 640 CSS pixels
COLOUR_TOLERANCE = 40  # per channel, for a pixel to count as a reader's colour
PLACE_PIPES = ("import os, sys\n"
               "for source, target in ((int(sys.argv[1]), 3), (int(sys.argv[2]), 4)):\n"
               "    os.dup2(source, target)\n"
               "    os.close(source)\n"
               "os.execv(sys.argv[3], sys.argv[3:])\n")


def _above_4(fd):
    """A copy of `fd` numbered 10 or more; `fd` is closed."""
    copy = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10)
    os.close(fd)
    return copy


class Browser:
    """A headless Chromium with one page, driven over the DevTools pipe."""

    def __init__(self, profile):
        to_browser, self._to_browser = os.pipe()
        self._from_browser, from_browser = os.pipe()
        # The browser reads commands on fd 3 and writes answers on fd 4. A small Python puts
        # the pipes there (from numbers of 10 and more, so that neither dup2 overwrites the
        # other's source) and becomes the browser.
        to_browser, from_browser = (_above_4(fd) for fd in (to_browser, from_browser))
        self.process = subprocess.Popen(
            [sys.executable, "-c", PLACE_PIPES, str(to_browser), str(from_browser), BROWSER,
             *FLAGS, f"--user-data-dir={profile}", "--remote-debugging-pipe", "about:blank"],
            pass_fds=(to_browser, from_browser), stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL)
        os.close(to_browser)
        os.close(from_browser)
        self._buffer, self._id = b"", 0
        target = self.call("Target.createTarget", url="about:blank")["targetId"]
        self.session = self.call("Target.attachToTarget", targetId=target,
                                 flatten=True)["sessionId"]
        self.page("Emulation.setDeviceMetricsOverride", width=WIDTH, height=HEIGHT,
                  deviceScaleFactor=1, mobile=False)

    def call(self, method, session=None, **params):
        """Sends a command (to the page's session when given) and returns its result."""
        self._id += 1
        message = {"id": self._id, "method": method, "params": params}
        if session:
            message["sessionId"] = session
        os.write(self._to_browser, json.dumps(message).encode() + b"\0")
        while True:  # events come in between; only the answer to this command counts
            reply = self._read(time.monotonic() + 30)
            if reply.get("id") == self._id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply["result"]

    def _read(self, deadline):
        while b"\0" not in self._buffer:
            ready, _, _ = select.select([self._from_browser], [], [], deadline - time.monotonic())
            chunk = os.read(self._from_browser, 1 << 20) if ready else None
            if not chunk:
                raise RuntimeError("the browser did not answer" if chunk is None
                                   else "the browser closed its pipe")
            self._buffer += chunk
        message, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(message)

    def page(self, method, **params):
        """A command to the page."""
        return self.call(method, self.session, **params)

    def js(self, expression):
        """The value of a JavaScript expression in the page (promises awaited)."""
        result = self.page("Runtime.evaluate", expression=expression, awaitPromise=True,
                           returnByValue=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait(self, condition, seconds=30):
        """Waits until the JavaScript `condition` holds."""
        deadline = time.monotonic() + seconds
        while not self.js(condition):
            if time.monotonic() > deadline:
                status = self.js("document.getElementById('status').textContent")
                raise TimeoutError(f"{condition}: still false after {seconds} s; the page says "
                                   f"{status!r}")
            time.sleep(0.05)

    def open(self, url, drawn):
        """Loads `url` and waits until the canvas shows `drawn` (series:slice:level:width)."""
        self.page("Page.navigate", url=url)
        self.wait(f"document.body && document.body.dataset.drawn === {json.dumps(drawn)}")

    def canvas(self):
        """The canvas' pixels in a screenshot, RGB [height, width, 3]."""
        box = self.js("(() => { const b = document.getElementById('slice')"
                      ".getBoundingClientRect(); return [b.left, b.top, b.width, b.height]; })()")
        assert all(float(v).is_integer() for v in box), box  # no resampling of the canvas
        left, top, width, height = map(int, box)
        shot = self.page("Page.captureScreenshot", format="png")["data"]
        image = cv2.imdecode(np.frombuffer(base64.b64decode(shot), np.uint8), cv2.IMREAD_COLOR)
        return image[top:top + height, left:left + width, ::-1].astype(int)

    def choose(self, select_id, value):
        """Picks `value` in the <select> `select_id`, as a user would."""
        self.js(f"(() => {{ const s = document.getElementById({json.dumps(select_id)}); "
                f"s.value = {json.dumps(value)}; s.dispatchEvent(new Event('change')); }})()")

    def close(self):
        """Closes the browser and waits for it."""
        try:
            self.call("Browser.close")
        except RuntimeError:
            pass
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        os.close(self._to_browser)
        os.close(self._from_browser)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """(work, runs, base URL of the served viewer, browser): two runs a and b."""
    folder = tmp_path_factory.mktemp("browser")
    work = data.write_work(folder)
    data.export_run(folder / "runs", "a", seed=0)
    data.export_run(folder / "runs", "b", seed=1)
    # prepare=None: this process is the test session's; it keeps TensorFlow's defaults.
    viewer = Viewer(work, folder / "runs", Models(folder / "runs", prepare=None))
    browser = Browser(folder / "profile")
    try:
        with data.serving(viewer) as url:
            yield work, folder / "runs", url, browser
    finally:
        browser.close()
        viewer.models.close()


def drawn(series, index, level=-600, width=1500):
    """What the page's body.dataset.drawn says once it shows that slice in that window."""
    return f"{series}:{index}:{level}:{width}"


def colours(url):
    """reader -> (r, g, b) of the case's legend."""
    with urllib.request.urlopen(f"{url}/api/case?patient={data.PATIENT}") as response:
        legend = json.load(response)["readers"]
    return {r["reader"]: tuple(int(r["colour"][k:k + 2], 16) for k in (1, 3, 5)) for r in legend}


def at(pixels, row, col):
    """The canvas pixel at the centre of image pixel (row, col)."""
    return pixels[int((row + 0.5) * SCALE), int((col + 0.5) * SCALE)]


def painted(pixels, colour):
    """Mask of the canvas pixels in `colour` (within COLOUR_TOLERANCE per channel)."""
    return (np.abs(pixels - np.array(colour)) <= COLOUR_TOLERANCE).all(axis=-1)


def near(shape, outlines, reach):
    """Mask of the canvas pixels within `reach` of the outlines ((row, col) image points; a
    single point stands for the ring drawn around it)."""
    mask = np.zeros(shape, np.uint8)
    for points in outlines:
        xy = np.array([[(c + 0.5) * SCALE, (r + 0.5) * SCALE] for r, c in points], np.int32)
        if len(xy) == 1:
            cv2.circle(mask, tuple(int(v) for v in xy[0]), 6, 1, 2 * reach)
        else:
            cv2.polylines(mask, [xy], True, 1, 2 * reach)
    return mask.astype(bool)


def test_the_page_shows_the_slice_in_the_window_asked_for(setup):
    _, _, url, browser = setup
    browser.open(url, drawn(data.SERIES, 2))  # the first slice with marks
    pixels = browser.canvas()
    assert pixels.shape == (640, 640, 3)
    # The lung window (-1350 to 150 HU onto 0..255): 100 HU -> 246.5, -850 HU -> 85.
    assert abs(at(pixels, 20, 110) - 246.5).max() <= 1
    assert abs(at(pixels, 100, 20) - 85).max() <= 1
    browser.js("(() => { for (const [id, v] of [['level', 40], ['width', 400]]) { const i = "
               "document.getElementById(id); i.value = v; i.dispatchEvent(new Event('change')); "
               "} })()")
    browser.wait(f"document.body.dataset.drawn === {json.dumps(drawn(data.SERIES, 2, 40, 400))}")
    pixels = browser.canvas()
    assert abs(at(pixels, 20, 110) - 165.75).max() <= 1  # (100 + 160) / 400 * 255
    assert (at(pixels, 100, 20) == 0).all()


def test_contours_are_drawn_in_the_readers_colours_where_the_xml_puts_them(setup):
    _, _, url, browser = setup
    browser.open(url, drawn(data.SERIES, 2))
    pixels = browser.canvas()
    (a, colour_a), (b, colour_b) = sorted(colours(url).items())
    outlines = {a: [data.xml_points(data.A_CONTOUR), data.xml_points([data.A_POINT])],
                b: [data.xml_points(data.B_CONTOUR)]}
    for reader, colour, other in ((a, colour_a, b), (b, colour_b, a)):
        others = {p for points in outlines[other] for p in points}
        for points in outlines[reader]:
            for row, col in points:
                if len(points) == 1:
                    row -= 6 / SCALE  # a single point is drawn as a ring around it: its top
                if any(max(abs(row - r), abs(col - c)) <= 1 for r, c in others):
                    continue  # where two readers' lines cross, the later one is on top
                assert abs(at(pixels, row, col) - colour).max() <= 10, (reader, row, col)
        stray = painted(pixels, colour) & ~near(pixels.shape[:2], outlines[reader], reach=4)
        assert not stray.any(), f"{reader}'s colour at {np.argwhere(stray)[:5].tolist()}"
    browser.js("(() => { const i = document.getElementById('index'); i.value = 5; "
               "i.dispatchEvent(new Event('input')); })()")
    browser.wait(f"document.body.dataset.drawn === {json.dumps(drawn(data.SERIES, 5))}")
    pixels = browser.canvas()
    assert not (painted(pixels, colour_a) | painted(pixels, colour_b)).any()  # no marks on 5


def test_pointing_at_a_contour_tells_its_reader_class_and_lesion(setup):
    _, _, url, browser = setup
    browser.open(url, drawn(data.SERIES, 2))
    box = browser.js("(() => { const b = document.getElementById('slice')"
                     ".getBoundingClientRect(); return [b.left, b.top]; })()")
    row, col = data.xml_points(data.A_CONTOUR)[3]  # on its top edge, away from reader B's
    browser.page("Input.dispatchMouseEvent", type="mouseMoved", x=box[0] + (col + 0.5) * SCALE,
                 y=box[1] + (row + 0.5) * SCALE)
    browser.wait("document.getElementById('tip').style.display === 'block'")
    tip = browser.js("document.getElementById('tip').textContent")
    reader = sorted(colours(url))[0]
    legend = browser.js("[...document.querySelectorAll('#legend li')].map(li => li.dataset.reader)")
    assert f"reader {reader}" in tip and "nodule >= 3 mm" in tip and "lesion L" in tip
    assert legend == sorted(colours(url))


def probabilities_shown(browser):
    """patch index -> the probabilities in the page's table."""
    rows = browser.js("[...document.querySelectorAll('#marks tr')].map(tr => [tr.dataset.patch, "
                      "[...tr.querySelectorAll('td.p')].map(td => td.dataset.p)])")
    return {int(patch): [float(p) for p in found] for patch, found in rows if patch}


def test_choosing_another_model_changes_the_probabilities_shown(setup):
    _, _, url, browser = setup
    browser.open(url, drawn(data.SERIES, 2))
    shown = {}
    for run in ("a", "b"):
        browser.choose("run", run)
        browser.wait(f"document.body.dataset.predictions === '{data.SERIES}:{run}'")
        shown[run] = probabilities_shown(browser)
        with urllib.request.urlopen(f"{url}/api/predictions?run={run}&patient={data.PATIENT}") \
                as response:
            served = json.load(response)["patches"]
        assert len(shown[run]) == 3  # the three marked patches of slice 2
        for patch, found in shown[run].items():
            assert found == served[str(patch)]["probabilities"] and abs(sum(found) - 1) < 1e-4
    assert shown["a"].keys() == shown["b"].keys()
    assert all(np.abs(np.subtract(shown["a"][k], shown["b"][k])).max() > 1e-4 for k in shown["a"])


def test_picking_another_patient_shows_its_slices(setup):
    _, _, url, browser = setup
    browser.open(url, drawn(data.SERIES, 2))
    browser.choose("patient", "1")  # the second case of the list
    browser.wait(f"document.body.dataset.drawn === {json.dumps(drawn(data.OTHER_SERIES, 0))}")
    assert browser.js("document.getElementById('legend').textContent") == \
        "no marks in this series"
    assert abs(at(browser.canvas(), 64, 64) - 85).max() <= 1  # -850 HU in the lung window


def test_the_static_export_opens_from_the_file_system(setup, tmp_path):
    work, runs, url, browser = setup
    write_static(work, runs, tmp_path / "case", data.PATIENT, models=Models(runs, prepare=None))
    browser.open((tmp_path / "case" / "index.html").as_uri(), drawn(data.SERIES, 2))
    pixels = browser.canvas()
    (a, colour_a), _ = sorted(colours(url).items())
    row, col = data.xml_points(data.A_CONTOUR)[3]
    assert abs(at(pixels, row, col) - colour_a).max() <= 10
    assert abs(at(pixels, 20, 110) - 246.5).max() <= 1
    browser.choose("run", "b")
    browser.wait(f"document.body.dataset.predictions === '{data.SERIES}:b'")
    with urllib.request.urlopen(f"{url}/api/predictions?run=b&patient={data.PATIENT}") as response:
        served = json.load(response)["patches"]
    shown = probabilities_shown(browser)
    assert len(shown) == 3
    assert shown == {k: served[str(k)]["probabilities"] for k in shown}
