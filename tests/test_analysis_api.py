"""analysis.api: the flat, lazily imported namespace of public entry points."""

import subprocess
import sys

import pytest

from analysis import api


def test_every_public_name_resolves_to_a_callable():
    assert api.__all__ and len(set(api.__all__)) == len(api.__all__)
    for name in api.__all__:
        value = getattr(api, name)
        assert callable(value), name
        assert value.__name__ == name, name  # the real name, not an alias


def test_dir_lists_every_public_name():
    assert set(api.__all__) <= set(dir(api))


def test_an_unknown_name_raises_attribute_error():
    with pytest.raises(AttributeError, match="fit_form"):
        api.no_such_function  # noqa: B018
    assert not hasattr(api, "fit_formm")


def test_star_import_gives_the_public_names():
    namespace = {}
    exec("from analysis.api import *", namespace)  # noqa: S102
    assert set(api.__all__) <= set(namespace)


def test_importing_the_api_is_cheap_and_loads_no_torch_or_ray():
    code = ("import sys, analysis.api; "
            "heavy = [m for m in ('torch', 'ray', 'scipy', 'numpy', 'pyarrow', 'duckdb') "
            "if m in sys.modules]; "
            "sys.exit(f'imported {heavy}' if heavy else 0)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr + result.stdout


def test_using_every_name_loads_no_torch_or_ray():
    code = ("import sys, analysis.api as a; [getattr(a, n) for n in a.__all__]; "
            "bad = [m for m in ('torch', 'ray') if m in sys.modules]; "
            "sys.exit(f'imported {bad}' if bad else 0)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr + result.stdout
