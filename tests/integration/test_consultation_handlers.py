"""The consultation functions as Lambda runs them, against moto with the template's tables.

API Gateway (REST, v1) events from events/consultations/*.json into
functions/consultations/app.py and Step Functions task payloads from
events/consultation_workflow/*.json into functions/consultation_workflow/app.py, each handler
loaded fresh with the environment template.yaml gives its function (the records bucket, a
KMS data key, ConsultationLimits in seconds). The state machine in moto is a trivial one the
request starts; a probe machine waiting on an SQS task token stands in for the real Await
state, so the tests see a person's step spend the workflow's token. The samples name one
consultation and one person; each test registers its own person and puts the new ids and
versions in the events. Bad inputs get their 4xx reason code and change nothing.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from datetime import date, timedelta
from typing import Any
from unittest import mock

import pytest

from tests.fakes import registration
from tests.support.lambda_events import (
    CONSORTIUM,
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

pytestmark = pytest.mark.integration

SAMPLE_CONSULTATION = "HZ20260601A1B2C3"
SAMPLE_PERSON = "5e2b8c41d7a94f03b6e1"
FUNCTIONS = {
    "consultations": "ConsultationsFunction",
    "consultation_workflow": "ConsultationWorkflowFunction",
}
REQUESTER = {"sub": "doc-wangfang", "role": "doctor", "institution_id": "qiaotou", "name": "王芳"}
CENTRE = {
    "sub": "doc-zhuanzhen",
    "role": "referral_centre",
    "institution_id": "county-hospital",
    "name": "蒋慧",
}
LEAD = {
    "sub": "doc-chenming",
    "role": "doctor",
    "institution_id": "county-hospital",
    "name": "陈明",
}
EXPERT = {
    "sub": "doc-liuyan",
    "role": "doctor",
    "institution_id": "county-hospital",
    "name": "刘艳",
}
OUTSIDER = {
    "sub": "doc-zhaolei",
    "role": "doctor",
    "institution_id": "county-hospital",
    "name": "赵磊",
}
DOCTORS = [  # doctor_id, institution, name, department, title, role
    ("doc-zhuanzhen", "county-hospital", "蒋慧", "转诊中心", "主管护师", "referral_centre"),
    ("doc-chenming", "county-hospital", "陈明", "心血管内科", "主任医师", "doctor"),
    ("doc-liuyan", "county-hospital", "刘艳", "神经内科", "副主任医师", "doctor"),
    ("doc-zhaolei", "county-hospital", "赵磊", "骨科", "主治医师", "doctor"),
    ("doc-wangfang", "qiaotou", "王芳", "全科", "主治医师", "doctor"),
]
# Urgent waits last a second, so the time-limit tasks run without long sleeps.
LIMITS = {"review": {"urgent": 1}, "escalation": 1, "invitation": {"urgent": 1}}
TRIVIAL_MACHINE = {"StartAt": "Started", "States": {"Started": {"Type": "Pass", "End": True}}}
NAMES = ["钱会", "孙诊", "李商", "周议", "吴问", "郑询", "冯策", "陈谋", "褚言", "卫思"]
_serial = iter(range(1, 10_000))


class Stack:
    """The tables, buckets, key and state machines in moto; both handlers loaded fresh."""

    def __init__(self, aws: dict[str, Any], tables: dict[str, str], refs: dict[str, str]):
        self.db, self.sfn, self.sqs = aws["dynamodb"], aws["stepfunctions"], aws["sqs"]
        self.tables, self.refs = tables, refs
        self.machine = refs["ConsultationStateMachine"]
        self.env = function_environment(FUNCTIONS, refs)
        self.handlers = {f: load(ROOT / "functions" / f / "app.py") for f in FUNCTIONS}

    # ---------------------------------------------------------------- invoking
    def invoke(self, function: str, event: dict[str, Any]) -> Any:
        """One invocation with the function's environment (and only its YL_ settings)."""
        with mock.patch.dict(os.environ):
            for k in [k for k in os.environ if k.startswith(("YL_", "POWERTOOLS_"))]:
                del os.environ[k]
            os.environ.update(self.env[function])
            handler = self.handlers[function].lambda_handler
            return handler(json.loads(json.dumps(event)), Context(FUNCTIONS[function]))

    def call(
        self, case: str, consultation_id: str = SAMPLE_CONSULTATION, **replaced: Any
    ) -> tuple[int, Any]:
        """An API sample about `consultation_id`, with what `api_event` takes replaced."""
        text = json.dumps(sample("consultations", case), ensure_ascii=False)
        event = json.loads(text.replace(SAMPLE_CONSULTATION, consultation_id))
        out = self.invoke("consultations", api_event(event, **replaced))
        return out["statusCode"], json.loads(out["body"]) if out.get("body") else None

    def act(self, case: str, cid: str, version: int | None, **over: Any) -> tuple[int, Any]:
        """The sample step `case` with the version the caller saw (None: the sample's body)."""
        body = json.loads(sample("consultations", case)["body"])
        if version is not None:
            body["version"] = version
        return self.call(case, cid, body={**body, **over.pop("fields", {})}, **over)

    def request(self, person_id: str, **over: Any) -> dict[str, Any]:
        body = {**json.loads(sample("consultations", "request")["body"]), "person_id": person_id}
        status, out = self.call("request", body={**body, **over})
        assert status == 201, out
        return out

    def workflow(self, case: str, cid: str, **over: Any) -> Any:
        event = {**sample("consultation_workflow", case), "consultation_id": cid, **over}
        return self.invoke("consultation_workflow", event)

    # ---------------------------------------------------------------- reading moto
    def item(self, cid: str) -> dict[str, Any]:
        key = {"pk": {"S": f"CONS#{cid}"}, "sk": {"S": "CONS"}}
        return self.db.get_item(TableName=self.tables["ConsultationsTable"], Key=key)["Item"]

    def stored(self, cid: str) -> dict[str, Any]:
        return json.loads(self.item(cid)["data"]["S"])

    def count(self, logical_id: str = "ConsultationsTable") -> int:
        return self.db.scan(TableName=self.tables[logical_id], Select="COUNT")["Count"]

    def executions(self) -> list[dict[str, Any]]:
        return self.sfn.list_executions(stateMachineArn=self.machine)["executions"]

    def probe(self, name: str) -> tuple[str, str]:
        """An execution of a machine waiting on a task token (as the Await state does);
        returns (its arn, the token it waits with)."""
        queue = self.sqs.create_queue(QueueName=f"await-{name}")["QueueUrl"]
        waiting = {
            "StartAt": "Await",
            "States": {
                "Await": {
                    "Type": "Task",
                    "Resource": "arn:aws-cn:states:::sqs:sendMessage.waitForTaskToken",
                    "Parameters": {"QueueUrl": queue, "MessageBody": {"token.$": "$$.Task.Token"}},
                    "TimeoutSeconds": 60,
                    "End": True,
                }
            },
        }
        machine = self.sfn.create_state_machine(
            name=f"await-{name}",
            definition=json.dumps(waiting),
            roleArn="arn:aws-cn:iam::123456789012:role/consultation-workflow",
        )["stateMachineArn"]
        execution = self.sfn.start_execution(stateMachineArn=machine, name=name)["executionArn"]
        for _ in range(100):
            messages = self.sqs.receive_message(QueueUrl=queue).get("Messages")
            if messages:
                return execution, json.loads(messages[0]["Body"])["token"]
            time.sleep(0.05)
        raise AssertionError("the probe never reached its wait")

    def finished(self, execution: str) -> dict[str, Any]:
        for _ in range(100):
            described = self.sfn.describe_execution(executionArn=execution)
            if described["status"] != "RUNNING":
                return described
            time.sleep(0.05)
        return described


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    from moto import mock_aws

    with pytest.MonkeyPatch.context() as mp:
        for k, v in {
            "AWS_DEFAULT_REGION": REGION,
            "AWS_REGION": REGION,
            "AWS_ACCESS_KEY_ID": "test",
            "AWS_SECRET_ACCESS_KEY": "test",
        }.items():
            mp.setenv(k, v)
        mp.delenv("AWS_ENDPOINT_URL", raising=False)
        # the executing Step Functions backend: like AWS, it refuses tokens it does not know
        with mock_aws(config={"stepfunctions": {"execute_state_machine": True}}):
            import boto3

            from tests.support.template_tables import county_params, create_tables

            aws = {s: boto3.client(s) for s in ("dynamodb", "stepfunctions", "sqs", "s3", "kms")}
            tables = create_tables(aws["dynamodb"])
            county = county_params()["CountyCode"]
            bucket = f"yilian-{county}-records-123456789012-{REGION}"
            aws["s3"].create_bucket(
                Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": REGION}
            )
            key = aws["kms"].create_key(Description="data key")["KeyMetadata"]["Arn"]
            machine = aws["stepfunctions"].create_state_machine(
                name=f"yilian-{county}-consultation",
                definition=json.dumps(TRIVIAL_MACHINE),
                roleArn="arn:aws-cn:iam::123456789012:role/consultation-workflow",
            )["stateMachineArn"]
            refs = {
                **tables,
                "RecordsBucket": bucket,
                "DataKey.Arn": key,
                "ConsultationStateMachine": machine,
                "ConsultationLimits": json.dumps(LIMITS),
            }
            _seed_directory(tables["DirectoryTable"])
            yield Stack(aws, tables, refs)


