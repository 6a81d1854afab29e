"""Where moto 5.2.5 falls short of running template.yaml, and the smallest patch for each.

Every patch leans on a moto internal; tests/integration/test_moto_guards.py pins each one
(and the moto version) so an upgrade fails loudly there instead of quietly here. The patches
are process-wide, idempotent, and inert for resources that are not ours (functions not
registered in ``runner.REGISTRY`` keep moto's own Docker path).
"""

from __future__ import annotations

import copy
import functools
import json
import threading
import uuid
from datetime import UTC, datetime
from typing import Any

import moto
from moto.awslambda.models import LambdaBackend, LambdaFunction
from moto.cloudformation import parsing
from moto.core.base_backend import BackendDict, backend_lock
from moto.core.config import default_user_config
from moto.dynamodb.comparisons import get_filter_expression
from moto.dynamodb.exceptions import (
    ConditionalCheckFailed,
    MockValidationException,
    MultipleTransactionsException,
    TooManyTransactionsException,
    TransactionCanceledException,
    TransactWriteSingleOpException,
)
from moto.dynamodb.models import DynamoDBBackend
from moto.dynamodb.models.table import Table
from moto.dynamodb.responses import DynamoHandler
from moto.events.models import EventBus, Rule
from moto.events.utils import EventTemplateParser
from moto.kms.models import Key, kms_backends
from moto.stepfunctions import models as sfn_models
from moto.stepfunctions.exceptions import AWSError
from moto.stepfunctions.parser.models import stepfunctions_parser_backends
from moto.utilities.utils import get_partition

from yilian_local import sqs_mappings
from yilian_local.emulator import protected_accounts
from yilian_local.runner import REGISTRY

MOTO_VERSION = "5.2.5"

# DynamoDB actions run one at a time (moto's TransactWriteItems is not atomic under
# concurrent requests, and its scans iterate dicts other threads mutate).
SERIALISED_DYNAMODB_ACTIONS = (
    "put_item",
    "update_item",
    "delete_item",
    "batch_write_item",
    "transact_write_items",
    "get_item",
    "batch_get_item",
    "transact_get_items",
    "query",
    "scan",
    "execute_statement",
    "execute_transaction",
    "batch_execute_statement",
)

# Stack name -> (logical id, type, reason) of the first resource moto failed to create.
RESOURCE_FAILURES: dict[str, tuple[str, str, str]] = {}

_applied = False
_apply_lock = threading.Lock()
_dynamodb_lock = threading.Lock()
_dynamodb_thread = threading.local()


def apply() -> None:
    """Install every patch once per process."""
    global _applied
    with _apply_lock:
        if _applied:
            return
        if moto.__version__ != MOTO_VERSION:
            raise RuntimeError(
                f"yilian_local is written against moto=={MOTO_VERSION}, found {moto.__version__}:"
                " run tests/integration/test_moto_guards.py and re-check each patch"
            )
        BackendDict.reset = classmethod(_reset_sparing_running_emulators)  # type: ignore[assignment]
        default_user_config["stepfunctions"]["execute_state_machine"] = True
        sfn_models.stepfunctions_backends = stepfunctions_parser_backends  # type: ignore[assignment]
        EventBus.physical_resource_id = property(lambda self: self.name)  # type: ignore[attr-defined]
        _pseudo_parameters_follow_partition()
        Key.create_from_cloudformation_json = classmethod(_create_kms_key)  # type: ignore[method-assign,assignment]
        _record_resource_failures()
        _serialise_dynamodb()
        _transactions_back_up_touched_items()
        _hook_lambda_invocations()
        _deliver_rule_targets_lambda_and_states()
        _spent_task_tokens_are_refused()
        _base_table_queries_read_one_partition()
        _powertools_request_per_thread()
        sqs_mappings.install()
        _applied = True


# ------------------------------------------------------------------ handlers in threads
_request = threading.local()


def _powertools_request_per_thread() -> None:
    """Powertools' REST resolver keeps the current request on a class attribute
    (`BaseRouter.current_event = ...` in `resolve`): one per process, which is right on
    Lambda (one request per process at a time) and wrong here, where the gateway runs
    concurrent requests of every function as threads of one process: a request could read
    another's body and caller. Here the attribute (and `lambda_context`) is per thread:
    a metaclass property for the class-level assignment Powertools makes, and a class
    property for instances (`app.current_event`)."""
    from aws_lambda_powertools.event_handler.api_gateway import BaseRouter

    def field(name: str) -> property:
        return property(
            lambda _: getattr(_request, name, None),
            lambda _, value: setattr(_request, name, value),
        )

    names = ("current_event", "lambda_context")
    meta = type("PerThreadRouterMeta", (type(BaseRouter),), {n: field(n) for n in names})
    for name in names:
        type.__setattr__(BaseRouter, name, field(name))
    BaseRouter.__class__ = meta


