"""Lambda invocations run the real handler in-process, with the function's own environment.

Several functions run at once in one process and triggers nest, so each invocation must see
its function's variables only (the os.environ overlay), and each function keeps one warm
module (a cold start per function, as Lambda containers).
"""

from __future__ import annotations

import json
import os
from concurrent.futures import ThreadPoolExecutor

import pytest

from yilian_local.environ import invocation_environ

pytestmark = pytest.mark.integration


def _invoke(stack, logical_id: str, event: dict) -> tuple[dict, str | None]:
    response = stack.client("lambda").invoke(
        FunctionName=stack.physical_id(logical_id), Payload=json.dumps(event).encode()
    )
    return json.loads(response["Payload"].read()), response.get("FunctionError")


def test_invoke_runs_the_handler_with_the_template_environment(fixture_stack):
    result, error = _invoke(fixture_stack, "AlphaFunction", {})
    assert error is None
    name = fixture_stack.physical_id("AlphaFunction")
    assert result["who_before"] == "alpha"  # the function's own Environment
    assert result["fixture_env"] == "fixture"  # Globals, with the parameter resolved
    assert result["function_env"] == name
    assert result["endpoint"] == fixture_stack.endpoint_url
    assert result["region"] == "cn-northwest-1"
    context = result["context"]
    assert context["function_name"] == name
    assert context["memory_limit_in_mb"] == "256"
    assert context["invoked_function_arn"] == (
        f"arn:aws-cn:lambda:cn-northwest-1:000000000000:function:{name}"
    )
    assert context["log_group_name"] == f"/aws/lambda/{name}"
    assert 0 < context["remaining_ms"] <= 10_000


def test_a_handler_error_comes_back_as_a_lambda_error_payload(fixture_stack):
    result, error = _invoke(fixture_stack, "AlphaFunction", {"raise": "missing"})
    assert error is not None
    assert result["errorType"] == "KeyError"
    assert result["errorMessage"] == "'missing'"
    assert any("lambda_handler" in line for line in result["stackTrace"])


def test_each_function_is_loaded_once_and_stays_warm(fixture_stack):
    first, _ = _invoke(fixture_stack, "BetaFunction", {})
    second, _ = _invoke(fixture_stack, "BetaFunction", {})
    assert first["loads"] == second["loads"] == 1  # same code dir as Alpha, its own module


def test_concurrent_invocations_each_see_their_own_environment(fixture_stack):
    events = [("AlphaFunction", "alpha"), ("BetaFunction", "beta")] * 4
    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(lambda e: _invoke(fixture_stack, e[0], {"sleep": 0.2})[0], events))
    for (_, who), result in zip(events, results, strict=True):
        assert (result["who_before"], result["who_after"]) == (who, who)
        assert (result["who_getenv"], result["copy_has_who"]) == (who, who)


def test_a_nested_invocation_sees_its_own_environment_and_restores_the_outer(fixture_stack):
    beta = fixture_stack.physical_id("BetaFunction")
    result, error = _invoke(fixture_stack, "AlphaFunction", {"nest": beta})
    assert error is None
    assert json.loads(result["nested"])["who_before"] == "beta"
    assert result["who_before"] == result["who_after"] == "alpha"


def test_the_overlay_leaves_the_process_environment_alone(fixture_stack):
    _invoke(fixture_stack, "AlphaFunction", {})
    assert "WHO" not in os.environ
    assert os.environ.get("AWS_LAMBDA_FUNCTION_NAME") is None
    with invocation_environ({"WHO": "outer"}):
        with invocation_environ({"WHO": "inner"}):
            os.environ["SET_INSIDE"] = "1"
            del os.environ["WHO"]
            assert "WHO" not in os.environ
        assert os.environ["WHO"] == "outer"
        assert "SET_INSIDE" not in os.environ
    assert "WHO" not in os.environ and "SET_INSIDE" not in os.environ


def test_s3_and_eventbridge_deliveries_reach_their_function(fixture_stack):
    s3, events = fixture_stack.client("s3"), fixture_stack.client("events")
    dynamodb = fixture_stack.client("dynamodb")
    s3.put_object(Bucket=fixture_stack.physical_id("Uploads"), Key="in/report 1.csv", Body=b"x")
    events.put_events(
        Entries=[
            {
                "Source": "yilian.fixture",
                "DetailType": "ping",
                "Detail": json.dumps({"n": 7}),
                "EventBusName": fixture_stack.physical_id("Bus"),
            }
        ]
    )
    table = fixture_stack.physical_id("SinkTable")
    keys = {i["pk"]["S"] for i in dynamodb.scan(TableName=table)["Items"]}
    assert "s3#in%2Freport+1.csv" in keys  # moto URL-encodes keys in notifications (so does S3)
    assert 'event#{"n": 7}' in keys


@pytest.mark.timeout(60)
def test_a_state_machine_from_the_template_runs_its_lambda_task(fixture_stack):
    """DefinitionUri inlined, substitutions folded, created in the executing backend."""
    import time

    sfn = fixture_stack.client("stepfunctions")
    execution = sfn.start_execution(
        stateMachineArn=fixture_stack.physical_id("Relay"), input=json.dumps({"run": "sfn-1"})
    )["executionArn"]
    deadline = time.monotonic() + 30
    while (status := sfn.describe_execution(executionArn=execution)["status"]) == "RUNNING":
        assert time.monotonic() < deadline, "the execution did not finish"
        time.sleep(0.2)
    assert status == "SUCCEEDED"
    table = fixture_stack.physical_id("SinkTable")
    item = fixture_stack.client("dynamodb").get_item(
        TableName=table, Key={"pk": {"S": 'event#{"run": "sfn-1"}'}}
    )
    assert item["Item"]["who"] == {"S": "sink"}
