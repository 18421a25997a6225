"""Write notebooks/01_explore_images.ipynb (kept as code so that it stays reviewable and tested)."""

from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

CELLS = [
    new_markdown_cell(
        "# Exploring the image index\n\n"
        "Run `kedro run --pipelines ingestion` first. This notebook loads the project's Kedro "
        "catalog through Kedro's Jupyter integration and looks at what ingestion found: the "
        "image index, why files were quarantined, and a grid of thumbnails.\n\n"
        "The demo images are synthetic patterns; nothing here depicts a person."
    ),
    new_code_cell("%load_ext kedro.ipython\n# defines catalog, context, session, pipelines"),
    new_code_cell(
        'index = catalog.load("image_index")\n'
        'quarantine = catalog.load("ingestion_quarantine")\n'
        'print(f"{len(index)} images indexed, {len(quarantine)} files quarantined")\n'
        "index.head()"
    ),
    new_markdown_cell("## Formats, modes and sizes"),
    new_code_cell('index.groupby(["format", "mode"]).size().rename("images").to_frame()'),
    new_code_cell('index[["width", "height", "bytes"]].describe()'),
    new_markdown_cell("## Quarantine reasons\n\nEvery rejected file, with the reason and detail."),
    new_code_cell(
        'reasons = quarantine["reason"].value_counts()\n'
        'print(reasons.to_string() if len(reasons) else "nothing quarantined")\n'
        'quarantine[["uri", "reason", "detail"]].head(20)'
    ),
    new_markdown_cell("## Thumbnails"),
    new_code_cell(
        "import matplotlib.pyplot as plt\n"
        "from eyecatcher.images import decode_image\n"
        "from eyecatcher.storage import read_bytes\n\n"
        "sample = index.sample(min(24, len(index)), random_state=0)\n"
        "cols = 8\n"
        "rows = (len(sample) + cols - 1) // cols\n"
        "fig, axes = plt.subplots(rows, cols, figsize=(2 * cols, 2 * rows), squeeze=False)\n"
        "for ax in axes.flat:\n"
        '    ax.axis("off")\n'
        "for ax, (_, row) in zip(axes.flat, sample.iterrows()):\n"
        '    ax.imshow(decode_image(read_bytes(row["uri"])))\n'
        '    ax.set_title(f"{row.format} {row.width}x{row.height}", fontsize=8)\n'
        "fig.tight_layout()"
    ),
]


def main() -> None:
    """Write the notebook next to the project's other notebooks."""
    notebook = new_notebook(cells=CELLS)
    notebook.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    out = Path(__file__).resolve().parents[1] / "notebooks" / "01_explore_images.ipynb"
    nbformat.write(notebook, out)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
