"""Guards: each moto internal the local stack patches or relies on, pinned.

yilian_local/patches.py, emulator.py and configure.py lean on moto 5.2.5's internals. If moto
changes, these fail with a message saying which patch to revisit, instead of the local stack
misbehaving quietly. Each test names the patch it guards.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import re
import statistics
import time
import uuid
from pathlib import Path
from typing import NamedTuple

import moto
import pytest
from botocore.exceptions import ClientError

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


# sha256 of moto 5.2.5's DynamoDBBackend.transact_write_items source, which
# patches._transact_write reproduces minus the whole-table deep copy.
TRANSACT_WRITE_ITEMS_SHA256 = "81db2cb7d94e39c90b3a2077e1f4bb41a449c558ef9b1b1e2910fdaa39978ad4"


def test_transactions_back_up_only_the_items_they_touch():
    """patches._transactions_back_up_touched_items replaces DynamoDBBackend.transact_write_items.

    moto's own deep-copies each touched table (so it costs O(table size)) and is not atomic
    under concurrent requests (so the lock stays). The patch is moto's loop, copied: any change
    to moto's method means re-deriving patches._transact_write from it, then this hash.
    """
    from moto.dynamodb.models import DynamoDBBackend

    method = DynamoDBBackend.transact_write_items
    assert getattr(method, "__yilian_item_backup__", False), "transaction patch not installed"
    source = inspect.getsource(_original(method))
    assert "copy.deepcopy(" in source and "self.put_item(" in source
    assert hashlib.sha256(source.encode()).hexdigest() == TRANSACT_WRITE_ITEMS_SHA256, (
        "moto's transact_write_items changed: re-derive patches._transact_write from it"
    )
    assert list(inspect.signature(DynamoDBBackend.get_keys_value).parameters) == [
        "self",
        "table",
        "keys",
    ]


def test_tables_store_items_where_the_transaction_journal_restores_them():
    """patches._TransactionJournal restores Table.items ({hash: Item} or {hash: {range: Item}})
    and truncates StreamShard.items; GSIs hold nothing of their own (computed from items)."""
    from moto.dynamodb.models.table import SecondaryIndex, StreamShard, Table

    put = inspect.getsource(Table.put_item)
    assert "self.items[hash_value][range_value] = item" in put
    assert "self.items[hash_value] = item" in put
    assert "self.stream_shard.add(current, item)" in put
    assert "result = self.items[hash_key][range_key]" in inspect.getsource(Table.get_item)
    delete = inspect.getsource(Table.delete_item)
    assert "self.items[hash_key].pop(range_key)" in delete and "self.items.pop(hash_key)" in delete
    add = inspect.getsource(StreamShard.add)
    assert "self.items.append(" in add and "self.items = []" in add
    for index in (SecondaryIndex, *SecondaryIndex.__subclasses__()):
        assert "items" not in inspect.getsource(index), f"{index.__name__} now stores items"
    assert "for hash_set in self.items.values()" in inspect.getsource(Table.has_idx_items)
    assert "for hash_set in self.items.values()" in inspect.getsource(Table.all_items)


class _TableCopy(NamedTuple):
    name: str
    key_types: dict[str, str]  # key attribute -> S/N/B
    indexes: list[str]  # GSI names


def _template_table_copy(local_stack, logical_id: str) -> _TableCopy:
    """A fresh table with ``logical_id``'s schema in template.yaml (keys, GSIs, stream)."""
    from tests.support.template_tables import county_params, table_definitions

    kwargs = dict(table_definitions(county_params())[logical_id])
    kwargs["TableName"] = f"{kwargs['TableName']}-txn-{uuid.uuid4().hex[:8]}"
    local_stack.client("dynamodb").create_table(**kwargs)
    types = {a["AttributeName"]: a["AttributeType"] for a in kwargs["AttributeDefinitions"]}
    keys = {k["AttributeName"]: types[k["AttributeName"]] for k in kwargs["KeySchema"]}
    indexes = [i["IndexName"] for i in kwargs.get("GlobalSecondaryIndexes", [])]
    return _TableCopy(kwargs["TableName"], keys, indexes)


def _key(key_types: dict[str, str], name: str) -> dict[str, dict[str, str]]:
    return {
        attr: {kind: name if kind == "S" else str(len(name))} for attr, kind in key_types.items()
    }


