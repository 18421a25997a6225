"""Keeping secrets out of MLflow, logs and reports.

Three pieces, one rule ("a value whose name looks like a key, secret, token or password is
never written anywhere"):

* :func:`is_secret_name` and :func:`redact` decide and apply it to nested parameters;
* :func:`redact_uri` strips ``user:password@`` (and secret query values) from URIs that go
  into reports and log lines;
* :class:`RedactionHook` runs before kedro-mlflow's hooks and hands them redacted copies of the
  node parameters and of the run's runtime parameters (``--params``), which kedro-mlflow would
  otherwise log as params and as the ``runtime_params`` tag; ``storage_options`` blocks are
  handed over as their key names only (:func:`record_safe`). Nodes still receive the real
  values; only what is recorded changes. When the tracking URI carries credentials it also
  stops MLflow printing that URI in its "View run" console lines.

The environment resolver allowed in configuration (:func:`deployment_env`) reads only a short
list of non-secret variables: see ``docs/configuration.md``.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping
from typing import Any

import mlflow
from kedro.framework.hooks import hook_impl

logger = logging.getLogger(__name__)

#: What a redacted value is replaced with.
REDACTED = "***REDACTED***"

# Words that make a name secret wherever they appear in it (`aws_secret_access_key`,
# `storage_options.secret`, `apiToken`, `db-password`); matched as whole words so that
# `tokenizer` or `max_tokens` stay visible.
_SECRET_WORDS = frozenset(
    {
        "key",
        "apikey",
        "secret",
        "token",
        "password",
        "passwd",
        "pwd",
        "passphrase",
        "credential",
        "credentials",
        "auth",
        "authorization",
        "signature",
        # Azure SAS URLs carry their signature as `sig=`.
        "sig",
        "cookie",
        "dsn",
        "cert",
        "certificate",
    }
)
# Names secret as a whole although no single word of them is (`connection_string`,
# `webhookUrl`, `private-key`): compared with the name lower-cased, separators removed.
_SECRET_PHRASES = ("connectionstring", "webhookurl", "privatekey")
_WORD_SPLIT = re.compile(r"[^A-Za-z0-9]+|(?<=[a-z0-9])(?=[A-Z])")
_USERINFO = re.compile(r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.-]*://)[^/\s@]*@")
_SECRET_QUERY = re.compile(r"(?P<name>[?&][^=&#\s]+)=(?P<value>[^&#\s]*)")


def is_secret_name(name: str) -> bool:
    """Whether a parameter, tag or variable name looks like it holds a secret.

    Args:
        name: A name, possibly dotted (``ingestion.storage_options.secret``) or camelCase.

    Returns:
        True when any word of the last segment names a key, secret, token, password or
        similar credential. Only the last segment counts: ``credentials.region`` is not one.
    """
    last = re.split(r"[.:/]", str(name))[-1]
    words = [word.lower() for word in _WORD_SPLIT.split(last) if word]
    joined = "".join(words)
    return bool(set(words) & _SECRET_WORDS) or any(p in joined for p in _SECRET_PHRASES)


def redact_uri(text: str) -> str:
    """Remove ``user:password@`` from every URI in ``text`` and hide secret query values.

    ``https://alice:s3cret@mlflow.example.com/x?token=abc&run=1`` becomes
    ``https://mlflow.example.com/x?token=***REDACTED***&run=1``.
    """
    if not isinstance(text, str) or "://" not in text:
        return text
    stripped = _USERINFO.sub(lambda m: m.group("scheme"), text)

    def query(match: re.Match[str]) -> str:
        name = match.group("name")
        if is_secret_name(name[1:]):
            return f"{name}={REDACTED}"
        return match.group(0)

    return _SECRET_QUERY.sub(query, stripped)


def redact(value: Any, name: str = "") -> Any:
    """A copy of ``value`` with secret-named entries replaced and URIs stripped of passwords.

    Args:
        value: A parameter value: mappings and lists are walked, strings cleaned.
        name: The value's own name (its whole value is redacted when the name is secret).

    Returns:
        The redacted copy; ``value`` itself is never modified.
    """
    if name and is_secret_name(name) and value not in (None, "", {}, []):
        return REDACTED
    if isinstance(value, Mapping):
        return {key: redact(item, str(key)) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(redact(item) for item in value)
    if isinstance(value, str):
        return redact_uri(value)
    return value


#: Blocks recorded by their key names only: their values may hold an endpoint with a token, a
#: SAS signature or a profile, under names no word list can foresee.
KEYS_ONLY = frozenset({"storage_options", "credentials", "client_kwargs"})


def keys_only(name: str) -> bool:
    """Whether a value named ``name`` (dotted: its last part counts) is recorded by key only."""
    return str(name).rsplit(".", 1)[-1] in KEYS_ONLY


def record_safe(value: Any, name: str = "") -> Any:
    """What may be recorded of ``value``: :func:`redact`, with ``storage_options`` (and other
    :data:`KEYS_ONLY` blocks) reduced to their sorted key names.

    Args:
        value: A mapping, list or scalar (nested freely).
        name: The value's own name, if it has one.

    Returns:
        The copy; ``value`` itself is never changed.
    """
    if keys_only(name) and isinstance(value, Mapping):
        return sorted(str(key) for key in value)
    if name and is_secret_name(name):
        return redact(value, name)
    if isinstance(value, Mapping):
        return {key: record_safe(item, str(key)) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(record_safe(item) for item in value)
    return redact(value, name)


def _secret_paths(value: Any, prefix: str = "") -> list[str]:
    if isinstance(value, Mapping):
        paths = []
        for key, item in value.items():
            path = f"{prefix}.{key}" if prefix else str(key)
            if is_secret_name(str(key)) and item not in (None, "", {}, []):
                paths.append(path)
            else:
                paths.extend(_secret_paths(item, path))
        return paths
    return []


def _quiet_run_links() -> None:
    """Stop MLflow printing run links that carry the tracking URI's credentials.

    When a run ends against an http(s) tracking server, MLflow writes "View run ... at:
    <tracking URI>/#/..." to stdout itself, ``user:password@`` and query included, and the
    console is often a CI log. When the URI holds a secret, those lines are switched off
    (``MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT``, unless the user set it) and the redacted URI is
    logged once instead.
    """
    uris = {mlflow.get_tracking_uri(), mlflow.get_registry_uri()}
    secret = sorted(redact_uri(uri) for uri in uris if uri and redact_uri(uri) != uri)
    if secret:
        os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
        logger.warning(
            "The MLflow URI %s carries credentials: MLflow's 'View run' links are not printed. "
            "Give them as MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD instead "
            "(see docs/configuration.md).",
            " and ".join(secret),
        )


class RedactionHook:
    """Hands kedro-mlflow redacted parameters; warns when a secret arrives as a parameter.

    Registered in ``settings.HOOKS`` and marked ``tryfirst``, so it runs before
    kedro-mlflow's ``before_pipeline_run`` (which sets every run parameter as a tag, including
    ``runtime_params``) and ``before_node_run`` (which logs each node's ``params:`` inputs).
    Kedro gives the hooks a copy of the node's inputs, so replacing values in it changes
    what is recorded, never what the node receives.
    """

    @hook_impl(tryfirst=True)
    def before_pipeline_run(self, run_params: dict[str, Any]) -> None:
        """Redact the runtime parameters (``--params``) before they become an MLflow tag, and
        keep MLflow from printing a tracking URI's credentials (:func:`_quiet_run_links`)."""
        _quiet_run_links()
        runtime = run_params.get("runtime_params")
        if runtime:
            for path in _secret_paths(runtime):
                logger.warning(
                    "Runtime parameter '%s' looks like a secret: it is used but never "
                    "recorded. Give credentials through conf/local/credentials.yml or the "
                    "AWS default chain, not parameters (see docs/configuration.md).",
                    path,
                )
            run_params["runtime_params"] = record_safe(runtime)

    @hook_impl(tryfirst=True)
    def before_node_run(self, inputs: dict[str, Any]) -> None:
        """Replace secret parameters in the (copied) node inputs that kedro-mlflow logs."""
        for name in list(inputs):
            if name.startswith("params:") or name == "parameters":
                inputs[name] = record_safe(inputs[name], name.removeprefix("params:"))


#: Non-secret deployment facts configuration may read from the environment.
DEPLOYMENT_VARIABLES = frozenset(
    {
        "MLFLOW_TRACKING_URI",
        "MLFLOW_REGISTRY_URI",
        "MLFLOW_S3_ENDPOINT_URL",
        "EYECATCHER_EXPERIMENT",
        "EYECATCHER_S3_PREFIX",
        "AWS_DEFAULT_REGION",
        "AWS_REGION",
        "AWS_ENDPOINT_URL",
        "REKOGNITION_ENDPOINT_URL",
    }
)


def deployment_env(name: str, default: Any = None) -> Any:
    """The ``eyecatcher.env`` resolver: one allow-listed, non-secret environment variable.

    Kedro allows ``oc.env`` only in credentials. Deployment facts that are not secret (the
    tracking URI, the S3 prefix, the region, an endpoint URL) still need to come from the
    environment, so this resolver reads exactly the names of :data:`DEPLOYMENT_VARIABLES`.

    Args:
        name: The variable.
        default: Returned when the variable is unset.

    Returns:
        The variable's value, or ``default``.

    Raises:
        ValueError: For a name that looks like a secret or is not on the allow-list.
    """
    if is_secret_name(name) or name not in DEPLOYMENT_VARIABLES:
        raise ValueError(
            f"${{eyecatcher.env:{name}}} is not allowed: configuration files other than "
            f"credentials may read only {sorted(DEPLOYMENT_VARIABLES)}. Secrets go in "
            f"conf/local/credentials.yml (oc.env works there) or the AWS default chain."
        )
    return os.environ.get(name, default)
