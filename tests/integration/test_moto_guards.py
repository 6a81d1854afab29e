"""Guards: each moto internal the local stack patches or relies on, pinned.

yilian_local/patches.py, emulator.py and configure.py lean on moto 5.2.5's internals. If moto
changes, these fail with a message saying which patch to revisit, instead of the local stack
misbehaving quietly. Each test names the patch it guards.
"""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import moto
import pytest

from yilian_local import patches

pytestmark = pytest.mark.integration

MOTO = Path(moto.__file__).parent


def _original(function):
    """The moto function under a patch (patches wrap with functools.wraps)."""
    return inspect.unwrap(function)


def _source(obj) -> str:
    return inspect.getsource(_original(obj))


@pytest.fixture(scope="module", autouse=True)
def _patched():
    patches.apply()


def test_moto_is_the_pinned_version():
    assert moto.__version__ == patches.MOTO_VERSION, (
        f"moto {moto.__version__} installed, patches written for {patches.MOTO_VERSION}: "
        "re-check every guard below, then update MOTO_VERSION and requirements-dev.txt"
    )


# ------------------------------------------------------------------ Lambda hook


def test_invoke_lambda_is_still_the_single_hook_with_the_expected_signature():
    """patches._hook_lambda_invocations replaces LambdaFunction._invoke_lambda."""
    from moto.awslambda.models import LambdaFunction

    hook = LambdaFunction._invoke_lambda
    assert getattr(hook, "__yilian_hook__", False), "the Lambda hook is not installed"
    original = _original(hook)
    assert list(inspect.signature(original).parameters) == ["self", "event"], (
        "LambdaFunction._invoke_lambda(self, event) changed: rewrite the hook"
    )
    assert "return resp, invocation_error, logs" in inspect.getsource(original), (
        "_invoke_lambda no longer returns (payload, errored, logs)"
    )
    callers = [
        path.relative_to(MOTO).as_posix()
        for path in MOTO.rglob("*.py")
        if re.search(r"\._invoke_lambda\(", path.read_text(encoding="utf-8"))
    ]
    assert callers == ["awslambda/models.py"], (
        f"_invoke_lambda is called from {callers}: some invocations may bypass the hook"
    )
    assert "self._invoke_lambda(event=body)" in inspect.getsource(LambdaFunction.invoke)


def test_every_trigger_invokes_through_lambda_function_invoke():
    """S3 notifications, SQS, streams (in-process) and Step Functions (over HTTP, Invoke API)
    all end in LambdaFunction.invoke, hence in the hook."""
    from moto.awslambda.models import LambdaBackend
    from moto.s3 import notifications

    assert "func.invoke(" in _source(LambdaBackend.send_dynamodb_items)
    assert "self.invoke(" in inspect.getsource(LambdaBackend._send_sqs_message)
    assert "func.invoke(" in inspect.getsource(notifications._invoke_awslambda)
    sfn = MOTO / "stepfunctions/parser/asl/component/state/exec/state_task/lambda_eval_utils.py"
    assert "lambda_client.invoke(" in sfn.read_text(encoding="utf-8")
    boto_client = MOTO / "stepfunctions/parser/asl/utils/boto_client.py"
    assert 'f"http://localhost:{moto_server_port()}"' in boto_client.read_text(encoding="utf-8"), (
        "Step Functions tasks no longer call localhost:$MOTO_PORT (stack.py sets MOTO_PORT)"
    )


def test_lambda_functions_carry_what_the_runner_reads():
    from moto.awslambda.models import LambdaFunction

    init = inspect.getsource(LambdaFunction.__init__)
    for attribute in ("environment_vars", "memory_size", "timeout", "function_name", "run_time"):
        assert f"self.{attribute}" in init, f"LambdaFunction.{attribute} is gone (runner.py)"
    assert "def logs_group_name" in inspect.getsource(LambdaFunction) or "logs_group_name" in init
    assert callable(LambdaFunction.save_logs)


# ------------------------------------------------------------------ Step Functions


