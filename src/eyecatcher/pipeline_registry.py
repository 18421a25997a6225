"""Project pipelines."""

from kedro.framework.project import find_pipelines
from kedro.pipeline import Pipeline

from eyecatcher.pipelines.feedback import create_pipeline as create_feedback_pipeline

# The default `kedro run` is the training path end to end. Serving starts a server, batch
# scoring needs a folder to score, the retrain check exits 4 when retraining is due and
# the review queue needs batch scoring's verdicts, so they run only when asked for by name.
_NOT_IN_DEFAULT = {"serving", "batch_scoring", "retrain_check", "review_queue"}
# Feedback is validated in the same run as the pipelines that read its verdicts, so labels and
# the retrain decision never use stale human verdicts. The composition lives here, above the
# pipelines, because pipelines never import each other (pyproject.toml [tool.importlinter]).
_RUN_WITH_FEEDBACK = ("labelling", "retrain_check")


def register_pipelines() -> dict[str, Pipeline]:
    """Register the project's pipelines.

    Returns:
        A mapping from pipeline names to ``Pipeline`` objects.
    """
    pipelines = find_pipelines(raise_errors=True)
    # Kedro finds only the pipelines a run names (``--pipelines labelling``), so feedback's is
    # built here rather than looked up.
    for name in _RUN_WITH_FEEDBACK:
        if name in pipelines:
            pipelines[name] = create_feedback_pipeline() + pipelines[name]
    pipelines["__default__"] = sum(
        (p for name, p in pipelines.items() if name not in _NOT_IN_DEFAULT), Pipeline([])
    )
    return pipelines