def _seed_directory(table: str) -> None:
    from yilian.adapters.directory_store import DirectoryStore
    from yilian.domain.directory import Doctor

    seed_demo_directory(table)
    directory = DirectoryStore(table, region=REGION)
    for doctor_id, inst, name, dept, title, role in DOCTORS:
        directory.add_doctor(
            Doctor(doctor_id, CONSORTIUM, inst, name, dept, title, role=role), None
        )


@pytest.fixture
def person(stack: Stack) -> str:
    """A new person registered at qiaotou (names and birth dates differ per test)."""
    from yilian.domain.principal import Principal, Role

    n = next(_serial)
    birth = (date(1948, 3, 1) + timedelta(days=41 * n)).isoformat()
    body = registration(
        NAMES[n % len(NAMES)],
        birth_date=birth,
        seq=n,
        local=None,
        phone=None,
        address=None,
        household=None,
    )
    doctor = Principal("doc-wangfang", Role.DOCTOR, CONSORTIUM, "qiaotou", None, "王芳")
    return register_patient(stack.tables, body, doctor)


def resident(person_id: str) -> dict[str, str]:
    return {
        "sub": f"res-{person_id}",
        "role": "resident",
        "institution_id": "",
        "person_id": person_id,
        "name": "居民",
    }


# ------------------------------------------------------------------------------- API


