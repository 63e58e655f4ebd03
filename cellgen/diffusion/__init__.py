"""cellgen.diffusion."""
