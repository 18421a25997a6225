"""Models-from-code entry point: MLflow executes this file to build the served model.

Logged as ``python_model`` by :func:`eyecatcher.serving_model.packaging.log_served_model`, so
the registry stores code and artefacts, never a pickled object.
"""

import mlflow

from eyecatcher.serving_model.model import ModerationModel

mlflow.models.set_model(ModerationModel())