@pytest.fixture(params=["PersonsTable", "IdempotencyTable"])  # hash+range+GSI, hash only
def txn_table(request, local_stack):
    copy = _template_table_copy(local_stack, request.param)
    yield copy
    local_stack.client("dynamodb").delete_table(TableName=copy.name)


def _item(key_types, name: str, **attrs: str) -> dict[str, dict[str, str]]:
    return {**_key(key_types, name), **{k: {"S": v} for k, v in attrs.items()}}


def test_a_cancelled_transaction_leaves_every_item_as_it_was(local_stack, txn_table):
    table, key_types, indexes = txn_table
    dynamodb = local_stack.client("dynamodb")
    present = _item(key_types, "present", v="before", gsi1pk="g", gsi1sk="present")
    guard = _item(key_types, "guard", v="guard")
    for item in (present, guard):
        dynamodb.put_item(TableName=table, Item=item)
    failing = {  # the second item's condition fails: the guard exists
        "Put": {
            "TableName": table,
            "Item": _item(key_types, "guard", v="overwritten"),
            "ConditionExpression": "attribute_not_exists(v)",
            "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
        }
    }
    firsts = [
        {
            "Put": {
                "TableName": table,
                "Item": _item(key_types, "absent", v="new", gsi1pk="g", gsi1sk="absent"),
            }
        },
        {
            "Update": {
                "TableName": table,
                "Key": _key(key_types, "present"),
                "UpdateExpression": "SET v = :v, gsi1sk = :v",
                "ExpressionAttributeValues": {":v": {"S": "after"}},
            }
        },
        {"Delete": {"TableName": table, "Key": _key(key_types, "present")}},
        {"Put": {"TableName": table, "Item": _item(key_types, "present", w="replaced")}},
    ]
    for first in firsts:
        with pytest.raises(ClientError) as cancelled:
            dynamodb.transact_write_items(TransactItems=[first, failing])
        error = cancelled.value.response
        assert error["Error"]["Code"] == "TransactionCanceledException"
        assert error["CancellationReasons"] == [
            {"Code": "None"},
            {
                "Code": "ConditionalCheckFailed",
                "Message": "The conditional request failed",
                "Item": guard,
            },
        ]
        items = dynamodb.scan(TableName=table, ConsistentRead=True)["Items"]
        assert sorted(items, key=str) == sorted([present, guard], key=str), first
    for index in indexes:  # computed from the items: the restored ones only
        by_gsi = dynamodb.query(
            TableName=table,
            IndexName=index,
            KeyConditionExpression="gsi1pk = :g",
            ExpressionAttributeValues={":g": {"S": "g"}},
        )["Items"]
        assert by_gsi == [present]


def test_a_transaction_rejected_midway_is_rolled_back_and_raises_as_in_moto(local_stack, txn_table):
    """moto raises MultipleTransactionsException only on reaching the second write of a key."""
    table, key_types, _ = txn_table
    dynamodb = local_stack.client("dynamodb")
    put = {"Put": {"TableName": table, "Item": _item(key_types, "twice", v="1")}}
    with pytest.raises(ClientError) as rejected:
        dynamodb.transact_write_items(TransactItems=[put, put])
    assert rejected.value.response["Error"] == {
        "Code": "ValidationException",
        "Message": "Transaction request cannot include multiple operations on one item",
    }
    assert dynamodb.scan(TableName=table, ConsistentRead=True)["Items"] == []


def test_a_transaction_whose_conditions_hold_writes_every_item(local_stack, txn_table):
    table, key_types, _ = txn_table
    dynamodb = local_stack.client("dynamodb")
    dynamodb.put_item(TableName=table, Item=_item(key_types, "old", v="1"))
    dynamodb.transact_write_items(
        TransactItems=[
            {
                "Put": {
                    "TableName": table,
                    "Item": _item(key_types, "new", v="n"),
                    "ConditionExpression": "attribute_not_exists(v)",
                }
            },
            {
                "Update": {
                    "TableName": table,
                    "Key": _key(key_types, "old"),
                    "UpdateExpression": "SET v = :v",
                    "ConditionExpression": "v = :one",
                    "ExpressionAttributeValues": {":v": {"S": "2"}, ":one": {"S": "1"}},
                }
            },
        ]
    )
    items = dynamodb.scan(TableName=table, ConsistentRead=True)["Items"]
    expected = [_item(key_types, "new", v="n"), _item(key_types, "old", v="2")]
    assert sorted(items, key=str) == sorted(expected, key=str)


