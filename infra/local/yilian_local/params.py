"""Where the repository is and what a county's stack parameters are (no heavy imports)."""

from __future__ import annotations

import json
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[3]


def load_county_params(county: str, root: Path = REPO_ROOT) -> dict[str, str]:
    """The stack parameters of one county: infra/counties/<county>.json."""
    path = root / "infra" / "counties" / f"{county}.json"
    return {key: str(value) for key, value in json.loads(path.read_text("utf-8")).items()}
