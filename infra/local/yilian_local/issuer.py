"""The local issuer: mints tokens with the deployed stack's own KMS signing key.

For development, tests and first-admin bootstrap only: it needs AWS credentials allowed to
kms:Sign, which no end user has. Tokens it mints are exactly what the API's authorizer
accepts in production, because they are signed by the same key the sign-in function uses.
"""

from __future__ import annotations

import time
from typing import Any

from yilian.adapters.kms_signer import KmsJwtSigner
from yilian.domain.principal import Principal
from yilian.services.tokens import TokenIssuer


def mint(
    kms: Any, key_arn: str, params: dict[str, str], who: Principal, ttl: int | None = None
) -> str:
    issuer = TokenIssuer(
        KmsJwtSigner(kms, key_arn), params["TokenIssuer"], params["TokenAudience"], time.time
    )
    return issuer.issue(who, ttl)["access_token"]


def main(argv: list[str] | None = None) -> int:
    """`scripts/token`: mint a token from a deployed stack (AWS, LocalStack or a running
    ./scripts/up), e.g. the first consortium admin's on a new county."""
    import argparse
    import json
    from pathlib import Path

    import boto3

    from yilian.domain.principal import Role

    parser = argparse.ArgumentParser(prog="scripts/token", description=main.__doc__)
    parser.add_argument("--stack", required=True, help="CloudFormation stack name")
    parser.add_argument("--county", default="demo", help="infra/counties/<county>.json")
    parser.add_argument("--role", choices=[r.value for r in Role], required=True)
    parser.add_argument("--subject", required=True)
    parser.add_argument("--institution", default=None)
    parser.add_argument("--person", default=None)
    parser.add_argument("--ttl", type=int, default=900)
    parser.add_argument("--endpoint", default=None, help="emulator endpoint (local only)")
    parser.add_argument("--region", default=None)
    args = parser.parse_args(argv)
    root = Path(__file__).resolve().parents[3]
    params = json.loads((root / "infra" / "counties" / f"{args.county}.json").read_text())
    session = boto3.session.Session(region_name=args.region)
    cfn = session.client("cloudformation", endpoint_url=args.endpoint)
    outputs = {
        o["OutputKey"]: o["OutputValue"]
        for o in cfn.describe_stacks(StackName=args.stack)["Stacks"][0].get("Outputs", [])
    }
    who = Principal(
        args.subject, Role(args.role), params["ConsortiumId"], args.institution, args.person
    )
    kms = session.client("kms", endpoint_url=args.endpoint)
    print(mint(kms, outputs["TokenSigningKeyArn"], params, who, args.ttl))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
