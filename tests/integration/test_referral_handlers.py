"""The referral functions as Lambda runs them, against moto with the template's tables.

API Gateway (REST, v1) events from events/referrals/*.json into functions/referrals/app.py,
Step Functions task payloads from events/referral_workflow/*.json into
functions/referral_workflow/app.py, DynamoDB stream records (NEW_AND_OLD_IMAGES) from
events/referral_events/*.json into functions/referral_events/app.py, and the EventBridge
event from events/notifier/*.json into functions/notifier/app.py, read back through
functions/notifications/app.py. Each handler is loaded fresh and sees the environment
template.yaml gives its function. The state machine is a trivial one in moto; the event bus
delivers to an SQS queue so the published events can be read. Bad inputs get their 4xx
reason code and store nothing.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Iterator
from dataclasses import replace
from datetime import timedelta
from typing import Any
from unittest import mock

import pytest

from tests.fakes import registration
from tests.support.lambda_events import (
    CONSORTIUM,
    EVENTS,
    REGION,
    ROOT,
    Context,
    api_event,
    function_environment,
    load,
    register_patient,
    sample,
    seed_demo_directory,
)

SAMPLE_REFERRAL = "ZZ260601E50E1WR"  # the referral the sample events are about
SAMPLE_TOKEN = "AQCEAAAAKgAAAAMAAAAAAAAAAexampleTaskToken0001"
REFERRER = {"sub": "doc-wangfang", "role": "doctor", "institution_id": "qiaotou", "name": "王芳"}
RECEIVER = {"sub": "doc-chenjie", "role": "doctor", "institution_id": "county-hospital",
            "name": "陈杰"}  # fmt: skip
ADMIN = {"sub": "doc-admin", "role": "consortium_admin", "institution_id": "county-hospital"}
FUNCTIONS = {
    "referrals": "ReferralsFunction",
    "referral_workflow": "ReferralWorkflowFunction",
    "referral_events": "ReferralEventsFunction",
    "notifier": "NotifierFunction",
    "notifications": "NotificationsFunction",
}
# A trivial workflow for the stream handler to start (the real one invokes Lambda).
TRIVIAL_MACHINE = {"StartAt": "Started", "States": {"Started": {"Type": "Pass", "End": True}}}


class Stack:
    """The tables, state machine and event bus in moto, and the five handlers loaded fresh."""

    def __init__(self, aws: dict[str, Any], tables: dict[str, str], refs: dict[str, str]):
        self.db, self.sfn, self.sqs = aws["dynamodb"], aws["stepfunctions"], aws["sqs"]
        self.tables, self.refs = tables, refs
        self.state_machine = refs["ReferralStateMachine"]
        self.bus_queue = refs["BusQueueUrl"]
        self.env = function_environment(FUNCTIONS, refs)
        self.handlers = {f: load(ROOT / "functions" / f / "app.py") for f in FUNCTIONS}
        self.person_id = ""  # the registered patient (set by the fixture)

    # ---------------------------------------------------------------- invoking
    def invoke(self, function: str, event: dict[str, Any]) -> Any:
        """One invocation with the function's environment (and only its YL_ settings)."""
        with mock.patch.dict(os.environ):
            for k in [k for k in os.environ if k.startswith(("YL_", "POWERTOOLS_"))]:
                del os.environ[k]
            os.environ.update(self.env[function])
            handler = self.handlers[function].lambda_handler
            return handler(json.loads(json.dumps(event)), Context(FUNCTIONS[function]))

    def call(self, case: str, *, function: str = "referrals", **replaced: Any) -> tuple[int, Any]:
        """An API sample event, with what `api_event` takes replaced."""
        out = self.invoke(function, api_event(sample(function, case), **replaced))
        payload = json.loads(out["body"]) if out.get("body") else None
        return out["statusCode"], payload

    def apply(self, **over: Any) -> dict[str, Any]:
        """The apply sample for the registered patient, a fresh Idempotency-Key: 201."""
        body = {**json.loads(sample("referrals", "apply")["body"]), "patient_id": self.person_id}
        status, out = self.call("apply", body={**body, **over},
                                headers={"Idempotency-Key": uuid.uuid4().hex})  # fmt: skip
        assert status == 201, out
        return out

    def act(self, case: str, referral_id: str, who: dict[str, str] = RECEIVER, **kw: Any):
        action = case.replace("_", "-")
        return self.call(case, who=who, path=f"/referrals/{referral_id}/{action}", **kw)

    def workflow(self, case: str, referral_id: str, **over: Any) -> dict[str, Any]:
        event = {**sample("referral_workflow", case), "referral_id": referral_id, **over}
        return self.invoke("referral_workflow", event)

    # ---------------------------------------------------------------- reading moto
    def item(self, referral_id: str) -> dict[str, Any] | None:
        key = {"pk": {"S": f"REF#{referral_id}"}, "sk": {"S": "REF"}}
        return self.db.get_item(TableName=self.tables["ReferralsTable"], Key=key).get("Item")

    def put_item(self, item: dict[str, Any]) -> None:
        self.db.put_item(TableName=self.tables["ReferralsTable"], Item=item)

    def store(self) -> Any:
        from yilian.adapters.referral_store import DynamoReferralStore

        return DynamoReferralStore(
            self.db, self.tables["ReferralsTable"], self.tables["ReferralStatsTable"]
        )

    def count(self, logical_id: str) -> int:
        return self.db.scan(TableName=self.tables[logical_id], Select="COUNT")["Count"]

    def rollups(self) -> list[dict[str, Any]]:
        """The day rollups (the table also keeps month rollups and the daily chart)."""
        from boto3.dynamodb.types import TypeDeserializer

        items = self.db.scan(TableName=self.tables["ReferralStatsTable"])["Items"]
        rows = [{k: TypeDeserializer().deserialize(v) for k, v in i.items()} for i in items]
        return [r for r in rows if "source" in r and "day" in r]

    def executions(self) -> list[dict[str, Any]]:
        return self.sfn.list_executions(stateMachineArn=self.state_machine)["executions"]

    def published(self) -> list[dict[str, Any]]:
        """The events the bus delivered to its SQS target since the last look."""
        events: list[dict[str, Any]] = []
        while True:
            out = self.sqs.receive_message(QueueUrl=self.bus_queue, MaxNumberOfMessages=10)
            messages = out.get("Messages", [])
            if not messages:
                return events
            for m in messages:
                events.append(json.loads(m["Body"]))
                self.sqs.delete_message(QueueUrl=self.bus_queue, ReceiptHandle=m["ReceiptHandle"])

    def inbox(self, who: dict[str, str]) -> list[dict[str, Any]]:
        status, out = self.call("list", function="notifications", who=who)
        assert status == 200, out
        return out["items"]


