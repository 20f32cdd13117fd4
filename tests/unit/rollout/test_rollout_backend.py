"""rollout.backend=auto: hf (rlft's own decode loop) until vLLM has passed its parity tests on the
device type in question, which it has on none yet (it has never run on a GPU), so auto is always
hf for now, with the reason; `rollout.backend=vllm` still picks vLLM by name."""

from __future__ import annotations

import importlib.util
import logging

from rlft.rl import setup as rl_setup
from rlft.rollout import vllm as vllm_mod
from rlft.rollout.vllm import why_not_vllm

NOT_SHOWN = "vLLM has not passed its parity tests on meta yet (it has never run on a GPU)"


def _vllm(monkeypatch, installed: bool) -> None:
    """Make importlib.util.find_spec('vllm') answer as if vLLM were (not) installed."""
    real = importlib.util.find_spec

    def find_spec(name, *args):
        return (object() if installed else None) if name == "vllm" else real(name, *args)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)


def test_no_device_has_shown_vllm_parity_yet():
    assert not vllm_mod.VLLM_PARITY_SHOWN_ON


def test_why_not_vllm_names_the_first_blocker(tiny_model, monkeypatch):
    # the tiny model: loaded from a local directory, on the CPU
    _vllm(monkeypatch, installed=False)
    assert why_not_vllm(tiny_model, 1, False) == "vLLM is not installed"
    _vllm(monkeypatch, installed=True)
    assert why_not_vllm(tiny_model, 2, False) == "2 processes"
    assert why_not_vllm(tiny_model, 1, True) == "LoRA adapters"
    on_cpu = "the model is on the CPU, where rlft's decode is as fast and lighter"
    assert why_not_vllm(tiny_model, 1, False) == on_cpu
    tiny_model.to("meta")  # off the CPU (a stand-in for a GPU): vLLM's parity is not shown there
    assert why_not_vllm(tiny_model, 1, False) == NOT_SHOWN
    monkeypatch.setattr(vllm_mod, "VLLM_PARITY_SHOWN_ON", frozenset({"meta"}))  # once it has passed
    assert why_not_vllm(tiny_model, 1, False) is None


def test_auto_is_hf_on_every_device_and_vllm_stays_available_by_name(
    monkeypatch, make_rl_config, tiny_model, caplog
):
    _vllm(monkeypatch, installed=True)
    for name in ("hf_generate", "vllm"):
        assert rl_setup.rollout_backend(make_rl_config(f"rollout.backend={name}"), tiny_model) == name
    assert rl_setup.rollout_backend(make_rl_config(), tiny_model) == "hf"  # auto, on the CPU
    tiny_model.to("meta")  # off the CPU, vLLM installed, one process, no LoRA: still hf
    with caplog.at_level(logging.INFO, logger=rl_setup.log.name):
        assert rl_setup.rollout_backend(make_rl_config(), tiny_model) == "hf"
    assert f"rollout.backend=auto: hf ({NOT_SHOWN})" in caplog.text
    monkeypatch.setattr(vllm_mod, "VLLM_PARITY_SHOWN_ON", frozenset({"meta"}))
    assert rl_setup.rollout_backend(make_rl_config(), tiny_model) == "vllm"  # only once shown there
    assert rl_setup.rollout_backend(make_rl_config("model.lora_rank=4"), tiny_model) == "hf"
