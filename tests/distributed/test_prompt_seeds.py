"""Per-prompt sampling seeds (what makes N ranks sample what one process samples): a prompt's
completions depend on its own seed only, not on which prompts share the generate call, the
call's batching, or the global RNG. In-process, so not marked `distributed`."""

from __future__ import annotations

import pytest
import torch

from rlft.rl.collect import prompt_seeds
from rlft.rollout.base import SamplingParams
from rlft.rollout.hf import HFGenerator


def _prompt_ids(tok) -> list[list[int]]:
    return [tok(t)["input_ids"] for t in ["12+7=", "3*4 is", "hello there, what is 9-2?"]]


@pytest.mark.parametrize("use_generate", [False, True], ids=["lean_decode", "hf_generate"])
def test_a_prompts_samples_do_not_depend_on_its_neighbours(tiny_model, tiny_tok, use_generate):
    prompts, seeds = _prompt_ids(tiny_tok), (11, 22, 33)
    params = SamplingParams(max_new_tokens=6, temperature=1.0, seeds=seeds)
    together = HFGenerator(tiny_model, tiny_tok, use_generate=use_generate).generate(prompts, params, 4)
    # the last prompt alone, from a batch size that splits calls differently, after the global
    # RNG moved on: its 4 samples are the same, because only seed 33 drives them
    torch.manual_seed(1234)
    torch.rand(100)
    alone = HFGenerator(tiny_model, tiny_tok, batch_size=4, use_generate=use_generate).generate(
        prompts[2:], SamplingParams(max_new_tokens=6, temperature=1.0, seeds=seeds[2:]), 4
    )
    assert alone.response_ids == together.response_ids[8:]
    # and another seed gives other samples (the seed is really used): 4 x 6 tokens from a
    # 100-token vocabulary agree by chance with negligible probability
    other = HFGenerator(tiny_model, tiny_tok, use_generate=use_generate).generate(
        prompts[2:], SamplingParams(max_new_tokens=6, temperature=1.0, seeds=(34,)), 4
    )
    assert other.response_ids != alone.response_ids


def test_prompt_seeds_follow_the_draw_number_not_the_step():
    # seed * 1_000_003 + draw number: the prompts drawn 5th..7th of run seed 2
    assert prompt_seeds(2, 5, 3) == (2_000_011, 2_000_012, 2_000_013)
    # a rank taking prompts 2..3 of a step that starts at draw 4 gets the seeds one process
    # would give those prompts
    assert prompt_seeds(0, 4, 4)[2:] == prompt_seeds(0, 6, 2)
