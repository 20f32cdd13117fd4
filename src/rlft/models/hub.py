"""What a run does with final/ once it is saved and evaluated (`publish_final`): the model card
(save.model_card) and, with hub.model_id set, a push to the Hugging Face Hub (`push_final`).

A push that cannot happen is skipped with one logged line saying why (offline mode, no token, the
hub unreachable, the hub refusing) and never fails the run: the model is saved either way, and
the line says how to push it later."""

from __future__ import annotations

import contextlib
import importlib
import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from rlft.dist.ranks import is_main
from rlft.models.model_card import card_info_from_config, supervised_eval_results, write_model_card

log = logging.getLogger(__name__)
TRUE = ("1", "true", "yes", "on")


def _connection_errors() -> tuple[type[BaseException], ...]:
    """The errors of a hub that cannot be reached, for the HTTP client huggingface_hub uses
    (requests before 1.0, then httpx, httpx2) and its own offline-mode error."""
    errors: list[type[BaseException]] = [ConnectionError, TimeoutError]
    for module, names in [
        ("requests.exceptions", ("ConnectionError", "Timeout")),
        ("httpx", ("TransportError",)),
        ("httpx2", ("TransportError",)),
        ("huggingface_hub.errors", ("OfflineModeIsEnabled",)),
    ]:
        with contextlib.suppress(ImportError):
            found = importlib.import_module(module)
            errors += [getattr(found, n) for n in names if isinstance(getattr(found, n, None), type)]
    return tuple(errors)


def push_final(final_dir: str | Path, hub_cfg: Any) -> str | None:
    """Upload final_dir to the hub repo hub_cfg.model_id (created if absent, private as
    hub_cfg.private; on branch hub_cfg.revision when set, created if absent). Returns the repo's
    URL, or None when there is nothing to push or the push was skipped (logged)."""
    repo = hub_cfg.model_id
    if not repo:
        return None
    later = f"push it later with: huggingface-cli upload {repo} {final_dir}"
    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in TRUE:
        log.warning("hub push of %s skipped: HF_HUB_OFFLINE is set (offline mode); %s", repo, later)
        return None
    import huggingface_hub as hf
    from huggingface_hub.errors import HfHubHTTPError

    token = hf.get_token()
    if not token:
        log.warning(
            "hub push of %s skipped: no hub token (set HF_TOKEN or run `huggingface-cli login`); %s",
            repo,
            later,
        )
        return None
    revision = hub_cfg.revision or None
    try:
        url = hf.create_repo(repo, token=token, private=hub_cfg.private, repo_type="model", exist_ok=True)
        if revision:
            hf.create_branch(repo, branch=revision, token=token, repo_type="model", exist_ok=True)
        hf.upload_folder(
            repo_id=repo,
            folder_path=str(final_dir),
            repo_type="model",
            revision=revision,
            token=token,
            commit_message="Upload model trained with rlft",
        )
    except _connection_errors() as e:
        log.warning("hub push of %s skipped: the hub could not be reached (%s); %s", repo, e, later)
        return None
    except HfHubHTTPError as e:
        log.error("hub push of %s failed: %s; %s", repo, e, later)
        return None
    url = str(url)
    log.info("pushed %s to %s%s", final_dir, url, f" (branch {revision})" if revision else "")
    return url


def data_rows(out_dir: Path) -> int | None:
    """Training rows read (less the bad ones), from the run's data_report.json when it has one."""
    path = out_dir / "data_report.json"
    if not path.exists():
        return None
    report = json.loads(path.read_text())
    rows = int(report.get("rows", 0)) - int(report.get("bad_rows", 0))
    return rows if rows > 0 else None  # 0: no file read (a built-in task)


def publish_final(cfg: Any, final_dir: str | Path, eval_results: Mapping[str, Any]) -> str | None:
    """Rank 0: write final_dir/README.md (save.model_card) from the config and the held-out
    results, then push final_dir (hub.model_id). Returns the hub URL, or None."""
    if not is_main():
        return None
    if cfg.save.model_card:
        info = card_info_from_config(cfg, eval_results, data_rows(Path(cfg.output_dir)))
        path = write_model_card(final_dir, info)
        log.info("model card: %s", path)
    return push_final(final_dir, cfg.hub)


def publish_supervised(cfg: Any, results: dict[str, Any]) -> None:
    """`publish_final` for the supervised loops (SFT, DPO), once run_supervised_loop has saved
    final/: the card compares the first and the last held-out evaluation of metrics.jsonl. Adds
    "hub_url" to `results` after a push."""
    if "final_dir" not in results:  # stopped early: no final/
        return
    evals = supervised_eval_results(Path(cfg.output_dir), results)
    if url := publish_final(cfg, results["final_dir"], evals):
        results["hub_url"] = url
