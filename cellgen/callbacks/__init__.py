"""cellgen.callbacks."""
