"""Varied phrasings of the built-in arithmetic task: every wording parses back to its problem, the
unseen templates never reach training, and held-out rows say which kind they use."""

from __future__ import annotations

import dataclasses
import itertools

import pytest

from rlft.config.common import ArithmeticConfig
from rlft.data import arithmetic, phrasings

VARIED = ArithmeticConfig(ops=["+", "-", "*"], phrasing="varied", heldout_size=60)


def _template_of(op: str, text: str) -> tuple[str, tuple[int, int]]:
    matches = [(t, ab) for t in phrasings.TEMPLATES[op] if (ab := phrasings.parse(t, text))]
    assert len(matches) == 1, f"{text!r} matches {len(matches)} templates of {op}"
    return matches[0]


@pytest.mark.parametrize("op", ["+", "-", "*"])
def test_every_template_parses_back_to_its_problem(op):
    for template, (a, b) in itertools.product(phrasings.TEMPLATES[op], [(2, 3), (58, 16), (19, 19)]):
        row = arithmetic.make_row(a, op, b, template)
        assert _template_of(op, row["prompt"]) == (template, (a, b))
        assert row["answer"] == str(arithmetic.OPS[op](a, b))


@pytest.mark.parametrize("op", ["+", "-", "*"])
def test_seen_and_unseen_templates_split_the_set(op):
    seen, unseen = (set(phrasings.templates(op, u, 0.25)) for u in (False, True))
    assert seen and unseen and not seen & unseen
    assert seen | unseen == set(phrasings.TEMPLATES[op])
    assert phrasings.FIXED[op] in phrasings.TEMPLATES[op]


def test_training_never_uses_an_unseen_template_and_uses_many_seen_ones():
    rows = list(itertools.islice(arithmetic.train_rows(VARIED, seed=3), 3000))
    used = {op: set() for op in VARIED.ops}
    for i, row in enumerate(rows):
        op = VARIED.ops[i % 3]
        template, (a, b) = _template_of(op, row["prompt"])
        assert not arithmetic.is_heldout(a, op, b, VARIED.heldout_fraction)
        used[op].add(template)
    for op in VARIED.ops:
        assert used[op] == set(phrasings.templates(op, False, VARIED.unseen_phrasings))


def test_heldout_rows_alternate_seen_and_unseen_wordings():
    rows = arithmetic.heldout_rows(VARIED)
    assert [r["phrasing"] for r in rows[:4]] == ["seen", "unseen", "seen", "unseen"]
    for i, row in enumerate(rows):
        op = VARIED.ops[i % 3]
        template, (a, b) = _template_of(op, row["prompt"])
        assert arithmetic.is_heldout(a, op, b, VARIED.heldout_fraction)
        unseen = template in phrasings.templates(op, True, VARIED.unseen_phrasings)
        assert unseen == (row["phrasing"] == "unseen")


def test_fixed_phrasing_keeps_the_one_wording():
    fixed = dataclasses.replace(VARIED, phrasing="fixed")
    rows = list(itertools.islice(arithmetic.train_rows(fixed, seed=3), 30)) + arithmetic.heldout_rows(fixed)
    assert all(r["prompt"].startswith("What is ") and "phrasing" not in r for r in rows)
