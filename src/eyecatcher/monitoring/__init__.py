"""What the champion does after registration: drift, online moderation metrics, shadow scoring.

Pure functions over tables (verdicts, feedback, reference scores), used by the
``retrain_check`` pipeline and meant for batch scoring's monitoring (docs/feedback-loop.md).
"""
