"""Algorithms as data: each a frozen record of a few pure functions and flags (DESIGN.md)."""

from rlft.algorithms.registry import ALGORITHMS, Algorithm, get_algorithm

__all__ = ["ALGORITHMS", "Algorithm", "get_algorithm"]
