"""Shared fixtures: a tiny random-init Llama built in the test tmp area, and tiny RL configs.

Environment is set before torch / transformers are imported anywhere, so thread counts stick and
nothing is fetched from the network or written to ~/.cache.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ["OMP_NUM_THREADS"] = "1"
os.environ["MKL_NUM_THREADS"] = "1"
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ["TOKENIZERS_PARALLELISM"] = "false"
# each pytest-xdist worker (make test: -n 2) sandboxes programs under its own range of slot uids:
# the sandbox tests assert that no slot-uid process outlives a run, which the other worker's runs
# would otherwise break
_worker = os.environ.get("PYTEST_XDIST_WORKER", "")
if _worker.startswith("gw"):
    os.environ["RLFT_SANDBOX_UID_BASE"] = str(61000 + 256 * (1 + int(_worker[2:])))

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)

REPO_ROOT = Path(__file__).resolve().parents[1]
TINY_CONFIG = REPO_ROOT / "configs" / "grpo_tiny.yaml"
EXAMPLE_REWARDS = REPO_ROOT / "examples" / "rewards.py"


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """`make test` runs on two pytest-xdist workers (--dist loadgroup): tests that share a
    module-scoped fixture (runs made once per module) stay together on one worker."""
    for item in items:
        defs = getattr(getattr(item, "_fixtureinfo", None), "name2fixturedefs", {})
        if any(d.scope == "module" for ds in defs.values() for d in ds):
            item.add_marker(pytest.mark.xdist_group(item.module.__name__))


@pytest.fixture(scope="session", autouse=True)
def rlft_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """RLFT_CACHE in the session tmp dir, so the tiny model is built there (also for subprocesses)."""
    cache = tmp_path_factory.mktemp("rlft-cache")
    os.environ["RLFT_CACHE"] = str(cache)
    return cache


@pytest.fixture(scope="session")
def tiny_model_path(rlft_cache: Path) -> str:
    from rlft.models.load import resolve_model_path

    path = resolve_model_path("tiny-random-llama")
    assert Path(path).is_relative_to(rlft_cache)
    return path


@pytest.fixture(scope="session")
def tiny_tok(tiny_model_path: str):
    from rlft.models.load import load_tokenizer

    return load_tokenizer(tiny_model_path)


@pytest.fixture
def tiny_model(tiny_model_path: str):
    """A fresh copy of the tiny model for each test (tests may train it)."""
    from rlft.models.load import load_causal_lm

    return load_causal_lm(tiny_model_path)


def tiny_rl_config(out_dir: Path, *overrides: str):
    """configs/grpo_tiny.yaml with output_dir in tmp, no progress bar / TensorBoard / eval, and the
    example plugin reward referenced by absolute path (independent of the working directory)."""
    from rlft.config.loader import build, load_yaml, merge_overrides
    from rlft.config.rl import RLConfig

    data = load_yaml(TINY_CONFIG)
    for spec in data.get("rewards", []):
        if spec["fn"].startswith("examples/"):
            spec["fn"] = str(REPO_ROOT / spec["fn"])
    base = [
        f"output_dir={out_dir}",
        "log.progress=false",
        "log.tensorboard=false",
        "eval.before=false",
        "eval.after=false",
    ]
    return build(RLConfig, merge_overrides(data, [*base, *overrides]))


@pytest.fixture
def make_rl_config(tmp_path: Path, tiny_model_path: str):
    """Factory: make_rl_config(*overrides, out=<dir>) -> RLConfig (tiny model already built)."""

    def make(*overrides: str, out: Path | None = None):
        return tiny_rl_config(out or tmp_path / "run", *overrides)

    return make


def run_cli(*args: str, cwd: Path = REPO_ROOT, timeout: int = 300):
    """`python -m rlft ARGS` as a subprocess from the repo root; returns CompletedProcess."""
    import subprocess

    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO_ROOT / "src") + os.pathsep + env.get("PYTHONPATH", "")
    return subprocess.run(
        [sys.executable, "-m", "rlft", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture
def cli():
    return run_cli
