"""``python -m yilian_local up``: run Yilian locally (what scripts/up calls).

    up [--target embedded|localstack] [--endpoint URL] [--county demo] [--port 8080]

embedded (default): the emulator in this process with template.yaml deployed, the API and the
web client (web/dist, if built) on one port, the demo county seeded; serves until Ctrl-C or
SIGTERM, then shuts down cleanly (exit 0).
localstack: package and deploy to a running LocalStack, print the outputs; exit 2 with a
one-line message when no LocalStack answers.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from typing import Any

from yilian_local.params import REPO_ROOT, load_county_params


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m yilian_local")
    commands = parser.add_subparsers(dest="command", required=True)
    up = commands.add_parser("up", help="start Yilian locally")
    up.add_argument("--target", choices=["embedded", "localstack"], default="embedded")
    up.add_argument("--endpoint", help="LocalStack edge URL (default: localstack-client's)")
    up.add_argument("--county", default="demo", help="infra/counties/<county>.json")
    up.add_argument("--port", type=int, default=8080, help="API and web client port (0: any)")
    up.add_argument("--host", default="127.0.0.1")
    up.add_argument("--region", default="cn-northwest-1")
    up.add_argument("--no-seed", action="store_true", help="do not seed the demo county")
    args = parser.parse_args(argv)
    params = load_county_params(args.county)
    if args.target == "localstack":
        return _localstack(params, args)
    return _embedded(params, args)


def _localstack(params: dict[str, str], args: argparse.Namespace) -> int:
    from yilian_local.localstack import DeployError as LocalStackDeployError
    from yilian_local.localstack import TargetUnreachable, deploy

    try:
        outputs = deploy(params, args.endpoint, region=args.region)
    except TargetUnreachable as error:
        print(f"yilian: {error}", file=sys.stderr)
        return 2
    except LocalStackDeployError as error:
        print(f"yilian: deploy to LocalStack failed: {error}", file=sys.stderr)
        return 1
    for key, value in outputs.items():
        print(f"{key}: {value}")
    return 0


def _embedded(params: dict[str, str], args: argparse.Namespace) -> int:
    from yilian_local.stack import DeployError, LocalStack

    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    logging.getLogger("yilian_local").setLevel(logging.INFO)
    web_root = REPO_ROOT / "web" / "dist"
    stack = LocalStack(
        params,
        gateway_port=args.port,
        web_root=web_root if (web_root / "index.html").is_file() else None,
        region=args.region,
        host=args.host,
    )
    stopping = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stopping.set())
    try:
        stack.start()
    except DeployError as error:
        print(f"yilian: {error}", file=sys.stderr)
        return 1
    try:
        _say(f"yilian: {stack.stack_name} is up (county {params['CountyCode']}, {args.region})")
        _say(f"  API:      {stack.api_url}")
        web = f"{stack.gateway_url}/" if stack.web_root else "not built (web/dist missing)"
        _say(f"  Web:      {web}")
        _say(f"  Emulator: {stack.endpoint_url}  (AWS_ENDPOINT_URL for the AWS CLI/SDKs)")
        if not args.no_seed:
            _seed(stack)
        _say("Ctrl-C to stop.")
        stopping.wait()
    finally:
        stack.stop()
    _say("yilian: stopped.")
    return 0


def _seed(stack: Any) -> None:
    try:
        from yilian_local.seed import seed_demo
    except ModuleNotFoundError as error:
        if error.name != "yilian_local.seed":
            raise
        _say("  (no yilian_local.seed module yet: not seeding)")
        return
    try:
        seeded: dict[str, Any] = seed_demo(stack)
    except Exception as error:  # noqa: BLE001 - the stack stays useful without demo data
        print(f"yilian: seeding the demo county failed: {error}", file=sys.stderr)
        return
    for line in seeded.get("lines", []):
        _say(f"  {line}")
    for key in ("doctor_token", "resident_token", "admin_token"):
        if key in seeded:
            _say(f"  {key}: {seeded[key]}")


def _say(line: str) -> None:
    print(line, flush=True)


if __name__ == "__main__":
    sys.exit(main())
