"""``scaling serve``: a live dashboard of a results store in the browser."""

from __future__ import annotations

import sys

from analysis.cli.base import Command
from analysis.errors import AnalysisError


class Serve(Command):
    """a live dashboard of a store in the browser: progress, training curves, the laws as they form

    Serves a read-only page per sweep that follows a running sweep (it polls the store's parts
    and reloads only what changed) and works on a finished one. It binds 127.0.0.1 unless --host
    says otherwise, and every request needs the random token in the URL it prints.
    """

    def add_arguments(self, p) -> None:
        p.add_argument("results", help="results directory, one sweep folder, or a store URI")
        p.add_argument("--port", type=int, default=8765,
                       help="port to listen on (default 8765; 0 picks a free one)")
        p.add_argument("--host", default="127.0.0.1",
                       help="address to bind (default 127.0.0.1, this machine only; anything else "
                            "lets other machines reach the page, behind its token, unencrypted)")
        p.add_argument("--poll", type=float, default=2.0, metavar="SECONDS",
                       help="how often an open page asks whether the store changed (default 2)")

    def take_action(self, args) -> int:
        from analysis.serve.app import LOCAL_HOSTS, make_server

        if not 0 <= args.port <= 65535:
            raise AnalysisError(f"--port must be between 0 and 65535, got {args.port}")
        if not args.poll > 0:
            raise AnalysisError(f"--poll must be > 0 seconds, got {args.poll}")
        server = make_server(args.results, args.host, args.port, poll_s=args.poll)
        if args.host not in LOCAL_HOSTS:
            print(f"warning: serving on {args.host}, reachable from other machines; the token "
                  "is all that guards it and HTTP is not encrypted", file=sys.stderr)
        print(f"serving {args.results} at {server.url}", flush=True)
        print("open that URL (it holds the token); Ctrl-C stops", flush=True)
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            print("stopped")
        finally:
            server.server_close()
        return 0
