"""Example plugin rewards, referenced from configs as `examples/rewards.py:NAME`."""


def digit_density(prompt: str, completion: str, example: dict) -> float:
    """Fraction of characters that are digits: a dense, easy signal for smoke tests on tiny models."""
    text = completion.strip()
    return sum(c.isdigit() for c in text) / len(text) if text else 0.0
