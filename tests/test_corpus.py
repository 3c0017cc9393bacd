"""The built-in text corpus (``task: {name: text, corpus: stdlib}``): the standard library's
sources, read once per process in a fixed order, its data version a hash of its bytes; and the
config errors around ``path`` and ``corpus``."""

from __future__ import annotations

import hashlib
import os

import pytest

import scaling.tasks.corpus as corpora
from scaling.config.sweep import parse_config
from scaling.errors import ConfigError
from scaling.tasks.files import text_split
from scaling.tasks.resolve import load_task, task_data_version, task_train_size, validate_task


def sweep(task: dict) -> dict:
    return {"name": "lm", "task": task, "model": {"name": "transformer", "width": 16, "depth": 1},
            "axes": {"n_train": 64, "batch_size": 8, "lr": 1.0e-3}, "budget": {"steps": 2}}


def refused(task: dict) -> ConfigError:
    with pytest.raises(ConfigError) as err:
        parse_config(sweep(task))
    assert "\n" not in str(err.value), str(err.value)
    return err.value


@pytest.fixture()
def fresh_cache():
    """Empty the per-process caches before and after a test that points the corpus elsewhere."""
    corpora._files.cache_clear()
    corpora._content.cache_clear()
    yield
    corpora._files.cache_clear()
    corpora._content.cache_clear()


def test_stdlib_corpus_is_read_once_in_sorted_order_and_versioned_by_its_hash():
    data = corpora.corpus_bytes("stdlib")
    assert corpora.corpus_bytes("stdlib") is data, "read once per process"
    files = corpora.corpus_files("stdlib")
    names = [name for name, _ in files]
    assert names == sorted(names) and len(names) > 100
    root = corpora.stdlib_root()
    again = b"".join(open(os.path.join(root, name), "rb").read() for name in names)
    assert data.tobytes() == again and len(data) == corpora.corpus_size("stdlib") > 1 << 20
    digest = hashlib.sha256(again).hexdigest()
    task = validate_task({"name": "text", "corpus": "stdlib"})
    assert task_data_version(task) == f"2-stdlib-{digest[:12]}" == load_task(task).data_version


def test_stdlib_corpus_leaves_out_tests_installed_packages_and_build_files():
    names = [name for name, _ in corpora.corpus_files("stdlib")]
    assert all(name.endswith(".py") for name in names)
    for name in names:
        folders = name.split("/")[:-1]
        assert not set(folders) & corpora.SKIP_DIRS and not any(f.startswith("config-") for f in folders), name
        assert not name.split("/")[-1].startswith("_sysconfigdata"), name
    assert {"os.py", "json/decoder.py", "unittest/case.py"} <= set(names)


def test_the_selection_rule_on_a_planted_tree(tmp_path):
    files = {"b.py": "b", "a.py": "a", "notes.txt": "x", "pkg/m.py": "m", "unittest/case.py": "c",
             "test/test_os.py": "t", "pkg/tests/t.py": "t", "lib2to3/tests/data/x.py": "t",
             "site-packages/numpy/x.py": "s", "idlelib/idle_test/x.py": "i", "idlelib/run.py": "i",
             "turtledemo/x.py": "d", "config-3.11-x86_64-linux-gnu/python-config.py": "c",
             "_sysconfigdata__linux.py": "s", "__pycache__/a.py": "p", ".hidden/x.py": "h"}
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    assert corpora.select_files(str(tmp_path)) == (("a.py", 1), ("b.py", 1), ("pkg/m.py", 1),
                                                    ("unittest/case.py", 1))


def test_another_python_gives_another_data_version(tmp_path, monkeypatch, fresh_cache):
    (tmp_path / "os.py").write_text("x = 1\n" * 4000)
    monkeypatch.setattr(corpora, "stdlib_root", lambda: str(tmp_path))
    task = validate_task({"name": "text", "corpus": "stdlib", "context": 8})
    first = task_data_version(task)
    corpora._files.cache_clear()
    corpora._content.cache_clear()
    assert task_data_version(task) == first, "the same files, the same version"
    (tmp_path / "os.py").write_text("x = 2\n" * 4000)
    corpora._files.cache_clear()
    corpora._content.cache_clear()
    assert task_data_version(task) != first


