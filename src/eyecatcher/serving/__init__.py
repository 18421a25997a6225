"""Everything about serving the registered model, shared by the serving and batch-scoring
pipelines (which import this package and never each other) and by registration's staging test.
Which version an alias names is the registry's business (:mod:`eyecatcher.registry.resolve`).

* :mod:`~eyecatcher.serving.process`: starting, waiting on and stopping ``mlflow models serve``;
* :mod:`~eyecatcher.serving.client`: request bodies, ``/invocations`` calls, answer rows;
* :mod:`~eyecatcher.serving.in_process`: the one in-process scorer of a registered version
  (and the limits it declares);
* :mod:`~eyecatcher.serving.probes`: malformed and hostile requests a server must survive.

The served pyfunc itself (:mod:`eyecatcher.serving_model`) stays a separate, self-contained
package: it is copied into every registered model version as code.
"""
