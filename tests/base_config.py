"""The base configuration as Kedro resolves it, for tests that read parameter files directly.

Parameter files reference ``globals.yml`` (``${globals:storage_options}``); read with a plain
YAML parser they would hold that text instead of the value.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from omegaconf import OmegaConf

CONF_BASE = Path(__file__).resolve().parents[1] / "conf" / "base"


def base_parameters(filename: str) -> dict[str, Any]:
    """``conf/base/<filename>`` with ``${globals:...}`` resolved against ``globals.yml``.

    Args:
        filename: A file in ``conf/base``, e.g. ``parameters_labelling.yml``.

    Returns:
        The file's content as plain Python objects.
    """
    shared = yaml.safe_load((CONF_BASE / "globals.yml").read_text()) or {}
    config = OmegaConf.create(
        {"globals": shared, **yaml.safe_load((CONF_BASE / filename).read_text())}
    )
    # `${globals:key}` is Kedro's resolver syntax; as an interpolation it is `${globals.key}`.
    text = OmegaConf.to_yaml(config).replace("${globals:", "${globals.")
    resolved = OmegaConf.to_container(OmegaConf.create(text), resolve=True)
    resolved.pop("globals")
    return resolved
