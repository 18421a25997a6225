"""Model card pipeline: one self-contained HTML card per registered version."""
