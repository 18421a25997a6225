"""Everything about serving the registered model, shared by the serving and batch-scoring
pipelines (which import this package and never each other) and by registration's staging test.

* :mod:`~eyecatcher.serving.process`: starting, waiting on and stopping ``mlflow models serve``;
* :mod:`~eyecatcher.serving.client`: request bodies, ``/invocations`` calls, answer rows;
* :mod:`~eyecatcher.serving.registry`: which registered version an alias names, and its limits;
* :mod:`~eyecatcher.serving.probes`: malformed and hostile requests a server must survive.

The served pyfunc itself (:mod:`eyecatcher.serving_model`) stays a separate, self-contained
package: it is copied into every registered model version as code.
"""
