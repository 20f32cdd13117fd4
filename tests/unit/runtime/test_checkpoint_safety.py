"""Checkpoint safety: a failed write (disk full) keeps the previous checkpoint usable, a checkpoint
that does not fit the run is refused naming each difference, stale newer checkpoints of an earlier
run are removed, the fault-injection pause sits between the files of a save, and a kill in the middle
of replacing a checkpoint leaves it loadable."""

from __future__ import annotations

import errno
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

import rlft.runtime.checkpoint as ckpt_mod
from rlft.config.common import OptimConfig
from rlft.runtime.checkpoint import (
    CheckpointError,
    complete_checkpoints,
    latest_checkpoint,
    load_checkpoint,
    save_checkpoint,
)
from rlft.runtime.optim import make_optimizer

OPT = OptimConfig(lr=1e-2)


def _llama(vocab: int = 50, hidden: int = 16, layers: int = 1) -> LlamaForCausalLM:
    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=vocab,
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=32,
        tie_word_embeddings=True,
    )
    return LlamaForCausalLM(cfg)


def _save(root: Path, step: int, model, **kw) -> Path:
    opt, sched = make_optimizer(model.parameters(), OPT, 10)
    return save_checkpoint(root, step, model, opt, sched, {"step": step}, **kw)


def _load(path: Path, model, **kw) -> dict:
    opt, sched = make_optimizer(model.parameters(), OPT, 10)
    return load_checkpoint(path, model, opt, sched, **kw)


def test_disk_full_mid_save_keeps_the_previous_checkpoint(tmp_path: Path, monkeypatch):
    model = _llama()
    _save(tmp_path, 1, model)
    saved = {k: v.clone() for k, v in model.state_dict().items()}
    real_save = torch.save

    def full_disk(obj, f, *a, **kw):
        if Path(f).name == "optimizer.pt":  # the weights are written already: a half-full dir
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(obj, f, *a, **kw)

    monkeypatch.setattr(torch, "save", full_disk)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    with pytest.raises(CheckpointError) as e:
        _save(tmp_path, 2, model)
    msg = str(e.value)
    assert "could not write checkpoint step-2" in msg and "No space left on device" in msg
    assert f"the newest complete checkpoint, {tmp_path / 'step-1'}, is intact" in msg
    assert "--resume" in msg
    # nothing partial is left: only step-1, no temp dir
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step-1"]
    monkeypatch.setattr(torch, "save", real_save)
    fresh = _llama()
    with torch.no_grad():
        for p in fresh.parameters():
            p.zero_()
    assert _load(latest_checkpoint(tmp_path), fresh) == {"step": 1}
    for k, v in fresh.state_dict().items():
        assert torch.equal(v, saved[k]), k


def test_torch_zip_writer_failure_on_a_full_disk_is_a_checkpoint_error(tmp_path: Path, monkeypatch):
    # seen on a real full disk: torch.save fails in its zip writer with a RuntimeError, not OSError
    real_save = torch.save

    def full_disk(obj, f, *a, **kw):
        if Path(f).name == "optimizer.pt":
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 987762240")
        return real_save(obj, f, *a, **kw)

    model = _llama()
    _save(tmp_path, 1, model)
    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(CheckpointError, match=r"step-2 in .* MiB free there\): \[enforce fail"):
        _save(tmp_path, 2, model)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step-1"]


def test_disk_full_on_the_first_save_says_nothing_earlier_exists(tmp_path: Path, monkeypatch):
    def full_disk(*a, **kw):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(ckpt_mod, "save_model_weights", full_disk)
    with pytest.raises(CheckpointError, match="no earlier checkpoint exists"):
        _save(tmp_path, 1, _llama())
    assert list(tmp_path.iterdir()) == []


def test_other_model_shape_or_vocab_is_refused_naming_the_differences(tmp_path: Path):
    path = _save(tmp_path, 1, _llama(vocab=50, hidden=16))
    target = _llama(vocab=60, hidden=16)
    before = {k: v.clone() for k, v in target.state_dict().items()}
    with pytest.raises(CheckpointError) as e:
        _load(path, target)
    msg = str(e.value)
    assert "does not fit this run" in msg
    assert "vocab size: 50 in the checkpoint, 60 now" in msg
    # the embedding is [vocab, hidden]: [50, 16] saved, [60, 16] now
    assert "model shapes differ: model.embed_tokens.weight [50, 16] -> [60, 16]" in msg
    assert "start a fresh run in a new output_dir" in msg
    # refused before anything was loaded
    assert all(torch.equal(v, before[k]) for k, v in target.state_dict().items())
    with pytest.raises(CheckpointError, match="model parameters not in the checkpoint: model.layers.1"):
        _load(path, _llama(vocab=50, hidden=16, layers=2))


