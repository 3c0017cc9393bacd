"""A storage outage for tests: ``SCALING_FS_WRAPPER=faulty_fs:wrap`` (with tests/ on PYTHONPATH).

Every filesystem the product opens, in the driver and in every Ray worker, is wrapped so
that a change (creating a folder, opening a file for writing, moving, deleting) fails with
EACCES while the outage file named by ``SCALING_TEST_OUTAGE`` holds a window
``START END`` (Unix seconds) around the current time, as an unwritable results folder
would; reads keep working. Outside the window the wrapper only delegates.
"""

from __future__ import annotations

import errno
import os
import time

import pyarrow.fs as pafs


def wrap(fs: pafs.FileSystem) -> pafs.FileSystem:
    return pafs.PyFileSystem(Outage(fs, os.environ.get("SCALING_TEST_OUTAGE", "")))


def set_outage(path, seconds: float, start: float | None = None) -> None:
    start = time.time() if start is None else start
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        f.write(f"{start} {start + seconds}")
    os.replace(tmp, path)


class Outage(pafs.FileSystemHandler):
    def __init__(self, fs, window_file: str):
        self.fs, self.window_file = fs, window_file

    def _change(self, path: str) -> None:
        try:
            with open(self.window_file) as f:
                start, end = (float(x) for x in f.read().split())
        except (OSError, ValueError):
            return
        if start <= time.time() <= end:
            with open(f"{self.window_file}.hits", "a") as f:  # so a test can tell the outage was felt
                f.write(f"{os.getpid()} {path}\n")
            raise PermissionError(errno.EACCES, "Permission denied (an injected storage outage)", path)

    def get_type_name(self): return "outage"
    def equals(self, other): return self is other
    def normalize_path(self, path): return self.fs.normalize_path(path)
    def get_file_info(self, paths): return self.fs.get_file_info(paths)
    def get_file_info_selector(self, sel): return self.fs.get_file_info(sel)
    def create_dir(self, path, recursive): self._change(path); self.fs.create_dir(path, recursive=recursive)
    def delete_dir(self, path): self._change(path); self.fs.delete_dir(path)
    def delete_dir_contents(self, path, missing_dir_ok=False):
        self._change(path); self.fs.delete_dir_contents(path, missing_dir_ok=missing_dir_ok)
    def delete_root_dir_contents(self): self._change("/"); self.fs.delete_root_dir_contents()
    def delete_file(self, path): self._change(path); self.fs.delete_file(path)
    def move(self, src, dest): self._change(dest); self.fs.move(src, dest)
    def copy_file(self, src, dest): self._change(dest); self.fs.copy_file(src, dest)
    def open_input_stream(self, path): return self.fs.open_input_stream(path)
    def open_input_file(self, path): return self.fs.open_input_file(path)
    def open_output_stream(self, path, metadata): self._change(path); return self.fs.open_output_stream(path)
    def open_append_stream(self, path, metadata): self._change(path); return self.fs.open_append_stream(path)
