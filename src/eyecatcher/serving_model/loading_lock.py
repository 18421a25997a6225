"""One lock around every in-process build of the served model from its code file.

The served model is logged as code (``model_code.py``). To build it, MLflow executes that file
and then reads the model back from one module-level global that ``mlflow.models.set_model``
wrote. Two threads doing this at once (two registrations in one process, say) can each read
the *other's* object: both then share one model, and the second ``load_context`` overwrites
the first's artefacts and config, so version 2 answers as version 3. ``log_model`` builds the
model the same way to check the input example. Holding this lock around both makes each build
read back its own object; loads are rare and short next to scoring, so nothing waits for long.
"""

from __future__ import annotations

import threading

#: Held while MLflow executes ``model_code.py`` and reads back the model it set.
MODEL_CODE_LOCK = threading.RLock()
