"""From Rekognition moderation labels to one training class per image, as configured in YAML.

A *scheme* (one per taxonomy version) lists the classes, each with a ``severity`` and the label
names that indicate it, plus the labels that are too coarse to decide a class (``ambiguous``)
and the ones deliberately ignored. Every other label is *out of scheme* (Violence, Alcohol,
...). See ``docs/labelling.md`` and ``conf/base/parameters_labelling.yml``.

The rule for an image, in order:

1. A ``ContentTypes`` entry listed in ``exclude_content_types`` (at or above its threshold)
   excludes the image.
2. Out-of-scheme labels follow ``out_of_scheme``: ``ignore`` (kept in the table only),
   ``exclude`` (the image is excluded) or ``own_class`` (they indicate ``class_name`` with
   ``severity``); set per label name (or its parent) under ``per_label``, else ``default``.
3. Among the classes indicated, the most severe wins; equal severities go to the higher
   confidence (the best label supporting each class), then the name, so the result is
   deterministic.
4. No class but an ambiguous label that none of the image's other labels explains as a child
   (e.g. only the top-level ``Explicit``): the image is excluded (``ambiguous_policy: exclude``)
   or treated as safe (``ambiguous_policy: safe``), never silently.
5. Otherwise the image is ``safe_class``.

A label whose name the scheme does not know inherits what its ``ParentName`` means, so a new
sub-label AWS adds under a mapped parent is not lost.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

OUT_OF_SCHEME_POLICIES = frozenset({"ignore", "exclude", "own_class"})
AMBIGUOUS_POLICIES = frozenset({"exclude", "safe"})


class TaxonomyConfigError(ValueError):
    """The taxonomy configuration is inconsistent."""


class UnknownModelVersionError(ValueError):
    """A response came from a moderation model version no scheme is configured for."""


@dataclass(frozen=True)
class ClassRule:
    """One training class.

    Attributes:
        name: Class name used downstream.
        severity: Higher wins when an image indicates several classes.
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
        ignored: Known labels that never decide a class (e.g. ``Kissing on the Lips``).
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

    def resolve(self, name: str, parent: str) -> tuple[str, ClassRule | None]:
        """Say what one label means under this scheme.

        Args:
            name: The label's ``Name``.
            parent: Its ``ParentName`` (``""`` at the top level).

        Returns:
            ``("class", rule)``, ``("ambiguous", None)``, ``("ignored", None)`` or
            ``("out_of_scheme", None)``.
        """
        for candidate in (name, parent):
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
        return [r.name for r in sorted(self.classes, key=lambda r: (-r.severity, r.name))]


@dataclass(frozen=True)
class Decision:
    """The class of one image and why.

    Attributes:
        label_class: The class, or ``None`` when the image is excluded.
        included: Whether the image may be used for training.
        reason: ``<code>: <detail>``; codes: ``labelled``, ``safe``, ``out_of_scheme_class``,
            ``excluded_out_of_scheme``, ``excluded_ambiguous``, ``ambiguous_as_safe``,
            ``excluded_content_type``.
        ignored_out_of_scheme: Names of out-of-scheme labels that were ignored.
    """

    label_class: str | None
    included: bool
    reason: str
    ignored_out_of_scheme: tuple[str, ...] = ()


def _fmt(label: dict[str, Any]) -> str:
    return f"{label.get('Name')} ({float(label.get('Confidence', 0.0)):.1f})"


