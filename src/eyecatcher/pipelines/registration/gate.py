"""The accuracy gate: may this candidate become a registered version and the champion?

Pure decisions on numbers (no MLflow here), so every rule is testable on its own and every
failure reads as a sentence ("accuracy 0.55 < 0.60").
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any


class GateFailedError(RuntimeError):
    """The gate refused the candidate and the configuration asks the run to fail (CI)."""


@dataclass(frozen=True)
class GateSettings:
    """The gate's configuration (``registration.gate`` parameters).

    Attributes:
        min_test_accuracy: Smallest acceptable test accuracy of the served model (above 1:
            refuse every candidate, e.g. to exercise the CI path).
        max_regression_vs_champion: Largest acceptable drop in test accuracy against the
            current champion on the same test split, as a fraction (0.02 = 2 points).
        on_unscorable_champion: ``fail`` (refuse the candidate) or ``skip`` (register without
            the comparison, said in the console and MLflow) when the champion cannot be
            compared on the current test split.
        fail_run_on_failure: Make a refused candidate fail the ``kedro run`` (non-zero exit).
    """

    min_test_accuracy: float
    max_regression_vs_champion: float
    on_unscorable_champion: str = "fail"
    fail_run_on_failure: bool = False

    def __post_init__(self) -> None:
        """Reject settings that cannot mean anything."""
        if not self.min_test_accuracy >= 0.0:
            raise ValueError(f"min_test_accuracy must be >= 0, got {self.min_test_accuracy}")
        if not 0.0 <= self.max_regression_vs_champion <= 1.0:
            raise ValueError(
                "max_regression_vs_champion must be in [0, 1] (a fraction of accuracy), got "
                f"{self.max_regression_vs_champion}"
            )
        if self.on_unscorable_champion not in {"fail", "skip"}:
            raise ValueError(
                f"on_unscorable_champion must be 'fail' or 'skip', got "
                f"{self.on_unscorable_champion!r}"
            )

    @classmethod
    def from_params(cls, gate: dict[str, Any]) -> GateSettings:
        """Build from the ``registration.gate`` parameter block."""
        return cls(
            min_test_accuracy=float(gate["min_test_accuracy"]),
            max_regression_vs_champion=float(gate["max_regression_vs_champion"]),
            on_unscorable_champion=str(gate.get("on_unscorable_champion", "fail")),
            fail_run_on_failure=bool(gate.get("fail_run_on_failure", False)),
        )


@dataclass(frozen=True)
class ChampionComparison:
    """What is known about the current champion on the candidate's test split.

    Attributes:
        version: The champion's registered version, or ``None`` when there is no champion.
        accuracy: Its test accuracy on the candidate's test split (``None`` if unknown).
        method: ``recorded`` (same test-split hash: its gate accuracy was reused),
            ``rescored`` (the champion was run on this test split), ``none`` (no champion) or
            ``unscorable``.
        detail: Why the champion could not be scored, when it could not.
    """

    version: str | None
    accuracy: float | None
    method: str
    detail: str | None = None


@dataclass
class GateDecision:
    """The gate's verdict with every check and its reason.

    Attributes:
        passed: Whether the candidate may be registered.
        reasons: One sentence per failed check (empty when passed).
        warnings: Things that changed what the gate means (e.g. a skipped comparison).
        checks: Every number the gate looked at.
    """

    passed: bool
    reasons: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    checks: dict[str, Any] = field(default_factory=dict)

    @property
    def summary(self) -> str:
        """One line for the console and the MLflow tag."""
        if self.passed:
            return "passed: " + "; ".join(self.checks.get("passed_checks", []))
        return "failed: " + "; ".join(self.reasons)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form."""
        return {**asdict(self), "summary": self.summary}


def _pair(value: float, bound: float) -> tuple[str, str]:
    """Format two numbers with 2 decimals, or more when 2 would print them equal.

    "accuracy 0.60 < 0.60" (0.5972 against 0.6) would read as a bug; more digits say why.
    """
    for decimals in (2, 4, 6):
        left, right = f"{value:.{decimals}f}", f"{bound:.{decimals}f}"
        if left != right:
            return left, right
    return repr(float(value)), repr(float(bound))


def decide(accuracy: float, settings: GateSettings, champion: ChampionComparison) -> GateDecision:
    """Apply the gate to a candidate's test accuracy.

    Args:
        accuracy: Test accuracy of the model that would be served (int8 when int8 is served).
        settings: The gate's thresholds.
        champion: The current champion's accuracy on the same test split, if any.

    Returns:
        The decision, with a readable reason for every failed check.
    """
    decision = GateDecision(passed=True)
    passed_checks: list[str] = []
    decision.checks = {
        "test_accuracy": accuracy,
        "min_test_accuracy": settings.min_test_accuracy,
        "max_regression_vs_champion": settings.max_regression_vs_champion,
        "champion_version": champion.version,
        "champion_accuracy": champion.accuracy,
        "champion_comparison": champion.method,
    }
    if accuracy is None or not math.isfinite(accuracy):
        decision.reasons.append(f"test accuracy is not a number ({accuracy})")
    elif accuracy < settings.min_test_accuracy:
        shown, bound = _pair(accuracy, settings.min_test_accuracy)
        decision.reasons.append(f"accuracy {shown} < {bound}")
    else:
        passed_checks.append(f"accuracy {accuracy:.2f} >= {settings.min_test_accuracy:.2f}")

    if champion.method == "unscorable":
        message = (
            f"champion v{champion.version} could not be compared on this test split "
            f"({champion.detail})"
        )
        if settings.on_unscorable_champion == "fail":
            decision.reasons.append(message)
        else:
            decision.warnings.append(f"{message}; comparison SKIPPED (on_unscorable_champion)")
    elif champion.accuracy is not None and accuracy is not None and math.isfinite(accuracy):
        floor = champion.accuracy - settings.max_regression_vs_champion
        # A tiny epsilon so that "exactly the allowed margin" passes despite float rounding.
        if accuracy < floor - 1e-12:
            shown, champion_shown = _pair(accuracy, champion.accuracy)
            gap, margin = _pair(
                champion.accuracy - accuracy, settings.max_regression_vs_champion
            )
            decision.reasons.append(
                f"accuracy {shown} is {gap} below champion "
                f"v{champion.version} ({champion_shown}, {champion.method}) on the same "
                f"test split; the allowed margin is {margin}"
            )
        else:
            passed_checks.append(
                f"accuracy {accuracy:.2f} >= champion v{champion.version} "
                f"{champion.accuracy:.2f} - {settings.max_regression_vs_champion:.2f}"
            )
    else:
        passed_checks.append("no champion to compare with")
    decision.passed = not decision.reasons
    decision.checks["passed_checks"] = passed_checks
    return decision
