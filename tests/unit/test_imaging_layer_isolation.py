"""pydicom, numpy and pillow live in the imaging layer: an API function never loads them, not
when its handler module is imported and not when its service is built (the imaging API
function's build_service -> build_imaging(render=False) included). Each check runs in a
fresh interpreter, the way a Lambda container starts."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
HEAVY = ("pydicom", "numpy", "PIL")
IMAGING_LAYER = {"imaging_ingest", "imaging_render"}  # the functions that ship the layer
API_HANDLERS = sorted(
    p.parent.name
    for p in (ROOT / "functions").glob("*/app.py")
    if p.parent.name not in IMAGING_LAYER
)

PROBE = """
import importlib.util, json, os, sys
path, build, heavy = sys.argv[1], sys.argv[2] == "build", sys.argv[4].split(",")
os.environ.update(json.loads(sys.argv[3]))
spec = importlib.util.spec_from_file_location("handler_under_test", path)
module = importlib.util.module_from_spec(spec)
sys.path.insert(0, os.path.dirname(path))
spec.loader.exec_module(module)
assert callable(module.lambda_handler)
if build:
    import botocore.client
    botocore.client.BaseClient._make_api_call = lambda self, op, params: {}  # offline
    module.build_service()
print(json.dumps({
    "heavy": sorted(m for m in heavy if m in sys.modules),
    "imaging": sorted(m for m in sys.modules if m.startswith("yilian.imaging")),
}))
"""


def _environment() -> dict[str, str]:
    """Every YL_* setting with a placeholder: enough to build clients, never to call AWS."""
    import re

    text = (ROOT / "layers/yilian/python/yilian/settings.py").read_text(encoding="utf-8")
    names = set(re.findall(r'get\("(YL_[A-Z0-9_]+)"\)', text))
    env = {n: "{}" if n.endswith("_POLICY") else f"dummy-{n.lower()}" for n in names}
    env |= {"YL_CONSORTIUM_ID": "demo-county", "YL_MATCH_THRESHOLD": "0.92",
            "YL_REVIEW_THRESHOLD": "0.7", "AWS_DEFAULT_REGION": "cn-northwest-1",
            "AWS_ENDPOINT_URL": "http://127.0.0.1:9", "AWS_ACCESS_KEY_ID": "x",
            "AWS_SECRET_ACCESS_KEY": "x"}  # fmt: skip
    return env


def _loaded(function: str, build: bool = False) -> dict[str, list[str]]:
    path = ROOT / "functions" / function / "app.py"
    out = subprocess.run(
        [sys.executable, "-c", PROBE, str(path), "build" if build else "import",
         json.dumps(_environment()), ",".join(HEAVY)],
        capture_output=True, text=True, cwd=ROOT, timeout=120,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


@pytest.mark.parametrize("function", API_HANDLERS)
def test_an_api_handler_imports_without_the_imaging_layer(function: str) -> None:
    # Given a fresh interpreter / When the function's handler module is imported
    loaded = _loaded(function)
    # Then neither pydicom, numpy nor pillow is loaded
    assert loaded["heavy"] == []
    assert loaded["imaging"] == []


def test_the_imaging_api_builds_its_service_without_the_imaging_layer() -> None:
    # Given a fresh interpreter and the imaging API function's handler
    # When its service is built (build_imaging(render=False)) as the first request would
    loaded = _loaded("imaging", build=True)
    # Then no DICOM, array or image library was loaded, nor yilian.imaging.*
    assert loaded["heavy"] == []
    assert loaded["imaging"] == []


def test_the_probe_would_notice_the_imaging_layer() -> None:
    # Given the render function (on the imaging layer), built as its first request would
    loaded = _loaded("imaging_render", build=True)
    # Then the probe sees pydicom there: the checks above are not vacuous
    assert "pydicom" in loaded["heavy"]
