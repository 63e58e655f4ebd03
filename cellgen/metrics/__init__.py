"""cellgen.metrics."""