def test_cloudformation_state_machines_are_created_in_the_executing_backend():
    """patches.apply points moto.stepfunctions.models.stepfunctions_backends at the parser."""
    from moto.core.config import default_user_config
    from moto.stepfunctions import models, responses
    from moto.stepfunctions.parser.models import stepfunctions_parser_backends

    assert "stepfunctions_backends[account_id][region_name]" in inspect.getsource(
        models.StateMachine.create_from_cloudformation_json
    ), "StateMachine CFN no longer reads the module-level backends: fix the patch"
    assert models.stepfunctions_backends is stepfunctions_parser_backends
    assert "execute_state_machine" in inspect.getsource(responses.get_backend)
    assert default_user_config["stepfunctions"]["execute_state_machine"] is True


# ------------------------------------------------------------------ CloudFormation


def test_event_bus_ref_needs_a_physical_resource_id():
    """patches gives EventBus a physical_resource_id; Ref uses it when present."""
    from moto.cloudformation import parsing
    from moto.events.models import EventBus

    assert 'hasattr(resource, "physical_resource_id")' in inspect.getsource(parsing.clean_json)
    assert isinstance(EventBus.__dict__["physical_resource_id"], property)


def test_pseudo_parameters_are_still_hard_coded_for_the_aws_partition():
    """patches._pseudo_parameters_follow_partition: drop it when moto derives them."""
    from moto.cloudformation.parsing import ResourceMap

    source = _source(ResourceMap.__init__)
    assert '"AWS::Partition": "aws"' in source and '"AWS::URLSuffix": "amazonaws.com"' in source


def test_kms_keys_from_cloudformation_still_ignore_key_spec():
    """patches._create_kms_key honours KeySpec/KeyUsage; create_key must take them."""
    from moto.kms.models import Key, KmsBackend

    assert "_create_kms_key" in str(Key.create_from_cloudformation_json)
    parameters = inspect.signature(KmsBackend.create_key).parameters
    assert {"policy", "key_usage", "key_spec", "description", "tags", "multi_region", "origin"} <= (
        set(parameters)
    )


def test_resource_failures_are_recorded_from_parse_and_create_resource():
    """patches._record_resource_failures wraps it; ResourceMap must still call it by name."""
    from moto.cloudformation import parsing

    assert list(inspect.signature(_original(parsing.parse_and_create_resource)).parameters) == [
        "logical_id", "resource_json", "resources_map", "account_id", "region_name",
    ]  # fmt: skip
    assert "parse_and_create_resource(" in inspect.getsource(parsing.ResourceMap.__getitem__)


def test_a_failing_resource_is_reported_by_name(tmp_path: Path):
    """DeployError names the resource moto failed on (moto itself answers a bare 500)."""
    from yilian_local.stack import DeployError, LocalStack

    (tmp_path / "template.yaml").write_text(
        "Resources:\n"
        "  Broken:\n"
        "    Type: AWS::SQS::Queue\n"
        "    Properties: {QueueName: not a valid name!, FifoQueue: true}\n",
        encoding="utf-8",
    )
    stack = LocalStack({}, template_path=tmp_path / "template.yaml", root=tmp_path,
                       stack_name="yilian-broken")  # fmt: skip
    with pytest.raises(DeployError, match=r"resource Broken \(AWS::SQS::Queue\) failed"):
        stack.start()


# ------------------------------------------------------------------ S3 / DynamoDB dropped props


def test_s3_buckets_from_cloudformation_still_drop_their_configuration():
    """configure.apply_dropped_properties applies notification, lifecycle, CORS, PAB, versioning."""
    from moto.s3.models import FakeBucket

    source = inspect.getsource(FakeBucket.create_from_cloudformation_json)
    for prop in ("NotificationConfiguration", "LifecycleConfiguration", "CorsConfiguration",
                 "PublicAccessBlockConfiguration", "VersioningConfiguration"):  # fmt: skip
        assert prop not in source, f"moto now applies {prop}: drop it from configure.py"


