"""training.common."""