@pytest.mark.timeout(60)
def test_a_transaction_costs_the_same_on_a_big_table(local_stack):
    """moto deep-copies each touched table per transaction (~20x slower at 5,000 items)."""
    table, key_types, _ = _template_table_copy(local_stack, "PersonsTable")
    dynamodb = local_stack.client("dynamodb")

    def fill(start: int, stop: int) -> None:
        for first in range(start, stop, 25):
            requests = [
                {"PutRequest": {"Item": _item(key_types, f"filler-{n}", d="x" * 50)}}
                for n in range(first, min(first + 25, stop))
            ]
            dynamodb.batch_write_item(RequestItems={table: requests})

    def median_transaction(run: str) -> float:
        timings = []
        for n in range(50):
            started = time.perf_counter()
            dynamodb.transact_write_items(
                TransactItems=[
                    {
                        "Put": {
                            "TableName": table,
                            "Item": _item(key_types, f"{run}-{n}"),
                            "ConditionExpression": "attribute_not_exists(v)",
                        }
                    },
                    {"Put": {"TableName": table, "Item": _item(key_types, f"{run}-{n}-b")}},
                ]
            )
            timings.append(time.perf_counter() - started)
        return statistics.median(timings)

    try:
        fill(0, 100)
        small = median_transaction("small")
        fill(100, 5_100)
        big = median_transaction("big")
    finally:
        dynamodb.delete_table(TableName=table)
    assert big / small < 3, f"{big * 1000:.1f} ms at 5,000 items vs {small * 1000:.1f} ms at 100"


@pytest.mark.timeout(60)
def test_a_cancelled_transaction_never_reaches_a_stream_consumer(fixture_stack):
    """SourceTable's stream feeds the sink function, which records each key it is sent."""
    source = fixture_stack.physical_id("SourceTable")
    sink = fixture_stack.physical_id("SinkTable")
    dynamodb = fixture_stack.client("dynamodb")
    cancelled, committed = (f"txn-{uuid.uuid4().hex[:8]}-{n}" for n in range(2))
    with pytest.raises(ClientError, match="TransactionCanceledException"):
        dynamodb.transact_write_items(
            TransactItems=[
                {"Put": {"TableName": source, "Item": {"pk": {"S": cancelled}}}},
                {
                    "ConditionCheck": {
                        "TableName": source,
                        "Key": {"pk": {"S": "never-there"}},
                        "ConditionExpression": "attribute_exists(pk)",
                    }
                },
            ]
        )
    dynamodb.transact_write_items(
        TransactItems=[{"Put": {"TableName": source, "Item": {"pk": {"S": committed}}}}]
    )

    def delivered(key: str) -> bool:
        return "Item" in dynamodb.get_item(TableName=sink, Key={"pk": {"S": f"stream#{key}"}})

    assert delivered(committed)  # the trigger ran before the transaction returned
    assert not delivered(cancelled)
    assert "Item" not in dynamodb.get_item(TableName=source, Key={"pk": {"S": cancelled}})


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


# ------------------------------------------------------------------ Step Functions callbacks


def test_moto_still_accepts_callbacks_on_closed_tasks_and_cannot_raise_task_timed_out():
    """patches._spent_task_tokens_are_refused: moto's CallbackPoolManager.notify overwrites a
    finished endpoint's outcome (a replayed token answers 200) and its TaskTimedOut needs a
    message it is never given. If either changes, revisit the patch."""
    from moto.stepfunctions.parser.api import TaskTimedOut
    from moto.stepfunctions.parser.asl.eval.callback.callback import (
        CallbackOutcomeSuccess,
        CallbackPoolManager,
    )

    notify_source = _source(CallbackPoolManager.notify)
    assert "callback_endpoint.notify(outcome=outcome)" in notify_source
    assert "get_outcome" not in notify_source
    with pytest.raises(TypeError):
        TaskTimedOut()
    # and the patched pool refuses a second outcome for the same token
    pool = CallbackPoolManager(activity_store={})
    pool.add("token-1")
    assert pool.notify("token-1", CallbackOutcomeSuccess(callback_id="token-1", output="{}"))
    with pytest.raises(patches.TaskClosed):
        pool.notify("token-1", CallbackOutcomeSuccess(callback_id="token-1", output="{}"))
    assert (
        pool.notify("unknown", CallbackOutcomeSuccess(callback_id="unknown", output="{}")) is False
    )


