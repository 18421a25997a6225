"""The quantization decision rule: which precision a candidate serves, and why.

Pure functions over measurements: int8 only if its accuracy drop against fp32 is within the
configured points, the fastest passing int8 method otherwise fp32; failures are named in the
reason. :mod:`.nodes` measures, this module decides, :mod:`.report` writes it down.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

#: Accuracy drops are compared after rounding to this many decimals (in points), so that one
#: image out of 20 (exactly 5 points) is not "5.000000000000004 > 5".
POINTS_DECIMALS = 6


def drop_points(fp32_accuracy: float, int8_accuracy: float) -> float:
    """The accuracy drop in points, rounded to :data:`POINTS_DECIMALS` decimals."""
    return round((fp32_accuracy - int8_accuracy) * 100.0, POINTS_DECIMALS)


def decide_precision(
    fp32: Mapping[str, Any],
    int8: Mapping[str, Mapping[str, Any]],
    max_drop_points: float,
    failures: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """The decision rule: int8 only if its accuracy drop is at most ``max_drop_points``.

    Among the int8 models that pass, the one with the lowest batch-1 p50 latency is chosen.
    The drop is ``(fp32 accuracy - int8 accuracy) * 100``, in points, rounded to 6 decimals.

    Args:
        fp32: The fp32 measurements (needs ``accuracy``).
        int8: ``{method: measurements}`` of each int8 model that was built and measured
            (each needs ``accuracy`` and ``latency_ms_p50``).
        max_drop_points: The largest acceptable accuracy drop, in points.
        failures: ``{method or stage: error}`` of attempts that produced no int8 model.

    Returns:
        ``precision`` (``int8`` or ``fp32``), ``int8_method`` (the chosen or best int8 method,
        or ``None``), ``accuracy_drop_points`` of that method, and a human-readable ``reason``
        such as ``"int8 (static) dropped 7.2 points > 5"``.
    """
    failures = dict(failures or {})
    if not int8:
        detail = "; ".join(f"{k}: {v}" for k, v in failures.items()) or "no int8 method ran"
        return {
            "precision": "fp32",
            "int8_method": None,
            "accuracy_drop_points": None,
            "reason": f"no int8 model available ({detail})",
        }
    drops = {method: drop_points(fp32["accuracy"], m["accuracy"]) for method, m in int8.items()}
    passing = [method for method, drop in drops.items() if drop <= max_drop_points]
    threshold = f"{max_drop_points:g}"
    if passing:
        method = min(passing, key=lambda k: int8[k]["latency_ms_p50"])
        drop = drops[method]
        ratio = (
            int8[method]["latency_ms_p50"] / fp32["latency_ms_p50"]
            if fp32.get("latency_ms_p50")
            else math.nan
        )
        return {
            "precision": "int8",
            "int8_method": method,
            "accuracy_drop_points": drop,
            "reason": (
                f"int8 ({method}) dropped {drop:.1f} points <= {threshold}; "
                f"p50 latency {ratio:.2f}x fp32"
            ),
        }
    method = min(drops, key=drops.get)
    shown = f"{drops[method]:.1f}"
    if float(shown) <= max_drop_points:
        # 5.04 points shown as "5.0 points > 5" would read as a bug: show what was compared.
        shown = f"{drops[method]:g}"
    return {
        "precision": "fp32",
        "int8_method": method,
        "accuracy_drop_points": drops[method],
        "reason": f"int8 ({method}) dropped {shown} points > {threshold}",
    }


def attempt_failures(attempt: Mapping[str, Any]) -> dict[str, str]:
    """``{stage or method: error}`` of a build attempt (:func:`.nodes.build_onnx_models`)."""
    failures: dict[str, str] = {}
    if attempt.get("failure"):
        failures[attempt["failure"]["stage"]] = attempt["failure"]["error"]
    for method, outcome in attempt.get("methods", {}).items():
        if outcome.get("failure"):
            failures[method] = outcome["failure"]["error"]
    return failures