@pytest.fixture
def stack(monkeypatch: pytest.MonkeyPatch) -> Iterator[Stack]:
    from moto import mock_aws

    for k, v in {
        "AWS_DEFAULT_REGION": REGION,
        "AWS_REGION": REGION,
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
    }.items():
        monkeypatch.setenv(k, v)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    # execute_state_machine: moto's executing Step Functions backend, which (like AWS)
    # refuses a task token it does not know with InvalidToken.
    with mock_aws(config={"stepfunctions": {"execute_state_machine": True}}):
        import boto3

        from tests.support.template_tables import county_params, create_tables

        aws = {s: boto3.client(s) for s in ("dynamodb", "stepfunctions", "sqs", "events")}
        tables = create_tables(aws["dynamodb"])
        county = county_params()["CountyCode"]
        machine = aws["stepfunctions"].create_state_machine(
            name=f"yilian-{county}-referral", definition=json.dumps(TRIVIAL_MACHINE),
            roleArn="arn:aws-cn:iam::123456789012:role/referral-workflow",
        )["stateMachineArn"]  # fmt: skip
        bus, queue = _bus_with_a_queue_target(aws, f"yilian-{county}-events")
        refs = {**tables, "ReferralStateMachine": machine, "EventBus": bus,
                "BusQueueUrl": queue}  # fmt: skip
        seed_demo_directory(tables["DirectoryTable"])
        stack = Stack(aws, tables, refs)
        stack.person_id = _register_patient(tables)
        yield stack