def test_other_algorithm_or_value_model_is_refused(tmp_path: Path):
    model = _llama()
    critic = torch.nn.Linear(16, 1)
    path = _save(tmp_path, 1, model, run_info={"algorithm": "grpo"})
    with pytest.raises(CheckpointError, match="algorithm: 'grpo' in the checkpoint, 'ppo' now"):
        _load(path, _llama(), run_info={"algorithm": "ppo"})
    with pytest.raises(CheckpointError, match="the checkpoint has no value model, this run uses one"):
        opt, sched = make_optimizer([*model.parameters(), *critic.parameters()], OPT, 10)
        load_checkpoint(path, _llama(), opt, sched, critic=critic, run_info={"algorithm": "grpo"})
    assert _load(path, _llama(), run_info={"algorithm": "grpo"}) == {"step": 1}  # same run: fine


def test_a_fresh_run_removes_newer_checkpoints_of_an_earlier_run(tmp_path: Path):
    model = _llama()
    for step in (4, 5):  # an earlier run in the same output_dir got to step 5
        _save(tmp_path, step, model)
    _save(tmp_path, 1, model, keep=2)  # a fresh run (resume=false) saves step 1
    # steps 4 and 5 would have been "newest" for a later --resume: they are gone
    assert [s for s, _ in complete_checkpoints(tmp_path)] == [1]


def test_fault_pause_sleeps_between_the_files_of_a_save(tmp_path: Path, monkeypatch):
    pauses = []
    monkeypatch.setattr(ckpt_mod.time, "sleep", pauses.append)
    _save(tmp_path, 1, _llama())
    assert pauses == []  # unset: no pause
    monkeypatch.setenv(ckpt_mod.FAULT_SLEEP_ENV, "0.25")
    _save(tmp_path, 2, _llama())
    # after weights, optimizer, RNG, and before the COMPLETE marker
    assert pauses == [0.25] * 4


class _Payload:
    """Unpickling this runs code: it touches a file."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_loading_never_runs_pickled_code(tmp_path: Path):
    model = _llama()
    path = _save(tmp_path / "ckpt", 1, model)
    marker = tmp_path / "pwned"
    torch.save({"state": {0: _Payload(marker)}, "param_groups": []}, path / "optimizer.pt")
    with pytest.raises(Exception, match="Weights only load failed"):
        _load(path, _llama())
    assert not marker.exists()
    torch.load(path / "optimizer.pt", weights_only=False)  # the payload is live: plain pickle runs it
    assert marker.exists()


# Re-saves step-1 with other weights, SIGKILLed right after the old step-1 is renamed aside.
KILLED_RESAVE = """
import os, signal, sys
from pathlib import Path
import torch
sys.path.insert(0, sys.argv[2])
from test_checkpoint_safety import _llama, _save

real_rename = os.rename

def rename(src, dst):
    real_rename(src, dst)
    os.kill(os.getpid(), signal.SIGKILL)

model = _llama()
with torch.no_grad():
    for p in model.parameters():
        p.add_(1.0)
os.rename = rename
_save(Path(sys.argv[1]), 1, model)
"""


def test_a_kill_mid_replace_leaves_the_checkpoint_loadable_and_the_next_save_restores_it(tmp_path: Path):
    model = _llama()
    _save(tmp_path, 1, model)
    saved = {k: v.clone() for k, v in model.state_dict().items()}
    args = [sys.executable, "-c", KILLED_RESAVE, str(tmp_path), str(Path(__file__).parent)]
    proc = subprocess.run(args, timeout=300)
    assert proc.returncode == -signal.SIGKILL
    assert not (tmp_path / "step-1").exists()  # killed between "old aside" and "new in"
    found = latest_checkpoint(tmp_path)
    assert found is not None and found.name.startswith("step-1.old-")
    fresh = _llama()
    assert _load(found, fresh) == {"step": 1}
    assert all(torch.equal(v, saved[k]) for k, v in fresh.state_dict().items())
    _save(tmp_path, 2, model)  # pruning finishes the interrupted replace
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step-1", "step-2"]
    assert _load(tmp_path / "step-1", _llama()) == {"step": 1}
