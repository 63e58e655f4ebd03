"""cellgen.synth."""
