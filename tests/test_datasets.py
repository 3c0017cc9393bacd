"""Standard datasets from local files: small generated IDX, CIFAR-10-binary and text files
load, and every bad file is refused with one line naming it, when the config is parsed."""

from __future__ import annotations

import gzip
import os
import struct
from pathlib import Path

import numpy as np
import pytest

from conftest import run_cli, write_config
from scaling.config.sweep import parse_config
from scaling.tasks.files import CIFAR_RECORD, CIFAR_TEST, CIFAR_TRAIN, val_split
from scaling.errors import ConfigError
from scaling.tasks.resolve import load_task, task_train_size, validate_task

N_TRAIN, N_TEST, SIDE = 40, 20, 8


def write_idx(path: Path, array: np.ndarray, gz: bool = False) -> Path:
    """An IDX file of unsigned bytes: magic 0x000008<ndim>, big-endian sizes, the data."""
    data = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    data += array.astype(np.uint8).tobytes()
    path = path.with_name(path.name + ".gz") if gz else path
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


def mnist_folder(folder: Path, gz: bool = False, seed: int = 0) -> dict[str, np.ndarray]:
    """Write the four MNIST-format files (SIDE x SIDE images whose brightness follows the label)."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {}
    for split, n in (("train", N_TRAIN), ("t10k", N_TEST)):
        y = rng.integers(0, 10, n)
        x = np.clip(rng.integers(0, 40, (n, SIDE, SIDE)) + 20 * y[:, None, None], 0, 255)
        write_idx(folder / f"{split}-images-idx3-ubyte", x, gz)
        write_idx(folder / f"{split}-labels-idx1-ubyte", y, gz)
        arrays[f"{split}_x"], arrays[f"{split}_y"] = x, y
    return arrays


def cifar_folder(folder: Path, n: int = 6, seed: int = 0) -> dict[str, np.ndarray]:
    """Write the six CIFAR-10 binary files, n records each: a label byte, then 3x32x32 pixels."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    records = {}
    for name in CIFAR_TRAIN + (CIFAR_TEST,):
        r = np.concatenate([rng.integers(0, 10, (n, 1)), rng.integers(0, 256, (n, 3072))], axis=1)
        (folder / name).write_bytes(r.astype(np.uint8).tobytes())
        records[name] = r
    return records


