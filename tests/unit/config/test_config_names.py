"""Built-in configs by name (`--config demo`), from any working directory: name resolution, the
error listing the names, the files they refer to (the package's copies), `rlft config list / cp`."""

from __future__ import annotations

from pathlib import Path

import pytest

from rlft.cli.main import main
from rlft.config.loader import (
    BUILTIN_DIR,
    PACKAGE_DIR,
    ConfigError,
    builtin_configs,
    load_config,
    load_yaml,
    resolve_config_path,
)

# the kind of run of every built-in config (a new one needs an entry: the test below loads each)
KINDS = {
    "bench_w": "rl",
    "code_tiny": "rl",
    "demo": "rl",
    "grpo_tiny": "rl",
    "rlhf_grpo": "rl",
    "sft_tiny": "sft",
    "dpo_tiny": "dpo",
    "rm_tiny": "rm",
    "rlhf_rm": "rm",
    "distill_tiny": "distill",
    "distill_smollm2": "distill",
    "pipeline_tiny": "pipeline",
}


@pytest.fixture
def elsewhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A working directory outside the checkout (no configs/ or examples/ in it)."""
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    return cwd


@pytest.mark.parametrize("name", ["demo", "demo.yaml", "configs/demo.yaml"])
def test_builtin_name_resolves_outside_the_checkout(elsewhere: Path, name: str):
    assert resolve_config_path(name) == BUILTIN_DIR / "demo.yaml"


def test_a_file_in_the_working_directory_wins(elsewhere: Path):
    (elsewhere / "demo.yaml").write_text("seed: 7\n")
    assert resolve_config_path("demo.yaml") == Path("demo.yaml")
    assert load_yaml("demo.yaml") == {"seed": 7}
    assert resolve_config_path("demo") == BUILTIN_DIR / "demo.yaml"  # no file named `demo`


def test_unknown_name_lists_the_builtin_names(elsewhere: Path):
    with pytest.raises(
        ConfigError, match=r"config file not found: nope \(built-in configs: .*demo.*grpo_tiny"
    ):
        resolve_config_path("nope")
    with pytest.raises(ConfigError, match="config file not found: other/demo.yaml"):
        resolve_config_path("other/demo.yaml")  # only configs/NAME.yaml falls back to a built-in


def test_builtin_list_matches_the_kinds_table():
    assert set(builtin_configs()) == set(KINDS)


@pytest.mark.parametrize("name", sorted(KINDS))
def test_every_builtin_config_loads_outside_the_checkout(elsewhere: Path, name: str):
    from rlft.cli.training import config_class

    if KINDS[name] == "pipeline":
        from rlft.config.pipeline import load_pipeline_config

        load_pipeline_config(name, [f"output_dir={elsewhere / 'out'}"])
    else:
        load_config(config_class(KINDS[name]), name)


def test_referenced_files_point_at_the_package_copy(elsewhere: Path):
    from rlft.config.rl import RLConfig

    cfg = load_config(RLConfig, "grpo_tiny")
    plugin = next(r.fn for r in cfg.rewards if "digit_density" in r.fn)
    assert plugin == f"{PACKAGE_DIR / 'examples' / 'rewards.py'}:digit_density"
    assert Path(plugin.rsplit(":", 1)[0]).is_file()
    assert Path(load_yaml("sft_tiny")["data"]["path"]).is_file()
    for stage in load_yaml("pipeline_tiny")["stages"]:
        if "config" in stage:
            assert resolve_config_path(stage["config"]).parent == BUILTIN_DIR


def test_referenced_files_are_left_alone_where_they_exist(tmp_path: Path, monkeypatch):
    (tmp_path / "examples").mkdir()
    (tmp_path / "examples" / "rewards.py").write_text("def digit_density(*a):\n    return 0.0\n")
    monkeypatch.chdir(tmp_path)
    rewards = load_yaml("grpo_tiny")["rewards"]
    assert rewards[1]["fn"] == "examples/rewards.py:digit_density"  # relative: the local one


def test_config_list_prints_every_name(capsys):
    assert main(["config", "list"]) == 0
    out = capsys.readouterr().out
    for name in KINDS:
        assert f"\n{name} " in f"\n{out}"
    assert "Tiny random-init model" in out


def test_config_cp_copies_and_refuses_to_overwrite(elsewhere: Path, capsys):
    assert main(["config", "cp", "demo", "x.yaml"]) == 0
    assert (elsewhere / "x.yaml").read_text() == (BUILTIN_DIR / "demo.yaml").read_text()
    (elsewhere / "x.yaml").write_text("mine\n")
    assert main(["config", "cp", "demo", "x.yaml"]) == 2
    assert "x.yaml exists; add --force to overwrite it" in capsys.readouterr().err
    assert (elsewhere / "x.yaml").read_text() == "mine\n"
    assert main(["config", "cp", "demo.yaml", "x.yaml", "--force"]) == 0
    assert (elsewhere / "x.yaml").read_text() == (BUILTIN_DIR / "demo.yaml").read_text()


def test_config_cp_into_a_directory_and_unknown_name(elsewhere: Path, capsys):
    (elsewhere / "d").mkdir()
    assert main(["config", "cp", "grpo_tiny", "d"]) == 0
    out = capsys.readouterr().out
    assert (elsewhere / "d" / "grpo_tiny.yaml").is_file()
    assert "refers to examples/rewards.py" in out  # not copied: where the package's copy is
    assert main(["config", "cp", "nope", "y.yaml"]) == 2
    assert "no built-in config 'nope' (built-in configs: bench_w" in capsys.readouterr().err
