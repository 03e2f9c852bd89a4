"""Configuration: one YAML file (config.yaml) with ${VAR:default}, read here and nowhere else.

Nameko services get the same mapping as ``self.container.config`` from ``nameko run --config``;
the CLI, tests and benchmarks call :func:`load_config`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_PATH = ROOT / "config.yaml"

_yaml_ready = False


def load_config(path: str | os.PathLike | None = None) -> dict[str, Any]:
    """Read the config file with nameko's ${VAR:default} substitution."""
    global _yaml_ready
    if not _yaml_ready:
        from nameko.cli.main import setup_yaml_parser

        setup_yaml_parser()
        _yaml_ready = True
    path = Path(path or os.environ.get("KEZEK_CONFIG") or DEFAULT_PATH)
    with open(path) as fh:
        return yaml.safe_load(fh)


def settings(config: dict[str, Any]) -> dict[str, Any]:
    """The project's own settings block."""
    return config.get("KEZEK", {})