@dataclass(frozen=True)
class TaxonomyMapping:
    """The whole mapping configuration (``labelling.taxonomy``).

    Attributes:
        schemes: Scheme per name.
        scheme_by_model_version: Major model version (``"7"``) to scheme name.
        safe_class: Class of an image with no deciding label.
        out_of_scheme_default: Policy for out-of-scheme labels.
        out_of_scheme_per_label: Policy per label name (or parent name).
        out_of_scheme_class: Class used by ``own_class``.
        out_of_scheme_severity: Its severity.
        exclude_content_types: ``ContentTypes`` names that exclude an image.
        content_type_min_confidence: Threshold for ``exclude_content_types``.
    """

    schemes: dict[str, Scheme]
    scheme_by_model_version: dict[str, str]
    safe_class: str = "safe"
    out_of_scheme_default: str = "ignore"
    out_of_scheme_per_label: dict[str, str] = field(default_factory=dict)
    out_of_scheme_class: str = "other_moderated"
    out_of_scheme_severity: int = 0
    exclude_content_types: frozenset[str] = frozenset()
    content_type_min_confidence: float = 50.0

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
                ignored=frozenset(raw.get("ignored", [])),
                ambiguous_policy=raw.get("ambiguous_policy", "exclude"),
            )
        out = params.get("out_of_scheme", {}) or {}
        return cls(
            schemes=schemes,
            scheme_by_model_version={
                str(k): v for k, v in params["scheme_by_model_version"].items()
            },
            safe_class=params.get("safe_class", "safe"),
            out_of_scheme_default=out.get("default", "ignore"),
            out_of_scheme_per_label=dict(out.get("per_label", {}) or {}),
            out_of_scheme_class=out.get("class_name", "other_moderated"),
            out_of_scheme_severity=int(out.get("severity", 0)),
            exclude_content_types=frozenset(params.get("exclude_content_types", []) or []),
            content_type_min_confidence=float(params.get("content_type_min_confidence", 50.0)),
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

    def _out_of_scheme_policy(self, label: dict[str, Any]) -> str:
        for key in (label.get("Name", ""), label.get("ParentName", "")):
            if key and key in self.out_of_scheme_per_label:
                return self.out_of_scheme_per_label[key]
        return self.out_of_scheme_default

    def decide(self, response: dict[str, Any]) -> Decision:
        """Choose the class of one image from its (threshold-filtered) response.

        Args:
            response: A ``DetectModerationLabels`` response whose labels are all at or above the
                requested ``MinConfidence``.

        Returns:
            The class decision.

        Raises:
            UnknownModelVersionError: When the response's model version has no scheme.
        """
        scheme = self.scheme_for(response.get("ModerationModelVersion"))
        for content in response.get("ContentTypes", []) or []:
            if (
                content.get("Name") in self.exclude_content_types
                and float(content.get("Confidence", 0.0)) >= self.content_type_min_confidence
            ):
                return Decision(None, False, f"excluded_content_type: {_fmt(content)}")

        # class -> (severity, best confidence, every supporting label)
        candidates: dict[str, tuple[int, float, list[dict[str, Any]]]] = {}
        ambiguous: list[dict[str, Any]] = []
        ignored_oos: list[str] = []

        def consider(name: str, severity: int, label: dict[str, Any]) -> None:
            confidence = float(label.get("Confidence", 0.0))
            _, best, supporting = candidates.get(name, (severity, -1.0, []))
            candidates[name] = (severity, max(best, confidence), [*supporting, label])

        for label in response.get("ModerationLabels", []) or []:
            kind, rule = scheme.resolve(label.get("Name", ""), label.get("ParentName", ""))
            if kind == "class" and rule is not None:
                consider(rule.name, rule.severity, label)
            elif kind == "ambiguous":
                ambiguous.append(label)
            elif kind == "out_of_scheme":
                policy = self._out_of_scheme_policy(label)
                if policy == "exclude":
                    return Decision(None, False, f"excluded_out_of_scheme: {_fmt(label)}")
                if policy == "own_class":
                    consider(self.out_of_scheme_class, self.out_of_scheme_severity, label)
                else:
                    ignored_oos.append(str(label.get("Name")))
        ignored = tuple(ignored_oos)
        if candidates:
            name, (severity, _, supporting) = max(
                candidates.items(), key=lambda item: (item[1][0], item[1][1], item[0])
            )
            code = "out_of_scheme_class" if name == self.out_of_scheme_class else "labelled"
            others = sorted(set(candidates) - {name})
            detail = f"{name} from {', '.join(map(_fmt, supporting))}; severity {severity}"
            if others:
                detail += f", over {', '.join(others)}"
            return Decision(name, True, f"{code}: {detail}", ignored)
        # A parent returned with one of its children is explained by that child (Rekognition
        # returns the whole chain): only a parent whose children all fell under the threshold
        # leaves the class open.
        parents_present = {
            label.get("ParentName") for label in response.get("ModerationLabels", []) or []
        }
        ambiguous = [label for label in ambiguous if label.get("Name") not in parents_present]
        if ambiguous:
            names = ", ".join(_fmt(label) for label in ambiguous)
            if scheme.ambiguous_policy == "safe":
                return Decision(self.safe_class, True, f"ambiguous_as_safe: {names}", ignored)
            return Decision(None, False, f"excluded_ambiguous: {names}", ignored)
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
        uses_own = self.out_of_scheme_default == "own_class" or (
            "own_class" in self.out_of_scheme_per_label.values()
        )
        if uses_own and self.out_of_scheme_class not in names:
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
    "Scheme",
    "TaxonomyConfigError",
    "TaxonomyMapping",
    "UnknownModelVersionError",
    "normalise_labels",
]
