"""cellgen.data."""
