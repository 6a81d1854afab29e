"""The booking functions as Lambda runs them, against moto with the template's tables.

API Gateway (REST, v1) events from events/booking/*.json into functions/booking/app.py, the
scheduled event from events/booking_sweep/ into functions/booking_sweep/app.py and the
EventBridge ReferralAccepted event from events/booking_referrals/ into
functions/booking_referrals/app.py. Each handler is loaded fresh and sees the environment
template.yaml gives its function; the handlers run on the real clock, so the samples' dates
are moved to days ahead of today. The event bus delivers the booking events to an SQS queue
so they can be read. Bad inputs get their 4xx reason code and store nothing.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from datetime import timedelta
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
from yilian.domain.clock import CHINA_TZ
from yilian.domain.clock import now as china_now

FUNCTIONS = {
    "booking": "BookingFunction",
    "booking_sweep": "BookingSweepFunction",
    "booking_referrals": "BookingReferralsFunction",
}
COUNTY = "county-hospital"
DOCTOR = {"sub": "doc-chenjie", "role": "doctor", "institution_id": COUNTY, "name": "陈杰"}
ADMIN = {"sub": "adm-county", "role": "institution_admin", "institution_id": COUNTY,
         "name": "县医院管理员"}  # fmt: skip
VILLAGE_DOCTOR = {"sub": "doc-lijia", "role": "doctor", "institution_id": "qiaotou-lijia"}


def days_ahead(n: int) -> str:
    return (china_now() + timedelta(days=n)).date().isoformat()


class Stack:
    def __init__(self, aws: dict[str, Any], tables: dict[str, str], refs: dict[str, str]):
        self.db, self.sqs = aws["dynamodb"], aws["sqs"]
        self.tables, self.queue = tables, refs["BusQueueUrl"]
        self.env = function_environment(FUNCTIONS, refs)
        self.handlers = {f: load(ROOT / "functions" / f / "app.py") for f in FUNCTIONS}
        self.patient = self.other = ""  # registered persons (set by the fixture)

    def invoke(self, function: str, event: dict[str, Any]) -> Any:
        with mock.patch.dict(os.environ):
            for k in [k for k in os.environ if k.startswith(("YL_", "POWERTOOLS_"))]:
                del os.environ[k]
            os.environ.update(self.env[function])
            handler = self.handlers[function].lambda_handler
            return handler(json.loads(json.dumps(event)), Context(FUNCTIONS[function]))

    def call(self, case: str, **replaced: Any) -> tuple[int, Any]:
        out = self.invoke("booking", api_event(sample("booking", case), **replaced))
        return out["statusCode"], json.loads(out["body"]) if out.get("body") else None

    def resident(self, person_id: str | None = None) -> dict[str, str]:
        person_id = person_id or self.patient
        return {"sub": f"res-{person_id}", "role": "resident", "person_id": person_id,
                "name": "张伟"}  # fmt: skip

    # ---------------------------------------------------------------- shortcuts
    def publish(self, **over: Any) -> list[dict[str, Any]]:
        body = {**json.loads(sample("booking", "publish")["body"]), "date": days_ahead(4)}
        status, out = self.call("publish", body={**body, **over})
        assert status == 201, out
        return out["slots"]

    def book(self, slot_id: str, who: dict[str, str] | None = None, **body: Any) -> dict:
        status, out = self.call("book", who=who or self.resident(),
                                body={"slot_id": slot_id, **body},
                                headers={"Idempotency-Key": uuid.uuid4().hex})  # fmt: skip
        assert status == 201, out
        return out

    def act(self, case: str, appointment_id: str, **kw: Any) -> tuple[int, Any]:
        action = case.replace("_", "-")
        return self.call(case, path=f"/appointments/{appointment_id}/{action}", **kw)

    def store(self) -> Any:
        from yilian.adapters.booking_store import DynamoBookingStore

        return DynamoBookingStore(self.db, self.tables["BookingsTable"])

    def counters(self, slot_id: str) -> tuple[int, int, int]:
        s = self.store().get_slot(slot_id)
        return s.booked, s.booked_public, s.booked_reserved

    def count(self, prefix: str) -> int:
        items = self.db.scan(TableName=self.tables["BookingsTable"])["Items"]
        return sum(1 for i in items if i["pk"]["S"].startswith(prefix))

    def published(self) -> list[dict[str, Any]]:
        events: list[dict[str, Any]] = []
        while True:
            out = self.sqs.receive_message(QueueUrl=self.queue, MaxNumberOfMessages=10)
            if not out.get("Messages"):
                return events
            for m in out["Messages"]:
                events.append(json.loads(m["Body"]))
                self.sqs.delete_message(QueueUrl=self.queue, ReceiptHandle=m["ReceiptHandle"])


@pytest.fixture
def stack(monkeypatch: pytest.MonkeyPatch) -> Iterator[Stack]:
    from moto import mock_aws

    for k, v in {"AWS_DEFAULT_REGION": REGION, "AWS_REGION": REGION,
                 "AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test"}.items():  # fmt: skip
        monkeypatch.setenv(k, v)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    with mock_aws():
        import boto3

        from tests.support.template_tables import county_params, create_tables

        aws = {s: boto3.client(s) for s in ("dynamodb", "sqs", "events")}
        tables = create_tables(aws["dynamodb"])
        bus = f"yilian-{county_params()['CountyCode']}-events"
        aws["events"].create_event_bus(Name=bus)
        queue = aws["sqs"].create_queue(QueueName="booking-tap")["QueueUrl"]
        arn = aws["sqs"].get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])
        aws["events"].put_rule(Name="tap", EventBusName=bus,
                               EventPattern=json.dumps({"source": ["yilian.booking"]}))  # fmt: skip
        aws["events"].put_targets(Rule="tap", EventBusName=bus, Targets=[
            {"Id": "q", "Arn": arn["Attributes"]["QueueArn"]}])  # fmt: skip
        seed_demo_directory(tables["DirectoryTable"])
        _add_doctor(tables["DirectoryTable"])
        stack = Stack(aws, tables, {**tables, "EventBus": bus, "BusQueueUrl": queue})
        stack.patient = _register(tables, registration())
        stack.other = _register(
            tables,
            registration(
                "李娜",
                "female",
                "1990-01-02",
                seq=2,
                local=("V00002", "qiaotou-lijia"),
                phone="13905719999",
                household="HH0002",
            ),
        )
        yield stack


def _add_doctor(table: str) -> None:
    from yilian.adapters.directory_store import DirectoryStore
    from yilian.domain.directory import Doctor

    doctor = Doctor("doc-chenjie", CONSORTIUM, COUNTY, "陈杰", "神经内科", "主任医师")
    DirectoryStore(table, region=REGION).add_doctor(doctor, None)


def _register(tables: dict[str, str], body: dict[str, Any]) -> str:
    from yilian.domain.principal import Principal, Role

    doctor = Principal("doc-lijia", Role.DOCTOR, CONSORTIUM, "qiaotou-lijia", None, "李医生")
    return register_patient(tables, body, doctor)


# ------------------------------------------------------------------------------- schedules
def test_the_sample_publish_makes_slots_with_the_reserved_share(stack):
    body = {**json.loads(sample("booking", "publish")["body"]), "date": days_ahead(4)}
    status, out = stack.call("publish", body=body)
    assert status == 201, out
    session = out["session"]
    assert (session["institution_id"], session["doctor_name"], session["created_by"]) == (
        COUNTY, "陈杰", "adm-county",
    )  # fmt: skip
    assert len(out["slots"]) == 4
    first = out["slots"][0]
    assert (first["capacity"], first["reserved"], first["free"]) == (10, 2, 8)
    assert first["start"] == f"{days_ahead(4)}T08:00:00+08:00"
    assert stack.count(f"SLOTS#{COUNTY}#") == 5  # the session and its four slots


BAD_PUBLISH = [
    (400, "INVALID_CLOCK_TIME", {"start": "8am"}, ADMIN),
    (400, "INVALID_DATE", {"date": "2026-13-01"}, ADMIN),
    (400, "SLOT_TOO_WIDE", {"slot_minutes": 90, "end": "11:00"}, ADMIN),
    (400, "SLOTS_DO_NOT_FIT", {"slot_minutes": 45}, ADMIN),
    (400, "SESSION_IN_PAST", {"date": "2026-01-05"}, ADMIN),
    (400, "VALIDATION_FAILED", {"capacity": 0}, ADMIN),
    (400, "VALIDATION_FAILED", {"period": "night"}, ADMIN),
    (400, "VALIDATION_FAILED", {"reserved_share": 0.9}, ADMIN),  # not a session field
    (400, "UNKNOWN_DOCTOR", {"doctor_id": "doc-nobody"}, ADMIN),
    (403, "ROLE_NOT_ALLOWED", {}, DOCTOR),
    (403, "OTHER_INSTITUTION", {"institution_id": "qiaotou"}, ADMIN),
]


@pytest.mark.parametrize(
    ("status", "code", "over", "who"),
    BAD_PUBLISH,
    ids=[f"{b[1]}-{n}" for n, b in enumerate(BAD_PUBLISH)],
)
def test_a_bad_publish_gets_its_reason_and_stores_nothing(stack, status, code, over, who):
    body = {**json.loads(sample("booking", "publish")["body"]), "date": days_ahead(4), **over}
    got, err = stack.call("publish", who=who, body=body)
    assert (got, err["error"]["code"]) == (status, code), err
    assert stack.count("SLOTS#") == 0


def test_cancelling_a_session_cancels_its_bookings(stack):
    slots = stack.publish()
    appt = stack.book(slots[0]["slot_id"])
    session_id = slots[0]["session_id"]
    status, out = stack.call("publish", who=ADMIN, path=f"/schedules/{session_id}/cancel",
                             body={"reason": "设备检修"})  # fmt: skip
    assert (status, out.get("bookings_cancelled")) == (200, 1), out
    got = stack.store().get_appointment(appt["appointment_id"])
    assert str(got[0].status) == "CANCELLED"
    assert [e["detail-type"] for e in stack.published()] == ["AppointmentCancelled"]


# ------------------------------------------------------------------------------- search, book
def test_the_sample_search_shows_a_resident_the_public_places_only(stack):
    stack.publish()
    query = {**sample("booking", "search")["queryStringParameters"], "date": days_ahead(4)}
    status, out = stack.call("search", who=stack.resident(), query=query)
    assert status == 200 and out["count"] == 4, out
    assert {s["free"] for s in out["items"]} == {8} and "reserved" not in out["items"][0]
    status, staff = stack.call("search", who=DOCTOR, query=query)
    assert (staff["items"][0]["reserved"], staff["items"][0]["free_for_referral"]) == (2, 10)
    status, err = stack.call("search", query={**query, "date": "2026-13-01"})
    assert (status, err["error"]["code"]) == (400, "INVALID_DATE")


def test_the_sample_book_confirms_once_and_a_replay_returns_the_same(stack):
    slots = stack.publish()
    slot_id = slots[0]["slot_id"]
    status, first = stack.call("book", who=stack.resident(), body={"slot_id": slot_id})
    assert status == 201, first
    assert (first["status"], first["quota"], first["person_id"]) == (
        "BOOKED", "public", stack.patient,
    )  # fmt: skip
    status, again = stack.call("book", who=stack.resident(), body={"slot_id": slot_id})
    assert (status, again["appointment_id"]) == (201, first["appointment_id"])
    assert stack.count("APPT#") == 1 and stack.counters(slot_id) == (1, 1, 0)
    # the same key with another body: refused, nothing booked
    status, err = stack.call("book", who=stack.resident(), body={"slot_id": slots[1]["slot_id"]})
    assert (status, err["error"]["code"]) == (409, "IDEMPOTENCY_KEY_REUSED")
    assert stack.counters(slots[1]["slot_id"]) == (0, 0, 0) and stack.count("APPT#") == 1


BAD_BOOK = [
    (403, "NOT_YOUR_RECORD", {"person_id": "someone-else"}),
    (403, "RESERVED_FOR_REFERRALS", {"reserved": True}),
    (404, "SLOT_NOT_FOUND", {"slot_id": "county-hospital.2026-06-05.zz.0800"}),
    (400, "UNKNOWN_REFERRAL", {"referral_id": "ZZ000000NOPE"}),
    (400, "VALIDATION_FAILED", {"when": "now"}),
]


@pytest.mark.parametrize(("status", "code", "over"), BAD_BOOK, ids=[c for _, c, _ in BAD_BOOK])
def test_a_bad_booking_gets_its_reason_and_books_nothing(stack, status, code, over):
    slot_id = stack.publish()[0]["slot_id"]
    body = {"slot_id": slot_id, **over}
    got, err = stack.call("book", who=stack.resident(), body=body,
                          headers={"Idempotency-Key": f"bad-{code}"})  # fmt: skip
    assert (got, err["error"]["code"]) == (status, code), err
    assert stack.count("APPT#") == 0 and stack.counters(slot_id) == (0, 0, 0)


def test_a_slot_not_yet_open_and_a_second_booking_that_day_are_refused(stack):
    far = stack.publish(date=days_ahead(20))[0]["slot_id"]
    slots = stack.publish()
    status, err = stack.call("book", who=stack.resident(), body={"slot_id": far},
                             headers={"Idempotency-Key": "far"})  # fmt: skip
    assert (status, err["error"]["code"]) == (409, "SLOT_NOT_OPEN")
    stack.book(slots[0]["slot_id"])
    status, err = stack.call("book", who=stack.resident(), body={"slot_id": slots[1]["slot_id"]},
                             headers={"Idempotency-Key": "second"})  # fmt: skip
    assert (status, err["error"]["code"]) == (409, "DUPLICATE_BOOKING")
    assert stack.count("APPT#") == 1


def test_a_department_session_is_searched_and_booked(stack):
    # a session of the department's (no doctor named): 普通门诊 at the county hospital
    slots = stack.publish(doctor_id=None, visit_type="general")
    assert slots[0]["doctor_id"] is None
    query = {"institution_id": COUNTY, "date": days_ahead(4)}
    status, out = stack.call("search", who=stack.resident(), query=query)
    assert (status, out.get("count")) == (200, 4), out
    appt = stack.book(slots[0]["slot_id"])
    assert (appt["doctor_id"], appt["department"]) == (None, "神经内科")


# ------------------------------------------------------------------------------- change
def test_the_sample_reschedule_then_cancel(stack):
    slots = stack.publish()
    appt = stack.book(slots[0]["slot_id"])["appointment_id"]
    status, moved = stack.act("reschedule", appt, who=stack.resident(),
                              body={"slot_id": slots[3]["slot_id"]})  # fmt: skip
    assert status == 200, moved
    assert moved["slot_id"] == slots[3]["slot_id"] and moved["appointment_id"] != appt
    assert stack.counters(slots[0]["slot_id"]) == (0, 0, 0)
    assert stack.counters(slots[3]["slot_id"]) == (1, 1, 0)
    status, err = stack.act("reschedule", moved["appointment_id"], who=stack.resident(stack.other),
                            body={"slot_id": slots[1]["slot_id"]})  # fmt: skip
    assert (status, err["error"]["code"]) == (403, "NOT_YOUR_APPOINTMENT")
    status, cancelled = stack.act("cancel", moved["appointment_id"], who=stack.resident())
    assert (status, cancelled["status"]) == (200, "CANCELLED"), cancelled
    assert stack.counters(slots[3]["slot_id"]) == (0, 0, 0)
    [event] = stack.published()
    assert event["detail-type"] == "AppointmentCancelled" and event["source"] == "yilian.booking"
    assert event["detail"]["appointment_id"] == moved["appointment_id"]
    assert event["detail"]["reason"] == "临时有事，改日再来"
    status, err = stack.act("cancel", moved["appointment_id"], who=stack.resident())
    assert (status, err["error"]["code"]) == (409, "NOT_CANCELLABLE")


def test_the_sample_check_in_inside_the_window(stack):
    now = china_now().astimezone(CHINA_TZ)
    start = (now + timedelta(minutes=10 - now.minute % 5)).replace(second=0, microsecond=0)
    end = start + timedelta(minutes=30)
    if end.date() != now.date():
        pytest.skip("too close to midnight in Shanghai for a session today")
    slots = stack.publish(date=now.date().isoformat(), start=f"{start:%H:%M}",
                          end=f"{end:%H:%M}", period="evening")  # fmt: skip
    appt = stack.book(slots[0]["slot_id"])["appointment_id"]
    status, err = stack.act("check_in", appt, who=stack.resident())
    assert (status, err["error"]["code"]) == (403, "NOT_RECEIVING_INSTITUTION")
    status, out = stack.act("check_in", appt)
    assert (status, out["status"]) == (200, "CHECKED_IN"), out
    status, err = stack.act("check_in", appt)
    assert (status, err["error"]["code"]) == (409, "NOT_CHECKABLE")
    status, day = stack.call("day_list", query={"institution_id": COUNTY,
                                                "date": now.date().isoformat()})  # fmt: skip
    assert status == 200 and [a["status"] for a in day["items"]] == ["CHECKED_IN"]


def test_the_sample_day_list_is_for_the_institutions_staff(stack):
    slots = stack.publish()
    stack.book(slots[0]["slot_id"])
    stack.book(slots[1]["slot_id"], who=stack.resident(stack.other))
    query = {"institution_id": COUNTY, "date": days_ahead(4)}
    status, out = stack.call("day_list", query=query)
    assert status == 200 and out["count"] == 2, out
    assert {a["person_id"] for a in out["items"]} == {stack.patient, stack.other}
    status, err = stack.call("day_list", who=VILLAGE_DOCTOR, query=query)
    assert (status, err["error"]["code"]) == (403, "OTHER_INSTITUTION")
    status, mine = stack.call("day_list", who=stack.resident(), query=query)
    assert status == 200 and mine["count"] == 1  # a resident sees only their own


# ------------------------------------------------------------------------------- sweep, seam
def test_the_scheduled_sweep_marks_yesterdays_missed_appointment(stack):
    from tests.support.fake_booking import spec  # noqa: I001 - a test helper
    from yilian.domain.booking import BookingPolicy, iso, new_session, slots_of

    store = stack.store()
    yesterday = china_now() - timedelta(days=1)
    day = yesterday.date().isoformat()
    session = new_session(
        spec(date=day, doctor_id="doc-chenjie"), session_id=f"{COUNTY}.{day}.past",
        consortium_id=CONSORTIUM, institution_id=COUNTY, doctor_name="陈杰",
        reserved_share=0.2, release_hours=48, created_by="adm", now=yesterday.replace(hour=0),
    )  # fmt: skip
    slots = slots_of(session, BookingPolicy(), True)
    store.put_session(session, slots)
    booked_at = china_now() - timedelta(days=2)
    _book_directly(store, slots[0], stack.patient, iso(booked_at))
    out = stack.invoke("booking_sweep", sample("booking_sweep", "scheduled"))
    assert out == {"marked": 1}
    [appt] = store.for_person(CONSORTIUM, stack.patient)
    assert str(appt.status) == "NO_SHOW"
    standing, _ = store.standing(CONSORTIUM, stack.patient)
    assert standing.active == 0 and len(standing.no_shows) == 1
    assert stack.invoke("booking_sweep", sample("booking_sweep", "scheduled")) == {"marked": 0}


def _book_directly(store: Any, slot: Any, person_id: str, at: str) -> None:
    """A booking made when the slot was still ahead (the store takes the time it is told)."""
    from yilian.domain.booking import Appointment, AppointmentStatus, BookingPolicy, Quota

    appt = Appointment(
        appointment_id=f"A{uuid.uuid4().hex[:10].upper()}", consortium_id=CONSORTIUM,
        person_id=person_id, patient_name="张伟", slot_id=slot.slot_id,
        session_id=slot.session_id, institution_id=slot.institution_id,
        department=slot.department, doctor_id=slot.doctor_id, doctor_name=slot.doctor_name,
        start=slot.start, end=slot.end, quota=Quota.PUBLIC, status=AppointmentStatus.BOOKED,
        booked_by={"sub": "res", "role": "resident", "name": "张伟"}, created_at=at,
        updated_at=at,
    )  # fmt: skip
    store.book(appt, slot, BookingPolicy(), at)


def _accepted_referral(stack: Stack, referral_id: str, department: str = "神经内科") -> None:
    """An upward referral of the patient to the county hospital, accepted, in the table."""
    from dataclasses import replace

    from yilian.adapters.referral_store import DynamoReferralStore
    from yilian.domain.directory import Institution, InstitutionType, Tier
    from yilian.domain.principal import Principal, Role
    from yilian.domain.referral import DEFAULT_LIMITS, Application, Status, apply, rollup_delta

    county = Institution(COUNTY, CONSORTIUM, "示范县人民医院", Tier.COUNTY,
                         InstitutionType.GENERAL_HOSPITAL)  # fmt: skip
    village = Institution("qiaotou-lijia", CONSORTIUM, "桥头镇李家村卫生室", Tier.VILLAGE,
                          InstitutionType.VILLAGE_CLINIC, "qiaotou")  # fmt: skip
    app = Application(patient_id=stack.patient, direction="up", urgency="routine",
                      target_institution_id=COUNTY, target_department=department,
                      reason="头痛待查", diagnosis={"code": "R51", "text": "头痛"},
                      clinical_summary="反复头痛一月")  # fmt: skip
    who = Principal("doc-lijia", Role.DOCTOR, CONSORTIUM, "qiaotou-lijia", name="李医生")
    patient = {"person_id": stack.patient, "name": "张伟"}
    r = apply(app, who, referral_id=referral_id, patient=patient, source=village, target=county,
              target_doctor=None, now=china_now(), limits=DEFAULT_LIMITS)  # fmt: skip
    r = replace(r, status=Status.ACCEPTED)
    store = DynamoReferralStore(stack.db, stack.tables["ReferralsTable"],
                                stack.tables["ReferralStatsTable"])  # fmt: skip
    store.create(r, rollup_delta(None, r))


def test_an_accepted_referral_books_a_reserved_place_and_shows_on_the_referral(stack):
    from yilian.adapters.referral_store import DynamoReferralStore

    slots = stack.publish()
    event = sample("booking_referrals", "referral_accepted")
    rid = event["detail"]["referral_id"]
    _accepted_referral(stack, rid)
    event["detail"].update(person_id=stack.patient, proposed_time=slots[1]["start"])
    assert stack.invoke("booking_referrals", event) == {"status": "booked"}
    assert stack.counters(slots[1]["slot_id"]) == (1, 0, 1)
    referrals = DynamoReferralStore(stack.db, stack.tables["ReferralsTable"],
                                    stack.tables["ReferralStatsTable"])  # fmt: skip
    shown = referrals.get(rid)[0].appointment
    assert (shown["slot_id"], shown["quota"], shown["status"]) == (
        slots[1]["slot_id"], "reserved", "BOOKED",
    )  # fmt: skip
    # EventBridge delivers at least once: a second delivery books nothing more
    assert stack.invoke("booking_referrals", event) == {"status": "already_booked"}
    assert stack.count("APPT#") == 1


def test_an_accepted_referral_with_no_place_publishes_slot_unavailable(stack):
    event = sample("booking_referrals", "referral_accepted")
    _accepted_referral(stack, event["detail"]["referral_id"])
    event["detail"].update(person_id=stack.patient,
                           proposed_time=f"{days_ahead(2)}T08:00:00+08:00")  # fmt: skip
    assert stack.invoke("booking_referrals", event) == {"status": "no_slot"}
    [published] = stack.published()
    assert published["detail-type"] == "ReferralSlotUnavailable"
    assert published["detail"]["referral_id"] == event["detail"]["referral_id"]
    assert stack.count("APPT#") == 0
