"""One guard around every in-process build of the served model from its code file.

The served model is logged as code (``model_code.py``). To build it, MLflow executes that file
and then reads the model back from one module-level global that ``mlflow.models.set_model``
wrote. Two threads doing this at once (two registrations in one process, say) can each read
the *other's* object: both then share one model, and the second ``load_context`` overwrites
the first's artefacts and config, so version 2 answers as version 3. ``log_model`` builds the
model the same way to check the input example. Holding one lock around both makes each build
read back its own object; loads are rare and short next to scoring, so nothing waits for long.

Each build also puts the model's ``code_paths`` folder first on ``sys.path``. This process keeps
its own ``eyecatcher`` import, but a process it spawns later (multiprocessing, a Kedro runner's
workers) would import the shipped copy, which holds only the served modules, and fail with
``No module named 'eyecatcher.pipelines'``. The guard puts ``sys.path`` back as it was.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager

#: Held while MLflow executes ``model_code.py`` and reads back the model it set.
MODEL_CODE_LOCK = threading.RLock()


@contextmanager
def building_code_model() -> Iterator[None]:
    """Hold :data:`MODEL_CODE_LOCK`, and leave ``sys.path`` as it was found, around a build."""
    # Under the lock, so that two threads' save and restore of sys.path cannot interleave.
    with MODEL_CODE_LOCK:
        before = list(sys.path)
        try:
            yield
        finally:
            sys.path[:] = before
