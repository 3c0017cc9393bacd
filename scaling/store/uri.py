"""Where a results store lives: URIs, filesystems with bounded timeouts, and retried storage calls.

A results root is a local path (``results``, ``/data/results``, ``./a:b``) or a URI
with one of :data:`SCHEMES`. Anything else that looks like a URI (``s3a://``,
``S3://``, ``s3:/bucket``, ``weird://x``) is refused with the list of known
schemes, so a typo never becomes a local folder that only one machine writes to.

Object stores get bounded timeouts (S3: connect 3 s, two attempts; GCS: a 2 s
retry limit of 2 s), so an unreachable endpoint is an error within seconds, not a hang.
Longer outages are ridden out by :func:`retrying`, which the sweep uses with a
bound it is given (``--storage-timeout``, default 60 s); past it, the caller gets
:class:`~scaling.errors.StorageError` (exit 3), never a trial's ``failed`` row.

``SCALING_FS_WRAPPER=module:function`` (tests only) wraps every filesystem opened
here: ``function(fs)`` returns the filesystem to use, so faults can be injected in
the driver and in every Ray worker alike.
"""

from __future__ import annotations

import os
import re
import time
from pathlib import PurePosixPath
from urllib.parse import parse_qsl, unquote, urlsplit

import pyarrow as pa
import pyarrow.fs as pafs

from scaling.errors import StorageError, StoreError, one_line

SCHEMES = ("file", "s3", "gs", "gcs", "hdfs", "viewfs", "abfs", "abfss")
"""URI schemes a results root may use (besides a plain local path)."""
STORAGE_TIMEOUT_S = 60.0
"""Default bound on retrying a storage call that fails (an outage) before giving up."""
S3_OPTIONS = {"region": str, "scheme": str, "endpoint_override": str, "connect_timeout": float,
              "request_timeout": float, "anonymous": bool, "allow_bucket_creation": bool,
              "force_virtual_addressing": bool, "tls_ca_file_path": str}
"""Query parameters an ``s3://`` URI may carry."""
_URI = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*):")


def open_filesystem(root: str) -> tuple[pafs.FileSystem, str, bool]:
    """(filesystem, path inside it, is local) of a results root; a bad URI is a StoreError."""
    root = str(root)
    match = _URI.match(root)
    if match is None:
        return _wrap(pafs.LocalFileSystem()), str(PurePosixPath(_abspath(root))), True
    scheme, rest = match.group(1), root[match.end():]
    if scheme not in SCHEMES or not rest.startswith("//"):
        raise StoreError(_bad_scheme(root, scheme, rest))
    if scheme == "file":
        host = rest[2:].split("/", 1)[0]
        if host and host != "localhost":
            raise StoreError(one_line(
                f"results store {root!r}: a file:// URI takes an absolute path after its two slashes "
                f"(file:///abs/path), and {host!r} reads as a host name; for a folder relative to here, "
                f"write it without the scheme: {rest[2:]}", 600))
        if host:  # file://localhost/abs/path: the local machine
            root = "file://" + rest[2 + len(host):]
        try:
            fs, path = pafs.FileSystem.from_uri(root)
        except (pa.ArrowInvalid, ValueError) as e:
            raise StoreError(f"results store {root!r} is not a valid file:// URI: {_first_line(e)}") from None
        return _wrap(fs), path.rstrip("/") or "/", True
    try:
        if scheme == "s3":
            fs, path = _s3(root)
        else:
            uri = root
            if scheme in ("gs", "gcs") and "retry_limit_seconds=" not in root:
                uri += ("&" if "?" in root else "?") + "retry_limit_seconds=2"
            fs, path = pafs.FileSystem.from_uri(uri)
    except (pa.ArrowInvalid, ValueError, TypeError) as e:
        raise StoreError(f"results store {root!r} is not a valid {scheme}:// URI: {_first_line(e)}") from None
    except OSError as e:
        text = _first_line(e)
        if scheme in ("hdfs", "viewfs") and ("jvm" in text.lower() or "libhdfs" in text.lower()):
            raise StoreError(f"results store {root!r}: {scheme}:// needs a Java runtime and Hadoop's libhdfs "
                             f"(JAVA_HOME, HADOOP_HOME, ARROW_LIBHDFS_DIR), and none was found here ({text})"
                             ) from None
        raise StorageError(f"cannot open the results store {root!r}: {text}") from None
    return _wrap(fs), path.rstrip("/"), False


