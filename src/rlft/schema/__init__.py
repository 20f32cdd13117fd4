"""Config schemas (frozen dataclasses) of every loop."""
