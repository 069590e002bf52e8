"""training.bi_encoder."""