def _bad_scheme(root: str, scheme: str, rest: str) -> str:
    known = ", ".join(f"{s}://" for s in SCHEMES)
    hint = ""
    if scheme in SCHEMES:
        return one_line(f"results store {root!r} is a mistyped URI: a URI needs two slashes after the scheme, "
                        f"as in {scheme}://{rest.lstrip('/')}")
    if scheme.lower() in SCHEMES and scheme != scheme.lower():
        hint = f"; did you mean {scheme.lower()}://?"
    elif scheme.lower() in ("s3a", "s3n"):
        hint = "; did you mean s3://?"
    local = "" if hint else f"; for a local folder of that name, write ./{root}"
    return one_line(f"results store {root!r}: unknown storage scheme {scheme + ':'!r}; known schemes are "
                    f"{known} (a local folder needs none){hint}{local}")


def _s3(root: str) -> tuple[pafs.FileSystem, str]:
    """An S3 filesystem with bounded timeouts; the region comes from the URI or the environment,
    never from a network lookup."""
    parts = urlsplit(root)
    options: dict = {"connect_timeout": 3.0, "request_timeout": 60.0,
                     "retry_strategy": pafs.AwsStandardS3RetryStrategy(max_attempts=2)}
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        kind = S3_OPTIONS.get(key)
        if kind is None:
            raise ValueError(f"unknown query parameter {key!r}; allowed: {sorted(S3_OPTIONS)}")
        if kind is bool:
            options[key] = value.lower() in ("1", "true", "yes")
        elif kind is float:
            options[key] = float(value)
        else:
            options[key] = value
    options.setdefault("region", os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
                       or "us-east-1")
    host = parts.netloc
    if "@" in host:
        creds, host = host.rsplit("@", 1)
        key, _, secret = creds.partition(":")
        options.update(access_key=unquote(key), secret_key=unquote(secret))
    if not host:
        raise ValueError("no bucket; write s3://BUCKET/PREFIX")
    return pafs.S3FileSystem(**options), f"{host}{unquote(parts.path)}"


def _wrap(fs: pafs.FileSystem) -> pafs.FileSystem:
    spec = os.environ.get("SCALING_FS_WRAPPER")
    if not spec:
        return fs
    import importlib

    module, _, name = spec.partition(":")
    return getattr(importlib.import_module(module), name)(fs)


def _abspath(path: str) -> str:
    return os.path.abspath(os.path.expanduser(path))


def _first_line(e: BaseException) -> str:
    return one_line((str(e).strip().splitlines() or [type(e).__name__])[0], 300)


# ---- riding out outages -----------------------------------------------------------------------

def _permanent(e: BaseException) -> bool:
    """A storage error no waiting can fix: a file where a folder must be (ENOTDIR)."""
    import errno

    return getattr(e, "errno", None) == errno.ENOTDIR or "not a directory" in str(e).lower()


def retrying(call, what: str, timeout_s: float | None, *, retry_on=(OSError,)):
    """``call()``, retried with exponential backoff (0.1 s doubling to 5 s) while it raises one of
    ``retry_on``, for ``timeout_s`` seconds after the first failure (None or 0: no retry), the last
    try at the bound itself, so an outage shorter than the bound is ridden out. Past the bound,
    :class:`StorageError` names what failed and why."""
    deadline, delay = None, 0.1
    while True:
        try:
            return call()
        except retry_on as e:
            if _permanent(e):  # no outage passes this: the path itself is wrong
                raise StoreError(one_line(f"cannot {what}: {_first_line(e)} (a file stands where the "
                                          "results need a folder; choose another --results)", 600)) from None
            now = time.monotonic()
            deadline = deadline if deadline is not None else now + (timeout_s or 0.0)
            if now >= deadline:
                bound = f" for {timeout_s:g} s" if timeout_s else ""
                raise StorageError(one_line(f"the results store failed{bound}: cannot {what}: "
                                            f"{_first_line(e)}; once it works again, run the same "
                                            "command to resume", 600)) from None
            time.sleep(min(delay, deadline - now))  # the last wait ends at the bound: one more try there
            delay = min(5.0, 2 * delay)
