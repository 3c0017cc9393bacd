"""Standard datasets read from local files, as numpy arrays (no torch, no pickle).

- MNIST and Fashion-MNIST from their IDX files (LeCun et al. 1998; Xiao et al.
  2017), plain or gzipped: ``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``,
  ``t10k-images-idx3-ubyte``, ``t10k-labels-idx1-ubyte`` (each optionally ``.gz``).
- CIFAR-10 from its *binary* version (``cifar-10-binary.tar.gz``, extracted):
  ``data_batch_1.bin`` ... ``data_batch_5.bin`` and ``test_batch.bin``, each a run of
  3073-byte records (1 label byte, then 3x32x32 pixel bytes, channel-major). The
  pickled "python version" is refused: data files are never unpickled.
- Any file of bytes, or a built-in corpus (:mod:`scaling.tasks.corpus`), for the byte-level
  language model.

Each format has a ``check_*`` function that the config parser calls: it reads
only headers, sizes and the small label files, and raises a one-line
:class:`~scaling.errors.ConfigError` naming the file and what was expected. The
``load_*`` functions read everything and check the rest (gzip integrity, label
ranges). Images are scaled to [0, 1] and standardised with the training pool's
statistics, and stored flattened (n, C*H*W) float32 with their shape beside them,
so an MLP reads them as vectors and a CNN reshapes them.

Validation sets are carved out of the training files before anything else, with a
fixed seed (``VAL_SPLIT_SEED``), so they are disjoint from every trial's training
subset and the pool's subsets stay nested: images keep ``min(5000, n // 10)`` of
the training images for validation (5,000 for MNIST, Fashion-MNIST and CIFAR-10);
text keeps as many bytes before the test part as the test part has.
"""

from __future__ import annotations

import gzip
import os
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

import scaling.tasks.corpus as corpora
from scaling.errors import ConfigError

IDX_FILES = {"train_images": "train-images-idx3-ubyte", "train_labels": "train-labels-idx1-ubyte",
             "test_images": "t10k-images-idx3-ubyte", "test_labels": "t10k-labels-idx1-ubyte"}
CIFAR_TRAIN = tuple(f"data_batch_{i}.bin" for i in range(1, 6))
CIFAR_TEST = "test_batch.bin"
CIFAR_RECORD = 1 + 3 * 32 * 32
CIFAR_SUBDIR = "cifar-10-batches-bin"  # where the official tarball extracts to
VAL_SPLIT_SEED = 20261201
MAX_VAL_IMAGES = 5000


