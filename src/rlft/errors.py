"""Errors a run reports to the user as one clear line (the CLI prints them without a traceback).

Kept free of heavy imports so the CLI can catch them before torch is loaded."""


class DataError(ValueError):
    """A dataset problem; the message names file, line and field."""


class RunError(RuntimeError):
    """A run stopped for a reason its message explains (checkpoint write, non-finite steps, ...)."""