def _bus_with_a_queue_target(aws: dict[str, Any], name: str) -> tuple[str, str]:
    """The event bus, and a rule delivering every referral event on it to an SQS queue."""
    aws["events"].create_event_bus(Name=name)
    queue = aws["sqs"].create_queue(QueueName="bus-tap")["QueueUrl"]
    attributes = aws["sqs"].get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])
    pattern = {"source": ["yilian.referrals"]}
    aws["events"].put_rule(Name="tap", EventBusName=name, EventPattern=json.dumps(pattern))
    target = {"Id": "queue", "Arn": attributes["Attributes"]["QueueArn"]}
    aws["events"].put_targets(Rule="tap", EventBusName=name, Targets=[target])
    return name, queue


def _register_patient(tables: dict[str, str]) -> str:
    """张伟, registered in the patient index the way the EMPI function does it."""
    from yilian.domain.principal import Principal, Role

    doctor = Principal("doc-wangfang", Role.DOCTOR, CONSORTIUM, "qiaotou", None, "王芳")
    return register_patient(tables, registration(), doctor)


def _stream_record(case: str, new: dict[str, Any], old: dict[str, Any] | None = None) -> dict:
    """The sample stream event with these images (the layout stays the sample's)."""
    event = sample("referral_events", case)
    record = event["Records"][0]
    record["dynamodb"]["Keys"] = {"pk": new["pk"], "sk": new["sk"]}
    record["dynamodb"]["NewImage"] = new
    if old is None:
        record["dynamodb"].pop("OldImage", None)
    else:
        record["dynamodb"]["OldImage"] = old
    return event


# ------------------------------------------------------------------------------- API


def test_apply_stores_the_referral_with_its_worklist_keys_and_statistics(stack):
    # Given the sample application for a registered patient
    body = {**json.loads(sample("referrals", "apply")["body"]), "patient_id": stack.person_id}
    # When the referring doctor sends it
    status, created = stack.call("apply", body=body)
    # Then a pending referral is created, due for review, with the referrer's actions
    assert status == 201, created
    rid = created["referral_id"]
    assert (created["status"], created["direction"], created["urgency"]) == (
        "PENDING_REVIEW", "up", "urgent",
    )  # fmt: skip
    assert (created["from"]["institution_id"], created["to"]["institution_id"]) == (
        "qiaotou", "county-hospital",
    )  # fmt: skip
    assert created["patient"]["name"] == "张伟" and created["due_at"]
    assert created["actions"] == ["cancel"]  # amend follows a request for information
    assert [h["action"] for h in created["history"]] == ["apply"]
    # and it is stored as one item, found by the receiver's, referrer's and patient's lists
    item = stack.item(rid)
    assert item is not None and "wait_token" not in item
    assert (item["status"]["S"], item["version"]["N"]) == ("PENDING_REVIEW", "1")
    assert item["gsi1pk"]["S"] == f"TO#{CONSORTIUM}#county-hospital"
    assert item["gsi2pk"]["S"] == f"FROM#{CONSORTIUM}#qiaotou"
    assert item["gsi3pk"]["S"] == f"PATIENT#{CONSORTIUM}#{stack.person_id}"
    assert "gsi4pk" not in item
    [rollup] = stack.rollups()
    assert (rollup["applied"], rollup["up"], rollup["in_county"]) == (1, 1, 1)
    # When the same request is replayed (same Idempotency-Key, same body)
    again_status, again = stack.call("apply", body=body)
    # Then the first answer comes back and nothing more is stored
    assert (again_status, again["referral_id"]) == (201, rid)
    assert stack.count("ReferralsTable") == 1
    # and the receiver finds it to review, the referrer under sent
    status, box = stack.call("worklist_to_review")
    assert status == 200 and [r["referral_id"] for r in box["items"]] == [rid]
    assert box["items"][0]["actions"] == ["accept", "reject", "request_info"]
    status, box = stack.call("worklist_to_review", who=REFERRER, query={"box": "sent"})
    assert [r["referral_id"] for r in box["items"]] == [rid]


