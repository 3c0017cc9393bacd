"""Built-in text corpora: text that is on every machine that runs ``scaling``, so a language
model recipe runs from a fresh clone with no download (``task: {name: text, corpus: stdlib}``).

``stdlib``: the Python source of the running interpreter's standard library
(``sysconfig.get_paths()["stdlib"]``), about 11 MB on CPython 3.11. The rule, fixed so that
the same installation always gives the same bytes:

- every regular file whose name ends in ``.py`` below that folder, found by ``os.walk``
  (symlinked folders are not followed);
- except inside a folder named ``site-packages``, ``dist-packages`` (installed packages, not
  the standard library), ``__pycache__``, ``test``, ``tests``, ``idle_test`` (test suites and
  their data, lib2to3's included), ``idlelib`` or ``turtledemo`` (applications), a folder
  whose name starts with ``config-`` or ``.``, and files whose name starts with
  ``_sysconfigdata`` (both written by the build with this machine's paths and flags);
- read in the order of their paths relative to that folder (``/``-separated, sorted as text)
  and concatenated as bytes, with nothing between files.

The data version is ``2-stdlib-`` and the first 12 hex digits of the SHA-256 of those bytes
(``2``: the text task's split), so another Python version or build gives another data version,
and a resume refuses to mix them as it does for any data change. The file list (for the pool
size, from ``stat`` alone) and the bytes with their hash are computed once per process.
"""

from __future__ import annotations

import functools
import hashlib
import os
import sysconfig

import numpy as np

from scaling.errors import ConfigError

CORPORA = ("stdlib",)
"""The built-in corpora, by the name a config gives as ``task.corpus``."""

SKIP_DIRS = frozenset({"site-packages", "dist-packages", "__pycache__", "test", "tests", "idle_test",
                       "idlelib", "turtledemo"})
"""Folder names below the standard library whose files are left out (see the module docstring)."""

TEXT_SPLIT_VERSION = "2"
"""The text task's split version (the file task's data_version), the first part of a corpus's."""


def stdlib_root() -> str:
    """The running interpreter's standard-library folder."""
    return sysconfig.get_paths()["stdlib"]


def _keep_dir(name: str) -> bool:
    return name not in SKIP_DIRS and not name.startswith((".", "config-"))


def _keep_file(name: str) -> bool:
    return name.endswith(".py") and not name.startswith("_sysconfigdata")


def select_files(root: str) -> tuple[tuple[str, int], ...]:
    """(relative path, size in bytes) of the corpus's files below ``root``, in reading order."""
    found = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if _keep_dir(d)]
        for name in files:
            path = os.path.join(folder, name)
            if _keep_file(name) and os.path.isfile(path):
                found.append((os.path.relpath(path, root).replace(os.sep, "/"), os.path.getsize(path)))
    return tuple(sorted(found))


@functools.lru_cache(maxsize=2)
def _files(name: str) -> tuple[str, tuple[tuple[str, int], ...]]:
    _check_name(name)
    root = stdlib_root()
    return root, select_files(root)


@functools.lru_cache(maxsize=2)
def _content(name: str) -> tuple[np.ndarray, str]:
    root, files = _files(name)
    parts = []
    for rel, _ in files:
        with open(os.path.join(root, rel), "rb") as f:
            parts.append(f.read())
    blob = b"".join(parts)
    data = np.frombuffer(blob, dtype=np.uint8)
    data.flags.writeable = False
    return data, hashlib.sha256(blob).hexdigest()


def _check_name(name: str) -> None:
    if name not in CORPORA:
        raise ConfigError("task.corpus", f"unknown corpus {name!r}; built in: {list(CORPORA)} (or leave "
                          "corpus out and give path: FILE, a text file of your own)")


def corpus_files(name: str) -> tuple[tuple[str, int], ...]:
    """(path relative to the standard library, bytes) of each file, in reading order."""
    return _files(name)[1]


def corpus_size(name: str) -> int:
    """Bytes in the corpus, from the files' sizes (no file is read)."""
    return sum(size for _, size in corpus_files(name))


def corpus_bytes(name: str) -> np.ndarray:
    """The corpus as a read-only uint8 array (read once per process)."""
    return _content(name)[0]


def corpus_version(name: str) -> str:
    """The corpus's data version: the text split's version, the name and a hash of its bytes."""
    return f"{TEXT_SPLIT_VERSION}-{name}-{_content(name)[1][:12]}"
