"""cellgen.models."""
