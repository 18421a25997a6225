"""The model-card pipeline's settings: the ``model_card`` block, typed (unknown keys refused).

Each default is the value ``conf/base/parameters_model_card.yml`` sets
(``tests/test_parameters.py`` compares them).
"""

from __future__ import annotations

from eyecatcher.parameters import Settings


class ModelCardSettings(Settings):
    """The ``model_card`` block.

    Attributes:
        artifact_path: Folder of the card in the registered version's MLflow run.
        ui_url: Where reviewers open the MLflow UI; the version's description links there.
    """

    kind = "model_card"

    artifact_path: str = "model_card"
    ui_url: str = "http://127.0.0.1:5000"