def image_val_size(n_train_files: int) -> int:
    """Validation images carved from ``n_train_files`` training images."""
    return min(MAX_VAL_IMAGES, n_train_files // 10)


def val_split(n: int, n_val: int) -> tuple[np.ndarray, np.ndarray]:
    """(pool indices in file order, validation indices): a fixed random n_val of range(n)."""
    val = np.sort(np.random.default_rng(VAL_SPLIT_SEED).permutation(n)[:n_val])
    keep = np.ones(n, dtype=bool)
    keep[val] = False
    return np.flatnonzero(keep), val


def resolve_path(key: str, value: str) -> str:
    """An absolute path: ``~`` expanded, a relative path taken from the current directory."""
    if not value:
        raise ConfigError(key, "missing; give a path (relative paths are taken from the current directory)")
    return os.path.abspath(os.path.expanduser(value))


# ---- IDX (MNIST, Fashion-MNIST) -----------------------------------------------------

@dataclass(frozen=True)
class IdxHeader:
    path: str
    dims: tuple[int, ...]
    offset: int
    """Bytes before the data: 4 (magic) + 4 per dimension."""


def _idx_path(key: str, folder: str, base: str) -> str:
    for name in (base, base + ".gz"):
        path = os.path.join(folder, name)
        if os.path.isfile(path):
            return path
    if not os.path.isdir(folder):
        raise ConfigError(key, f"no folder at {folder!r}; expected a folder with the IDX files {base}[.gz], ...")
    raise ConfigError(key, f"missing file {os.path.join(folder, base)!r} (or {base}.gz): expected the IDX file "
                      "as distributed with MNIST / Fashion-MNIST")


def _open(path: str):
    return gzip.open(path, "rb") if path.endswith(".gz") else open(path, "rb")


def read_idx_header(key: str, path: str, ndim: int, what: str) -> IdxHeader:
    """Parse and size-check an IDX header: magic 0x0000 08 <ndim>, then ndim big-endian sizes."""
    want = f"an IDX {what} file (magic 0x000008{ndim:02x}: unsigned bytes, {ndim} dimension(s))"
    try:
        with _open(path) as f:
            head = f.read(4)
            if len(head) < 4:
                raise ConfigError(key, f"{path!r} is truncated ({len(head)} bytes); expected {want}")
            zero, dtype, nd = struct.unpack(">HBB", head)
            if zero != 0 or dtype != 0x08 or nd != ndim:
                raise ConfigError(key, f"{path!r} has magic 0x{head.hex()}; expected {want}")
            raw = f.read(4 * ndim)
    except (OSError, EOFError, zlib.error) as e:  # gzip.BadGzipFile is an OSError
        raise ConfigError(key, f"cannot read {path!r} ({e}); expected {want}") from None
    if len(raw) < 4 * ndim:
        raise ConfigError(key, f"{path!r} is truncated inside its header; expected {want}")
    dims = struct.unpack(f">{ndim}I", raw)
    if 0 in dims:
        raise ConfigError(key, f"{path!r} has an empty dimension {dims}; expected {want}")
    header = IdxHeader(path, dims, 4 + 4 * ndim)
    need = header.offset + int(np.prod(dims))
    if path.endswith(".gz"):
        with open(path, "rb") as f:  # the gzip trailer holds the uncompressed size mod 2**32
            f.seek(max(0, os.path.getsize(path) - 4))
            isize = int.from_bytes(f.read(4), "little")
        if isize != need % 2**32:
            raise ConfigError(key, f"{path!r} is truncated or corrupt: its gzip trailer gives {isize} bytes "
                              f"uncompressed, but the IDX header {dims} needs {need}")
    elif os.path.getsize(path) != need:
        size = os.path.getsize(path)
        raise ConfigError(key, f"{path!r} has {size} bytes, but its IDX header {dims} needs {need}"
                          f"{' (truncated)' if size < need else ''}")
    return header


def _read_idx_data(key: str, header: IdxHeader) -> np.ndarray:
    try:
        with _open(header.path) as f:
            raw = f.read()
    except (OSError, EOFError, zlib.error) as e:
        raise ConfigError(key, f"cannot read {header.path!r}: {e}") from None
    need = header.offset + int(np.prod(header.dims))
    if len(raw) != need:
        raise ConfigError(key, f"{header.path!r} holds {len(raw)} bytes, its IDX header needs {need}")
    return np.frombuffer(raw, dtype=np.uint8, offset=header.offset).reshape(header.dims)


def _check_labels(key: str, path: str, labels: np.ndarray, n_classes: int) -> None:
    if len(labels) and int(labels.max()) >= n_classes:
        i = int(np.argmax(labels >= n_classes))
        raise ConfigError(key, f"{path!r} has label {int(labels[i])} at index {i}; expected 0-{n_classes - 1}")


def check_idx(key: str, folder: str) -> dict[str, IdxHeader]:
    """Check the four IDX files of an MNIST-format folder (headers, sizes, labels)."""
    headers = {}
    for part, base in IDX_FILES.items():
        what = "image" if part.endswith("images") else "label"
        headers[part] = read_idx_header(key, _idx_path(key, folder, base), 3 if what == "image" else 1,
                                        what)
    for split in ("train", "test"):
        images, labels = headers[f"{split}_images"], headers[f"{split}_labels"]
        if images.dims[0] != labels.dims[0]:
            raise ConfigError(key, f"{images.path!r} has {images.dims[0]} images but {labels.path!r} has "
                              f"{labels.dims[0]} labels; expected the same number")
        _check_labels(key, labels.path, _read_idx_data(key, labels), 10)
    if headers["train_images"].dims[1:] != headers["test_images"].dims[1:]:
        raise ConfigError(key, f"train images are {headers['train_images'].dims[1:]} pixels but test images "
                          f"are {headers['test_images'].dims[1:]}; expected one image size")
    return headers


def load_idx(key: str, folder: str) -> dict[str, np.ndarray]:
    """The four arrays of an MNIST-format folder, as uint8."""
    headers = check_idx(key, folder)
    return {part: _read_idx_data(key, h) for part, h in headers.items()}


# ---- CIFAR-10 binary -------------------------------------------------------------------

def _cifar_folder(key: str, folder: str) -> str:
    if os.path.isfile(os.path.join(folder, CIFAR_TEST)):
        return folder
    nested = os.path.join(folder, CIFAR_SUBDIR)
    if os.path.isfile(os.path.join(nested, CIFAR_TEST)):
        return nested
    return folder


def _cifar_file(key: str, folder: str, name: str) -> tuple[str, int]:
    path = os.path.join(folder, name)
    if not os.path.isfile(path):
        if not os.path.isdir(folder):
            raise ConfigError(key, f"no folder at {folder!r}; expected the CIFAR-10 binary files "
                              f"{', '.join(CIFAR_TRAIN)} and {CIFAR_TEST}")
        hint = ""
        if os.path.isfile(os.path.join(folder, name[:-4])):
            hint = "; this folder holds the pickled Python version, which is not read: use cifar-10-binary.tar.gz"
        raise ConfigError(key, f"missing file {path!r}: expected CIFAR-10 in its binary version{hint}")
    size = os.path.getsize(path)
    if size == 0 or size % CIFAR_RECORD:
        raise ConfigError(key, f"{path!r} has {size} bytes, not a whole number of {CIFAR_RECORD}-byte "
                          "records (1 label + 3x32x32 pixels): truncated, or not the CIFAR-10 binary version")
    with open(path, "rb") as f:  # the label bytes of the first and last record
        first = f.read(1)[0]
        f.seek(size - CIFAR_RECORD)
        last = f.read(1)[0]
    if max(first, last) > 9:
        raise ConfigError(key, f"{path!r} has label byte {max(first, last)} (expected 0-9): not the "
                          "CIFAR-10 binary version (CIFAR-100 and the pickled version are not read)")
    return path, size // CIFAR_RECORD


def check_cifar10(key: str, folder: str) -> tuple[list[tuple[str, int]], tuple[str, int]]:
    """Check the six CIFAR-10 binary files; ([(path, records)] of train, (path, records) of test)."""
    folder = _cifar_folder(key, folder)
    return [_cifar_file(key, folder, n) for n in CIFAR_TRAIN], _cifar_file(key, folder, CIFAR_TEST)


def _read_cifar(key: str, path: str, n: int) -> tuple[np.ndarray, np.ndarray]:
    raw = np.fromfile(path, dtype=np.uint8)
    if raw.size != n * CIFAR_RECORD:
        raise ConfigError(key, f"{path!r} changed size while it was read")
    records = raw.reshape(n, CIFAR_RECORD)
    labels = records[:, 0]
    _check_labels(key, path, labels, 10)
    return records[:, 1:], labels


def load_cifar10(key: str, folder: str) -> dict[str, np.ndarray]:
    """Pixels (n, 3072, channel-major) and labels of CIFAR-10's train and test files, as uint8."""
    train, test = check_cifar10(key, folder)
    parts = [_read_cifar(key, p, n) for p, n in train]
    x_test, y_test = _read_cifar(key, *test)
    return {"train_images": np.concatenate([x for x, _ in parts]),
            "train_labels": np.concatenate([y for _, y in parts]),
            "test_images": x_test, "test_labels": y_test}


def standardise(train: np.ndarray, others: list[np.ndarray], channels: int) -> list[np.ndarray]:
    """uint8 images (n, C*H*W) -> float32, scaled to [0, 1] and standardised per channel
    with the training pool's mean and standard deviation (from byte counts, so no copy);
    returns the pool and then ``others`` (validation, test) transformed alike."""
    levels = np.arange(256) / 255.0
    stats = []
    for block in np.split(train, channels, axis=1):
        counts = np.bincount(block.ravel(), minlength=256)
        mean = float(counts @ levels) / counts.sum()
        std = float(np.sqrt(counts @ (levels - mean) ** 2 / counts.sum()))
        stats.append((mean, std + 1e-3))
    out = []
    for x in (train, *others):
        x = x.reshape(len(x), channels, -1).astype(np.float32) / 255.0
        for c, (mean, std) in enumerate(stats):
            x[:, c] = (x[:, c] - mean) / std
        out.append(x.reshape(len(x), -1))
    return out


# ---- text (bytes) ------------------------------------------------------------------------

def text_split(size: int, test_fraction: float) -> tuple[int, int]:
    """(train bytes, test bytes): the test part is the file's last ``test_fraction``, and the
    validation part as many bytes just before it (so the training part is what is left)."""
    test = int(size * test_fraction)
    return size - 2 * test, test


def check_text(key: str, path: str, context: int, test_fraction: float) -> int:
    """Size-check a text file for windows of ``context`` bytes; returns its size in bytes."""
    if not os.path.isfile(path):
        where = "is not a file" if os.path.exists(path) else "does not exist"
        raise ConfigError(key, f"{path!r} {where}; expected a text file (read as bytes), or leave path out "
                          "and give corpus: stdlib (a built-in text, no download)")
    return check_text_size(key, repr(path), os.path.getsize(path), context, test_fraction)


def check_text_size(key: str, what: str, size: int, context: int, test_fraction: float) -> int:
    """Check that ``size`` bytes (of ``what``, for messages) hold windows of ``context`` bytes in
    the train, validation and test parts; returns ``size``."""
    train, test = text_split(size, test_fraction)
    if min(train, test) < context + 1:
        need = int(np.ceil((context + 1) / min(test_fraction, 1 - 2 * test_fraction))) if test_fraction < 0.5 else 0
        hint = f"expected at least {need} bytes, or a smaller context" if need else "use a test_fraction below 0.5"
        raise ConfigError(key, f"{what} has {size} bytes, too few for windows of context {context} in the "
                          f"train part and in the validation and test parts ({test_fraction:g} of the file "
                          f"each); {hint}")
    return size


def windows(data: np.ndarray, context: int) -> tuple[np.ndarray, np.ndarray]:
    """Non-overlapping windows: x = bytes [i*c, i*c+c), y = the next byte of each, as int64."""
    n = (len(data) - 1) // context
    x = data[: n * context].reshape(n, context)
    y = data[1: n * context + 1].reshape(n, context)
    return x.astype(np.int64), y.astype(np.int64)


def read_bytes(key: str, path: str) -> np.ndarray:
    try:
        return np.frombuffer(Path(path).read_bytes(), dtype=np.uint8)
    except OSError as e:
        raise ConfigError(key, f"cannot read {path!r}: {e.strerror}") from None


# ---- the tasks' options: checked when the config is parsed, loaded in the workers -------------

def prepare_idx(options: dict) -> dict:
    """Resolve and check ``data_dir`` of an MNIST-format task (headers, sizes, labels)."""
    folder = resolve_path("task.data_dir", options["data_dir"])
    _check_n_test(options, check_idx("task.data_dir", folder)["test_images"].dims[0])
    return {**options, "data_dir": folder}


def prepare_cifar(options: dict) -> dict:
    """Resolve and check ``data_dir`` of the CIFAR-10 task (sizes, first and last labels)."""
    folder = resolve_path("task.data_dir", options["data_dir"])
    _, (_, n_test) = check_cifar10("task.data_dir", folder)
    _check_n_test(options, n_test)
    return {**options, "data_dir": folder}


def prepare_text(options: dict) -> dict:
    """Check the text task's source, exactly one of ``path`` (resolved and size-checked) or
    ``corpus`` (a built-in one, :mod:`scaling.tasks.corpus`). The one not given is left out of
    the result, so a ``path`` task's options, and its trial ids, are those of earlier releases."""
    corpus = options.get("corpus", "")
    rest = {k: v for k, v in options.items() if k not in ("path", "corpus")}
    if corpus and options["path"]:
        raise ConfigError("task", f"give path (a text file) or corpus (built in), not both; got path "
                          f"{options['path']!r} and corpus {corpus!r}")
    if corpus:
        size = check_text_size("task.corpus", f"corpus {corpus!r}", corpora.corpus_size(corpus),
                               options["context"], options["test_fraction"])
        out = {**rest, "corpus": corpus}
    else:
        if not options["path"]:
            raise ConfigError("task.path", "missing; give path: FILE (a text file, read as bytes; relative paths "
                              "are taken from the current directory) or corpus: stdlib (built in, no download)")
        path = resolve_path("task.path", options["path"])
        size = check_text("task.path", path, options["context"], options["test_fraction"])
        out = {**rest, "path": path}
    _check_n_test(options, (text_split(size, options["test_fraction"])[1] - 1) // options["context"])
    return out


def text_size(options: dict) -> int:
    """Bytes of a prepared text task's source, from ``stat`` alone."""
    if options.get("corpus"):
        return corpora.corpus_size(options["corpus"])
    return os.path.getsize(options["path"])


def text_version(options: dict) -> str:
    """The data version of a prepared text task: "2" for a file, the corpus's own (with its hash)."""
    return corpora.corpus_version(options["corpus"]) if options.get("corpus") else corpora.TEXT_SPLIT_VERSION


def _check_n_test(options: dict, available: int) -> None:
    if options["n_test"] > available:
        raise ConfigError("task.n_test", f"value {options['n_test']} is more than the {available} test "
                          "examples in the files; expected 0 (all of them) or fewer")


def idx_train_size(options: dict) -> int:
    n = read_idx_header("task.data_dir", _idx_path("task.data_dir", options["data_dir"],
                                                   IDX_FILES["train_images"]), 3, "image").dims[0]
    return n - image_val_size(n)


def cifar_train_size(options: dict) -> int:
    n = sum(n for _, n in check_cifar10("task.data_dir", options["data_dir"])[0])
    return n - image_val_size(n)


def text_train_size(options: dict) -> int:
    train, _ = text_split(text_size(options), options["test_fraction"])
    return (train - 1) // options["context"]


def load_images(name: str, options: dict) -> dict:
    """The fields of a ``scaling.tasks.Dataset`` for an image task ('mnist', 'fashion_mnist', 'cifar10')."""
    if name == "cifar10":
        raw, shape = load_cifar10("task.data_dir", options["data_dir"]), (3, 32, 32)
    else:
        raw = load_idx("task.data_dir", options["data_dir"])
        shape = (1, *raw["train_images"].shape[1:])
    n_test = options["n_test"] or len(raw["test_labels"])
    images = raw["train_images"].reshape(len(raw["train_labels"]), -1)
    labels = raw["train_labels"].astype(np.int64)
    pool, val = val_split(len(labels), image_val_size(len(labels)))
    val = val[: options["n_test"] or len(val)]
    x_train, x_val, x_test = standardise(images[pool], [images[val], raw["test_images"][:n_test].reshape(n_test, -1)],
                                         shape[0])
    return {"x_train": x_train, "y_train": labels[pool], "x_val": x_val if len(val) else None,
            "y_val": labels[val] if len(val) else None, "x_test": x_test,
            "y_test": raw["test_labels"][:n_test].astype(np.int64), "n_classes": 10, "input_shape": shape,
            "data_version": "2"}


def load_text(options: dict) -> dict:
    """The fields of a ``scaling.tasks.Dataset`` for next-byte prediction on a file (vocabulary 256)."""
    if options.get("corpus"):
        data = corpora.corpus_bytes(options["corpus"])
    else:
        data = read_bytes("task.path", options["path"])
    cut, test = text_split(len(data), options["test_fraction"])
    context = options["context"]
    x_train, y_train = windows(data[:cut], context)
    x_val, y_val = windows(data[cut:cut + test], context)
    x_test, y_test = windows(data[cut + test:], context)
    if options["n_test"]:
        k = options["n_test"]
        x_val, y_val, x_test, y_test = x_val[:k], y_val[:k], x_test[:k], y_test[:k]
    return {"x_train": x_train, "y_train": y_train, "x_val": x_val, "y_val": y_val, "x_test": x_test,
            "y_test": y_test, "n_classes": 256, "input_shape": (context,), "tokens_per_example": context,
            "data_version": text_version(options)}