def test_the_samples_run_a_consultation_from_request_to_acknowledgement(stack, person):
    # When the requester sends the sample request for a registered patient
    c = stack.request(person)
    cid = c["consultation_id"]
    # Then it is stored, found on the board, and its workflow execution is started
    assert (c["status"], c["version"], c["kind"]) == ("REQUESTED", 1, "mdt")
    assert stack.item(cid)["status"]["S"] == "REQUESTED"
    assert any(e["name"] == cid for e in stack.executions())
    status, board = stack.call("board")
    assert status == 200 and cid in [r["consultation_id"] for r in board["consultations"]]
    status, cands = stack.call("candidates", cid)
    assert status == 200
    assert [d["doctor_id"] for d in cands["candidates"]] == ["doc-chenming", "doc-liuyan"]
    # the centre accepts with the sample's two experts (MDT: both must accept)
    status, c = stack.act("accept", cid, 1)
    assert (status, c["status"], c["required_accepts"]) == (200, "ASSIGNING", 2), c
    status, mine = stack.call("worklist")
    assert [r["my_state"] for r in mine["as_expert"] if r["consultation_id"] == cid] == ["invited"]
    status, c = stack.act("respond", cid, 2)
    assert (status, c["status"]) == (200, "ASSIGNING"), c
    status, c = stack.act("respond", cid, 3, who=EXPERT)
    assert (status, c["status"]) == (200, "IN_PROGRESS"), c
    status, c = stack.act("opinion", cid, 4)
    assert (status, c["status"], c["version"]) == (200, "IN_PROGRESS", 5), c
    records_before = stack.count("RecordsTable")
    status, c = stack.act("sign", cid, 5)
    assert (status, c["status"], c["report"]["signed_by"]) == (200, "REPORTED", "doc-chenming")
    assert [o["name"] for o in c["report"]["opinions"]] == ["刘艳"]
    # the signed report joins the patient's record
    assert stack.count("RecordsTable") > records_before
    status, c = stack.act("acknowledge", cid, 6)
    assert (status, c["status"], c["version"]) == (200, "COMPLETED", 7), c
    assert stack.stored(cid)["status"] == "COMPLETED" and "gsi2pk" not in stack.item(cid)
    # the resident reads it and its report; the centre its accounting
    status, out = stack.call("my_consultations", who=resident(person))
    assert status == 200, out
    [mine] = out["consultations"]
    assert (mine["consultation_id"], mine["report"]["findings"]) == (cid, "考虑稳定型心绞痛")
    month = c["created_at"][:7]
    status, fees = stack.call("accounting", query={"from": month, "to": month})
    assert status == 200, fees
    rows = {e["doctor_id"]: e["fee_yuan"] for e in fees["experts"]}
    assert rows == {"doc-chenming": 400.0, "doc-liuyan": 300.0}
    [county] = [i for i in fees["institutions"] if i["institution_id"] == "county-hospital"]
    assert county["fee_received_yuan"] == pytest.approx(490.0)  # 70% of 700


