"""Model construction (timm factory, weight policy) and the trained-model bundle."""

from eyecatcher.models.bundle import ClassifierBundle
from eyecatcher.models.factory import WeightsUnavailableError, create_classifier

__all__ = ["ClassifierBundle", "WeightsUnavailableError", "create_classifier"]
