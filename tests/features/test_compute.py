"""The feature recipe's engines: ``local`` here, others registered, none imported by features."""

from __future__ import annotations

import subprocess
import sys

import pytest

from eyecatcher.features.compute import ENGINE_GROUP, check_engine, feature_engines


def test_the_features_package_imports_nothing_of_what_distributes_it() -> None:
    # In a fresh interpreter: this test process may have imported distributed already.
    code = (
        "import sys, eyecatcher.features.compute, eyecatcher.features.cache, "
        "eyecatcher.features.views, eyecatcher.features.runtimes.onnx_graph, "
        "eyecatcher.features.runtimes.bf16\n"
        "print(sorted(m for m in sys.modules if m.startswith('eyecatcher.distributed')))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert out.stdout.strip() == "[]"


def test_local_comes_first_and_ray_is_a_registered_engine() -> None:
    engines = feature_engines()
    assert engines[0] == "local"
    # Declared in pyproject.toml; present whenever the project is installed.
    assert "ray" in engines


def test_an_unregistered_engine_is_refused_with_where_engines_come_from() -> None:
    with pytest.raises(ValueError, match=ENGINE_GROUP) as error:
        check_engine("dask")
    assert "'local'" in str(error.value) and "'dask'" in str(error.value)
