"""From Rekognition moderation labels to one training class per image, as configured in YAML.

A *scheme* (one per taxonomy version) lists the classes, each with a distinct ``severity`` and
the label names that indicate it, plus the labels that say "something here" without deciding a
class (``ambiguous``) and the ones deliberately ignored. Every other label is *out of scheme*
(Violence, Alcohol, ...). See ``docs/labelling.md`` and ``conf/base/parameters_labelling.yml``.

Two confidence thresholds split every label into *positive* (at or above ``positive``: it may
decide a class), *uncertain* (between ``safe_below`` and ``positive``) and *negligible* (under
``safe_below``). The rule for an image, in order:

1. A ``ContentTypes`` entry listed in ``exclude_content_types`` (matched case-insensitively, at
   or above its threshold) excludes the image. Version-6 answers have no ``ContentTypes``: their
   illustrated label (``Illustrated Explicit Nudity``) counts as the content type ``Illustrated``.
2. A positive out-of-scheme label whose policy is ``exclude`` excludes the image.
3. Among the classes that positive labels indicate, the most severe wins (severities are
   distinct, so confidence never decides). The image is excluded instead when an uncertain label
   indicates a more severe class (it may be worse than its class says), or when the class is
   explicit and the image is illustrated/animated and ``illustrated.policy`` is ``exclude``.
4. No class: a positive ambiguous label that no other label of the image explains as a child
   (a child explains its parent only at or above ``safe_below``) excludes the image (or makes
   it safe with ``ambiguous_policy: safe``, said in the reason); a positive out-of-scheme label
   with policy ``not_safe`` (Violence, ... by default) excludes it.
5. ``safe`` needs proof: any uncertain deciding label excludes the image, and so does an answer
   requested at a ``MinConfidence`` above ``safe_below`` (it cannot show the labels that would
   make the image uncertain).

A label whose name the scheme does not know inherits what its nearest known ancestor means (the
chain comes from the ``ParentName`` of the labels in the same answer), so a new sub-label AWS
adds under a mapped parent is not lost.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

#: ``ignore``: no effect; ``not_safe``: the image cannot be ``safe`` (but keeps a positive
#: class); ``exclude``: the image is dropped; ``own_class``: the label indicates ``class_name``.
OUT_OF_SCHEME_POLICIES = frozenset({"ignore", "not_safe", "exclude", "own_class"})
AMBIGUOUS_POLICIES = frozenset({"exclude", "safe"})
ILLUSTRATED_POLICIES = frozenset({"exclude", "as_labelled"})


class TaxonomyConfigError(ValueError):
    """The taxonomy configuration is inconsistent."""


class UnknownModelVersionError(ValueError):
    """A response came from a moderation model version no scheme is configured for."""


@dataclass(frozen=True)
class ClassRule:
    """One training class.

    Attributes:
        name: Class name used downstream.
        severity: Higher wins when an image indicates several classes; distinct within a scheme.
        labels: Rekognition label names (any level) that indicate the class.
    """

    name: str
    severity: int
    labels: frozenset[str]


@dataclass(frozen=True)
class Scheme:
    """How one taxonomy version's labels map to classes.

    Attributes:
        name: Scheme name (``v7``, ``v6``, ...).
        classes: The class rules.
        ambiguous: Labels that indicate moderation content but no single class.
        ignored: Known labels that never decide a class.
        ambiguous_policy: ``exclude`` or ``safe``.
    """

    name: str
    classes: tuple[ClassRule, ...]
    ambiguous: frozenset[str] = frozenset()
    ignored: frozenset[str] = frozenset()
    ambiguous_policy: str = "exclude"
    _by_label: dict[str, ClassRule] = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.ambiguous_policy not in AMBIGUOUS_POLICIES:
            raise TaxonomyConfigError(
                f"scheme {self.name}: ambiguous_policy must be one of {sorted(AMBIGUOUS_POLICIES)}"
            )
        by_severity: dict[int, str] = {}
        for rule in self.classes:
            if rule.severity in by_severity:
                # Equal severities would let confidence jitter decide between two classes.
                raise TaxonomyConfigError(
                    f"scheme {self.name}: classes {by_severity[rule.severity]} and {rule.name} "
                    f"share severity {rule.severity}; severities must be distinct"
                )
            by_severity[rule.severity] = rule.name
        seen: dict[str, str] = {}
        for rule in self.classes:
            for label in rule.labels:
                if label in seen:
                    raise TaxonomyConfigError(
                        f"scheme {self.name}: label {label!r} maps to both {seen[label]} and "
                        f"{rule.name}"
                    )
                seen[label] = rule.name
                self._by_label[label] = rule
        overlap = (set(seen) & self.ambiguous) | (set(seen) & self.ignored)
        overlap |= self.ambiguous & self.ignored
        if overlap:
            raise TaxonomyConfigError(
                f"scheme {self.name}: labels listed twice (class/ambiguous/ignored): "
                f"{sorted(overlap)}"
            )

    def resolve(self, chain: Sequence[str]) -> tuple[str, ClassRule | None]:
        """Say what one label means under this scheme.

        Args:
            chain: The label's name, then its ancestors' names, nearest first.

        Returns:
            ``("class", rule)``, ``("ambiguous", None)``, ``("ignored", None)`` or
            ``("out_of_scheme", None)``, from the first name in ``chain`` the scheme knows.
        """
        for candidate in chain:
            if not candidate:
                continue
            if candidate in self._by_label:
                return "class", self._by_label[candidate]
            if candidate in self.ambiguous:
                # A child of an ambiguous parent that we do not know is still ambiguous.
                return "ambiguous", None
            if candidate in self.ignored:
                return "ignored", None
        return "out_of_scheme", None

    @property
    def class_names(self) -> list[str]:
        """The scheme's class names, most severe first."""
        return [r.name for r in sorted(self.classes, key=lambda r: -r.severity)]

    @property
    def max_severity(self) -> int:
        """The severity of the scheme's most severe class."""
        return max((rule.severity for rule in self.classes), default=0)


