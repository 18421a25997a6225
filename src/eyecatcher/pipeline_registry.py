"""Project pipelines."""

from kedro.framework.project import find_pipelines
from kedro.pipeline import Pipeline

# The default `kedro run` is the training path end to end. Serving starts a server, batch
# scoring needs a folder to score, the retrain check exits 4 when retraining is due and
# the review queue needs batch scoring's verdicts, so they run only when asked for by name.
_NOT_IN_DEFAULT = {"serving", "batch_scoring", "retrain_check", "review_queue"}


def register_pipelines() -> dict[str, Pipeline]:
    """Register the project's pipelines.

    Returns:
        A mapping from pipeline names to ``Pipeline`` objects.
    """
    pipelines = find_pipelines(raise_errors=True)
    pipelines["__default__"] = sum(
        (p for name, p in pipelines.items() if name not in _NOT_IN_DEFAULT), Pipeline([])
    )
    return pipelines
