"""cellgen: learn from a few annotated live-cell videos, synthesise many, and measure the result."""

__version__ = "0.1.0"