def test_the_get_sample_shows_a_party_its_view_and_refuses_others(stack, person):
    cid = stack.request(person)["consultation_id"]
    status, c = stack.call("get", cid)
    assert (status, c["my_part"], c["actions"]) == (
        200,
        "centre",
        ["accept", "cancel", "decline", "return"],
    )
    status, err = stack.call("get", cid, who=OUTSIDER)
    assert (status, err["error"]["code"]) == (403, "NOT_A_PARTY")
    status, err = stack.call("get", "HZ20990101FFFFFF")
    assert (status, err["error"]["code"]) == (404, "CONSULTATION_NOT_FOUND")


def test_bad_requests_store_nothing(stack, person):
    before = (stack.count(), len(stack.executions()))
    body = json.loads(sample("consultations", "request")["body"])
    for change, code in (
        ({"person_id": "nobody"}, "PATIENT_UNKNOWN"),
        ({"person_id": person, "centre_institution_id": "qiaotou"}, "CENTRE_IS_REQUESTER"),
        ({"person_id": person, "kind": "soon"}, "KIND_INVALID"),
    ):
        status, err = stack.call("request", body={**body, **change})
        assert (status, err["error"]["code"]) == (400, code), err
    status, err = stack.call("request", raw_body="{")
    assert (status, err["error"]["code"]) == (400, "MALFORMED_JSON")
    assert (stack.count(), len(stack.executions())) == before


def test_bad_steps_change_nothing(stack, person):
    cid = stack.request(person)["consultation_id"]
    before = stack.item(cid)
    for kw, status, code in (
        (
            {"version": 1, "fields": {"experts": [{"doctor_id": "doc-nobody"}]}},
            400,
            "EXPERT_UNKNOWN",
        ),
        (
            {
                "version": 1,
                "fields": {
                    "experts": [
                        {"doctor_id": "doc-chenming", "lead": True},
                        {"doctor_id": "doc-liuyan", "lead": True},
                    ]
                },
            },
            400,
            "TWO_LEADS",
        ),
        ({"version": 0}, 409, "REPLAYED"),
        ({"version": 1, "who": resident(person)}, 403, "ROLE_NOT_ALLOWED"),
        ({"version": 1, "who": REQUESTER}, 403, "NOT_THE_CENTRE"),
    ):
        got, err = stack.act("accept", cid, **kw)
        assert (got, err["error"]["code"]) == (status, code), err
    body = json.loads(sample("consultations", "accept")["body"])
    del body["version"]
    got, err = stack.call("accept", cid, body=body)
    assert (got, err["error"]["code"]) == (400, "VERSION_REQUIRED")
    assert stack.item(cid) == before