def text_file(path: Path, size: int = 2000) -> bytes:
    data = bytes((i * 7 + i // 13) % 256 for i in range(size))
    path.write_bytes(data)
    return data


def refused(task: dict) -> str:
    """The one-line message of the ConfigError a sweep with this task raises when parsed."""
    raw = {"name": "t", "task": task, "axes": {"n_train": 10, "batch_size": 4, "lr": 0.1}, "budget": {"steps": 1}}
    with pytest.raises(ConfigError) as err:
        parse_config(raw)
    message = str(err.value)
    assert "\n" not in message and message.startswith("config key 'task."), message
    return message


@pytest.mark.parametrize("name", ["mnist", "fashion_mnist"])
@pytest.mark.parametrize("gz", [False, True], ids=["plain", "gzip"])
def test_idx_files_load_plain_or_gzipped(tmp_path, name, gz):
    arrays = mnist_folder(tmp_path / "data", gz=gz)
    task = validate_task({"name": name, "data_dir": str(tmp_path / "data")})
    n_val = N_TRAIN // 10  # a tenth of the training files (at most 5,000) is the validation set
    pool, val = val_split(N_TRAIN, n_val)
    assert task["data_dir"] == str(tmp_path / "data") and task_train_size(task) == N_TRAIN - n_val
    data = load_task(task)
    assert data.x_train.shape == (N_TRAIN - n_val, SIDE * SIDE) and data.x_train.dtype == np.float32
    assert data.input_shape == (1, SIDE, SIDE) and data.input_dim == SIDE * SIDE and data.kind == "images"
    assert data.x_test.shape == (N_TEST, SIDE * SIDE) and data.n_classes == 10
    assert data.x_val.shape == (n_val, SIDE * SIDE) and data.data_version == "2"
    assert not set(pool) & set(val) and len(set(pool) | set(val)) == N_TRAIN, "disjoint, and nothing lost"
    np.testing.assert_array_equal(data.y_train, arrays["train_y"][pool])
    np.testing.assert_array_equal(data.y_val, arrays["train_y"][val])
    np.testing.assert_array_equal(data.y_test, arrays["t10k_y"])
    assert abs(data.x_train.mean()) < 1e-4 and abs(data.x_train.std() - 1) < 1e-2, "standardised on the pool"
    # the pixels keep their order: a linear map of the bytes, the same for train, validation and test
    train_bytes = arrays["train_x"][pool].ravel()
    slope, _ = np.polyfit(train_bytes, data.x_train.ravel(), 1)
    for mine, raw in ((data.x_test, arrays["t10k_x"]), (data.x_val, arrays["train_x"][val])):
        np.testing.assert_allclose(mine.ravel(), data.x_train.ravel()[0]
                                   + slope * (raw.ravel() - train_bytes[0]), atol=1e-4)


def test_cifar10_binary_files_load_from_the_folder_or_its_tarball_subfolder(tmp_path):
    records = cifar_folder(tmp_path / "flat")
    cifar_folder(tmp_path / "tar" / "cifar-10-batches-bin")
    for folder in ("flat", "tar"):
        task = validate_task({"name": "cifar10", "data_dir": str(tmp_path / folder)})
        assert task_train_size(task) == 5 * 6 - 3  # a tenth is kept for validation
    data = load_task(validate_task({"name": "cifar10", "data_dir": str(tmp_path / "flat"), "n_test": 4}))
    assert data.x_train.shape == (27, 3072) and data.input_shape == (3, 32, 32) and data.x_test.shape == (4, 3072)
    assert data.x_val.shape == (3, 3072)
    labels = np.concatenate([records[n][:, 0] for n in CIFAR_TRAIN])
    pool, val = val_split(30, 3)
    np.testing.assert_array_equal(data.y_train, labels[pool])
    np.testing.assert_array_equal(data.y_val, labels[val[:4]])
    np.testing.assert_array_equal(data.y_test, records[CIFAR_TEST][:4, 0])
    first = np.concatenate([records[n][:, 1:] for n in CIFAR_TRAIN])[pool[0]].reshape(3, 1024)
    for c in range(3):  # channel-major, each channel standardised on its own
        assert np.corrcoef(data.x_train[0].reshape(3, 1024)[c], first[c])[0, 1] > 0.9999
    for c in range(3):
        assert abs(data.x_train.reshape(27, 3, 1024)[:, c].mean()) < 1e-4


def test_relative_data_dir_is_taken_from_the_current_directory(tmp_path, monkeypatch):
    mnist_folder(tmp_path / "data" / "mnist")
    monkeypatch.chdir(tmp_path)
    task = validate_task({"name": "mnist", "data_dir": "data/mnist"})
    assert task["data_dir"] == str(tmp_path / "data" / "mnist")


def test_n_test_caps_the_test_set_and_is_checked(tmp_path):
    mnist_folder(tmp_path)
    assert len(load_task(validate_task({"name": "mnist", "data_dir": str(tmp_path), "n_test": 5})).y_test) == 5
    assert "more than the 20 test examples" in refused({"name": "mnist", "data_dir": str(tmp_path), "n_test": 21})


def _truncate(path: Path, keep: int) -> None:
    path.write_bytes(path.read_bytes()[:keep])


IDX_BREAKS = {
    "missing": (lambda d: (d / "train-labels-idx1-ubyte").unlink(), "train-labels-idx1-ubyte", "missing file"),
    "truncated": (lambda d: _truncate(d / "t10k-images-idx3-ubyte", 100), "t10k-images-idx3-ubyte", "truncated"),
    "truncated header": (lambda d: _truncate(d / "t10k-images-idx3-ubyte", 6), "t10k-images", "truncated"),
    "labels as images": (lambda d: (d / "train-images-idx3-ubyte").write_bytes(
        (d / "train-labels-idx1-ubyte").read_bytes()), "train-images-idx3-ubyte", "magic 0x00000801"),
    "not idx": (lambda d: (d / "train-images-idx3-ubyte").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(64)),
                "train-images-idx3-ubyte", "expected an IDX image file"),
    "counts differ": (lambda d: write_idx(d / "train-labels-idx1-ubyte", np.zeros(N_TRAIN - 1)),
                      "train-labels-idx1-ubyte", f"{N_TRAIN - 1} labels"),
    "label out of range": (lambda d: write_idx(d / "t10k-labels-idx1-ubyte", np.full(N_TEST, 12)),
                           "t10k-labels-idx1-ubyte", "label 12 at index 0"),
    "int32 data": (lambda d: (d / "t10k-labels-idx1-ubyte").write_bytes(
        struct.pack(">HBBI", 0, 0x0C, 1, N_TEST) + bytes(4 * N_TEST)), "t10k-labels", "unsigned bytes"),
}


@pytest.mark.parametrize("case", sorted(IDX_BREAKS))
def test_bad_idx_files_are_refused_in_one_line_naming_the_file(tmp_path, case):
    mnist_folder(tmp_path)
    breaks, file, expected = IDX_BREAKS[case]
    breaks(tmp_path)
    message = refused({"name": "mnist", "data_dir": str(tmp_path)})
    assert file in message and expected in message, message


GZ_BREAKS = {
    "truncated": (lambda p: _truncate(p, len(p.read_bytes()) // 2), "truncated or corrupt"),
    "not gzip": (lambda p: p.write_bytes(b"plain bytes, not gzip" * 10), "cannot read"),
}


@pytest.mark.parametrize("case", sorted(GZ_BREAKS))
def test_bad_gzip_files_are_refused_in_one_line(tmp_path, case):
    mnist_folder(tmp_path, gz=True)
    breaks, expected = GZ_BREAKS[case]
    breaks(tmp_path / "train-images-idx3-ubyte.gz")
    message = refused({"name": "fashion_mnist", "data_dir": str(tmp_path)})
    assert "train-images-idx3-ubyte.gz" in message and expected in message, message


def test_gzip_corruption_past_the_header_is_caught_at_load(tmp_path):
    mnist_folder(tmp_path, gz=True, seed=1)
    path = tmp_path / "train-images-idx3-ubyte.gz"
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0xFF  # header and trailer intact, the deflate stream or its CRC broken
    path.write_bytes(bytes(raw))
    task = validate_task({"name": "mnist", "data_dir": str(tmp_path)})  # headers and sizes look fine
    with pytest.raises(ConfigError, match="train-images-idx3-ubyte.gz") as err:
        load_task(task)
    assert "\n" not in str(err.value)


def test_missing_data_dir_is_refused(tmp_path):
    assert "missing" in refused({"name": "mnist"})
    message = refused({"name": "cifar10", "data_dir": str(tmp_path / "nowhere")})
    assert "no folder" in message and "nowhere" in message


CIFAR_BREAKS = {
    "missing": (lambda d: (d / CIFAR_TEST).unlink(), CIFAR_TEST, "missing file"),
    "truncated": (lambda d: _truncate(d / "data_batch_3.bin", 2 * CIFAR_RECORD + 17), "data_batch_3.bin",
                  "not a whole number of 3073-byte records"),
    "empty": (lambda d: _truncate(d / "data_batch_5.bin", 0), "data_batch_5.bin", "has 0 bytes"),
    "not cifar10": (lambda d: (d / "data_batch_2.bin").write_bytes(b"\x80" + bytes(CIFAR_RECORD - 1)),
                    "data_batch_2.bin", "not the CIFAR-10 binary version"),
    "python version": (lambda d: [os.rename(d / n, d / n[:-4]) for n in CIFAR_TRAIN], "data_batch_1.bin",
                       "pickled Python version"),
}


@pytest.mark.parametrize("case", sorted(CIFAR_BREAKS))
def test_bad_cifar_files_are_refused_in_one_line_naming_the_file(tmp_path, case):
    cifar_folder(tmp_path, n=3)
    breaks, file, expected = CIFAR_BREAKS[case]
    breaks(tmp_path)
    message = refused({"name": "cifar10", "data_dir": str(tmp_path)})
    assert file in message and expected in message, message


def test_cifar_label_bytes_are_checked_at_load(tmp_path):
    records = cifar_folder(tmp_path, n=3)
    bad = records["data_batch_4.bin"].copy()
    bad[1, 0] = 10  # neither the first nor the last record: only a full read sees it
    (tmp_path / "data_batch_4.bin").write_bytes(bad.astype(np.uint8).tobytes())
    task = validate_task({"name": "cifar10", "data_dir": str(tmp_path)})
    with pytest.raises(ConfigError, match=r"data_batch_4.bin.*label 10 at index 1"):
        load_task(task)


def test_text_file_becomes_next_byte_windows(tmp_path):
    data = np.frombuffer(text_file(tmp_path / "corpus.txt", 2000), dtype=np.uint8)
    task = validate_task({"name": "text", "path": str(tmp_path / "corpus.txt"), "context": 16})
    # the last 200 bytes are the test part, the 200 before them the validation part
    assert task["test_fraction"] == 0.1 and task_train_size(task) == (1600 - 1) // 16
    ds = load_task(task)
    assert ds.x_train.shape == ds.y_train.shape == (99, 16) and ds.x_train.dtype == np.int64
    np.testing.assert_array_equal(ds.x_val[0], data[1600:1616])
    np.testing.assert_array_equal(ds.x_test[0], data[1800:1816])
    assert ds.kind == "tokens" and ds.tokens_per_example == 16 and ds.n_classes == 256
    np.testing.assert_array_equal(ds.x_train[3], data[48:64])
    np.testing.assert_array_equal(ds.y_train[3], data[49:65])
    np.testing.assert_array_equal(ds.x_test[0], data[1800:1816])  # the last 10% of the file
    assert ds.x_test.shape == (12, 16)
    assert len(load_task({**task, "n_test": 5}).y_test) == 5
    assert "more than the 12 test examples" in refused({**task, "n_test": 13})


def test_bad_text_files_are_refused(tmp_path):
    assert "does not exist" in refused({"name": "text", "path": str(tmp_path / "none.txt")})
    assert "is not a file" in refused({"name": "text", "path": str(tmp_path)})
    text_file(tmp_path / "small.txt", 300)
    message = refused({"name": "text", "path": str(tmp_path / "small.txt"), "context": 64})
    assert "small.txt" in message and "has 300 bytes" in message and "at least 650 bytes" in message


def test_cli_refuses_a_bad_data_file_with_exit_2_before_any_work(tmp_path):
    mnist_folder(tmp_path / "data")
    _truncate(tmp_path / "data" / "train-images-idx3-ubyte", 1000)
    path = write_config(tmp_path, f"""
        name: bad-data
        task: {{name: mnist, data_dir: {tmp_path / 'data'}}}
        axes: {{n_train: 10, batch_size: 4, lr: 0.1}}
        budget: {{steps: 1}}
        """)
    proc = run_cli("sweep", str(path), "--results", str(tmp_path / "results"), timeout=120)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: config key 'task.data_dir'"), proc.stderr
    assert "train-images-idx3-ubyte" in lines[0] and "truncated" in lines[0]
    assert not (tmp_path / "results").exists()