def test_an_apply_for_an_unknown_patient_is_refused_and_nothing_is_stored(stack):
    # Given the sample as it is: its patient is not in this county's patient index
    # When it is sent
    status, err = stack.call("apply")
    # Then the reason comes back, and no referral, rollup or idempotency record remains
    assert (status, err["error"]["code"]) == (400, "UNKNOWN_PATIENT"), err
    assert stack.count("ReferralsTable") == 0
    assert stack.count("ReferralStatsTable") == 0
    assert stack.count("IdempotencyTable") == 0


BAD_APPLY = [
    (400, "VALIDATION_FAILED", {"status": "ACCEPTED"}),  # a client never sends a status
    (400, "UNKNOWN_TARGET", {"target_institution_id": "no-such-hospital"}),
    (400, "UPWARD_TO_LOWER_TIER", {"target_institution_id": "qiaotou-lijia"}),
    (400, "INVALID_ICD10", {"diagnosis": {"code": "胸痛", "text": "胸痛"}}),
    (400, "NOT_A_DOWNWARD_REFERRAL", {"discharge_summary": "出院小结"}),
]


@pytest.mark.parametrize(("status", "code", "over"), BAD_APPLY, ids=[c for _, c, _ in BAD_APPLY])
def test_a_bad_apply_gets_its_reason_and_stores_nothing(stack, status, code, over):
    body = {**json.loads(sample("referrals", "apply")["body"]), "patient_id": stack.person_id}
    got, err = stack.call("apply", body={**body, **over},
                          headers={"Idempotency-Key": f"bad-{code}"})  # fmt: skip
    assert (got, err["error"]["code"]) == (status, code), err
    assert stack.count("ReferralsTable") == stack.count("ReferralStatsTable") == 0


def test_the_receiver_accepts_with_the_sample_event_and_a_second_decision_is_refused(stack):
    rid = stack.apply()["referral_id"]
    # When the referrer tries to accept their own referral
    status, err = stack.act("accept", rid, who=REFERRER)
    # Then it is refused and nothing changes
    assert (status, err["error"]["code"]) == (403, "NOT_RECEIVING_INSTITUTION")
    assert stack.item(rid)["version"]["N"] == "1"
    # When the receiving doctor sends the sample acceptance
    status, accepted = stack.act("accept", rid)
    # Then the referral waits for the patient, with the department and note recorded
    assert status == 200, accepted
    assert accepted["status"] == "ACCEPTED" and accepted["actions"] == ["arrive"]
    assert accepted["decision"]["outcome"] == "accepted"
    assert accepted["decision"]["by"]["sub"] == RECEIVER["sub"]
    assert accepted["target_department"] == "心血管内科"
    item = stack.item(rid)
    assert (item["status"]["S"], item["version"]["N"]) == ("ACCEPTED", "2")
    # When the sample rejection follows
    status, err = stack.act("reject", rid)
    # Then it conflicts with the decision already taken, which stands
    assert (status, err["error"]["code"]) == (409, "INVALID_TRANSITION")
    assert stack.item(rid)["status"]["S"] == "ACCEPTED"
    [rollup] = stack.rollups()
    assert (rollup["accepted"], rollup["decided"], rollup.get("rejected", 0)) == (1, 1, 0)