# ------------------------------------------------------------------------------- workflow


def test_start_routes_a_new_request_to_its_review_wait(stack, person):
    cid = stack.request(person)["consultation_id"]
    out = stack.workflow("start", cid)
    assert (out["status"], out["stage"]) == ("REQUESTED", "review")
    assert 86000 < out["wait_seconds"] <= 172800  # the MDT review limit


def test_a_kept_wait_token_is_spent_by_the_centres_step(stack, person):
    cid = stack.request(person)["consultation_id"]
    execution, token = stack.probe(f"kept-{cid}")
    # When the workflow enters the review wait with its token
    assert stack.workflow("await_review", cid, token=token) == {"kept": True}
    assert stack.item(cid)["wait_token"]["S"] == token
    # Then the centre's accept completes that wait with the new status
    assert stack.act("accept", cid, 1)[0] == 200
    done = stack.finished(execution)
    assert done["status"] == "SUCCEEDED"
    assert json.loads(done["output"])["status"] == "ASSIGNING"
    assert json.loads(done["output"])["stage"] == "invitation"
    assert "wait_token" not in stack.item(cid)  # the next wait brings its own


def test_a_wait_for_a_stage_already_left_completes_at_once(stack, person):
    cid = stack.request(person)["consultation_id"]
    assert stack.act("accept", cid, 1)[0] == 200
    execution, token = stack.probe(f"late-{cid}")
    assert stack.workflow("await_review", cid, token=token) == {"kept": False}
    done = stack.finished(execution)
    assert (done["status"], json.loads(done["output"])["status"]) == ("SUCCEEDED", "ASSIGNING")


def test_an_urgent_review_timeout_escalates_then_expires(stack, person):
    cid = stack.request(person, kind="urgent")["consultation_id"]
    # before the limit: nothing changes
    early = stack.workflow("timeout_review", cid)
    assert (early["status"], stack.stored(cid)["version"]) == ("REQUESTED", 1)
    time.sleep(1.1)
    out = stack.workflow("timeout_review", cid)
    assert (out["status"], out["stage"]) == ("REQUESTED", "review")
    c = stack.stored(cid)
    assert (c["escalated"], c["history"][-1]["action"], c["history"][-1]["by"]) == (
        True,
        "escalate",
        "workflow",
    )
    time.sleep(1.1)
    out = stack.workflow("timeout_review", cid)
    assert (out["status"], out["stage"]) == ("EXPIRED", "closed")
    c = stack.stored(cid)
    assert (c["status"], c["closed_reason"]) == ("EXPIRED", "审核超时")
    assert "gsi2pk" not in stack.item(cid)  # off the centre's board
    # a late timeout for a stage the consultation left changes nothing
    again = stack.workflow("timeout_review", cid)
    assert again["stage"] == "closed" and stack.stored(cid)["version"] == c["version"]


def test_an_urgent_invitation_timeout_invites_the_next_candidate(stack, person):
    cid = stack.request(person, kind="urgent", specialty="心血管内科,神经内科")["consultation_id"]
    status, c = stack.act(
        "accept", cid, 1, fields={"experts": [{"doctor_id": "doc-chenming", "lead": True}]}
    )
    assert (status, c["status"], c["required_accepts"]) == (200, "ASSIGNING", 1), c
    time.sleep(1.1)
    out = stack.workflow("timeout_review", cid, stage="invitation")
    assert (out["status"], out["stage"]) == ("ASSIGNING", "invitation")
    c = stack.stored(cid)
    assert [(i["expert"]["subject"], i["state"], i["lead"]) for i in c["invitations"]] == [
        ("doc-chenming", "expired", True),
        ("doc-liuyan", "invited", True),
    ]
    assert c["rounds"] == 1


def test_an_unknown_task_fails_the_state(stack):
    with pytest.raises(ValueError, match="unknown task"):
        stack.workflow("start", SAMPLE_CONSULTATION, task="frobnicate")
