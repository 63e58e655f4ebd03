"""The CLI's extra commands (``synthesize``, ``evaluate``, ``prepare-data``, ``estimate-k`` ...): the top layer.

Each command is a thin typed function over library code; ``cellgen.cli`` dispatches to it through jsonargparse.
Nothing below this package imports it.
"""
