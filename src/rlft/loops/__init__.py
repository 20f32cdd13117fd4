"""Explicit training / evaluation loops; the only layer that knows every other."""