@dataclass(frozen=True)
class Decision:
    """The class of one image and why.

    Attributes:
        label_class: The class, or ``None`` when the image is excluded.
        included: Whether the image may be used for training.
        reason: ``<code>: <detail>``; codes: ``labelled``, ``safe``, ``out_of_scheme_class``,
            ``ambiguous_as_safe``, ``excluded_content_type``, ``excluded_out_of_scheme``,
            ``excluded_not_safe``, ``excluded_ambiguous``, ``excluded_uncertain``,
            ``excluded_illustrated``, ``excluded_unproven_safe``.
        ignored_out_of_scheme: Names of out-of-scheme labels that were ignored.
    """

    label_class: str | None
    included: bool
    reason: str
    ignored_out_of_scheme: tuple[str, ...] = ()


def _fmt(label: dict[str, Any]) -> str:
    return f"{label.get('Name')} ({float(label.get('Confidence', 0.0)):.1f})"


def _confidence(item: dict[str, Any]) -> float:
    return float(item.get("Confidence", 0.0))


@dataclass(frozen=True)
class IllustratedPolicy:
    """How illustrated or animated explicit content is treated, identically in v6 and v7.

    Attributes:
        content_types: ``ContentTypes`` names that mark illustrated content (lower case).
        v6_labels: Version-6 labels that carry the same signal (``Illustrated Explicit Nudity``);
            they also count as the content type ``Illustrated``.
        min_confidence: Content types under this confidence are not considered.
        explicit_classes: Classes the policy applies to.
        policy: ``exclude`` (drop illustrated explicit images) or ``as_labelled``.
    """

    content_types: frozenset[str] = frozenset({"animated", "illustrated"})
    v6_labels: frozenset[str] = frozenset({"Illustrated Explicit Nudity"})
    min_confidence: float = 50.0
    explicit_classes: frozenset[str] = frozenset()
    policy: str = "exclude"

    def __post_init__(self) -> None:
        if self.policy not in ILLUSTRATED_POLICIES:
            raise TaxonomyConfigError(
                f"illustrated.policy {self.policy!r} is not one of {sorted(ILLUSTRATED_POLICIES)}"
            )

    @classmethod
    def from_params(cls, params: dict[str, Any] | None) -> IllustratedPolicy:
        """Build the policy from the ``taxonomy.illustrated`` block."""
        raw = dict(params or {})
        unknown = set(raw) - {
            "content_types",
            "v6_labels",
            "min_confidence",
            "explicit_classes",
            "policy",
        }
        if unknown:
            raise TaxonomyConfigError(f"taxonomy.illustrated: unknown keys {sorted(unknown)}")
        return cls(
            content_types=frozenset(
                str(n).lower() for n in raw.get("content_types", ["Animated", "Illustrated"])
            ),
            v6_labels=frozenset(raw.get("v6_labels", ["Illustrated Explicit Nudity"])),
            min_confidence=float(raw.get("min_confidence", 50.0)),
            explicit_classes=frozenset(raw.get("explicit_classes", [])),
            policy=str(raw.get("policy", "exclude")),
        )


