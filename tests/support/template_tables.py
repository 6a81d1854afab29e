"""Create the template's DynamoDB tables in an emulator, from template.yaml itself.

Integration tests that need only tables (not the whole stack) use this so the schema is
never hand-copied: change the template and the tests follow.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "template.yaml"
PSEUDO = {
    "AWS::AccountId": "123456789012",
    "AWS::Region": "cn-northwest-1",
    "AWS::Partition": "aws-cn",
}


def load_template() -> dict[str, Any]:
    from cfnlint.decode import decode_str

    template, matches = decode_str(TEMPLATE.read_text(encoding="utf-8"))
    if matches:
        raise RuntimeError(f"template.yaml does not parse: {matches}")
    return json.loads(json.dumps(template))  # plain dicts/strs


def county_params(county: str = "demo") -> dict[str, str]:
    return json.loads((ROOT / "infra" / "counties" / f"{county}.json").read_text(encoding="utf-8"))


def _sub(value: Any, params: dict[str, str]) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and "Fn::Sub" in value:
        text = value["Fn::Sub"]
        return re.sub(r"\$\{([^}]+)\}", lambda m: {**PSEUDO, **params}[m.group(1)], text)
    raise ValueError(f"cannot resolve {value!r} offline")


def table_definitions(params: dict[str, str]) -> dict[str, dict[str, Any]]:
    """Logical id -> CreateTable kwargs for every AWS::DynamoDB::Table in the template."""
    out = {}
    for logical_id, res in load_template()["Resources"].items():
        if res["Type"] != "AWS::DynamoDB::Table":
            continue
        props = res["Properties"]
        kwargs: dict[str, Any] = {
            "TableName": _sub(props["TableName"], params),
            "AttributeDefinitions": props["AttributeDefinitions"],
            "KeySchema": props["KeySchema"],
            "BillingMode": props.get("BillingMode", "PAY_PER_REQUEST"),
        }
        if props.get("GlobalSecondaryIndexes"):
            kwargs["GlobalSecondaryIndexes"] = props["GlobalSecondaryIndexes"]
        if props.get("StreamSpecification"):
            spec = props["StreamSpecification"]
            kwargs["StreamSpecification"] = {"StreamEnabled": True, **spec}
        out[logical_id] = kwargs
    return out


def create_tables(dynamodb: Any, params: dict[str, str] | None = None) -> dict[str, str]:
    """Create every template table; returns logical id -> table name."""
    params = params or county_params()
    names = {}
    for logical_id, kwargs in table_definitions(params).items():
        dynamodb.create_table(**kwargs)
        names[logical_id] = kwargs["TableName"]
    return names
