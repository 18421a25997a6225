"""The exploration notebook is valid and its cells run against a real catalog."""

from __future__ import annotations

from pathlib import Path

import matplotlib
import nbformat
import pytest

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "01_explore_images.ipynb"


@pytest.mark.slow
def test_notebook_cells_run_against_the_catalog(kedro_project: Path) -> None:
    from kedro.framework.session import KedroSession

    matplotlib.use("Agg")
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(notebook)
    with KedroSession.create(project_path=kedro_project, env="test") as session:
        session.run(pipeline_names=["ingestion"])
        namespace = {"catalog": session.load_context().catalog}
        for cell in notebook.cells:
            # IPython magics (the `%load_ext kedro.ipython` cell) are what Jupyter provides.
            if cell.cell_type == "code" and not cell.source.lstrip().startswith("%"):
                exec(compile(cell.source, f"<{NOTEBOOK.name}>", "exec"), namespace)
    assert len(namespace["index"]) == 40