def test_the_receiver_rejects_with_the_sample_event_and_the_referral_closes(stack):
    rid = stack.apply()["referral_id"]
    status, rejected = stack.act("reject", rid)
    assert status == 200, rejected
    assert rejected["status"] == "REJECTED" and rejected["actions"] == []
    assert rejected["decision"]["reason_code"] == "NO_CAPACITY"
    assert rejected["history"][-1]["reason"].startswith("心内科床位已满")
    # closed: off the worklists (no gsi1/gsi2 keys), still on the patient's list
    item = stack.item(rid)
    assert item["status"]["S"] == "REJECTED"
    assert "gsi1pk" not in item and "gsi2pk" not in item and "gsi3pk" in item
    status, box = stack.call("worklist_to_review")
    assert box["count"] == 0
    status, err = stack.act("reject", rid, body={"reason_code": "BUSY"})
    assert (status, err["error"]["code"]) == (409, "INVALID_TRANSITION")


def test_the_sample_get_shows_the_referral_to_its_parties_only(stack):
    rid = stack.apply()["referral_id"]
    status, got = stack.call("get_referral", path=f"/referrals/{rid}")
    assert status == 200 and got["referral_id"] == rid
    outsider = {"sub": "doc-lijia", "role": "doctor", "institution_id": "qiaotou-lijia"}
    status, err = stack.call("get_referral", who=outsider, path=f"/referrals/{rid}")
    assert (status, err["error"]["code"]) == (403, "NOT_A_PARTY")
    status, err = stack.call("get_referral")  # the sample's referral is not in this table
    assert (status, err["error"]["code"]) == (404, "REFERRAL_NOT_FOUND")


# ------------------------------------------------------------------------------- workflow


def test_await_keeps_the_token_of_a_pending_referral_and_a_decision_spends_it(stack):
    rid = stack.apply()["referral_id"]
    # When the workflow enters the review wait
    assert stack.workflow("await_review", rid) == {"kept": True}
    # Then the item holds the wait's token (never shown to a client)
    item = stack.item(rid)
    assert (item["wait_token"]["S"], item["wait_stage"]["S"]) == (SAMPLE_TOKEN, "review")
    status, got = stack.call("get_referral", path=f"/referrals/{rid}")
    assert SAMPLE_TOKEN not in json.dumps(got)
    # When the receiver accepts (the token is unknown to Step Functions here: refused,
    # and the refusal is no error of the person's)
    status, accepted = stack.act("accept", rid)
    # Then the decision stands and the spent token is gone from the item
    assert (status, accepted["status"]) == (200, "ACCEPTED")
    assert "wait_token" not in stack.item(rid)


def test_await_on_an_already_accepted_referral_completes_the_wait_itself(stack):
    rid = stack.apply()["referral_id"]
    assert stack.act("accept", rid)[0] == 200
    # When the review wait starts late, with a token Step Functions does not know
    out = stack.workflow("await_review", rid)
    # Then the token is not kept (resume's InvalidToken is swallowed) and nothing changes
    assert out == {"kept": False}
    item = stack.item(rid)
    assert "wait_token" not in item and item["version"]["N"] == "2"


def test_await_on_an_already_accepted_referral_resumes_a_real_wait(stack):
    """The same, with a live task token: the execution continues with the referral's
    current outcome (ACCEPTED), so the state machine routes on to the arrival wait."""
    queue = stack.sqs.create_queue(QueueName="task-tokens")["QueueUrl"]
    waiting = {
        "StartAt": "AwaitReview",
        "States": {
            "AwaitReview": {
                "Type": "Task",
                "Resource": "arn:aws-cn:states:::sqs:sendMessage.waitForTaskToken",
                "Parameters": {"QueueUrl": queue, "MessageBody": {"token.$": "$$.Task.Token"}},
                "TimeoutSeconds": 60,
                "End": True,
            }
        },
    }
    machine = stack.sfn.create_state_machine(
        name="await-probe", definition=json.dumps(waiting),
        roleArn="arn:aws-cn:iam::123456789012:role/referral-workflow",
    )["stateMachineArn"]  # fmt: skip
    rid = stack.apply()["referral_id"]
    assert stack.act("accept", rid)[0] == 200
    execution = stack.sfn.start_execution(stateMachineArn=machine, name=rid)["executionArn"]
    token = _token_from(stack, queue)
    assert stack.workflow("await_review", rid, token=token) == {"kept": False}
    described = _finished(stack, execution)
    assert described["status"] == "SUCCEEDED"
    outcome = json.loads(described["output"])
    assert (outcome["status"], outcome["direction"]) == ("ACCEPTED", "up")
    assert outcome["wait_seconds"] > 86400  # the arrival limit of an urgent referral


