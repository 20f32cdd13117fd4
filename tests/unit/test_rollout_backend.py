"""rollout.backend=auto: vLLM where it is installed and can run the job off the CPU, else hf, with
the reason."""

from __future__ import annotations

import importlib.util

from rlft.loops import rl_setup
from rlft.rollout.vllm import why_not_vllm


def _vllm(monkeypatch, installed: bool) -> None:
    """Make importlib.util.find_spec('vllm') answer as if vLLM were (not) installed."""
    real = importlib.util.find_spec

    def find_spec(name, *args):
        return (object() if installed else None) if name == "vllm" else real(name, *args)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)


def test_why_not_vllm_names_the_first_blocker(tiny_model, monkeypatch):
    # the tiny model: loaded from a local directory, on the CPU
    _vllm(monkeypatch, installed=False)
    assert why_not_vllm(tiny_model, 1, False) == "vLLM is not installed"
    _vllm(monkeypatch, installed=True)
    assert why_not_vllm(tiny_model, 2, False) == "2 processes"
    assert why_not_vllm(tiny_model, 1, True) == "LoRA adapters"
    on_cpu = "the model is on the CPU, where rlft's decode is as fast and lighter"
    assert why_not_vllm(tiny_model, 1, False) == on_cpu
    tiny_model.to("meta")  # off the CPU (a stand-in for a GPU): nothing stands in the way
    assert why_not_vllm(tiny_model, 1, False) is None


def test_auto_resolves_and_explicit_backends_pass_through(monkeypatch, make_rl_config, tiny_model):
    _vllm(monkeypatch, installed=True)
    explicit = make_rl_config("rollout.backend=hf_generate")
    assert rl_setup.rollout_backend(explicit, tiny_model) == "hf_generate"
    assert rl_setup.rollout_backend(make_rl_config(), tiny_model) == "hf"  # auto, on the CPU
    tiny_model.to("meta")
    assert rl_setup.rollout_backend(make_rl_config(), tiny_model) == "vllm"
    assert rl_setup.rollout_backend(make_rl_config("model.lora_rank=4"), tiny_model) == "hf"
