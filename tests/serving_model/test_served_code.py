"""The served boundary: a registered model ships exactly the modules its code imports."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from eyecatcher.serving_model.packaging import SERVED_ENTRY, stage_code
from eyecatcher.serving_model.served_code import served_files, served_modules

PACKAGE_ROOT = Path(__file__).resolve().parents[2] / "src" / "eyecatcher"


def test_the_shipped_folder_holds_exactly_the_computed_set(tmp_path: Path) -> None:
    shipped = stage_code(tmp_path / "code")
    files = sorted(p.relative_to(shipped) for p in shipped.rglob("*") if p.is_file())
    assert files == served_files(SERVED_ENTRY, PACKAGE_ROOT)
    names = {str(f) for f in files}
    assert "serving_model/model_code.py" in names and "preprocessing.py" in names
    # Training-only code stays behind.
    for left_behind in (
        "models/head_training.py",
        "features/compute.py",
        "serving_model/packaging.py",
        "serving_model/served_code.py",
        "redaction.py",
    ):
        assert left_behind not in names


def test_relative_and_function_level_imports_are_followed(tmp_path: Path) -> None:
    package = tmp_path / "eyecatcher"
    (package / "sub").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "sub" / "__init__.py").write_text("")
    (package / "entry.py").write_text("def f():\n    from .sub import lazy\n")
    (package / "sub" / "lazy.py").write_text("from eyecatcher.sub.deeper import VALUE\n")
    (package / "sub" / "deeper.py").write_text("VALUE = 1\n")
    (package / "unused.py").write_text("")
    assert sorted(served_modules("eyecatcher.entry", package)) == [
        "eyecatcher",
        "eyecatcher.entry",
        "eyecatcher.sub",
        "eyecatcher.sub.deeper",
        "eyecatcher.sub.lazy",
    ]
    with pytest.raises(ValueError, match="not a module"):
        served_modules("eyecatcher.missing", package)


_IMPORT_SHIPPED = textwrap.dedent(
    """
    import importlib, json, sys
    shipped, repo_src = sys.argv[1], sys.argv[2]
    # The repository's own eyecatcher must be unreachable: its path entry and the editable
    # install's finder go, the shipped folder comes first.
    sys.path[:] = [shipped] + [p for p in sys.path if not p.startswith(repo_src)]
    sys.meta_path[:] = [f for f in sys.meta_path if "editable" not in type(f).__name__.lower()]
    names = json.loads(sys.stdin.read())
    for name in names:
        importlib.import_module(name)
    loaded = {n: m.__file__ for n, m in sys.modules.items() if n.split(".")[0] == "eyecatcher"}
    print(json.dumps({"loaded": loaded, "kedro": "kedro" in sys.modules}))
    """
)


def test_the_shipped_copy_imports_on_its_own_without_the_repository(tmp_path: Path) -> None:
    shipped = stage_code(tmp_path / "code")
    names = sorted(served_modules(SERVED_ENTRY, PACKAGE_ROOT))
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    result = subprocess.run(
        [sys.executable, "-c", _IMPORT_SHIPPED, str(shipped.parent), str(PACKAGE_ROOT.parent)],
        input=json.dumps(names),
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    answer = json.loads(result.stdout.strip().splitlines()[-1])
    assert set(names) <= set(answer["loaded"])
    outside = {n: f for n, f in answer["loaded"].items() if not f.startswith(str(shipped))}
    assert outside == {}
    assert not answer["kedro"], "the served code pulled in Kedro"
