"""Algorithms as data: each a frozen record of a few pure functions and flags (docs/design.md)."""

from rlft.algorithms.registry import ALGORITHMS, GRADIENT, TRUST_REGION, Algorithm, UpdateRule, get_algorithm

__all__ = ["ALGORITHMS", "GRADIENT", "TRUST_REGION", "Algorithm", "UpdateRule", "get_algorithm"]
