"""The viewer's local web server: the page, and the answers to its requests from WORK and RUNS.

Requests (GET; every answer but the page and a slice is JSON, an error is {"error": message}):

  /                                               the page (page.html)
  /api/cases                                      every indexed series, and what is missing
  /api/case?patient=ID[&series=UID]               one series: slices' z, readers, marks
  /api/slice?patient=ID&series=UID&index=N        one slice, int16 little-endian HU
  /api/runs                                       the runs with a model
  /api/predictions?run=NAME&patient=ID[&series=UID]  a run's probabilities for the series' patches

Every parameter is checked before use: a patient, series or run is looked up among those that
exist (never turned into a path), a slice index is a number within the series. A bad one is a 400
(malformed) or 404 (unknown) with a message, never a traceback. The server listens on 127.0.0.1
only and answers only requests addressed to it by that name (or localhost), so that a web page
elsewhere cannot reach it through a rebound DNS name. WORK is loaded again whenever a stage has
rewritten it.

    viewer = Viewer(Path("data/work"), Path("runs"))
    server = make_server(viewer, port=8765)
    server.serve_forever()
"""
import errno
import json
import sys
import threading
import traceback
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from lidc import cases
from lidc.errors import LidcError
from lidc.windows import TRAINING
from training.data import dataset_digest
from training.viewer import content
from training.viewer.models import Models

PAGE = Path(__file__).with_name("page.html")
HOST = "127.0.0.1"
# What a browser may load into the page: only what this server sends, nothing from elsewhere.
POLICY = ("default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
          "connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'")


class RequestError(Exception):
    """A request the viewer cannot answer: its HTTP status and a message for the page."""

    def __init__(self, status, message):
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class Reply:
    """An answer: HTTP status, content type and body."""
    status: int
    content_type: str
    body: bytes


def json_reply(payload, status=200):
    """A JSON Reply."""
    return Reply(status, "application/json", json.dumps(payload).encode())


class Viewer:
    """Answers the page's requests from WORK and RUNS (see the module's list).

    Args:
      work: the stages' work folder (its index.csv is required).
      runs: the training runs' folder.
      models: where probabilities come from (default Models(runs)).
    Raises:
      LidcError: WORK has no usable index.
    """

    def __init__(self, work, runs, models=None):
        self.work = Path(work)
        self.models = models or Models(runs)
        self._lock = threading.Lock()
        self._stamp = cases.stamp(self.work)
        self._cohort = cases.Cohort.load(self.work)
        self._routes = {"/api/cases": (self._cases, ()),
                        "/api/case": (self._case, ("patient", "series")),
                        "/api/slice": (self._slice, ("patient", "series", "index")),
                        "/api/runs": (self._runs, ()),
                        "/api/predictions": (self._predictions, ("run", "patient", "series"))}

    def cohort(self):
        """The cohort of WORK, loaded again when a stage has rewritten it since.

        Raises:
          RequestError: 503 while WORK's index cannot be read (a stage is rewriting it).
        """
        with self._lock:
            now = cases.stamp(self.work)
            if now != self._stamp:
                try:
                    self._cohort = cases.Cohort.load(self.work)
                except LidcError as e:
                    raise RequestError(503, f"{e} (is a stage rewriting it? reload the page "
                                            "when it is done)") from None
                self._stamp = now
            return self._cohort

    def answer(self, target):
        """The Reply to a GET of `target` (path and query string)."""
        url = urlsplit(target)
        try:
            if url.path in ("/", "/index.html"):
                return Reply(200, "text/html; charset=utf-8", PAGE.read_bytes())
            if url.path not in self._routes:
                raise RequestError(404, f"no such page: {url.path}")
            handler, names = self._routes[url.path]
            return handler(parameters(url.query, names))
        except RequestError as e:
            return json_reply({"error": e.message}, e.status)
        except cases.NotFound as e:
            return json_reply({"error": str(e)}, 404)
        except LidcError as e:  # the data or a model on this machine, not the request
            return json_reply({"error": str(e)}, 500)

    def _cases(self, _params):
        return json_reply(content.cases_payload(self.cohort()))

    def _case(self, params):
        cohort = self.cohort()
        return json_reply(content.case_payload(cohort, find_case(cohort, params)))

    def _slice(self, params):
        case = find_case(self.cohort(), params)
        hu = case.read_slice(slice_index(params, case))
        return Reply(200, "application/octet-stream", content.slice_bytes(hu))

    def _runs(self, _params):
        return json_reply(content.runs_payload(self.models.available(),
                                               dataset_digest(self.work / "dataset")))

    def _predictions(self, params):
        cohort = self.cohort()
        case = find_case(cohort, params)
        name = required(params, "run")
        indices = case.patch_indices()
        try:
            probabilities = self.models.probabilities(
                name, (case.series_uid, cases.stamp(self.work)),
                lambda: TRAINING.to_unit(cohort.patch_pixels(indices)))
        except LookupError as e:
            raise RequestError(404, str(e)) from None
        except LidcError as e:
            status = 400 if e.path is None else 409  # a malformed name, or an unusable model
            raise RequestError(status, str(e)) from None
        return json_reply(content.predictions_payload(name, indices, probabilities))