def test_state_machine_definition_substitutions_keep_the_context_object_prefix():
    """template._inline_definition: moto's Fn::Sub runs string.Template over the definition,
    which turns `$$.Task.Token` into `$.Task.Token`; the local stack joins pieces instead."""
    from moto.cloudformation import parsing

    assert "safe_substitute" in inspect.getsource(parsing.clean_json)
    from yilian_local.template import _inline_definition

    props = {"DefinitionString": '{"a.$": "$$.Task.Token", "f": "${Fn}"}',
             "DefinitionSubstitutions": {"Fn": {"Fn::GetAtt": ["F", "Arn"]}}}  # fmt: skip
    _inline_definition(props)
    pieces = props["DefinitionString"]["Fn::Join"][1]
    assert pieces[0] == '{"a.$": "$$.Task.Token", "f": "' and pieces[1] == {
        "Fn::GetAtt": ["F", "Arn"]
    }


# ------------------------------------------------------------------ DynamoDB queries


def test_base_table_queries_still_sort_the_whole_table_and_pass_index_name_eighth():
    """patches._base_table_queries_read_one_partition: moto's Table.query reads
    `self.all_items()` (every item, sorted) for a base-table query, and the backend passes
    `index_name` as the 8th positional argument. If either changes, revisit the patch."""
    from moto.dynamodb.models import DynamoDBBackend
    from moto.dynamodb.models.table import Table

    source = _source(Table.query)
    assert "for item in self.all_items()" in source
    assert "item.hash_key == hash_key" in source
    params = list(inspect.signature(_original(Table.query)).parameters)
    assert params.index("index_name") == 8  # self, hash_key, then 6 more before it
    backend_call = _source(DynamoDBBackend.query)
    assert re.search(r"projection_expressions,\s*index_name,", backend_call)


def test_a_base_table_query_reads_only_its_partition(local_stack):
    """The patched query answers the same, and does not touch other partitions."""
    from moto.dynamodb.models.table import Table

    db = local_stack.client("dynamodb")
    table = local_stack.physical_id("PlatformTable")
    pk = f"GUARD#{uuid.uuid4().hex}"
    for n in range(5):
        db.put_item(TableName=table, Item={"pk": {"S": pk}, "sk": {"S": f"{n:02d}"}})
    calls = []
    original_all_items = Table.all_items

    def counting(self):
        calls.append(self.name)
        return original_all_items(self)

    Table.all_items = counting
    try:
        out = db.query(
            TableName=table, KeyConditionExpression="pk = :pk AND sk BETWEEN :a AND :b",
            ExpressionAttributeValues={":pk": {"S": pk}, ":a": {"S": "01"}, ":b": {"S": "03"}},
            ScanIndexForward=False,
        )  # fmt: skip
    finally:
        Table.all_items = original_all_items
    assert [i["sk"]["S"] for i in out["Items"]] == ["03", "02", "01"]
    assert table not in calls  # the partition was handed over; the table was not sorted


# ------------------------------------------------------------------ Powertools in threads


def test_powertools_still_keeps_the_request_on_the_router_class():
    """patches._powertools_request_per_thread: Powertools' resolve() assigns the request to
    the BaseRouter class (process-wide). If it stops doing so, revisit the patch."""
    from aws_lambda_powertools.event_handler.api_gateway import ApiGatewayResolver

    source = _source(ApiGatewayResolver.resolve)
    assert "BaseRouter.current_event = " in source
    assert "BaseRouter.lambda_context = " in source


