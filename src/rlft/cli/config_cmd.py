"""`rlft config list` and `rlft config cp NAME DEST`: the built-in configs shipped inside the package
(`--config NAME` runs one as it is; `cp` copies one out to edit)."""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from rlft.config.loader import PACKAGE_FILE_DIRS, ConfigError, builtin_configs, resolve_config_path


def add_config_parser(sub) -> None:
    c = sub.add_parser("config", help="list the built-in configs, or copy one out to edit")
    csub = c.add_subparsers(dest="config_command", required=True)
    csub.add_parser("list", help="the built-in configs (usable as --config NAME) and what each runs")
    cp = csub.add_parser("cp", help="copy a built-in config to a file (or into a directory)")
    cp.add_argument("name", help="built-in config name, e.g. demo or grpo_tiny")
    cp.add_argument("dest", help="file to write, or an existing directory (NAME.yaml inside)")
    cp.add_argument("--force", action="store_true", help="overwrite DEST if it exists")


def describe(path: Path, width: int = 90) -> str:
    """The first sentence of a config's leading comment (what it runs), at most `width` characters."""
    words = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.startswith("#"):
            break
        words += line.lstrip("#").split()
    text = " ".join(words)
    text = text[: text.find(". ") + 1 or len(text)].rstrip(":")
    return text if len(text) <= width else text[: width - 3].rstrip() + "..."


def package_references(path: Path) -> list[str]:
    """Relative file references of a config (under examples/) that resolve only in the package."""
    refs = []
    for token in path.read_text(encoding="utf-8").split():
        file = token.partition(".py:")[0] + ".py" if ".py:" in token else token
        if file.split("/")[0] in PACKAGE_FILE_DIRS and not Path(file).exists():
            refs.append(file)
    return sorted(set(refs))


def cmd_config(args: argparse.Namespace) -> int:
    configs = builtin_configs()
    if args.config_command == "list":
        width = max((len(n) for n in configs), default=0)
        for name, path in configs.items():
            print(f"{name:<{width}}  {describe(path)}".rstrip())
        return 0
    if args.name.removesuffix(".yaml") not in configs:
        raise ConfigError(f"no built-in config '{args.name}' (built-in configs: {', '.join(configs)})")
    src = resolve_config_path(args.name.removesuffix(".yaml"))
    dest = Path(args.dest)
    if dest.is_dir():
        dest = dest / src.name
    if dest.exists() and not args.force:
        raise ConfigError(f"{dest} exists; add --force to overwrite it")
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dest)
    print(f"copied built-in config {src.stem} to {dest}")
    for ref in package_references(src):
        print(
            f"note: it refers to {ref} (relative to the working directory); the package's copy is at "
            f"{src.parent.parent / ref}"
        )
    return 0
