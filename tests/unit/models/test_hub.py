"""Pushing final/ to the hub (hub.model_id): the calls made (huggingface_hub's functions replaced
by recorders), and every way a push is skipped without failing the run: no repo, offline mode, no
token, the hub unreachable, the hub refusing."""

from __future__ import annotations

import importlib
import importlib.util
import logging
import types
from pathlib import Path

import huggingface_hub
import pytest

from rlft.config.common import HubConfig
from rlft.config.loader import build
from rlft.config.rl import RLConfig
from rlft.models.hub import publish_final, push_final


@pytest.fixture
def hub(monkeypatch: pytest.MonkeyPatch):
    """huggingface_hub's create_repo / create_branch / upload_folder recorded, a token present,
    offline mode off."""
    calls: list[tuple[str, tuple, dict]] = []
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(huggingface_hub, "get_token", lambda: "hf_test_token")

    def recorder(name: str, result=None):
        def record(*args, **kwargs):
            calls.append((name, args, kwargs))
            return result

        return record

    repo_url = huggingface_hub.RepoUrl("https://huggingface.co/me/tuned")
    monkeypatch.setattr(huggingface_hub, "create_repo", recorder("create_repo", repo_url))
    monkeypatch.setattr(huggingface_hub, "create_branch", recorder("create_branch"))
    monkeypatch.setattr(huggingface_hub, "upload_folder", recorder("upload_folder"))
    return calls


def test_push_creates_the_repo_and_uploads(hub, tmp_path: Path):
    url = push_final(tmp_path, HubConfig(model_id="me/tuned", private=False))
    assert url == "https://huggingface.co/me/tuned"
    assert hub == [
        (
            "create_repo",
            ("me/tuned",),
            {"token": "hf_test_token", "private": False, "repo_type": "model", "exist_ok": True},
        ),
        (
            "upload_folder",
            (),
            {
                "repo_id": "me/tuned",
                "folder_path": str(tmp_path),
                "repo_type": "model",
                "revision": None,
                "token": "hf_test_token",
                "commit_message": "Upload model trained with rlft",
            },
        ),
    ]


def test_push_to_a_branch_creates_it(hub, tmp_path: Path):
    push_final(tmp_path, HubConfig(model_id="me/tuned", revision="step-30"))
    names = [name for name, _, _ in hub]
    assert names == ["create_repo", "create_branch", "upload_folder"]
    assert hub[0][2]["private"] is True  # the default
    assert hub[1] == (
        "create_branch",
        ("me/tuned",),
        {"branch": "step-30", "token": "hf_test_token", "repo_type": "model", "exist_ok": True},
    )
    assert hub[2][2]["revision"] == "step-30"


def test_no_model_id_no_push(hub, tmp_path: Path):
    assert push_final(tmp_path, HubConfig()) is None
    assert hub == []


@pytest.mark.parametrize("value", ["1", "true", "ON"])
def test_offline_mode_skips_with_a_message(hub, tmp_path: Path, monkeypatch, caplog, value):
    monkeypatch.setenv("HF_HUB_OFFLINE", value)
    with caplog.at_level(logging.WARNING, logger="rlft.models.hub"):
        assert push_final(tmp_path, HubConfig(model_id="me/tuned")) is None
    assert hub == []
    assert "hub push of me/tuned skipped: HF_HUB_OFFLINE is set" in caplog.text
    assert f"huggingface-cli upload me/tuned {tmp_path}" in caplog.text  # how to push it later


def test_no_token_skips_with_a_message(hub, tmp_path: Path, monkeypatch, caplog):
    monkeypatch.setattr(huggingface_hub, "get_token", lambda: None)
    with caplog.at_level(logging.WARNING, logger="rlft.models.hub"):
        assert push_final(tmp_path, HubConfig(model_id="me/tuned")) is None
    assert hub == []
    assert "no hub token (set HF_TOKEN or run `huggingface-cli login`)" in caplog.text


def _unreachable_errors() -> list[BaseException]:
    """What an unreachable hub raises, for each HTTP client installed (huggingface_hub < 1.0 uses
    requests, then httpx, httpx2)."""
    errors: list[BaseException] = [ConnectionError("Name or service not known")]
    for client in ("httpx", "httpx2"):
        if importlib.util.find_spec(client):
            errors.append(
                importlib.import_module(client).ConnectError("Temporary failure in name resolution")
            )
    if importlib.util.find_spec("requests"):
        errors.append(importlib.import_module("requests").exceptions.ConnectionError("Max retries exceeded"))
    return errors


@pytest.mark.parametrize(
    "error", _unreachable_errors(), ids=lambda e: f"{type(e).__module__}.{type(e).__name__}"
)
def test_unreachable_hub_skips_without_failing(hub, tmp_path: Path, monkeypatch, caplog, error):
    def fail(*args, **kwargs):
        raise error

    monkeypatch.setattr(huggingface_hub, "create_repo", fail)
    with caplog.at_level(logging.WARNING, logger="rlft.models.hub"):
        assert push_final(tmp_path, HubConfig(model_id="me/tuned")) is None
    assert "hub push of me/tuned skipped: the hub could not be reached" in caplog.text
    assert hub == []  # nothing uploaded


def test_hub_refusing_is_logged_not_raised(hub, tmp_path: Path, monkeypatch, caplog):
    from huggingface_hub.errors import HfHubHTTPError

    def refuse(*args, **kwargs):
        response = types.SimpleNamespace(headers={}, request=None)
        raise HfHubHTTPError("403 Forbidden: you cannot write to me/tuned", response=response)

    monkeypatch.setattr(huggingface_hub, "upload_folder", refuse)
    with caplog.at_level(logging.ERROR, logger="rlft.models.hub"):
        assert push_final(tmp_path, HubConfig(model_id="me/tuned")) is None
    assert "hub push of me/tuned failed: 403 Forbidden" in caplog.text


def test_publish_final_writes_the_card_then_pushes(hub, tmp_path: Path):
    cfg = build(RLConfig, {"output_dir": str(tmp_path), "hub": {"model_id": "me/tuned"}})
    final = tmp_path / "final"
    final.mkdir()
    url = publish_final(cfg, final, {"after": {"accuracy": 0.5, "n": 4}})
    assert url == "https://huggingface.co/me/tuned"
    assert "| accuracy | 50.0% |" in (final / "README.md").read_text()
    assert [name for name, _, _ in hub] == ["create_repo", "upload_folder"]


def test_publish_final_without_card_or_push(hub, tmp_path: Path):
    cfg = build(RLConfig, {"output_dir": str(tmp_path), "save": {"model_card": False}})
    final = tmp_path / "final"
    final.mkdir()
    assert publish_final(cfg, final, {}) is None
    assert not (final / "README.md").exists() and hub == []
