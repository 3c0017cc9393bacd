"""Find every listening TCP socket of a process tree and probe it as a client without Ray's token.

Used by tests/test_security.py, in the test process or, for a sweep in a private network
namespace, as a script run inside that namespace (``nsenter``):

    python tests/ray_ports.py HOST:PORT ...      # prints one JSON object: address -> probe result
"""

from __future__ import annotations

import glob
import json
import os
import re
import socket
import sys

PROBE_TIMEOUT_S = 3.0
HEALTH = "/grpc.health.v1.Health/Check"  # gRPC's standard health check: liveness only, no data
HTTP_PATHS = [("GET", "/"), ("POST", "/get_or_create_runtime_env"), ("POST", "/delete_runtime_env_if_possible"),
              ("POST", "/get_runtime_envs_info")]


# ---- which sockets ------------------------------------------------------------------------

def descendants(root: int) -> list[int]:
    """``root`` and every process below it."""
    children: dict[int, list[int]] = {}
    for name in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                ppid = int(f.read().rsplit(b")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(name))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, []))
    return out


def _address(hexaddr: str, family: str) -> str:
    raw = bytes.fromhex(hexaddr)
    if family == "tcp":
        return socket.inet_ntop(socket.AF_INET, raw[::-1])
    return socket.inet_ntop(socket.AF_INET6, b"".join(raw[i:i + 4][::-1] for i in range(0, 16, 4)))


def listening_sockets(pids: list[int]) -> list[dict]:
    """Every listening TCP socket (IPv4 and IPv6) that one of ``pids`` holds, read from /proc in the
    process's own network namespace."""
    found = []
    for pid in pids:
        try:
            inodes = {os.readlink(f"/proc/{pid}/fd/{fd}")[8:-1] for fd in os.listdir(f"/proc/{pid}/fd")
                      if os.readlink(f"/proc/{pid}/fd/{fd}").startswith("socket:[")}
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                name = f.read().split(b"\0")[0].decode(errors="replace")
            tables = {fam: open(f"/proc/{pid}/net/{fam}").read() for fam in ("tcp", "tcp6")}
        except OSError:
            continue  # gone, or not ours
        for fam, table in tables.items():
            for line in table.splitlines()[1:]:
                fields = line.split()
                if fields[3] == "0A" and fields[9] in inodes:  # 0A = LISTEN
                    hexaddr, hexport = fields[1].split(":")
                    found.append({"pid": pid, "process": os.path.basename(name), "family": fam,
                                  "address": _address(hexaddr, fam), "port": int(hexport, 16)})
    return found


def connect_host(sock: dict) -> str:
    """Where a client reaches ``sock``: loopback for a wildcard, the IPv4 of a v4-mapped address."""
    address = sock["address"]
    if address in ("0.0.0.0", "::"):
        return "127.0.0.1" if sock["family"] == "tcp" else "::1"
    return address[7:] if address.startswith("::ffff:") else address


# ---- probes -------------------------------------------------------------------------------

def ray_grpc_methods() -> list[str]:
    """Every gRPC method Ray 2.60 defines: from its generated stubs, plus the object manager's
    (no Python stub) and the standard health check."""
    import ray

    methods = set()
    for path in glob.glob(os.path.join(os.path.dirname(ray.__file__), "core", "generated", "*_pb2_grpc.py")):
        with open(path) as f:
            methods |= set(re.findall(r"'(/[\w.]+/\w+)'", f.read()))
    return sorted(methods | {"/ray.rpc.ObjectManagerService/Push", "/ray.rpc.ObjectManagerService/Pull", HEALTH})


def _http(host: str, port: int, method: str, path: str, token: str | None) -> int | None:
    """The HTTP status of one request, or None if the answer is not HTTP/1 (a gRPC server)."""
    auth = f"Authorization: Bearer {token}\r\n" if token else ""
    request = (f"{method} {path} HTTP/1.1\r\nHost: {host}\r\n{auth}Content-Length: 0\r\n"
               "Connection: close\r\n\r\n").encode()
    with socket.create_connection((host, port), timeout=PROBE_TIMEOUT_S) as s:
        s.sendall(request)
        head = b""
        try:
            while b"\r\n" not in head and len(head) < 64:
                chunk = s.recv(64)
                if not chunk:
                    break
                head += chunk
        except socket.timeout:
            pass
    if not head.startswith(b"HTTP/1."):
        return None
    return int(head.split()[1])


def probe(host: str, port: int, token: str | None = None) -> dict:
    """What ``port`` does for a client holding ``token`` (None: no token at all).

    ``kind`` is ``http`` (statuses of a few requests) or ``grpc`` (the status code of every Ray
    method, called with an empty message). A port that refuses connections is ``closed``.
    """
    try:
        first = _http(host, port, *HTTP_PATHS[0], token)
    except OSError as e:
        return {"kind": "closed", "error": str(e)}
    if first is not None:
        statuses = {f"{m} {p}": _http(host, port, m, p, token) for m, p in HTTP_PATHS}
        return {"kind": "http", "statuses": statuses}
    import grpc

    metadata = [("authorization", f"Bearer {token}")] if token else None
    statuses = {}
    target = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    with grpc.insecure_channel(target) as channel:
        for method in ray_grpc_methods():
            try:
                channel.unary_unary(method)(b"", timeout=PROBE_TIMEOUT_S, metadata=metadata)
                statuses[method] = "OK"
            except grpc.RpcError as e:
                statuses[method] = e.code().name
    return {"kind": "grpc", "statuses": statuses}


def call(host: str, port: int, method: str, token: str | None) -> str | int:
    """The status of one gRPC call or HTTP request ("GET /"), for the controls: a harmless read
    with the right token."""
    if method.startswith(("GET ", "POST ")):
        try:
            return _http(host, port, *method.split(" ", 1), token)
        except OSError as e:
            return f"closed: {e}"
    import grpc

    metadata = [("authorization", f"Bearer {token}")] if token else None
    target = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    with grpc.insecure_channel(target) as channel:
        try:
            channel.unary_unary(method)(b"", timeout=PROBE_TIMEOUT_S, metadata=metadata)
            return "OK"
        except grpc.RpcError as e:
            return e.code().name


def main(argv: list[str]) -> None:
    """argv: a JSON list of [host, port, token-or-null] and, optionally, a JSON list of
    [host, port, method, token] controls. Prints {"probes": [...], "controls": [...]}."""
    probes = [probe(h, p, t) for h, p, t in json.loads(argv[0])]
    controls = [call(h, p, m, t) for h, p, m, t in json.loads(argv[1])] if len(argv) > 1 else []
    print(json.dumps({"probes": probes, "controls": controls}))


if __name__ == "__main__":
    main(sys.argv[1:])
