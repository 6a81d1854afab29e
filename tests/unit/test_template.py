"""template.yaml rules that keep one template deployable to aws, aws-cn and the local stacks."""

import json
import re

from tests.support.template_tables import ROOT, load_template

TEMPLATE_TEXT = (ROOT / "template.yaml").read_text(encoding="utf-8")


def _strings(node):
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for v in node.values():
            yield from _strings(v)
    elif isinstance(node, list):
        for v in node:
            yield from _strings(v)


def test_every_arn_is_built_with_the_partition():
    # aws-cn ARNs start arn:aws-cn: — a literal arn:aws: breaks every China-region deploy
    arns = [s for s in _strings(load_template()) if "arn:" in s]
    assert arns, "expected ARNs in the template"
    wrong = [s for s in arns if not re.search(r"arn:\$\{AWS::Partition\}:", s)]
    assert wrong == []


def test_every_function_points_at_a_handler_that_exists():
    for logical_id, res in load_template()["Resources"].items():
        if res["Type"] != "AWS::Serverless::Function":
            continue
        module, func = res["Properties"]["Handler"].rsplit(".", 1)
        source = ROOT / res["Properties"]["CodeUri"] / f"{module}.py"
        assert source.is_file(), f"{logical_id}: {source} missing"
        assert f"def {func}(" in source.read_text(encoding="utf-8"), logical_id


def test_no_function_refs_the_bucket_whose_events_trigger_it():
    # A function that !Refs its trigger bucket is a circular dependency on AWS
    for logical_id, res in load_template()["Resources"].items():
        if res["Type"] != "AWS::Serverless::Function":
            continue
        events = res["Properties"].get("Events") or {}
        triggers = {e["Properties"]["Bucket"]["Ref"] for e in events.values() if e["Type"] == "S3"}
        body = json.dumps(res["Properties"].get("Environment", {}))
        body += json.dumps(res["Properties"].get("Policies", []))
        for bucket in triggers:
            assert f'"Ref": "{bucket}"' not in body, f"{logical_id} refs {bucket}"


def test_personal_data_stores_are_encrypted():
    for logical_id, res in load_template()["Resources"].items():
        props = res.get("Properties", {})
        if res["Type"] == "AWS::DynamoDB::Table":
            assert props.get("SSESpecification", {}).get("SSEEnabled") is True, logical_id
        if res["Type"] == "AWS::S3::Bucket":
            assert props.get("BucketEncryption"), logical_id
            assert props["PublicAccessBlockConfiguration"]["RestrictPublicBuckets"], logical_id
