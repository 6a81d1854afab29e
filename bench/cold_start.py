"""Cold start: import time of every function's handler module in a fresh process, as a ratio
to `import boto3` measured in the same run (interleaved, median of --runs).

Run: ./scripts/bench cold_start [--runs 7]. Target: max_api_ratio <= 1.5.

The imaging functions on the imaging layer (pydicom, numpy, pillow: ImagingIngestFunction,
ImagingRenderFunction) load those on first use, not at import: for them `first_use_ms` is
the handler import plus yilian.imaging.dicom / render / deid (what their first invocation
adds). imaging_modules_in_api_functions: for every API function not on the imaging layer, a
fresh process loads its handler and calls its wiring (its functools.cache functions, with a dummy
environment: clients are built, nothing is called) and counts pydicom, numpy and PIL in
sys.modules afterwards (must be 0).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("pydicom", "numpy", "PIL")  # the imaging layer's: never in an API function
IMAGING_FIRST_USE = "import yilian.imaging.dicom, yilian.imaging.render, yilian.imaging.deid\n"

PROBE = """
import importlib.util, sys, time
t = time.perf_counter()
{body}
print(time.perf_counter() - t)
"""
LOAD_HANDLER = """
spec = importlib.util.spec_from_file_location("handler_under_test", {path!r})
module = importlib.util.module_from_spec(spec)
sys.path.insert(0, {dir!r})
spec.loader.exec_module(module)
assert callable(module.lambda_handler)
"""


WIRED = """
import os
import botocore.client
from cold_start import dummy_environment
os.environ.update(dummy_environment())
botocore.client.BaseClient._make_api_call = lambda self, op, params: {{}}  # offline: no AWS
built = []
for name, wiring in list(vars(module).items()):
    if hasattr(wiring, "cache_info"):  # the function's cached wiring (functools.cache)
        try:
            wiring()
            built.append(name)
        except Exception as error:  # a wiring that needs real answers: imports checked so far
            built.append(f"{{name}}:{{type(error).__name__}}")
heavy = sorted(m for m in {heavy!r} if m in sys.modules)
print("HEAVY", ",".join(heavy))
print("BUILT", ",".join(built))
"""


def dummy_environment() -> dict[str, str]:
    """Every YL_* variable Settings reads, with a placeholder, and a region and an endpoint
    nobody listens on: enough to build a function's wiring offline."""
    import re

    text = (ROOT / "layers/yilian/python/yilian/settings.py").read_text(encoding="utf-8")
    names = sorted(set(re.findall(r'get\("(YL_[A-Z0-9_]+)"\)', text)))
    env = {name: "{}" if name.endswith("_POLICY") else f"dummy-{name.lower()}" for name in names}
    env |= {"YL_CONSORTIUM_ID": "demo-county", "YL_IMAGING_POLICY": "{}",
            "YL_MATCH_THRESHOLD": "0.92", "YL_REVIEW_THRESHOLD": "0.7",
            "AWS_ENDPOINT_URL": "http://127.0.0.1:9", "AWS_ACCESS_KEY_ID": "x",
            "AWS_SECRET_ACCESS_KEY": "x"}  # fmt: skip
    return env


def functions() -> dict[str, dict]:
    """Logical id -> {path, api, imaging_layer} for every AWS::Serverless::Function."""
    from cfnlint.decode import decode_str

    template, _ = decode_str((ROOT / "template.yaml").read_text(encoding="utf-8"))
    out = {}
    for logical_id, res in template["Resources"].items():
        if res["Type"] != "AWS::Serverless::Function":
            continue
        props = res["Properties"]
        module = props["Handler"].rsplit(".", 1)[0]
        path = ROOT / props["CodeUri"] / f"{module}.py"
        events = props.get("Events", {}) or {}
        api = any(e.get("Type") == "Api" for e in events.values()) or "Authorizer" in logical_id
        layers = json.dumps(props.get("Layers", []))
        out[logical_id] = {"path": str(path), "api": api, "imaging_layer": "ImagingLayer" in layers}
    return out