# ------------------------------------------------------------------ isolation


def _reset_sparing_running_emulators(cls: type[BackendDict]) -> None:
    """moto's reset (mock_aws start/stop) minus the accounts of running embedded emulators.

    Other tests in the same process use ``mock_aws``, whose reset would otherwise wipe a
    running local stack. Without a running emulator this is moto's reset, unchanged.
    """
    spared = protected_accounts()
    with backend_lock:
        for backend in list(BackendDict._instances):  # type: ignore[misc]
            for account_id in list(backend.keys()):
                if account_id not in spared:
                    backend[account_id].reset()
                    del backend[account_id]
        if not spared:
            BackendDict._instances.clear()  # type: ignore[misc]


# ------------------------------------------------------------------ CloudFormation


def _pseudo_parameters_follow_partition() -> None:
    """moto's ResourceMap hard-codes AWS::Partition "aws" and URLSuffix "amazonaws.com"."""
    original = parsing.ResourceMap.__init__

    @functools.wraps(original)
    def __init__(self: parsing.ResourceMap, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        partition = get_partition(self._region_name)
        self._parsed_resources["AWS::Partition"] = partition
        suffix = "amazonaws.com.cn" if partition == "aws-cn" else "amazonaws.com"
        self._parsed_resources["AWS::URLSuffix"] = suffix

    parsing.ResourceMap.__init__ = __init__  # type: ignore[method-assign]


def _create_kms_key(
    cls: type[Key],
    resource_name: str,
    cloudformation_json: Any,
    account_id: str,
    region_name: str,
    **kwargs: Any,
) -> Key:
    """moto's AWS::KMS::Key ignores KeySpec/KeyUsage: an RSA signing key came out symmetric."""
    props = cloudformation_json["Properties"]
    policy = props.get("KeyPolicy")
    key = kms_backends[account_id][region_name].create_key(
        policy=json.dumps(policy) if isinstance(policy, dict) else policy,
        key_usage=props.get("KeyUsage", "ENCRYPT_DECRYPT"),
        key_spec=props.get("KeySpec", "SYMMETRIC_DEFAULT"),
        description=props.get("Description", ""),
        tags=props.get("Tags", []),
        multi_region=bool(props.get("MultiRegion", False)),
        origin=props.get("Origin", "AWS_KMS"),
    )
    key.key_rotation_status = props.get("EnableKeyRotation", False)
    key.enabled = props.get("Enabled", True)
    return key


def _record_resource_failures() -> None:
    """moto turns a failing resource into a bare HTTP 500: remember which one and why."""
    original = parsing.parse_and_create_resource

    @functools.wraps(original)
    def parse_and_create_resource(
        logical_id: str, resource_json: dict[str, Any], resources_map: Any, **kwargs: Any
    ) -> Any:
        try:
            return original(logical_id, resource_json, resources_map, **kwargs)
        except Exception as error:
            reason = f"{type(error).__name__}: {error}"
            stack = resources_map["AWS::StackName"]
            RESOURCE_FAILURES.setdefault(stack, (logical_id, resource_json.get("Type"), reason))
            raise

    parsing.parse_and_create_resource = parse_and_create_resource


# ------------------------------------------------------------------ DynamoDB


def _serialise_dynamodb() -> None:
    """One process-wide lock around DynamoDB actions; stream triggers run after release.

    A write can fire a stream → Lambda invocation synchronously inside the same request, and
    that handler makes its own HTTP calls to the server (other threads). Holding the lock
    across it would deadlock, so while the lock is held the invocations are queued on the
    thread and run, still within the request, right after the lock is released.
    """
    for name in SERIALISED_DYNAMODB_ACTIONS:
        setattr(DynamoHandler, name, _serialised(getattr(DynamoHandler, name)))
    original_send = LambdaBackend.send_dynamodb_items

    @functools.wraps(original_send)
    def send_dynamodb_items(self: LambdaBackend, function_arn: str, items: Any, source: str) -> Any:
        deferred = getattr(_dynamodb_thread, "deferred", None)
        if deferred is None:
            return original_send(self, function_arn, items, source)
        batch = list(items)
        deferred.append(lambda: original_send(self, function_arn, batch, source))
        return "deferred"  # truthy: the shard clears its buffer as after a delivered batch

    LambdaBackend.send_dynamodb_items = send_dynamodb_items  # type: ignore[method-assign]


def _serialised(action: Any) -> Any:
    @functools.wraps(action)
    def serialised(self: DynamoHandler, *args: Any, **kwargs: Any) -> Any:
        if getattr(_dynamodb_thread, "deferred", None) is not None:  # re-entry: lock held
            return action(self, *args, **kwargs)
        _dynamodb_thread.deferred = []
        try:
            with _dynamodb_lock:
                return action(self, *args, **kwargs)
        finally:
            deferred, _dynamodb_thread.deferred = _dynamodb_thread.deferred, None
            for invoke in deferred:
                invoke()

    serialised.__yilian_serialised__ = True  # type: ignore[attr-defined]
    return serialised


def _transactions_back_up_touched_items() -> None:
    """moto's TransactWriteItems deep-copies every table it touches as its rollback backup.

    So one transaction costs O(table size) (~215 ms at a few thousand items). This is moto's
    method with the backup narrowed to the items the transaction writes (a deep copy of each,
    or "absent"); a rollback restores exactly those, drops the stream records the writes
    appended and the stream triggers they queued (a cancelled transaction never reaches a
    stream consumer). Errors are moto's, unchanged. GSIs are computed from ``Table.items``.
    """
    original = DynamoDBBackend.transact_write_items

    @functools.wraps(original)
    def transact_write_items(self: DynamoDBBackend, transact_items: list[dict[str, Any]]) -> None:
        if len(transact_items) > 100:
            raise TooManyTransactionsException()
        own_deferral = getattr(_dynamodb_thread, "deferred", None) is None
        if own_deferral:  # called outside a serialised action: queue the triggers here
            _dynamodb_thread.deferred = []
        try:
            journal = _TransactionJournal(self, _dynamodb_thread.deferred)
            try:
                errors = _transact_write(self, transact_items, journal)
            except BaseException:
                journal.rollback()
                raise
            if any(code is not None for code, _, _ in errors):
                journal.rollback()
                raise TransactionCanceledException(errors)
        finally:
            if own_deferral:
                deferred, _dynamodb_thread.deferred = _dynamodb_thread.deferred, None
                for invoke in deferred:
                    invoke()

    transact_write_items.__yilian_item_backup__ = True  # type: ignore[attr-defined]
    DynamoDBBackend.transact_write_items = transact_write_items  # type: ignore[method-assign]


class _TransactionJournal:
    """The items a transaction is about to write, as they were, and where streams stood."""

    def __init__(self, backend: DynamoDBBackend, deferred: list[Any]) -> None:
        self._backend = backend
        self._items: list[tuple[Table, Any, Any, bool, Any]] = []
        self._shards: dict[int, tuple[Any, list[Any], int]] = {}
        self._deferred = deferred
        self._queued = len(deferred)

    def back_up(self, table_name: str, key: dict[str, Any]) -> None:
        try:
            table = self._backend.get_table(table_name)
            hash_key, range_key = self._backend.get_keys_value(table, key)
        except Exception:  # the get_item that follows raises it, as in moto
            return
        shard = table.stream_shard
        if shard is not None and id(table) not in self._shards:
            self._shards[id(table)] = (shard, shard.items, len(shard.items))
        if table.range_key_attr is None:  # items: {hash: Item}
            had_bucket, before = True, table.items.get(hash_key)
        else:  # items: {hash: {range: Item}}
            bucket = table.items.get(hash_key)
            had_bucket = bucket is not None
            before = bucket.get(range_key) if bucket is not None else None
        self._items.append((table, hash_key, range_key, had_bucket, copy.deepcopy(before)))

    def rollback(self) -> None:
        for table, hash_key, range_key, had_bucket, before in reversed(self._items):
            if table.range_key_attr is None:
                if before is None:
                    table.items.pop(hash_key, None)
                else:
                    table.items[hash_key] = before
            elif before is not None:
                table.items[hash_key][range_key] = before
            elif (bucket := table.items.get(hash_key)) is not None:
                bucket.pop(range_key, None)
                if not bucket and not had_bucket:
                    del table.items[hash_key]
        for shard, records, length in self._shards.values():
            del records[length:]  # a delivery swaps shard.items for a new list: put it back
            shard.items = records
        del self._deferred[self._queued :]


def _transact_write(
    self: DynamoDBBackend, transact_items: list[dict[str, Any]], journal: _TransactionJournal
) -> list[tuple[Any, Any, Any]]:
    """moto 5.2.5's transaction loop, unchanged but for ``journal.back_up`` before each write."""
    target_items: set[tuple[str, str]] = set()

    def check_unicity(table_name: str, key: dict[str, Any]) -> None:
        item = (str(table_name), str(dict(sorted(key.items()))))
        if item in target_items:
            raise MultipleTransactionsException()
        target_items.add(item)

    errors: list[tuple[Any, Any, Any]] = []  # [(Code, Message, Item), ..]
    for item in transact_items:
        old: list[dict[str, Any]] = []  # ALL_OLD of a failed condition (moto's original_item)
        if len(list(item.keys())) > 1:
            raise TransactWriteSingleOpException
        try:
            _transact_one(self, item, check_unicity, journal, old)
            errors.append((None, None, None))
        except (MultipleTransactionsException, MockValidationException):
            raise  # the caller rolls back and re-raises
        except ConditionalCheckFailed as e:
            errors.append(("ConditionalCheckFailed", str(e.message), old[0] if old else None))
        except Exception as e:  # moto reports any other error per item
            errors.append((type(e).__name__, str(e), old[0] if old else None))
    return errors


def _transact_one(
    self: DynamoDBBackend,
    item: dict[str, Any],
    check_unicity: Any,
    journal: _TransactionJournal,
    old: list[dict[str, Any]],
) -> None:
    op_type, op = next(iter(item.items()))
    if op_type not in {"ConditionCheck", "Put", "Delete", "Update"}:
        raise ValueError("Unsupported transaction operation")
    table_name = op["TableName"]
    condition_expression = op.get("ConditionExpression")
    names = op.get("ExpressionAttributeNames")
    values = op.get("ExpressionAttributeValues")
    if op_type == "Put":
        attrs = op["Item"]
        table = self.get_table(table_name)
        key = {table.hash_key_attr: attrs[table.hash_key_attr]}
        if table.range_key_attr is not None:
            key[table.range_key_attr] = attrs[table.range_key_attr]
    else:
        key = op["Key"]
    check_unicity(table_name, key)
    if op_type != "ConditionCheck":
        journal.back_up(table_name, key)
    current = self.get_item(table_name, key)
    if condition_expression is not None:
        condition_op = get_filter_expression(condition_expression, names, values)
        if not condition_op.expr(current):
            if op.get("ReturnValuesOnConditionCheckFailure") == "ALL_OLD" and current:
                old.append(current.to_json()["Attributes"])
            raise ConditionalCheckFailed(item=old[0] if old else None)
    conditions = {
        "condition_expression": condition_expression,
        "expression_attribute_names": names,
        "expression_attribute_values": values,
    }
    if op_type == "Put":
        self.put_item(table_name, op["Item"], **conditions)
    elif op_type == "Delete":
        self.delete_item(table_name, key, **conditions)
    elif op_type == "Update":
        self.update_item(table_name, key, update_expression=op["UpdateExpression"], **conditions)


# ------------------------------------------------------------------ Lambda


def _hook_lambda_invocations() -> None:
    """The single place every invocation passes; ours run in-process (runner.REGISTRY)."""
    original = LambdaFunction._invoke_lambda

    @functools.wraps(original)
    def _invoke_lambda(self: LambdaFunction, event: Any = None) -> tuple[str, bool, str]:
        if not REGISTRY.knows(self.function_name):
            return original(self, event)
        self.logs_backend.ensure_log_group(self.logs_group_name)
        payload, errored, logs = REGISTRY.invoke(self, event)
        self.save_logs(logs)
        return payload, errored, logs

    _invoke_lambda.__yilian_hook__ = True  # type: ignore[attr-defined]
    LambdaFunction._invoke_lambda = _invoke_lambda  # type: ignore[method-assign]


# ------------------------------------------------------------------ EventBridge


def _deliver_rule_targets_lambda_and_states() -> None:
    """moto's Rule.send_to_targets raises on Lambda and state machine targets (PutEvents 500)."""
    original = Rule.send_to_targets

    @functools.wraps(original)
    def send_to_targets(self: Rule, event: dict[str, Any], transform_input: bool = True) -> None:
        ours = [t for t in self.targets if _arn_service(t["Arn"]) in ("lambda", "states")]
        if not ours:
            return original(self, event, transform_input)
        if not self.event_pattern.matches_event(event):
            return None
        others = [t for t in self.targets if t not in ours]
        if others:
            rest = copy.copy(self)
            rest.targets = others
            original(rest, event, transform_input)
        for target in ours:
            _deliver(self, target, _target_input(target, event, transform_input))
        return None

    Rule.send_to_targets = send_to_targets  # type: ignore[method-assign]


def _arn_service(arn: str) -> str:
    parts = arn.split(":")
    return parts[2] if len(parts) > 2 else ""


def _target_input(target: dict[str, Any], event: dict[str, Any], transform: bool) -> Any:
    event = {k: v for k, v in event.items() if k != "ingestion-time"}
    if isinstance(event.get("time"), int | float):
        event["time"] = datetime.fromtimestamp(event["time"], UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    if not transform:
        return event
    if "Input" in target:
        return json.loads(target["Input"])
    if "InputPath" in target:
        value: Any = event
        for part in [p for p in target["InputPath"].lstrip("$").split(".") if p]:
            value = value.get(part) if isinstance(value, dict) else None
        return value
    if "InputTransformer" in target:
        transformer = target["InputTransformer"]
        result = EventTemplateParser.parse(
            input_template=transformer.get("InputTemplate"),
            input_paths_map=transformer.get("InputPathsMap", {}),
            event=event,
        )
        return _json_or_text(result)
    return event


def _json_or_text(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def _deliver(rule: Rule, target: dict[str, Any], payload: Any) -> None:
    arn = target["Arn"]
    region = arn.split(":")[3]
    if _arn_service(arn) == "lambda":
        from moto.awslambda.utils import get_backend

        function = get_backend(rule.account_id, region).get_function(arn)
        function.invoke(json.dumps(payload), {"x-amz-invocation-type": "Event"}, {})
    else:
        backend = stepfunctions_parser_backends[rule.account_id][region]
        backend.start_execution(arn, name=str(uuid.uuid4()), execution_input=json.dumps(payload))


# ------------------------------------------------------------------ Step Functions
class TaskClosed(AWSError):
    """AWS's answer to a callback on a closed task. (moto's own TaskTimedOut cannot be
    raised: its constructor lacks the message AWSError requires.)"""

    TYPE = "TaskTimedOut"
    STATUS = 400

    def __init__(self) -> None:
        super().__init__("The task associated with this token has already been closed")


def _spent_task_tokens_are_refused() -> None:
    """moto accepts SendTaskSuccess/Failure on a token whose task already completed (it
    overwrites the finished endpoint's outcome and answers 200); AWS answers TaskTimedOut
    ("the task associated with the token has already been closed"). Refuse it the same way,
    so a replayed token behaves locally as it does in production."""
    from moto.stepfunctions.parser.asl.eval.callback.callback import CallbackPoolManager

    original = CallbackPoolManager.notify

    def notify(self: CallbackPoolManager, callback_id: str, outcome: Any) -> bool:
        endpoint = self.get(callback_id)
        if endpoint is not None and endpoint.get_outcome() is not None:
            raise TaskClosed()
        return original(self, callback_id, outcome)

    notify.__wrapped__ = original  # type: ignore[attr-defined]
    CallbackPoolManager.notify = notify  # type: ignore[method-assign]


# ------------------------------------------------------------------ DynamoDB queries
def _base_table_queries_read_one_partition() -> None:
    """moto's Table.query on the base table filters `all_items()`, which sorts every item of
    the table on every call: a query costs O(table log table) instead of O(partition). With
    a year of slots (hundreds of thousands of items) one search takes seconds. Hand the
    query only the partition's items; index queries keep moto's path. Safe because the
    local stack serialises DynamoDB actions (the instance attribute lives for one call)."""
    from moto.dynamodb.models.table import Table

    original = Table.query

    @functools.wraps(original)
    def query(self: Table, hash_key: Any, *args: Any, **kwargs: Any) -> Any:
        index_name = kwargs.get("index_name", args[6] if len(args) > 6 else None)
        if index_name or hash_key is None:
            return original(self, hash_key, *args, **kwargs)
        partition = self.items.get(hash_key)
        if partition is None:
            items: list[Any] = []
        elif self.range_key_attr:
            items = list(partition.values())
        else:
            items = [partition]
        self.all_items = lambda: items  # type: ignore[method-assign]
        try:
            return original(self, hash_key, *args, **kwargs)
        finally:
            del self.all_items

    Table.query = query  # type: ignore[method-assign]