def test_concurrent_requests_each_see_their_own_event(local_stack):
    """With the patch, two requests resolved at once in two threads never swap bodies."""
    import threading

    from aws_lambda_powertools.event_handler import APIGatewayRestResolver

    def api_event(who: str) -> dict:
        return {"resource": "/echo", "path": "/echo", "httpMethod": "POST", "headers": {},
                "body": json.dumps({"who": who}), "requestContext": {"stage": "api"}}  # fmt: skip

    app = APIGatewayRestResolver()
    inside, release = threading.Barrier(2), threading.Event()
    seen: dict[str, str] = {}

    @app.post("/echo")
    def echo() -> dict:
        mine = app.current_event.json_body["who"]
        inside.wait(timeout=5)  # both requests are now between resolve() and the read
        if mine == "a":
            release.wait(timeout=5)
        seen[mine] = app.current_event.json_body["who"]
        if mine == "b":
            release.set()
        return {}

    threads = [
        threading.Thread(target=app.resolve, args=(api_event(w), None)) for w in ("a", "b")
    ]  # fmt: skip
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=10)
    assert seen == {"a": "a", "b": "b"}


# ------------------------------------------------------------------ SQS event source mappings


def test_sqs_add_message_still_delivers_through_the_mappings_the_patch_hides():
    """sqs_mappings.install replaces Queue.add_message: it hides our mappings from moto's own
    loop (by swapping `lambda_event_source_mappings` for the call), then delivers with
    SQSBackend.receive_message / delete_message and LambdaBackend.invoke itself."""
    from moto.awslambda.models import EventSourceMapping, LambdaBackend
    from moto.sqs.models import Message, Queue, SQSBackend

    hook = Queue.add_message
    assert getattr(hook, "__yilian_hook__", False), "the SQS mapping hook is not installed"
    original = inspect.getclosurevars(hook).nonlocals.get("original")
    assert original is not None and not getattr(original, "__yilian_hook__", False), (
        "sqs_mappings.install no longer keeps moto's add_message as `original`"
    )
    assert list(inspect.signature(original).parameters) == ["self", "message"]
    source = inspect.getsource(original)
    for needle, why in [
        ("self._messages.append(message)", "the message is no longer stored by add_message"),
        ("for arn, esm in self.lambda_event_source_mappings.items():",
         "moto no longer reads the mappings from the attribute the patch swaps"),
        ("send_sqs_batch(", "moto no longer delivers SQS batches through send_sqs_batch"),
        ("backend.delete_message(self.name, m.receipt_handle)",
         "moto's own delivery no longer deletes what it delivered (the gap the patch fills)"),
    ]:  # fmt: skip
        assert needle in source, f"Queue.add_message changed: {why}; revisit sqs_mappings.py"
    assert "lambda_event_source_mappings" in inspect.getsource(Queue.__init__)
    receive = inspect.signature(SQSBackend.receive_message).parameters
    expected = ["self", "queue_name", "count", "wait_seconds_timeout", "visibility_timeout"]
    assert list(receive)[:5] == expected, (
        "SQSBackend.receive_message(queue, count, wait, visibility) changed: fix deliver()"
    )
    assert list(inspect.signature(SQSBackend.delete_message).parameters) == [
        "self", "queue_name", "receipt_handle",
    ]  # fmt: skip
    moving = inspect.getsource(SQSBackend.receive_message)
    assert "queue.dead_letter_queue.add_message(message)" in moving and (
        'queue.redrive_policy["maxReceiveCount"]' in moving
    ), "receive_message no longer moves a message past maxReceiveCount to the dead letters"
    assert list(inspect.signature(LambdaBackend.invoke).parameters) == [
        "self", "function_name", "qualifier", "body", "headers", "response_headers",
    ], "LambdaBackend.invoke changed: fix sqs_mappings._invoke"  # fmt: skip
    mapping = inspect.getsource(EventSourceMapping.__init__)
    for attr in ("self.batch_size", "self.enabled", "self.function_response_types"):
        assert attr in mapping, f"EventSourceMapping has no {attr[5:]}: fix sqs_mappings"
    message = inspect.getsource(Message)
    for attr in ("self.approximate_receive_count", "self.approximate_first_receive_timestamp",
                 "self.sent_timestamp", "self.receipt_handle", "def visible"):  # fmt: skip
        assert attr in message, f"moto's Message lost {attr}: fix sqs_mappings._record/_poll"


_PROBE = '''
import json, os


def lambda_handler(event, context):
    """Fails every message whose body is "fail"; logs what it was given."""
    with open(os.environ["PROBE_LOG"], "a", encoding="utf-8") as log:
        log.write(json.dumps([[r["body"], r["messageId"],
                               r["attributes"]["ApproximateReceiveCount"]]
                              for r in event["Records"]]) + "\\n")
    return {"batchItemFailures": [{"itemIdentifier": r["messageId"]}
                                  for r in event["Records"] if r["body"] == "fail"]}
'''