def run_probe(body: str, extra: str = "", more_env: dict | None = None) -> list[str]:
    env = {"PATH": "/usr/bin:/bin", "AWS_DEFAULT_REGION": "cn-northwest-1", "PYTHONHASHSEED": "0",
           **(more_env or {})}  # fmt: skip
    out = subprocess.run(
        [sys.executable, "-c", PROBE.format(body=body) + extra],
        capture_output=True, text=True, env=env, cwd=ROOT,
    )  # fmt: skip
    if out.returncode != 0:
        sys.exit(f"import failed:\n{body}\n{out.stderr}")
    return out.stdout.strip().splitlines()


def time_once(body: str) -> float:
    return float(run_probe(body)[0])


def heavy_modules(fn: dict) -> tuple[list[str], str]:
    """The imaging layer's modules loaded by the handler and its wiring, in a fresh process,
    and which wiring functions were built (name:Error when one needed a real answer)."""
    body = LOAD_HANDLER.format(path=fn["path"], dir=str(Path(fn["path"]).parent))
    lines = run_probe(body, WIRED.format(heavy=HEAVY), {"PYTHONPATH": str(ROOT / "bench")})
    found = {x.split(" ", 1)[0]: x.split(" ", 1)[-1] if " " in x else "" for x in lines[1:]}
    return [m for m in found.get("HEAVY", "").split(",") if m], found.get("BUILT", "")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--only", nargs="*", help="logical ids to measure (default: all)")
    args = parser.parse_args()
    fns = {k: v for k, v in functions().items() if not args.only or k in args.only}
    bodies = {"boto3": "import boto3"}
    for name, fn in fns.items():
        bodies[name] = LOAD_HANDLER.format(path=fn["path"], dir=str(Path(fn["path"]).parent))
        if fn["imaging_layer"]:
            bodies[f"{name}+first_use"] = bodies[name] + IMAGING_FIRST_USE
    for body in bodies.values():  # warm the bytecode caches once; not measured
        time_once(body)
    samples: dict[str, list[float]] = {k: [] for k in bodies}
    for _ in range(args.runs):
        for key, body in bodies.items():
            samples[key].append(time_once(body))
    base = statistics.median(samples["boto3"])
    per_function = {}
    print(f"import boto3: {base * 1000:.0f} ms (median of {args.runs})")
    for name, fn in fns.items():
        ms = statistics.median(samples[name]) * 1000
        ratio = ms / 1000 / base
        row = {"ms": round(ms, 1), "ratio": round(ratio, 2), "api": fn["api"]}
        extra = ""
        if fn["imaging_layer"]:
            first = statistics.median(samples[f"{name}+first_use"]) * 1000
            row |= {"imaging_layer": True, "first_use_ms": round(first, 1)}
            extra = f"  imaging layer: + pydicom/numpy/pillow on first use {first:5.0f} ms"
        per_function[name] = row
        print(
            f"{name:28s} {ms:7.0f} ms  ratio {ratio:4.2f}  {'API' if fn['api'] else '   '}{extra}"
        )
    api_ratios = [v["ratio"] for v in per_function.values() if v["api"]]
    leaks = {name: heavy_modules(fn) for name, fn in fns.items()
             if fn["api"] and not fn["imaging_layer"]}  # fmt: skip
    leaking = {name: mods for name, (mods, _) in leaks.items() if mods}
    print(
        f"API functions off the imaging layer, handler + wiring loaded: {len(leaks)}; "
        f"loading {', '.join(HEAVY)}: {len(leaking)} {leaking or ''}"
    )
    print("  wiring built: " + "; ".join(f"{k} {b or '-'}" for k, (_, b) in leaks.items()))
    imaging = {k: v for k, v in per_function.items() if k.startswith("Imaging")}
    result = {
        "bench": "cold_start",
        "boto3_ms": round(base * 1000, 1),
        "max_api_ratio": max(api_ratios) if api_ratios else None,
        "imaging_modules_in_api_functions": len(leaking),
        "imaging_functions": imaging,
        "per_function": per_function,
    }
    print(json.dumps(result, ensure_ascii=False))


if __name__ == "__main__":
    main()
