"""causal_wsss."""