def parameters(query, names):
    """The query's parameters as name -> value, each given at most once and known to the route.

    Raises:
      RequestError: 400 for an unknown or repeated parameter.
    """
    try:
        found = parse_qs(query, keep_blank_values=True, strict_parsing=bool(query),
                         max_num_fields=len(names) + 1)
    except ValueError as e:
        raise RequestError(400, f"malformed query string ({e})") from None
    unknown = sorted(set(found) - set(names))
    if unknown:
        raise RequestError(400, f"unknown parameter {unknown[0]!r}; this request takes "
                                f"{', '.join(names) or 'none'}")
    repeated = [name for name, values in found.items() if len(values) > 1]
    if repeated:
        raise RequestError(400, f"parameter {repeated[0]!r} is given more than once")
    return {name: values[0] for name, values in found.items()}


def required(params, name):
    """The non-empty value of parameter `name` (RequestError 400 when it is missing)."""
    value = params.get(name, "")
    if not value:
        raise RequestError(400, f"missing parameter {name!r}")
    return value


def find_case(cohort, params):
    """The Case the parameters `patient` (required) and `series` (optional) name; NotFound
    (404) when there is none."""
    return cohort.case(required(params, "patient"), params.get("series") or None)


def slice_index(params, case):
    """The parameter `index` as a slice of `case`: 400 when it is not a whole number, 404
    (NotFound) when the series has no such slice."""
    text = required(params, "index")
    if not (text.isascii() and text.isdigit()) or len(text) > 9:
        raise RequestError(400, f"a slice index is a whole number, not {text!r}")
    index = int(text)
    case.check_index(index)
    return index


class Handler(BaseHTTPRequestHandler):
    """Hands each GET to the server's Viewer; refuses requests addressed to another host."""

    server_version = "lidc-viewer"

    def do_GET(self):  # noqa: N802 (the name http.server calls)
        """Answers a GET."""
        self._send(self._reply(), body=True)

    def do_HEAD(self):  # noqa: N802
        """Answers a HEAD: a GET's status and headers."""
        self._send(self._reply(), body=False)

    def _reply(self):
        host = self.headers.get("Host")
        port = self.server.server_address[1]
        if host is not None and host not in (f"{HOST}:{port}", f"localhost:{port}"):
            return json_reply({"error": f"this viewer answers only http://{HOST}:{port}/"}, 403)
        if self.path == "/favicon.ico":
            return Reply(204, "image/x-icon", b"")
        try:
            return self.server.viewer.answer(self.path)
        except Exception:  # a bug: the page gets a message, the console the traceback
            traceback.print_exc(file=sys.stderr)
            return json_reply({"error": "internal error in the viewer (see its console)"}, 500)

    def _send(self, reply, body):
        self.send_response(reply.status)
        self.send_header("Content-Type", reply.content_type)
        self.send_header("Content-Length", str(len(reply.body)))
        self.send_header("Cache-Control", "no-store")  # WORK and RUNS change under the page
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Content-Security-Policy", POLICY)
        self.end_headers()
        if body:
            self.wfile.write(reply.body)

    def log_message(self, format, *args):  # noqa: A002 (http.server's signature)
        """Quiet: the requests that succeed are not worth a line each; errors are replied."""


def make_server(viewer, port=0):
    """A ThreadingHTTPServer for `viewer` on 127.0.0.1:port (0 picks a free port); its address
    is server.server_address.

    Raises:
      LidcError: the port is in use or not allowed.
    """
    try:
        server = ThreadingHTTPServer((HOST, port), Handler)
    except OSError as e:
        advice = "choose another --port (0 picks a free one)"
        if e.errno == errno.EADDRINUSE:
            raise LidcError(None, f"port {port} is in use; {advice}") from None
        raise LidcError(None, f"cannot listen on {HOST}:{port} ({e.strerror}); {advice}") \
            from None
    server.daemon_threads = True
    server.viewer = viewer
    return server
