"""The accuracy gate: may this candidate become a registered version and the champion?

Pure decisions on numbers (no MLflow here), so every rule is testable on its own and every
failure reads as a sentence ("accuracy 0.55 < 0.60").
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from eyecatcher.outcomes import GateRefused


class GateFailedError(GateRefused):
    """The gate refused the candidate and the configuration asks the run to fail (CI)."""


@dataclass(frozen=True)
class GateSettings:
    """The gate's configuration (``registration.gate`` parameters); defaults live here.

    Attributes:
        min_test_accuracy: Absolute bar on the served model's test accuracy (above 1: refuse
            every candidate, e.g. to exercise the CI path).
        min_unsafe_recall: Smallest share of unsafe test images sent to review or block at the
            calibrated operating threshold.
        fpr_tolerance: Test FPR may exceed the calibration's target FPR by at most this much
            (the test split is small; the threshold was set on validation).
        max_regression_vs_champion: Each promotion raises the registry's accuracy floor to the
            new champion's accuracy minus this; the floor never moves down.
        significance: One-sided level of the exact McNemar test: a candidate significantly
            worse than the champion on the same unseen test images is refused.
        on_class_change: When the candidate's classes differ from the champion's: ``refuse``
            or ``require_approval`` (register only with ``approve_class_change: true``).
        approve_class_change: The explicit approval for a class change (recorded as a tag).
        on_unscorable_champion: ``fail`` (refuse the candidate) or ``skip`` (register without
            the comparison, said in the console and MLflow) when the champion cannot be
            compared on the current test split.
        reset_floor: ``false``; ``true``: ignore the registry's accuracy floor for this run
            only (said loudly; the stored floor is left as it is, so the next run is held to
            it again); ``"permanent"``: also replace the stored floor by the one this
            promotion sets from ``min_test_accuracy`` (recorded in the floor's source tag).
        fail_run_on_failure: Make a refused candidate fail the ``kedro run`` (non-zero exit).
    """

    min_test_accuracy: float = 0.6
    min_unsafe_recall: float = 0.0
    fpr_tolerance: float = 0.02
    max_regression_vs_champion: float = 0.02
    significance: float = 0.05
    on_class_change: str = "refuse"
    approve_class_change: bool = False
    on_unscorable_champion: str = "fail"
    reset_floor: bool | str = False
    fail_run_on_failure: bool = False

    def __post_init__(self) -> None:
        """Reject settings that cannot mean anything."""
        if not self.min_test_accuracy >= 0.0:
            raise ValueError(f"min_test_accuracy must be >= 0, got {self.min_test_accuracy}")
        for name in ("min_unsafe_recall", "fpr_tolerance", "max_regression_vs_champion"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(
                    f"{name} must be in [0, 1] (a fraction), got {getattr(self, name)}"
                )
        if not 0.0 < self.significance < 0.5:
            raise ValueError(f"significance must be in (0, 0.5), got {self.significance}")
        if self.on_unscorable_champion not in {"fail", "skip"}:
            raise ValueError(
                f"on_unscorable_champion must be 'fail' or 'skip', got "
                f"{self.on_unscorable_champion!r}"
            )
        if self.reset_floor not in {False, True, "permanent"}:
            raise ValueError(
                f"reset_floor must be false, true (this run only) or 'permanent', got "
                f"{self.reset_floor!r}"
            )
        if self.on_class_change not in {"refuse", "require_approval"}:
            raise ValueError(
                f"on_class_change must be 'refuse' or 'require_approval', got "
                f"{self.on_class_change!r}"
            )


@dataclass(frozen=True)
class Served:
    """The served model's test numbers at its calibrated operating threshold.

    Attributes:
        accuracy: Test accuracy, with ``accuracy_ci`` its 95% interval.
        recall: Unsafe recall at the operating threshold, with ``recall_ci``.
        fpr: False-positive rate on safe images at the threshold, with ``fpr_ci``.
        target_fpr: The FPR the threshold was calibrated for (on validation).
        precision: ``fp32`` or ``int8``.
    """

    accuracy: float
    recall: float
    fpr: float
    target_fpr: float
    precision: str
    accuracy_ci: tuple[float, float] = (math.nan, math.nan)
    recall_ci: tuple[float, float] = (math.nan, math.nan)
    fpr_ci: tuple[float, float] = (math.nan, math.nan)


@dataclass(frozen=True)
class ChampionComparison:
    """The current champion against the candidate on the same test images.

    Attributes:
        version: The champion's registered version, or ``None`` when there is no champion.
        method: ``none`` (no champion), ``paired`` (both scored on the test images the
            champion never saw), ``unscorable`` or ``not_comparable`` (other classes).
        accuracy: The champion's accuracy on those images (``None`` if unknown).
        candidate_accuracy: The candidate's accuracy on the same images.
        n_images: Test images both were compared on; ``n_excluded``: test images left out
            because the champion trained or was calibrated on them (exact copies and
            near-duplicates), ``n_excluded_near_duplicates`` of them near-duplicates.
        candidate_only: Images the candidate got right and the champion wrong;
            ``champion_only`` the reverse (McNemar's discordant pairs).
        p_value: One-sided exact McNemar p-value of "the candidate is worse".
        detail: Why the champion could not be compared, when it could not.
        human_slice: The unseen test images labelled by a human verdict (chosen because a
            model got them wrong, so they are biased against the champion): reported on
            their own (``n_images``, ``champion_accuracy``, ``candidate_accuracy``), never
            part of the paired test.
        near_duplicate_check: How seen images were recognised (the champion's recorded
            training population and distance).
    """

    version: str | None
    method: str
    accuracy: float | None = None
    candidate_accuracy: float | None = None
    n_images: int = 0
    n_excluded: int = 0
    candidate_only: int = 0
    champion_only: int = 0
    p_value: float | None = None
    detail: str | None = None
    n_excluded_near_duplicates: int = 0
    human_slice: dict[str, Any] | None = None
    near_duplicate_check: str | None = None


def mcnemar_worse_p_value(candidate_only: int, champion_only: int) -> float:
    """One-sided exact McNemar p-value that the candidate is worse than the champion.

    Under "equally good", each discordant image is a fair coin; the p-value is the chance of
    at least ``champion_only`` champion wins among ``candidate_only + champion_only``.
    """
    n = candidate_only + champion_only
    if n == 0:
        return 1.0
    return float(sum(math.comb(n, k) for k in range(champion_only, n + 1)) / 2**n)


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


def _interval(ci: tuple[float, float]) -> str:
    return f"[{ci[0]:.2f}, {ci[1]:.2f}]" if all(math.isfinite(v) for v in ci) else ""


def decide(
    served: Served,
    settings: GateSettings,
    champion: ChampionComparison,
    floor: Floor | None = None,
) -> GateDecision:
    """Apply the gate to the served model's test numbers.

    Checks, each with a sentence: accuracy against the floor (the larger of
    ``min_test_accuracy`` and the registry's floor, which never moves down), unsafe recall and
    FPR at the calibrated threshold, the class set and a paired test against the champion.

    Args:
        served: The served model's test numbers at its calibrated threshold.
        settings: The gate's thresholds and policies.
        champion: The comparison with the current champion.
        floor: The registry's accuracy floor, if one was set by an earlier promotion.

    Returns:
        The decision, with a readable reason for every failed check.
    """
    decision = GateDecision(passed=True)
    passed: list[str] = []
    bar, bar_source = _accuracy_bar(decision, settings, floor)
    decision.checks = _checks_record(served, settings, champion, bar, bar_source)
    _check_accuracy(decision, passed, served, bar, bar_source)
    _check_unsafe_rates(decision, passed, served, settings)
    _compare(decision, passed, settings, champion)
    decision.passed = not decision.reasons
    decision.checks["passed_checks"] = passed
    return decision


def _accuracy_bar(
    decision: GateDecision, settings: GateSettings, floor: Floor | None
) -> tuple[float, str]:
    """The accuracy bar and where it comes from (a reset floor is warned about)."""
    bar, bar_source = settings.min_test_accuracy, "min_test_accuracy"
    if floor is not None and settings.reset_floor:
        decision.warnings.append(
            f"the registry's accuracy floor {floor.value:.4f} ({floor.source}) was IGNORED "
            + (
                "and is REPLACED if this candidate is promoted (gate.reset_floor: permanent)"
                if settings.reset_floor == "permanent"
                else "for this run only; it stays recorded (gate.reset_floor)"
            )
        )
    elif floor is not None and floor.value > bar:
        bar, bar_source = floor.value, f"the registry's floor, {floor.source}"
    return bar, bar_source


def _checks_record(
    served: Served,
    settings: GateSettings,
    champion: ChampionComparison,
    bar: float,
    bar_source: str,
) -> dict[str, Any]:
    """Every number the gate looked at, by name (the decision's ``checks``)."""
    return {
        "test_accuracy": served.accuracy,
        "test_accuracy_ci": list(served.accuracy_ci),
        "accuracy_floor": bar,
        "accuracy_floor_source": bar_source,
        "min_test_accuracy": settings.min_test_accuracy,
        "test_unsafe_recall": served.recall,
        "test_unsafe_recall_ci": list(served.recall_ci),
        "min_unsafe_recall": settings.min_unsafe_recall,
        "test_fpr": served.fpr,
        "test_fpr_ci": list(served.fpr_ci),
        "max_test_fpr": served.target_fpr + settings.fpr_tolerance,
        "precision": served.precision,
        "champion_version": champion.version,
        "champion_comparison": champion.method,
        "champion_accuracy": champion.accuracy,
        "candidate_accuracy_on_paired_images": champion.candidate_accuracy,
        "paired_images": champion.n_images,
        "paired_images_excluded_as_seen_by_champion": champion.n_excluded,
        "paired_images_excluded_as_near_duplicates": champion.n_excluded_near_duplicates,
        "near_duplicate_check": champion.near_duplicate_check,
        "human_labelled_slice": champion.human_slice,
        "candidate_only_correct": champion.candidate_only,
        "champion_only_correct": champion.champion_only,
        "mcnemar_p_value": champion.p_value,
        "significance": settings.significance,
    }


def _check_accuracy(
    decision: GateDecision, passed: list[str], served: Served, bar: float, bar_source: str
) -> None:
    if not math.isfinite(served.accuracy):
        decision.reasons.append(f"test accuracy is not a number ({served.accuracy})")
    elif served.accuracy < bar:
        shown, bound = _pair(served.accuracy, bar)
        decision.reasons.append(f"accuracy {shown} < {bound} ({bar_source})")
    else:
        passed.append(
            f"accuracy {served.accuracy:.2f} {_interval(served.accuracy_ci)} >= {bar:.2f}"
        )


def _check_unsafe_rates(
    decision: GateDecision, passed: list[str], served: Served, settings: GateSettings
) -> None:
    """Unsafe recall and FPR at the calibrated threshold."""
    if not served.recall >= settings.min_unsafe_recall:
        shown, bound = _pair(served.recall, settings.min_unsafe_recall)
        decision.reasons.append(
            f"unsafe recall at the operating threshold {shown} {_interval(served.recall_ci)} "
            f"< {bound}"
        )
    else:
        passed.append(f"unsafe recall {served.recall:.2f} >= {settings.min_unsafe_recall:.2f}")
    max_fpr = served.target_fpr + settings.fpr_tolerance
    if not served.fpr <= max_fpr + 1e-12:
        shown, bound = _pair(served.fpr, max_fpr)
        decision.reasons.append(
            f"test FPR {shown} {_interval(served.fpr_ci)} > {bound} (target "
            f"{served.target_fpr:g} + tolerance {settings.fpr_tolerance:g})"
        )
    else:
        passed.append(f"test FPR {served.fpr:.3f} <= {max_fpr:.3f}")


def _compare(
    decision: GateDecision, passed: list[str], settings: GateSettings, champion: ChampionComparison
) -> None:
    if champion.method == "none":
        passed.append("no champion to compare with")
    elif champion.method == "not_comparable":
        message = f"not comparable with champion v{champion.version}: {champion.detail}"
        if settings.on_class_change == "require_approval" and settings.approve_class_change:
            decision.warnings.append(f"{message}; registered on explicit approval")
        else:
            how = (
                "set registration.gate.approve_class_change: true to register it anyway"
                if settings.on_class_change == "require_approval"
                else "on_class_change is 'refuse'"
            )
            decision.reasons.append(f"{message} ({how})")
    elif champion.method == "unscorable":
        message = (
            f"champion v{champion.version} could not be compared on this test split "
            f"({champion.detail})"
        )
        if settings.on_unscorable_champion == "fail":
            decision.reasons.append(message)
        else:
            decision.warnings.append(f"{message}; comparison SKIPPED (on_unscorable_champion)")
    else:
        summary = (
            f"on {champion.n_images} test images champion v{champion.version} never saw, the "
            f"candidate got {champion.candidate_only} right that the champion got wrong and "
            f"{champion.champion_only} wrong that it got right (exact McNemar one-sided "
            f"p={champion.p_value:.3g})"
        )
        if champion.p_value is not None and champion.p_value < settings.significance:
            decision.reasons.append(
                f"significantly worse than the champion: {summary} < {settings.significance:g}"
            )
        else:
            passed.append(f"not significantly worse than the champion: {summary}")


@dataclass(frozen=True)
class Floor:
    """The registry's accuracy floor: raised by each promotion, never lowered.

    Attributes:
        value: The smallest test accuracy a candidate may have.
        source: Which promotion set it, for messages.
    """

    value: float
    source: str

    def raised_by(self, accuracy: float, margin: float, version: str) -> Floor:
        """The floor after ``version`` with ``accuracy`` becomes champion."""
        candidate = accuracy - margin
        if candidate <= self.value:
            return self
        return Floor(
            candidate, f"set when v{version} became champion ({accuracy:.4f} - {margin:g})"
        )


def floor_after_promotion(
    floor: Floor | None, settings: GateSettings, *, accuracy: float, version: str
) -> Floor:
    """The floor to record when ``version`` with test ``accuracy`` becomes champion.

    ``reset_floor: true`` lowers the bar for one run only: the stored floor is kept (raised
    if the new champion is good enough), so the next run is held to it again. Only
    ``reset_floor: "permanent"`` replaces it, starting again from ``min_test_accuracy``, and
    says so in the floor's source.

    Args:
        floor: The registry's floor before the promotion (``None``: none recorded).
        settings: The gate's settings (``min_test_accuracy``, ``max_regression_vs_champion``,
            ``reset_floor``).
        accuracy: The new champion's test accuracy.
        version: The new champion's version.

    Returns:
        The floor to store on the registered model.
    """
    margin = settings.max_regression_vs_champion
    start = Floor(settings.min_test_accuracy, "min_test_accuracy")
    if floor is None:
        return start.raised_by(accuracy, margin, version)
    if settings.reset_floor != "permanent":
        return floor.raised_by(accuracy, margin, version)
    note = (
        f"the floor {floor.value:.4f} ({floor.source}) was reset permanently when v{version} "
        "became champion (gate.reset_floor: permanent)"
    )
    base = Floor(settings.min_test_accuracy, f"min_test_accuracy; {note}")
    raised = base.raised_by(accuracy, margin, version)
    return raised if raised is base else Floor(raised.value, f"{raised.source}; {note}")
