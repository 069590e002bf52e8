"""training.fusion: learned fusion of the stages (gateway/learned_fusion.py)."""