def _token_from(stack: Stack, queue: str) -> str:
    for _ in range(100):
        messages = stack.sqs.receive_message(QueueUrl=queue).get("Messages")
        if messages:
            return json.loads(messages[0]["Body"])["token"]
        time.sleep(0.05)
    raise AssertionError("the execution never reached its wait")


def _finished(stack: Stack, execution: str) -> dict[str, Any]:
    for _ in range(100):
        described = stack.sfn.describe_execution(executionArn=execution)
        if described["status"] != "RUNNING":
            return described
        time.sleep(0.05)
    raise AssertionError("the execution is still waiting")


def test_timeout_escalates_a_due_pending_referral(stack):
    from yilian.adapters.referral_store import referral_from_image
    from yilian.domain.clock import now
    from yilian.domain.referral import iso

    rid = stack.apply(urgency="emergency")["referral_id"]
    # Given a referral whose review deadline passed
    before = referral_from_image(stack.item(rid))
    past = replace(before, due_at=iso(now() - timedelta(minutes=5)))
    stack.put_item({**stack.store().item(past), "wait_token": {"S": SAMPLE_TOKEN}})
    # When the review wait's time limit fires
    outcome = stack.workflow("timeout_review", rid)
    # Then it is escalated to the referral centre and the outcome routes the workflow on
    assert (outcome["status"], outcome["direction"]) == ("ESCALATED", "up")
    assert 1700 <= outcome["wait_seconds"] <= 1800  # the emergency escalation limit
    item = stack.item(rid)
    assert (item["status"]["S"], item["version"]["N"]) == ("ESCALATED", "2")
    assert item["gsi4pk"]["S"] == f"CENTRE#{CONSORTIUM}" and "wait_token" not in item
    after = referral_from_image(item)
    assert after.escalated and after.history[-1]["by"]["sub"] == "system:referral-workflow"
    status, box = stack.call("worklist_to_review", who=ADMIN, query={"box": "escalated"})
    assert status == 200 and [r["referral_id"] for r in box["items"]] == [rid]
    assert stack.rollups()[0]["escalated"] == 1
    # and a second firing (a retry) changes nothing more
    again = stack.workflow("timeout_review", rid)
    assert again["status"] == "ESCALATED" and stack.item(rid)["version"]["N"] == "2"


def test_timeout_leaves_a_referral_that_is_not_due_yet(stack):
    rid = stack.apply()["referral_id"]
    outcome = stack.workflow("timeout_review", rid)
    assert outcome["status"] == "PENDING_REVIEW" and outcome["wait_seconds"] > 3600
    assert stack.item(rid)["version"]["N"] == "1"


def test_an_unknown_task_is_an_error_for_the_state_machine(stack):
    with pytest.raises(ValueError, match="unknown task"):
        stack.workflow("await_review", SAMPLE_REFERRAL, task="nap")


# ------------------------------------------------------------------------------- stream


