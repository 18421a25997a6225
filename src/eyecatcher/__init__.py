"""EyeCatcher: train, gate, register and serve explicit-image moderation models."""

__version__ = "0.1.0"