@dataclass(frozen=True)
class _Evidence:
    """One label of an answer, resolved under a scheme."""

    label: dict[str, Any]
    kind: str  # class, ambiguous, ignored, or the out-of-scheme policy
    rule: ClassRule | None
    band: str  # positive, uncertain, negligible


@dataclass(frozen=True)
class TaxonomyMapping:
    """The whole mapping configuration (``labelling.taxonomy``).

    Attributes:
        schemes: Scheme per name.
        scheme_by_model_version: Major model version (``"7"``) to scheme name.
        safe_class: Class of an image with no deciding label.
        positive_min_confidence: A label at or above this may decide a class.
        safe_below: An image is safe only if every deciding label is under this.
        out_of_scheme_default: Policy for out-of-scheme labels.
        out_of_scheme_per_label: Policy per label name (or ancestor name).
        out_of_scheme_class: Class used by ``own_class``.
        out_of_scheme_severity: Its severity (distinct from every class it competes with).
        exclude_content_types: ``ContentTypes`` names (lower case) that exclude an image.
        content_type_min_confidence: Threshold for ``exclude_content_types``.
        illustrated: How illustrated explicit content is treated.
    """

    schemes: dict[str, Scheme]
    scheme_by_model_version: dict[str, str]
    safe_class: str = "safe"
    positive_min_confidence: float = 50.0
    safe_below: float = 20.0
    out_of_scheme_default: str = "not_safe"
    out_of_scheme_per_label: dict[str, str] = field(default_factory=dict)
    out_of_scheme_class: str = "other_moderated"
    out_of_scheme_severity: int = 0
    exclude_content_types: frozenset[str] = frozenset()
    content_type_min_confidence: float = 50.0
    illustrated: IllustratedPolicy = field(default_factory=IllustratedPolicy)

    def __post_init__(self) -> None:
        for policy in [self.out_of_scheme_default, *self.out_of_scheme_per_label.values()]:
            if policy not in OUT_OF_SCHEME_POLICIES:
                raise TaxonomyConfigError(
                    f"out_of_scheme policy {policy!r} is not one of "
                    f"{sorted(OUT_OF_SCHEME_POLICIES)}"
                )
        for version, scheme in self.scheme_by_model_version.items():
            if scheme not in self.schemes:
                raise TaxonomyConfigError(
                    f"model version {version} maps to unknown scheme {scheme!r}; "
                    f"known: {sorted(self.schemes)}"
                )
        if not 0.0 <= self.safe_below <= self.positive_min_confidence <= 100.0:
            raise TaxonomyConfigError(
                f"thresholds must satisfy 0 <= safe_below ({self.safe_below:g}) <= positive "
                f"({self.positive_min_confidence:g}) <= 100"
            )
        if self._uses_own_class():
            for name in set(self.scheme_by_model_version.values()):
                clash = [
                    r.name
                    for r in self.schemes[name].classes
                    if r.severity == self.out_of_scheme_severity
                ]
                if clash:
                    raise TaxonomyConfigError(
                        f"out_of_scheme.severity {self.out_of_scheme_severity} equals the "
                        f"severity of {clash[0]} in scheme {name}; severities must be distinct"
                    )

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> TaxonomyMapping:
        """Build the mapping from the ``labelling.taxonomy`` parameter block.

        Args:
            params: The parsed YAML block (see ``conf/base/parameters_labelling.yml``).

        Returns:
            The mapping.

        Raises:
            TaxonomyConfigError: When the configuration is inconsistent.
        """
        schemes = {}
        for name, raw in params["schemes"].items():
            classes = tuple(
                ClassRule(c["name"], int(c["severity"]), frozenset(c["labels"]))
                for c in raw["classes"]
            )
            schemes[name] = Scheme(
                name=name,
                classes=classes,
                ambiguous=frozenset(raw.get("ambiguous", [])),
                ignored=frozenset(raw.get("ignored", []) or []),
                ambiguous_policy=raw.get("ambiguous_policy", "exclude"),
            )
        out = params.get("out_of_scheme", {}) or {}
        thresholds = params.get("thresholds", {}) or {}
        unknown = set(thresholds) - {"positive", "safe_below"}
        if unknown:
            raise TaxonomyConfigError(f"taxonomy.thresholds: unknown keys {sorted(unknown)}")
        return cls(
            schemes=schemes,
            scheme_by_model_version={
                str(k): v for k, v in params["scheme_by_model_version"].items()
            },
            safe_class=params.get("safe_class", "safe"),
            positive_min_confidence=float(thresholds.get("positive", 50.0)),
            safe_below=float(thresholds.get("safe_below", 20.0)),
            out_of_scheme_default=out.get("default", "not_safe"),
            out_of_scheme_per_label=dict(out.get("per_label", {}) or {}),
            out_of_scheme_class=out.get("class_name", "other_moderated"),
            out_of_scheme_severity=int(out.get("severity", 0)),
            exclude_content_types=frozenset(
                str(n).lower() for n in params.get("exclude_content_types", []) or []
            ),
            content_type_min_confidence=float(params.get("content_type_min_confidence", 50.0)),
            illustrated=IllustratedPolicy.from_params(params.get("illustrated")),
        )

    def scheme_for(self, model_version: str | None) -> Scheme:
        """Pick the scheme for a response's ``ModerationModelVersion`` (by major version).

        Raises:
            UnknownModelVersionError: When no scheme is configured for that major version.
        """
        major = str(model_version or "").split(".")[0]
        if major not in self.scheme_by_model_version:
            raise UnknownModelVersionError(
                f"no taxonomy scheme for moderation model version {model_version!r}; add it to "
                "labelling.taxonomy.scheme_by_model_version"
            )
        return self.schemes[self.scheme_by_model_version[major]]

    def _uses_own_class(self) -> bool:
        return self.out_of_scheme_default == "own_class" or (
            "own_class" in self.out_of_scheme_per_label.values()
        )

    def content_types(self, response: dict[str, Any]) -> list[dict[str, Any]]:
        """The answer's content types, with v6's illustrated label counted as ``Illustrated``.

        Args:
            response: A ``DetectModerationLabels`` response.

        Returns:
            ``[{"Name", "Confidence"}]``; names as the API spells them.
        """
        found = [dict(c) for c in response.get("ContentTypes", []) or []]
        for label in response.get("ModerationLabels", []) or []:
            if label.get("Name") in self.illustrated.v6_labels:
                found.append({"Name": "Illustrated", "Confidence": _confidence(label)})
        return found

    def _band(self, confidence: float) -> str:
        if confidence >= self.positive_min_confidence:
            return "positive"
        return "uncertain" if confidence >= self.safe_below else "negligible"

    def _policy(self, chain: Sequence[str]) -> str:
        for name in chain:
            if name and name in self.out_of_scheme_per_label:
                return self.out_of_scheme_per_label[name]
        return self.out_of_scheme_default

    def _evidence(self, scheme: Scheme, labels: list[dict[str, Any]]) -> list[_Evidence]:
        parent_of = {str(lb.get("Name", "")): str(lb.get("ParentName", "") or "") for lb in labels}
        evidence = []
        for label in labels:
            chain = [str(label.get("Name", "")), str(label.get("ParentName", "") or "")]
            while chain[-1] in parent_of and parent_of[chain[-1]] not in chain and len(chain) < 8:
                chain.append(parent_of[chain[-1]])
            kind, rule = scheme.resolve(chain)
            if kind == "out_of_scheme":
                kind = self._policy(chain)
                if kind == "own_class":
                    rule = ClassRule(
                        self.out_of_scheme_class, self.out_of_scheme_severity, frozenset()
                    )
            band = self._band(_confidence(label))
            evidence.append(_Evidence(label, kind, rule, band))
        return evidence

    def decide(
        self, response: dict[str, Any], answer_min_confidence: float | None = None
    ) -> Decision:
        """Choose the class of one image from its answer.

        Args:
            response: A ``DetectModerationLabels`` response.
            answer_min_confidence: The ``MinConfidence`` the answer was requested with; above
                ``safe_below`` it cannot prove an image safe. ``None`` means "low enough".

        Returns:
            The class decision.

        Raises:
            UnknownModelVersionError: When the response's model version has no scheme.
        """
        scheme = self.scheme_for(response.get("ModerationModelVersion"))
        content_types = self.content_types(response)
        for content in content_types:
            if (
                str(content.get("Name", "")).lower() in self.exclude_content_types
                and _confidence(content) >= self.content_type_min_confidence
            ):
                return Decision(None, False, f"excluded_content_type: {_fmt(content)}")
        labels = list(response.get("ModerationLabels", []) or [])
        evidence = self._evidence(scheme, labels)
        ignored = tuple(str(e.label.get("Name")) for e in evidence if e.kind == "ignore")
        for item in evidence:
            if item.kind == "exclude" and item.band == "positive":
                return Decision(None, False, f"excluded_out_of_scheme: {_fmt(item.label)}")
        positives = [e for e in evidence if e.rule is not None and e.band == "positive"]
        if positives:
            return self._decide_class(positives, evidence, content_types, ignored)
        return self._decide_safe(scheme, labels, evidence, answer_min_confidence, ignored)

    def _decide_class(
        self,
        positives: list[_Evidence],
        evidence: list[_Evidence],
        content_types: list[dict[str, Any]],
        ignored: tuple[str, ...],
    ) -> Decision:
        winner = max(positives, key=lambda e: e.rule.severity if e.rule else 0).rule
        assert winner is not None
        supporting = [e.label for e in positives if e.rule and e.rule.name == winner.name]
        others = sorted({e.rule.name for e in positives if e.rule} - {winner.name})
        worse = [
            e.label
            for e in evidence
            if e.rule is not None and e.band == "uncertain" and e.rule.severity > winner.severity
        ]
        if worse:
            names = ", ".join(map(_fmt, worse))
            return Decision(
                None,
                False,
                f"excluded_uncertain: {winner.name} from {', '.join(map(_fmt, supporting))}, "
                f"but {names} is between {self.safe_below:g} and "
                f"{self.positive_min_confidence:g} and would be more severe",
                ignored,
            )
        illustrated = [
            c
            for c in content_types
            if str(c.get("Name", "")).lower() in self.illustrated.content_types
            and _confidence(c) >= self.illustrated.min_confidence
        ]
        if (
            illustrated
            and winner.name in self.illustrated.explicit_classes
            and self.illustrated.policy == "exclude"
        ):
            return Decision(
                None,
                False,
                f"excluded_illustrated: {winner.name} in illustrated/animated content "
                f"({', '.join(map(_fmt, illustrated))})",
                ignored,
            )
        code = "out_of_scheme_class" if winner.name == self.out_of_scheme_class else "labelled"
        detail = (
            f"{winner.name} from {', '.join(map(_fmt, supporting))}; severity {winner.severity}"
        )
        if others:
            detail += f", over {', '.join(others)}"
        return Decision(winner.name, True, f"{code}: {detail}", ignored)

    def _decide_safe(
        self,
        scheme: Scheme,
        labels: list[dict[str, Any]],
        evidence: list[_Evidence],
        answer_min_confidence: float | None,
        ignored: tuple[str, ...],
    ) -> Decision:
        # A parent returned with one of its children is explained by that child (Rekognition
        # returns the whole chain): only a parent whose children all fell under the request's
        # threshold leaves the class open. A child under ``safe_below`` explains nothing: an
        # answer requested at a low MinConfidence returns weak children too, and Explicit 95 with
        # Explicit Nudity 10 says "explicit, kind unknown", not "safe".
        parents_present = {
            label.get("ParentName") for label in labels if _confidence(label) >= self.safe_below
        }
        ambiguous = [
            e.label
            for e in evidence
            if e.kind == "ambiguous"
            and e.band == "positive"
            and e.label.get("Name") not in parents_present
        ]
        ambiguous_as_safe = None
        if ambiguous:
            names = ", ".join(map(_fmt, ambiguous))
            if scheme.ambiguous_policy != "safe":
                return Decision(None, False, f"excluded_ambiguous: {names}", ignored)
            ambiguous_as_safe = names
        not_safe = [e.label for e in evidence if e.kind == "not_safe" and e.band == "positive"]
        if not_safe:
            return Decision(
                None, False, f"excluded_not_safe: {', '.join(map(_fmt, not_safe))}", ignored
            )
        uncertain = [
            e.label
            for e in evidence
            if e.band == "uncertain"
            and e.kind not in {"ignore", "ignored"}
            and not (ambiguous_as_safe and e.kind == "ambiguous")
        ]
        if uncertain:
            return Decision(
                None,
                False,
                f"excluded_uncertain: {', '.join(map(_fmt, uncertain))} between "
                f"{self.safe_below:g} and {self.positive_min_confidence:g}",
                ignored,
            )
        if answer_min_confidence is not None and answer_min_confidence > self.safe_below + 1e-9:
            return Decision(
                None,
                False,
                f"excluded_unproven_safe: answer requested at MinConfidence "
                f"{answer_min_confidence:g} cannot show labels under it (safe needs every label "
                f"under {self.safe_below:g})",
                ignored,
            )
        if ambiguous_as_safe:
            return Decision(
                self.safe_class, True, f"ambiguous_as_safe: {ambiguous_as_safe}", ignored
            )
        detail = "no deciding moderation label"
        if ignored:
            detail += f" (ignored: {', '.join(ignored)})"
        return Decision(self.safe_class, True, f"safe: {detail}", ignored)

    def class_names(self) -> list[str]:
        """Every class this mapping can produce (schemes in use, own class, safe)."""
        names: list[str] = []
        for scheme_name in dict.fromkeys(self.scheme_by_model_version.values()):
            for name in self.schemes[scheme_name].class_names:
                if name not in names:
                    names.append(name)
        if self._uses_own_class() and self.out_of_scheme_class not in names:
            names.append(self.out_of_scheme_class)
        if self.safe_class not in names:
            names.append(self.safe_class)
        return names


def normalise_labels(labels: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Give every label ``Name``, ``ParentName``, ``Confidence`` and ``TaxonomyLevel``.

    Version-6 answers have no ``TaxonomyLevel``; it is inferred from ``ParentName`` (top level
    when empty, else level 2, the deepest v6 has).
    """
    normalised = []
    for label in labels:
        parent = label.get("ParentName", "") or ""
        level = label.get("TaxonomyLevel")
        normalised.append(
            {
                "Name": label.get("Name"),
                "ParentName": parent,
                "Confidence": float(label.get("Confidence", 0.0)),
                "TaxonomyLevel": int(level) if level is not None else (1 if not parent else 2),
            }
        )
    return normalised


__all__ = [
    "ClassRule",
    "Decision",
    "IllustratedPolicy",
    "Scheme",
    "TaxonomyConfigError",
    "TaxonomyMapping",
    "UnknownModelVersionError",
    "normalise_labels",
]
