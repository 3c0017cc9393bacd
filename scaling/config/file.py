"""Reading a sweep config file: bounded, regular files only, YAML without duplicate keys.

A config is a few kilobytes of YAML. Before any parsing, :func:`read_text`
refuses what cannot be one: a path that is not a regular file (a FIFO would
block the reader forever, ``/dev/zero`` never ends, a directory is a typo) is
refused from its ``stat`` alone, without opening it; a file over ``max_bytes``
(default :data:`MAX_CONFIG_BYTES`, ``--max-config-bytes`` raises it) is refused
from its size, and reading stops one byte past the limit in case it grows.

:func:`parse_yaml` parses with libyaml (``yaml.CSafeLoader``, about 5 times
faster than the pure-Python loader; the pure-Python ``SafeLoader`` where
PyYAML was built without it). Both build only plain data: no Python tags. A
mapping that gives the same key twice is refused, naming the key and both
lines (YAML loaders keep the last one silently, so a second ``name:`` would
send results to another sweep). The check walks the parsed nodes before
anything is constructed, once per node, so an alias bomb costs no more than
its text.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

import yaml

from scaling.errors import ConfigError

MAX_CONFIG_BYTES = 1_000_000
"""Largest config file read by default (a sweep config is a few kB)."""
Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
"""libyaml's safe loader where PyYAML has it, else the pure-Python one."""
MERGE = "tag:yaml.org,2002:merge"


def read_text(path: str | Path, max_bytes: int = MAX_CONFIG_BYTES) -> str:
    """The text of a config file: a regular file of at most ``max_bytes`` bytes, UTF-8.

    Raises ConfigError (one line) for a missing file, a FIFO, device, socket or
    directory (refused before it is opened), a file over the limit (refused
    before it is read) and bytes that are not UTF-8."""
    shown = repr(str(path))
    try:
        before = os.stat(path)
    except (OSError, ValueError) as e:
        raise _cannot_read(shown, e) from None
    if not stat.S_ISREG(before.st_mode):
        raise _not_regular(shown, before.st_mode)
    _check_size(shown, before.st_size, max_bytes)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError as e:
        raise _cannot_read(shown, e) from None
    try:
        now = os.fstat(fd)  # the path may have been swapped since the stat above
        if not stat.S_ISREG(now.st_mode):
            raise _not_regular(shown, now.st_mode)
        chunks, size = [], 0
        while size <= max_bytes:  # a file that grows is read one byte past the limit, no further
            chunk = os.read(fd, max_bytes + 1 - size)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    except OSError as e:
        raise _cannot_read(shown, e) from None
    finally:
        os.close(fd)
    _check_size(shown, size, max_bytes)
    data = b"".join(chunks)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError("file", f"{shown} is not UTF-8 text (byte {e.start})") from None


def _cannot_read(shown: str, e: Exception) -> ConfigError:
    if isinstance(e, FileNotFoundError):
        return ConfigError("file", f"no config file at {shown}")
    if isinstance(e, ValueError):  # os.stat refuses a NUL byte in the name
        return ConfigError("file", f"{shown} is not a file name (it holds a NUL byte)")
    return ConfigError("file", f"cannot read {shown}: {e.strerror or e}")


def _not_regular(shown: str, mode: int) -> ConfigError:
    kinds = {stat.S_ISDIR: "a directory", stat.S_ISFIFO: "a FIFO (named pipe)", stat.S_ISCHR: "a character device",
             stat.S_ISBLK: "a block device", stat.S_ISSOCK: "a socket"}
    kind = next((k for test, k in kinds.items() if test(mode)), "not a regular file")
    return ConfigError("file", f"{shown} is {kind}; a sweep config is a regular YAML file")


def _check_size(shown: str, size: int, max_bytes: int) -> None:
    if size > max_bytes:
        raise ConfigError("file", f"{shown} is over the limit of {max_bytes:,} bytes for a config (a sweep "
                          "config is a few kB); pass --max-config-bytes N if you mean it")


def parse_yaml(text: str, where: str) -> Any:
    """The data of one YAML document, plain values only; ConfigError (one line) for bad YAML,
    a value YAML cannot convert, or a key given twice in one mapping."""
    try:
        loader = Loader(text)
        try:
            node = loader.get_single_node()
            if node is None:
                return None
            _refuse_duplicate_keys(loader, node, where)
            return loader.construct_document(node)
        finally:
            loader.dispose()
    except ConfigError:
        raise
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(e, "problem", None) or type(e).__name__
        raise ConfigError("file", f"{where} is not valid YAML{at}: {problem}") from None
    except RecursionError:
        raise ConfigError("file", f"{where} is nested too deeply") from None
    except (ValueError, TypeError, AttributeError, LookupError, ArithmeticError) as e:
        # PyYAML's constructors raise these for values like 2020-13-45, !!int abc, !!bool maybe,
        # !!timestamp x or an integer of over 4300 digits
        raise ConfigError("file", f"{where} has a value YAML cannot convert ({type(e).__name__}: "
                          f"{e}); quote it if it is text") from None


def _refuse_duplicate_keys(loader, root: yaml.Node, where: str) -> None:
    """Raise ConfigError if a mapping gives one scalar key twice (by value: ``1``, ``0x1`` and
    ``1.0`` are one key, as they would be in the loaded mapping). Merge keys (``<<``) are not
    compared: a key written next to a merge overrides it on purpose."""
    stack, seen_nodes = [(root, "(top level)")], set()
    while stack:
        node, path = stack.pop()
        if id(node) in seen_nodes:  # an alias: its node was checked where it was defined
            continue
        seen_nodes.add(id(node))
        if isinstance(node, yaml.SequenceNode):
            stack += [(child, path) for child in node.value]
        elif isinstance(node, yaml.MappingNode):
            lines: dict = {}
            for key_node, value_node in node.value:
                name = path
                if isinstance(key_node, yaml.ScalarNode) and key_node.tag != MERGE:
                    key = loader.construct_object(key_node)
                    text = key if isinstance(key, str) else key_node.value
                    name = text if path == "(top level)" else f"{path}.{text}"
                    mark = key_node.start_mark
                    try:
                        first = lines.get(key)
                        lines.setdefault(key, mark)
                    except TypeError:  # unhashable: the constructor refuses it with its own message
                        first = None
                    if first is not None:
                        raise ConfigError(name[:200], f"is given twice in {where}, {_places(first, mark)}; "
                                          "YAML would keep only the last one silently: delete one")
                stack += [(key_node, path), (value_node, name)]


def _places(first, second) -> str:
    if first.line == second.line:
        return f"on line {first.line + 1} (columns {first.column + 1} and {second.column + 1})"
    return f"at lines {first.line + 1} and {second.line + 1}"