def test_pool_size_is_known_from_the_file_sizes_and_matches_the_loaded_pool():
    task = validate_task({"name": "text", "corpus": "stdlib", "context": 64, "n_test": 16})
    assert task == {"name": "text", "corpus": "stdlib", "context": 64, "test_fraction": 0.1, "n_test": 16}
    train, _ = text_split(corpora.corpus_size("stdlib"), 0.1)
    assert task_train_size(task) == (train - 1) // 64 == len(load_task(task).x_train) > 10_000
    data = load_task(task)
    assert data.kind == "tokens" and data.x_train.dtype.name == "int64" and len(data.x_test) == 16


def test_a_config_with_the_stdlib_corpus_validates():
    cfg = parse_config(sweep({"name": "text", "corpus": "stdlib", "context": 16}))
    trial = cfg.trials()[0]
    assert trial.task == {"name": "text", "corpus": "stdlib", "context": 16, "test_fraction": 0.1, "n_test": 0}
    assert cfg.engine == "packed"


def test_a_path_task_keeps_its_options_and_so_its_trial_ids(tmp_path):
    (tmp_path / "c.txt").write_bytes(bytes(range(256)) * 20)
    task = validate_task({"name": "text", "path": str(tmp_path / "c.txt"), "context": 8})
    assert task == {"name": "text", "path": str(tmp_path / "c.txt"), "context": 8, "test_fraction": 0.1,
                    "n_test": 0}, "no corpus key: the trial ids of earlier text sweeps stay"
    assert task_data_version(task) == load_task(task).data_version == "2"
    assert validate_task(task) == task, "validating twice changes nothing"


def test_path_and_corpus_errors_are_one_line(tmp_path):
    (tmp_path / "c.txt").write_bytes(bytes(range(256)) * 20)
    both = refused({"name": "text", "path": str(tmp_path / "c.txt"), "corpus": "stdlib"})
    assert both.key == "task" and "not both" in str(both)
    unknown = refused({"name": "text", "corpus": "books"})
    assert unknown.key == "task.corpus" and "unknown corpus 'books'" in str(unknown) and "['stdlib']" in str(unknown)
    neither = refused({"name": "text"})
    assert neither.key == "task.path" and "corpus: stdlib" in str(neither)
    missing = refused({"name": "text", "path": str(tmp_path / "nope.txt")})
    assert "does not exist" in str(missing) and "corpus: stdlib" in str(missing)
    wrong_type = refused({"name": "text", "corpus": 3})
    assert wrong_type.key == "task.corpus"


def test_the_compute_optimal_recipe_puts_each_diagonal_on_one_isoflop_line():
    import yaml

    from conftest import ROOT
    from scaling.training.flops import flops_per_example

    cfg = parse_config(yaml.safe_load((ROOT / "configs" / "lm_compute_optimal.yaml").read_text()))
    trials = cfg.trials()
    widths, sizes = sorted({t.width for t in trials}), sorted({t.n_train for t in trials})
    assert len(trials) == len(widths) * len(sizes) == 16 and cfg.engine == "packed"
    per_window = {w: flops_per_example(next(t for t in trials if t.width == w)) for w in widths}
    lines: dict[int, list[float]] = {}
    for t in trials:  # one pass: train_flops = flops per window x n_train
        lines.setdefault(widths.index(t.width) + sizes.index(t.n_train), []).append(per_window[t.width] * t.n_train)
    full = [c for c in lines.values() if len(c) >= 3]
    assert len(full) == 3
    for c in full:  # compute-optimal groups rows within 5% (analysis.fit.compute_optimal.BUDGET_TOL)
        assert max(c) / min(c) < 1.03, c
    assert all(b / a > 1.9 for a, b in zip(sorted(map(min, full)), sorted(map(min, full))[1:]))
