"""training.query_generation: queries for corpus documents from a few-shot prompted base model."""
