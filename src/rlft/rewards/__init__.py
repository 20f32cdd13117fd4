"""Rewards: built-in rule-based functions, plugin resolution and batched, guarded scoring."""
