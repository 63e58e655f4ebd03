"""cellgen.flow."""