def test_the_insert_record_starts_one_workflow_and_publishes_referral_applied(stack):
    event = sample("referral_events", "insert")
    # When the stream delivers the new referral
    assert stack.invoke("referral_events", event) == {"changes": 1, "events": 1}
    # Then one execution is started, named after the referral, with its first wait
    [execution] = stack.executions()
    assert execution["name"] == SAMPLE_REFERRAL
    started = stack.sfn.describe_execution(executionArn=execution["executionArn"])
    payload = json.loads(started["input"])
    assert payload["referral_id"] == SAMPLE_REFERRAL
    assert (payload["outcome"]["status"], payload["outcome"]["direction"]) == (
        "PENDING_REVIEW", "up",
    )  # fmt: skip
    # and ReferralApplied is on the bus: ids and codes, never the patient's name
    [published] = stack.published()
    assert (published["source"], published["detail-type"]) == (
        "yilian.referrals", "ReferralApplied",
    )  # fmt: skip
    detail = published["detail"]
    assert (detail["referral_id"], detail["status"], detail["previous_status"]) == (
        SAMPLE_REFERRAL, "PENDING_REVIEW", None,
    )  # fmt: skip
    assert detail["to_institution"] == "county-hospital"
    assert "张伟" not in json.dumps(published, ensure_ascii=False)
    # When the batch is delivered again (a retry)
    stack.invoke("referral_events", event)
    # Then no second workflow starts for the referral
    assert [e["name"] for e in stack.executions()] == [SAMPLE_REFERRAL]


def test_a_token_only_change_publishes_nothing(stack):
    new = sample("referral_events", "insert")["Records"][0]["dynamodb"]["NewImage"]
    kept = {**new, "wait_token": {"S": SAMPLE_TOKEN}, "wait_stage": {"S": "review"}}
    event = _stream_record("status_changed", kept, new)
    assert stack.invoke("referral_events", event) == {"changes": 1, "events": 0}
    assert stack.published() == [] and stack.executions() == []


def test_an_upward_acceptance_publishes_status_changed_and_referral_accepted(stack):
    out = stack.invoke("referral_events", sample("referral_events", "status_changed"))
    assert out == {"changes": 1, "events": 2}
    published = stack.published()
    assert [e["detail-type"] for e in published] == [
        "ReferralStatusChanged", "ReferralAccepted",
    ]  # fmt: skip
    for event in published:
        detail = event["detail"]
        assert (detail["status"], detail["previous_status"], detail["action"]) == (
            "ACCEPTED", "PENDING_REVIEW", "accept",
        )  # fmt: skip
        assert detail["by"] == "doc-chenjie"
    assert stack.executions() == []  # only a new referral starts a workflow


def test_records_that_are_not_referrals_are_skipped(stack):
    event = sample("referral_events", "status_changed")
    removed = json.loads(json.dumps(event["Records"][0]))
    removed["eventName"] = "REMOVE"
    del removed["dynamodb"]["NewImage"]
    other = json.loads(json.dumps(event["Records"][0]))
    other["dynamodb"]["NewImage"]["pk"] = {"S": "STATS#demo-county"}
    assert stack.invoke("referral_events", {"Records": [removed, other]}) == {
        "changes": 0, "events": 0,
    }  # fmt: skip


def test_an_applied_referral_reaches_the_receivers_inbox(stack):
    """API → the stored item as the stream carries it → the relay → the bus → notifier →
    GET /notifications: the same shapes all the way."""
    rid = stack.apply()["referral_id"]
    event = _stream_record("insert", stack.item(rid))
    assert stack.invoke("referral_events", event)["events"] == 1
    assert [e["name"] for e in stack.executions()] == [rid]
    [delivered] = stack.published()
    assert stack.invoke("notifier", delivered) == {"sent": 1}
    [note] = stack.inbox(RECEIVER)
    assert (note["referral_id"], note["kind"]) == (rid, "referral.pending_review")
    assert note["title"] == "新的转诊申请待审核"
    assert stack.inbox(REFERRER) == []


# ------------------------------------------------------------------------------- notifier


