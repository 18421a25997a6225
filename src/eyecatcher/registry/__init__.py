"""Everything the project does with the MLflow Model Registry, in one package.

* :mod:`~eyecatcher.registry.client`: the ``MlflowClient``, always on explicit tracking and
  registry URIs (made absolute), never on whatever the process happens to point at later;
* :mod:`~eyecatcher.registry.resolve`: which registered version an alias or a number names,
  pinned as ``models:/<name>/<version>`` (the read side serving, batch scoring and the
  retrain check use);
* :mod:`~eyecatcher.registry.versions`: the write side registration uses (versions, tags,
  aliases, the accuracy floor, seen-image lists, promotion);
* :mod:`~eyecatcher.registry.lock`: the promotion lock (atomic takeover of an abandoned lock,
  staleness judged without comparing clocks across machines);
* :mod:`~eyecatcher.registry.cards`: publishing a model card on a version.

Pipelines import this package; it imports no pipeline.
"""
