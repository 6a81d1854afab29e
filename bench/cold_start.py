"""Cold start: import time of every function's handler module in a fresh process, as a ratio
to `import boto3` measured in the same run (interleaved, median of --runs).

Run: ./scripts/bench cold_start [--runs 7]. Target: max_api_ratio <= 1.5.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

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


def functions() -> dict[str, dict]:
    """Logical id -> {path, api} for every AWS::Serverless::Function in template.yaml."""
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
        out[logical_id] = {"path": str(path), "api": api}
    return out


def time_once(body: str) -> float:
    env = {"PATH": "/usr/bin:/bin", "AWS_DEFAULT_REGION": "cn-northwest-1", "PYTHONHASHSEED": "0"}
    out = subprocess.run(
        [sys.executable, "-c", PROBE.format(body=body)],
        capture_output=True, text=True, env=env, cwd=ROOT,
    )  # fmt: skip
    if out.returncode != 0:
        sys.exit(f"import failed:\n{body}\n{out.stderr}")
    return float(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--only", nargs="*", help="logical ids to measure (default: all)")
    args = parser.parse_args()
    fns = {k: v for k, v in functions().items() if not args.only or k in args.only}
    bodies = {"boto3": "import boto3"}
    for name, fn in fns.items():
        bodies[name] = LOAD_HANDLER.format(path=fn["path"], dir=str(Path(fn["path"]).parent))
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
        per_function[name] = {"ms": round(ms, 1), "ratio": round(ratio, 2), "api": fn["api"]}
        print(f"{name:28s} {ms:7.0f} ms  ratio {ratio:4.2f}  {'API' if fn['api'] else ''}")
    api_ratios = [v["ratio"] for v in per_function.values() if v["api"]]
    result = {
        "bench": "cold_start",
        "boto3_ms": round(base * 1000, 1),
        "max_api_ratio": max(api_ratios) if api_ratios else None,
        "per_function": per_function,
    }
    print(json.dumps(result, ensure_ascii=False))


if __name__ == "__main__":
    main()