def test_the_status_changed_event_notifies_the_referrer_and_the_patient(stack):
    event = sample("notifier", "referral_status_changed")
    person = event["detail"]["person_id"]
    # When the notifier gets the sample acceptance
    assert stack.invoke("notifier", event) == {"sent": 2}
    # Then the referring doctor (the sample's caller) reads it in their inbox
    [note] = stack.inbox(REFERRER)
    assert (note["referral_id"], note["kind"]) == (SAMPLE_REFERRAL, "referral.accepted")
    assert note["recipient"] == "user:doc-wangfang"
    assert note["title"] == "转诊已接收，请安排患者到院"
    assert note["at"] == event["detail"]["at"]
    # and so does the patient, in the resident app
    resident = {"sub": f"resident-{person}", "role": "resident", "institution_id": "",
                "person_id": person}  # fmt: skip
    [mine] = stack.inbox(resident)
    assert (mine["recipient"], mine["referral_id"]) == (f"person:{person}", SAMPLE_REFERRAL)
    # but not the receiving institution, who took the decision
    assert stack.inbox(RECEIVER) == []
    # and the sample list event as it is (the referrer) reads the same
    status, listed = stack.call("list", function="notifications")
    assert status == 200 and [n["notification_id"] for n in listed["items"]] == [
        note["notification_id"]
    ]


def test_referral_accepted_is_left_to_booking(stack):
    event = {**sample("notifier", "referral_status_changed"), "detail-type": "ReferralAccepted"}
    assert stack.invoke("notifier", event) == {"sent": 0}
    assert stack.count("PlatformTable") == 0


def test_a_redelivered_event_does_not_notify_twice(stack):
    event = sample("notifier", "referral_status_changed")
    stack.invoke("notifier", event)
    stack.invoke("notifier", event)  # EventBridge delivers at least once
    assert len(stack.inbox(REFERRER)) == 1


# ------------------------------------------------------------------------------- samples

EXPECTED = {
    "apply": 201,
    "worklist_to_review": 200,
    "get_referral": 200,
    "accept": 200,
    "reject": 200,
    "stats": 200,
    "icd10_search": 200,
}
API_SAMPLES = sorted(p.stem for p in (EVENTS / "referrals").glob("*.json"))


def test_every_referral_api_sample_is_covered_here():
    assert set(API_SAMPLES) >= set(EXPECTED)


@pytest.mark.parametrize("case", API_SAMPLES)
def test_every_api_sample_routes_and_answers_as_it_is(stack, case):
    """Each sample, unchanged but for the patient id the apply names, answers from its
    route: the sample referral is stored under the samples' id first, pending review."""
    from yilian.adapters.referral_store import referral_from_image

    rid = stack.apply()["referral_id"]
    pending = replace(referral_from_image(stack.item(rid)), referral_id=SAMPLE_REFERRAL)
    stack.put_item(stack.store().item(pending))
    event = sample("referrals", case)
    if case == "apply":
        body = json.loads(event["body"])
        event["body"] = json.dumps({**body, "patient_id": stack.person_id}, ensure_ascii=False)
    out = stack.invoke("referrals", event)
    body = json.loads(out["body"])
    assert out["statusCode"] not in (404, 405) and out["statusCode"] < 500, body
    assert out["statusCode"] == EXPECTED.get(case, out["statusCode"]), body
    if case == "icd10_search":
        assert [c["code"] for c in body["items"]][:1] == ["I20.9"]  # 心绞痛 by pinyin
    if case in ("get_referral", "accept", "reject"):
        assert body["referral_id"] == SAMPLE_REFERRAL


def test_the_notifications_sample_routes(stack):
    status, body = stack.call("list", function="notifications")
    assert (status, body) == (200, {"items": [], "count": 0})


def test_the_stream_samples_hold_the_store_layout(stack):
    """The images in the stream samples are what DynamoReferralStore.item writes."""
    from yilian.adapters.referral_store import referral_from_image

    for case in ("insert", "status_changed"):
        for record in sample("referral_events", case)["Records"]:
            images = record["dynamodb"]
            assert images["StreamViewType"] == "NEW_AND_OLD_IMAGES"
            for image in (images.get("OldImage"), images["NewImage"]):
                if image is None:
                    continue
                referral = referral_from_image(image)
                stored = {k: v for k, v in image.items() if not k.startswith("wait_")}
                assert stack.store().item(referral) == stored
                assert images["Keys"] == {"pk": image["pk"], "sk": image["sk"]}
