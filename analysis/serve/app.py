"""The dashboard's HTTP server: the standard library's threading server, read-only, behind a token.

Every request must carry the token (``?token=...``, or the ``X-Scaling-Token`` header that
the page's scripts send), compared in constant time; without it the answer is 403 and
nothing about the store. Only GET and HEAD are served (405 otherwise), nothing is ever
written, and the only SQL a request can bring (a training-curve filter) runs in the
analysis' sandbox (:mod:`analysis.tables.sqlfilter`: no file access, one expression).
Responses forbid caching, framing, sniffing and referrers (the token is in the URL), and
their Content-Security-Policy allows scripts from this server only.
"""

from __future__ import annotations

import hmac
import json
import secrets
import socket
import sys
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

from analysis.errors import AnalysisError
from analysis.serve import page, panels
from analysis.serve.store import Source

LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")
CSP = ("default-src 'none'; script-src 'self' 'unsafe-eval'; style-src 'self' 'unsafe-inline'; "
       "img-src 'self' data: blob:; connect-src 'self'; font-src 'self' data:; "
       "frame-ancestors 'none'; base-uri 'none'; form-action 'none'")
"""plotly.js compiles its WebGL traces (parallel coordinates) with ``new Function``: hence
'unsafe-eval'; every script still comes from this server."""


class Dashboard(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, source: Source, address: tuple[str, int], token: str | None = None,
                 poll_s: float = 2.0):
        self.source = source
        self.token = token or secrets.token_urlsafe(32)
        self.poll_s = poll_s
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, Handler)

    def server_close(self) -> None:
        super().server_close()
        self.source.close()

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{port}/?token={self.token}"


def make_server(root: str, host: str = "127.0.0.1", port: int = 8765,
                token: str | None = None, poll_s: float = 2.0,
                refresh_share: float | None = None) -> Dashboard:
    """A :class:`Dashboard` of the store at ``root`` bound to ``host:port`` (0: a free port), not
    yet serving; a port in use or a bad host is one :class:`AnalysisError`. ``refresh_share``: see
    :data:`analysis.serve.store.REFRESH_SHARE`."""
    from analysis.serve.fitter import Fitter

    share = {} if refresh_share is None else {"refresh_share": refresh_share}
    source = Source(root, fitter=Fitter(), **share)  # the laws are fitted in a process of their own
    try:
        return Dashboard(source, (host, port), token, poll_s)
    except OSError as e:
        raise AnalysisError(f"cannot listen on {host}:{port}: {e.strerror or e}; "
                            "choose another --port (0 picks a free one)") from None


def serve_in_thread(server: Dashboard) -> threading.Thread:
    """Serve in a daemon thread (tests, the benchmark); ``server.shutdown()`` stops it."""
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True,
                              name="scaling-serve")
    thread.start()
    return thread


class Handler(BaseHTTPRequestHandler):
    server: Dashboard
    server_version = "scaling-serve"
    sys_version = ""

    def log_message(self, *args) -> None:  # the URL holds the token: never logged
        return

    # ---- plumbing ---------------------------------------------------------------------------

    def _send(self, status: int, body: bytes, ctype: str, cache: bool = False) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "private, max-age=86400" if cache else "no-store")
        self.send_header("Content-Security-Policy", CSP)
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("X-Frame-Options", "DENY")
        self.send_header("Referrer-Policy", "no-referrer")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, obj, status: int = 200) -> None:
        body = json.dumps(obj, allow_nan=False, default=str).encode()
        self._send(status, body, "application/json; charset=utf-8")

    def _authorised(self, query: dict) -> bool:
        given = self.headers.get("X-Scaling-Token") or (query.get("token") or [""])[0]
        return hmac.compare_digest(given.encode(), self.server.token.encode())

    def _refuse(self, status: int, text: str) -> None:
        self._send(status, text.encode(), "text/plain; charset=utf-8")

    def do_POST(self) -> None:
        self._refuse(HTTPStatus.METHOD_NOT_ALLOWED, "read-only: only GET and HEAD are served")

    do_PUT = do_DELETE = do_PATCH = do_OPTIONS = do_POST

    def do_HEAD(self) -> None:
        self.do_GET()

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        query = parse_qs(url.query)
        if not self._authorised(query):
            self._refuse(HTTPStatus.FORBIDDEN,
                         "forbidden: open the URL with the token that `scaling serve` printed")
            return
        arg = lambda name, default="": (query.get(name) or [default])[0]
        try:
            self._route(url.path, arg)
        except AnalysisError as e:
            self._json({"error": str(e).splitlines()[0]}, 400)
        except (BrokenPipeError, ConnectionResetError):
            pass
        except Exception as e:  # noqa: BLE001 - a server thread answers every request: one line
            print(f"scaling serve: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}",
                  file=sys.stderr)
            self._json({"error": f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"},
                       500)

    def _route(self, path: str, arg) -> None:
        src = self.server.source
        if path == "/":
            self._send(200, page.index(src, self.server.token).encode(), "text/html; charset=utf-8")
        elif path == "/sweep":
            name = src.check(arg("name"))
            self._send(200, page.sweep(name, self.server.token, self.server.poll_s).encode(), "text/html; charset=utf-8")
        elif path.startswith("/static/"):
            found = page.static(path[len("/static/"):])
            if found is None:
                self._refuse(404, "not found")
            else:
                self._send(200, found[0], found[1], cache=True)
        elif path.startswith("/api/"):
            self._json(self._api(path[len("/api/"):], arg))
        else:
            self._refuse(404, "not found")

    def _api(self, what: str, arg):
        src = self.server.source
        if what == "sweeps":
            return [{"name": s, "version": src.version(s).digest} for s in src.sweeps()]
        sweep = arg("sweep")
        if what == "version":  # the cheap poll: one listing, no read
            v = src.version(sweep)
            return {"version": v.digest, "trial_parts": v.trial_parts, "curve_parts": v.curve_parts}
        src.check(sweep)
        metric = arg("metric") or None
        if what == "meta":
            version, trials, _, why = src.tables(sweep)
            if trials is None:
                return {"version": version, "empty": why}
            return {"version": version, **panels.meta(src, sweep)}
        if what == "progress":
            return panels.progress(src, sweep)
        if what == "table":
            return panels.table(src, sweep, metric)
        if what == "parcoords":
            return panels.parcoords(src, sweep, metric)
        if what == "curves":
            return panels.curves(src, sweep, arg("where"), metric)
        if what == "laws":
            return panels.laws(src, sweep, metric=metric)
        if what == "trial":
            return panels.trial(src, sweep, arg("id"))
        raise AnalysisError(f"unknown API {what!r}")