@pytest.mark.timeout(60)
def test_a_batch_item_failure_is_retried_alone_then_dead_lettered(local_stack, tmp_path):
    """With the patch: a mapped function (ReportBatchItemFailures) failing one message of a
    batch of two gets that message again, the other is deleted at once; past the queue's
    maxReceiveCount the failing message is in the dead-letter queue."""
    import io
    import zipfile

    from yilian_local.runner import REGISTRY
    from yilian_local.template import FunctionCode

    (tmp_path / "app.py").write_text(_PROBE, encoding="utf-8")
    log = tmp_path / "deliveries.jsonl"
    sqs, lam, iam = (local_stack.client(s) for s in ("sqs", "lambda", "iam"))
    name = f"probe-{uuid.uuid4().hex[:8]}"
    role = iam.create_role(RoleName=name, AssumeRolePolicyDocument=json.dumps({
        "Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "sts:AssumeRole",
                                                "Principal": {"Service": "lambda.amazonaws.com"}}],
    }))["Role"]["Arn"]  # fmt: skip
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("app.py", _PROBE)
    arn = lam.create_function(
        FunctionName=name, Runtime="python3.11", Role=role, Handler="app.lambda_handler",
        Code={"ZipFile": archive.getvalue()}, Timeout=10,
        Environment={"Variables": {"PROBE_LOG": str(log)}},
    )["FunctionArn"]  # fmt: skip
    REGISTRY.register(name, FunctionCode("Probe", tmp_path, "app.lambda_handler"),
                      local_stack.endpoint_url)  # fmt: skip
    dlq = sqs.create_queue(QueueName=f"{name}-dlq")["QueueUrl"]
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])["Attributes"]
    queue = sqs.create_queue(QueueName=name, Attributes={
        "VisibilityTimeout": "1",
        "RedrivePolicy": json.dumps({"deadLetterTargetArn": dlq_arn["QueueArn"],
                                     "maxReceiveCount": 2}),
    })["QueueUrl"]  # fmt: skip
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])
    mapping = lam.create_event_source_mapping(
        EventSourceArn=queue_arn["Attributes"]["QueueArn"], FunctionName=arn, BatchSize=10,
        Enabled=False, FunctionResponseTypes=["ReportBatchItemFailures"],
    )["UUID"]  # fmt: skip
    try:
        # Given two messages waiting (the mapping is off, so they form one batch)
        sqs.send_message(QueueUrl=queue, MessageBody="ok")
        sqs.send_message(QueueUrl=queue, MessageBody="fail")
        # When the mapping is switched on
        lam.update_event_source_mapping(UUID=mapping, Enabled=True)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            dead = sqs.receive_message(QueueUrl=dlq, VisibilityTimeout=0).get("Messages", [])
            if dead:
                break
            time.sleep(0.3)
        deliveries = [json.loads(line) for line in log.read_text().splitlines()]
        # Then the first batch held both; only "fail" came back, with a growing receive count
        assert sorted(b for b, _, _ in deliveries[0]) == ["fail", "ok"], deliveries
        later = [m for batch in deliveries[1:] for m in batch]
        assert later and {b for b, _, _ in later} == {"fail"}, deliveries
        assert [c for _, _, c in later] == [str(n) for n in range(2, 2 + len(later))]
        assert len(later) == 1  # maxReceiveCount 2: received twice in all
        assert {i for b, i, _ in deliveries[0] if b == "fail"} == {i for _, i, _ in later}
        # and after maxReceiveCount it is in the dead-letter queue; the queue is empty
        assert [m["Body"] for m in dead] == ["fail"], deliveries
        attrs = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["All"])["Attributes"]
        assert (attrs["ApproximateNumberOfMessages"],
                attrs["ApproximateNumberOfMessagesNotVisible"]) == ("0", "0")  # fmt: skip
    finally:
        lam.delete_event_source_mapping(UUID=mapping)
        REGISTRY.unregister(name)
        lam.delete_function(FunctionName=name)
        for url in (queue, dlq):
            sqs.delete_queue(QueueUrl=url)
        iam.delete_role(RoleName=name)