def test_dynamodb_tables_from_cloudformation_still_drop_ttl_and_misread_sse():
    """configure applies TTL/PITR; template.for_moto renames SSEEnabled to Enabled."""
    from moto.dynamodb.models.table import Table

    create = inspect.getsource(Table.create_from_cloudformation_json)
    assert "TimeToLiveSpecification" not in create
    assert 'params["sse_specification"] = properties.get("SSESpecification")' in create
    assert 'self.sse_specification.get("Enabled")' in inspect.getsource(Table.describe)


def test_configure_reads_stacks_and_resolves_with_moto():
    from moto.cloudformation import parsing
    from moto.cloudformation.models import CloudFormationBackend, Stack

    assert callable(parsing.clean_json)
    assert "self.resource_map = " in inspect.getsource(Stack.__init__)
    assert "self.stacks" in inspect.getsource(CloudFormationBackend.__init__)


# ------------------------------------------------------------------ DynamoDB lock


def test_every_serialised_dynamodb_action_is_wrapped():
    """patches._serialise_dynamodb: one lock around these DynamoHandler actions."""
    from moto.dynamodb.responses import DynamoHandler

    for name in patches.SERIALISED_DYNAMODB_ACTIONS:
        assert getattr(getattr(DynamoHandler, name), "__yilian_serialised__", False), name


def test_stream_triggers_still_go_through_send_dynamodb_items():
    """The deferral (no lock across a nested invocation) hooks LambdaBackend.send_dynamodb_items."""
    from moto.dynamodb.models.table import StreamShard

    add = inspect.getsource(StreamShard.add)
    assert ".send_dynamodb_items(" in add and "if result:" in add


def test_transactions_still_snapshot_and_restore_whole_tables():
    """Why the lock exists: a cancelled transaction restores a deep copy of the table."""
    from moto.dynamodb.models import DynamoDBBackend

    source = inspect.getsource(DynamoDBBackend.transact_write_items)
    assert "copy.deepcopy(" in source and "self.put_item(" in source


# ------------------------------------------------------------------ emulator isolation


def test_threaded_server_internals_the_account_emulator_overrides():
    """emulator.AccountEmulator overrides ThreadedMotoServer._server_entry."""
    from moto.moto_server.threaded_moto_server import ThreadedMotoServer

    source = inspect.getsource(ThreadedMotoServer)
    for name in ("_server_entry", "self._ip_address", "self._port", "self._server_ready_event"):
        assert name in source, f"ThreadedMotoServer.{name} changed: fix emulator.py"


def test_the_account_header_still_selects_the_account():
    from moto.core.responses import BaseResponse

    assert '"x-moto-account-id" in self.headers' in inspect.getsource(
        BaseResponse.get_current_account
    )


def test_moto_reset_spares_running_emulators_only():
    """patches._reset_sparing_running_emulators replaces BackendDict.reset (mock_aws uses it)."""
    from moto.core.base_backend import BackendDict
    from moto.core.models import MockAWS

    assert "BackendDict.reset()" in inspect.getsource(MockAWS.reset)
    assert BackendDict.reset.__func__.__name__ == "_reset_sparing_running_emulators"
    assert isinstance(BackendDict._instances, list)


def test_mock_aws_elsewhere_in_the_session_leaves_the_local_stack_alone(local_stack):
    from moto import mock_aws

    table = local_stack.physical_id("PersonsTable")
    with mock_aws():
        import boto3

        mocked = boto3.client("dynamodb", region_name=local_stack.region)
        assert table not in mocked.list_tables()["TableNames"]  # another account entirely
    assert local_stack.client("dynamodb").describe_table(TableName=table)["Table"]


# ------------------------------------------------------------------ EventBridge


def test_rule_delivery_to_lambda_and_state_machines_is_still_missing():
    """patches._deliver_rule_targets_lambda_and_states: moto raises for these targets."""
    from moto.events.models import Rule

    source = _source(Rule.send_to_targets)
    assert 'arn.service == "lambda"' not in source and 'arn.service == "states"' not in source
    assert "raise NotImplementedError" in source
