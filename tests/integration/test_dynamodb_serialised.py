"""DynamoDB writes are serialised in the embedded emulator, and stream triggers still run.

moto's TransactWriteItems is not atomic under concurrent requests (facts file: 20 confirmed,
21 rows). The local stack serialises DynamoDB actions; a write's stream trigger runs after
the lock is released, since its handler calls the emulator from other threads.
"""

from __future__ import annotations

import threading
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

pytestmark = pytest.mark.integration

CAP, ATTEMPTS, THREADS = 20, 200, 16
# moto snapshots (deep-copies) a table at the start of a transaction and restores it on
# cancellation: the bigger the table, the wider the window in which an unserialised
# cancellation wipes a concurrent commit. Filler rows make the race show without the lock.
FILLER = 200


@pytest.fixture
def counter_table(local_stack):
    name = f"txn-{uuid.uuid4().hex[:8]}"
    dynamodb = local_stack.client("dynamodb")
    dynamodb.create_table(
        TableName=name,
        BillingMode="PAY_PER_REQUEST",
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
    )
    dynamodb.put_item(TableName=name, Item={"pk": {"S": "counter"}, "cnt": {"N": "0"}})
    for start in range(0, FILLER, 25):
        requests = [
            {"PutRequest": {"Item": {"pk": {"S": f"filler-{n}"}, "data": {"S": "x" * 50}}}}
            for n in range(start, start + 25)
        ]
        dynamodb.batch_write_item(RequestItems={name: requests})
    yield name
    dynamodb.delete_table(TableName=name)


@pytest.mark.timeout(120)
def test_concurrent_capacity_transactions_confirm_exactly_the_capacity(local_stack, counter_table):
    local = threading.local()

    def client():
        if not hasattr(local, "dynamodb"):  # one client per thread, as separate callers
            local.dynamodb = local_stack.client(
                "dynamodb", config=Config(retries={"max_attempts": 1}, max_pool_connections=1)
            )
        return local.dynamodb

    def book(n: int) -> bool:
        try:
            client().transact_write_items(
                TransactItems=[
                    {
                        "Update": {
                            "TableName": counter_table,
                            "Key": {"pk": {"S": "counter"}},
                            "UpdateExpression": "ADD cnt :one",
                            "ConditionExpression": "cnt < :cap",
                            "ExpressionAttributeValues": {
                                ":one": {"N": "1"},
                                ":cap": {"N": str(CAP)},
                            },
                        }
                    },
                    {
                        "Put": {
                            "TableName": counter_table,
                            "Item": {"pk": {"S": f"row-{n}"}},
                            "ConditionExpression": "attribute_not_exists(pk)",
                        }
                    },
                ]
            )
            return True
        except ClientError as error:
            assert error.response["Error"]["Code"] == "TransactionCanceledException"
            return False

    with ThreadPoolExecutor(max_workers=THREADS) as pool:
        confirmed = sum(pool.map(book, range(ATTEMPTS)))

    dynamodb = local_stack.client("dynamodb")
    counter = dynamodb.get_item(TableName=counter_table, Key={"pk": {"S": "counter"}})["Item"]
    rows = dynamodb.scan(
        TableName=counter_table,
        Select="COUNT",
        FilterExpression="begins_with(pk, :row)",
        ExpressionAttributeValues={":row": {"S": "row-"}},
    )["Count"]
    assert (confirmed, int(counter["cnt"]["N"]), rows) == (CAP, CAP, CAP)


@pytest.mark.timeout(60)
def test_a_write_whose_stream_handler_writes_back_does_not_deadlock(fixture_stack):
    """Put → stream → handler → put over HTTP (another server thread), from several callers."""
    source = fixture_stack.physical_id("SourceTable")
    sink = fixture_stack.physical_id("SinkTable")
    keys = [f"deadlock-{uuid.uuid4().hex[:6]}-{i}" for i in range(8)]

    def put(key: str) -> None:
        dynamodb = fixture_stack.client(
            "dynamodb", config=Config(read_timeout=20, retries={"max_attempts": 1})
        )
        dynamodb.put_item(TableName=source, Item={"pk": {"S": key}})

    with ThreadPoolExecutor(max_workers=4) as pool:
        list(pool.map(put, keys))

    dynamodb = fixture_stack.client("dynamodb")
    for key in keys:  # the trigger ran before the put returned, as moto runs it
        item = dynamodb.get_item(TableName=sink, Key={"pk": {"S": f"stream#{key}"}})
        assert item.get("Item", {}).get("who") == {"S": "sink"}, key


@pytest.mark.timeout(60)
def test_a_handler_that_writes_with_a_trigger_keeps_its_own_environment(fixture_stack):
    import json

    response = fixture_stack.client("lambda").invoke(
        FunctionName=fixture_stack.physical_id("AlphaFunction"),
        Payload=json.dumps({"put": f"from-alpha-{uuid.uuid4().hex[:6]}"}).encode(),
    )
    result = json.loads(response["Payload"].read())
    assert "FunctionError" not in response, result
    assert result["who_before"] == result["who_after"] == "alpha"
