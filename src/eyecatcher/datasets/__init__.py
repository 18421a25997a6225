"""The project's own Kedro datasets, one class per module, in the style of kedro-datasets.

A module is named after its class: ``<thing>_dataset.py`` holds ``<Thing>Dataset``, which a
catalog entry names in full (``type: eyecatcher.datasets.<thing>_dataset.<Thing>Dataset``).
Each class documents a catalog YAML example and implements ``load``, ``save`` (refused with a
:class:`~kedro.io.DatasetError` when the dataset is read-only), ``_describe`` and, where
existence means something, ``_exists``.

This package holds how things are stored, not what they mean: it imports the shared packages
(``storage``, ``models``, ``features``, ``rekognition``, ...) and is imported by the pipelines
and the catalog, never the other way round (``[tool.importlinter]`` in ``pyproject.toml``).
"""
