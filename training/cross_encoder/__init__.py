"""training.cross_encoder."""
