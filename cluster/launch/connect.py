"""Joining Ray: a given address (or RAY_ADDRESS), or a local Ray started here, with the
cluster's auth token used when there is one and the address checked before ``ray.init``."""

from __future__ import annotations

import contextlib
import os
import socket
import time

import cluster.launch.localray as localray
from scaling.errors import UserError


def connect(address: str | None, num_cpus: int | None = None, insecure_ray: bool = False,
            worker_imports: tuple[str, ...] = ()) -> bool:
    """Join a cluster at ``address`` (or RAY_ADDRESS), or start a local Ray. True if started here.
    ``worker_imports``: modules a local Ray's workers import as they start (localray.start)."""
    import ray

    address = address or os.environ.get("RAY_ADDRESS") or None
    if ray.is_initialized():
        return False
    localray.check_num_cpus(num_cpus, address)
    common = dict(log_to_driver=False, logging_level="ERROR", configure_logging=True)
    if address:
        localray.check_auth_mode(insecure_ray)
        check_reachable(address)
        _use_token_if_available()
        try:
            _init(ray, address, common)
        except (ConnectionError, RuntimeError) as e:
            chain = f"{e} {e.__cause__}".lower()
            hint = ("; the cluster uses token authentication and no token here was accepted: put the "
                    "cluster's token in RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token"
                    ) if "authtoken" in chain or "auth_token" in chain else ""
            raise UserError(f"cannot join the Ray cluster at {address!r}: "
                            f"{str(e).strip().splitlines()[0]}{hint}") from None
        localray.rearm_signals()
        return False
    localray.start(num_cpus, insecure=insecure_ray, worker_imports=worker_imports, **common)
    return True


CLIENT_TRIES = 3
"""Tries of a ray:// join whose server fails to start the client's own server process (Ray's
proxier answers "Initialization failure from server" with no detail when it cannot start one in
time, as under load: seen once in a fresh-clone CI run); any other failure is not retried."""


def _init(ray, address: str, common: dict) -> None:
    for attempt in range(1, CLIENT_TRIES + 1):
        try:
            ray.init(address=address, **common)
            return
        except ConnectionError as e:
            transient = address.startswith("ray://") and "initialization failure from server" in str(e).lower()
            if not transient or attempt == CLIENT_TRIES:
                raise
            with contextlib.suppress(Exception):  # a half-made client connection: nothing to give back
                ray.shutdown()
            time.sleep(2.0 * attempt)


def _use_token_if_available() -> None:
    """Ray 2.60 clusters use token auth when a token exists; join them with it, as `ray start` does."""
    if os.environ.get("RAY_AUTH_MODE"):
        return
    path = os.environ.get("RAY_AUTH_TOKEN_PATH") or os.path.expanduser("~/.ray/auth_token")
    if os.environ.get("RAY_AUTH_TOKEN") or os.path.isfile(path):
        os.environ["RAY_AUTH_MODE"] = "token"
        localray._reload_auth()  # `import ray` has read (and cached) the auth mode already


def check_reachable(address: str, timeout_s: float = 5.0) -> None:
    """Fail fast, in one line, when nothing listens at a Ray address (ray.init would wait minutes)."""
    if address in ("auto", "local"):
        return
    hostport = address.split("://", 1)[-1].rstrip("/")
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        raise UserError(f"--address {address!r} is not HOST:PORT, ray://HOST:PORT or auto")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s).close()
    except OSError as e:
        raise UserError(f"cannot reach a Ray cluster at {address!r} ({e.strerror or e}); "
                        "is the head node up (ray start --head), and is the port open?") from None
