"""cellgen.nn."""
