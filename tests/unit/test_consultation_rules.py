"""The consultation's plain rules: limits and tariff from the template's parameters, the
request's fields, the version every step names, open/closed, transitions, who is a party,
what a resident sees, and the JSON the table keeps."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest

from tests.support.fake_consultations import (
    CENTRE,
    CHENMING,
    COLLEAGUE,
    CONSORTIUM_ADMIN,
    FOREIGN_CENTRE,
    LIUYAN,
    OTHER_RESIDENT,
    OUTSIDER,
    PATIENT_ID,
    REQUESTER,
    RESIDENT,
    TOWNSHIP_ADMIN,
    request_body,
)
from tests.support.fake_referrals import T0, C
from yilian.domain.consultation import (
    Consultation,
    InviteState,
    Kind,
    Limits,
    Mode,
    Party,
    Status,
    Tariff,
    check_version,
    invite,
    iso,
    move,
    parse_request,
    require_open,
    require_party,
    summary_for_resident,
)
from yilian.domain.errors import Conflict, Forbidden, InvalidInput

EXPERT_A = Party("doc-chenming", "陈明", "county-hospital", "心血管内科", "主任医师")
EXPERT_B = Party("doc-liuyan", "刘艳", "county-hospital", "神经内科", "副主任医师")


def consultation(**kw: Any) -> Consultation:
    base = Consultation(
        consultation_id="HZ20260601ABC123", consortium_id=C, person_id=PATIENT_ID,
        requester=Party("doc-wang", "王芳", "qiaotou", "全科", "主治医师"),
        centre_institution_id="county-hospital", kind=Kind.ROUTINE, mode=Mode.WRITTEN,
        specialty="心血管内科", question="胸痛待查", summary="反复胸痛三天",
        attachments={"documents": ["d1"], "studies": ["1.2.3"]},
        preferred_times=("2026-06-02T09:00+08:00",), status=Status.REQUESTED,
        created_at=iso(T0), updated_at=iso(T0),
    )  # fmt: skip
    return replace(base, **kw)


def assigned(**kw: Any) -> Consultation:
    """Expert A accepted (lead), expert B invited and not yet answering."""
    a = replace(invite(EXPERT_A, T0, 3600, lead=True), state=InviteState.ACCEPTED)
    b = invite(EXPERT_B, T0, 3600)
    return consultation(**{"status": Status.IN_PROGRESS, "invitations": (a, b), **kw})


# ------------------------------------------------------------------------ Limits / Tariff
def test_limits_override_only_what_is_given() -> None:
    # Given a parameter naming the urgent review limit and the reminder
    raw = {"review": {"urgent": 3}, "reminder": "2"}
    # When the limits are read
    limits = Limits.from_mapping(raw)
    # Then those change and every other limit keeps its default
    assert limits.review == {"urgent": 3, "routine": 172800, "mdt": 172800}
    assert limits.reminder == 2
    assert limits.escalation == Limits().escalation
    assert limits.invitation == Limits().invitation


def test_limits_refuse_unknown_keys() -> None:
    # Given a misspelt limit
    # When it is read / Then it is refused, naming it
    with pytest.raises(ValueError, match="reviw"):
        Limits.from_mapping({"reviw": {"urgent": 3}})


def test_empty_limits_are_the_defaults() -> None:
    assert Limits.from_mapping({}) == Limits()


def test_tariff_overrides_one_title_and_keeps_the_rest() -> None:
    # Given a tariff raising the routine fee of a 主任医师 only
    tariff = Tariff.from_mapping({"fees": {"routine": {"主任医师": 260}}})
    # Then that fee changes; the other titles and kinds keep theirs
    assert tariff.fee("routine", "主任医师") == 260
    assert tariff.fee("routine", "副主任医师") == 150
    assert tariff.fee("urgent", "主任医师") == 300
    assert tariff.consulting_share == 0.7


def test_tariff_fee_falls_back_to_star_then_zero() -> None:
    # Given the default tariff and one for a new kind without a "*"
    tariff = Tariff.from_mapping({"fees": {"tele": {"主任医师": 90}}})
    # Then an unlisted title pays the kind's "*" fee, and nothing when the kind has none
    assert tariff.fee("mdt", "住院医师") == 150
    assert tariff.fee("tele", "住院医师") == 0
    assert tariff.fee("unknown-kind", "主任医师") == 0


@pytest.mark.parametrize("share", [0, 0.5, 1])
def test_tariff_share_within_bounds(share: float) -> None:
    assert Tariff.from_mapping({"consulting_share": share}).consulting_share == share


@pytest.mark.parametrize("share", [-0.1, 1.01, 70])
def test_tariff_share_out_of_bounds_is_refused(share: float) -> None:
    with pytest.raises(ValueError, match="consulting_share"):
        Tariff.from_mapping({"consulting_share": share})


def test_tariff_refuses_unknown_fields() -> None:
    with pytest.raises(ValueError, match="share"):
        Tariff.from_mapping({"share": 0.5})


# ------------------------------------------------------------------------ parse_request
def test_a_full_request_is_read() -> None:
    # Given every field of the form
    body = request_body(kind="mdt", mode="video", preferred_times=["2026-06-02T09:00+08:00"],
                        attachments={"documents": ["d1", "d2"], "studies": ["1.2.3"]})  # fmt: skip
    # When it is parsed
    out = parse_request(body)
    # Then the kind, mode, texts, times and attachments are kept
    assert out["kind"] is Kind.MDT and out["mode"] is Mode.VIDEO
    assert out["specialty"] == "心血管内科"
    assert out["preferred_times"] == ("2026-06-02T09:00+08:00",)
    assert out["attachments"] == {"documents": ["d1", "d2"], "studies": ["1.2.3"]}


def test_kind_and_mode_default_to_a_routine_written_opinion() -> None:
    body = request_body()
    del body["kind"], body["mode"]
    out = parse_request(body)
    assert out["kind"] is Kind.ROUTINE and out["mode"] is Mode.WRITTEN
    assert out["attachments"] == {"documents": [], "studies": []}


@pytest.mark.parametrize("name", ["question", "summary", "specialty"])
@pytest.mark.parametrize("value", [None, "", "   "])
def test_every_required_field(name: str, value: Any) -> None:
    # Given a request without one of its required texts
    body = request_body(**{name: value})
    # When it is parsed / Then that field is named
    with pytest.raises(InvalidInput) as e:
        parse_request(body)
    assert e.value.code == "FIELD_REQUIRED"
    assert e.value.details["field"] == name


@pytest.mark.parametrize(("name", "limit"), [("question", 2000), ("summary", 8000)])
def test_too_long_texts(name: str, limit: int) -> None:
    # Given the longest text allowed, and one character more
    parse_request(request_body(**{name: "字" * limit}))
    with pytest.raises(InvalidInput) as e:
        parse_request(request_body(**{name: "字" * (limit + 1)}))
    # Then the longer one is refused
    assert e.value.code == "FIELD_TOO_LONG" and e.value.details["field"] == name


def test_a_too_long_specialty_is_refused() -> None:
    with pytest.raises(InvalidInput) as e:
        parse_request(request_body(specialty="科" * 101))
    assert e.value.details["field"] == "specialty"


@pytest.mark.parametrize("bad", [{"kind": "emergency"}, {"mode": "phone"}])
def test_bad_kind_or_mode(bad: dict[str, str]) -> None:
    with pytest.raises(InvalidInput) as e:
        parse_request(request_body(**bad))
    assert e.value.code == "KIND_INVALID"


@pytest.mark.parametrize(
    "times",
    [
        "2026-06-02T09:00+08:00",  # not a list
        ["tomorrow morning"],
        ["2026-06-02"],  # a date without a time
        [20260602],
        ["2026-06-02T09:00+08:00"] * 6,
    ],
)
def test_preferred_times_format(times: Any) -> None:
    with pytest.raises(InvalidInput) as e:
        parse_request(request_body(preferred_times=times))
    assert e.value.code == "TIMES_INVALID"


def test_five_preferred_times_are_fine() -> None:
    times = [f"2026-06-0{d}T09:00+08:00" for d in range(2, 7)]
    assert parse_request(request_body(preferred_times=times))["preferred_times"] == tuple(times)


@pytest.mark.parametrize(
    "attachments",
    [
        ["d1"],
        "d1",
        {"documents": [f"d{i}" for i in range(51)]},
        {"studies": [f"1.2.{i}" for i in range(21)]},
    ],
)
def test_attachments_shape(attachments: Any) -> None:
    with pytest.raises(InvalidInput) as e:
        parse_request(request_body(attachments=attachments))
    assert e.value.code == "ATTACHMENTS_INVALID"


def test_attachment_ids_are_cut_to_64_characters() -> None:
    out = parse_request(request_body(attachments={"documents": ["x" * 100], "studies": []}))
    assert out["attachments"]["documents"] == ["x" * 64]


# ------------------------------------------------------------------------ versions and states
@pytest.mark.parametrize("body", [{}, {"version": "1"}, {"version": True}, {"version": None}])
def test_a_step_without_its_version_is_refused(body: dict[str, Any]) -> None:
    # Given a consultation at version 1 and a step naming no (integer) version
    # When the version is checked / Then it is a 400 asking for it
    with pytest.raises(InvalidInput) as e:
        check_version(consultation(), body)
    assert e.value.code == "VERSION_REQUIRED"  # InvalidInput: a 400


def test_a_stale_version_is_a_replay() -> None:
    # Given a consultation that moved on to version 3
    c = consultation(version=3)
    # When a step names version 2 / Then it is refused as a replay, naming the current one
    with pytest.raises(Conflict) as e:
        check_version(c, {"version": 2})
    assert e.value.code == "REPLAYED"  # Conflict: a 409
    assert e.value.details["version"] == 3
    check_version(c, {"version": 3})  # the current version passes


@pytest.mark.parametrize(
    "status", [Status.COMPLETED, Status.DECLINED, Status.CANCELLED, Status.EXPIRED, Status.NO_SHOW]
)
def test_a_closed_consultation_is_closed(status: Status) -> None:
    with pytest.raises(Conflict) as e:
        require_open(consultation(status=status), Status.REQUESTED)
    assert e.value.code == "CONSULTATION_CLOSED"


def test_an_open_consultation_in_the_wrong_state() -> None:
    c = consultation(status=Status.ASSIGNING)
    require_open(c)  # open, whatever the state
    require_open(c, Status.REQUESTED, Status.ASSIGNING)
    with pytest.raises(Conflict) as e:
        require_open(c, Status.REQUESTED)
    assert e.value.code == "WRONG_STATE" and e.value.details["status"] == "ASSIGNING"


def test_move_records_the_transition() -> None:
    # Given a requested consultation
    c = consultation()
    at = T0 + timedelta(minutes=5)
    # When the centre returns it with a limit of an hour
    after = move(c, Status.MORE_INFO, CENTRE, "return", at, due_seconds=3600, note="补充心电图")
    # Then the history has the step, the version is bumped and the limit is an hour away
    assert after.status is Status.MORE_INFO and after.version == c.version + 1
    assert after.updated_at == iso(at)
    assert after.due_at == iso(at + timedelta(hours=1))
    assert after.history[-1] == {
        "at": iso(at), "action": "return", "from": "REQUESTED", "to": "MORE_INFO",
        "by": CENTRE.subject, "by_name": CENTRE.name, "note": "补充心电图",
    }  # fmt: skip
    assert c.history == ()  # the original is unchanged


def test_move_by_the_workflow_without_a_limit() -> None:
    c = consultation(due_at="2026-06-02T09:00:00+08:00")
    after = move(c, Status.EXPIRED, None, "expire", T0, closed_reason="审核超时")
    assert after.history[-1]["by"] == "workflow" and "note" not in after.history[-1]
    assert after.due_at == "" and after.closed_reason == "审核超时"


# ------------------------------------------------------------------------ parties
@pytest.mark.parametrize(
    ("who", "part"),
    [
        (RESIDENT, "patient"),
        (CENTRE, "centre"),
        (CONSORTIUM_ADMIN, "centre"),
        (REQUESTER, "requester"),
        (CHENMING, "expert"),  # accepted
        (LIUYAN, "expert"),  # invited, not yet answering
        (COLLEAGUE, "requester_institution"),
        (TOWNSHIP_ADMIN, "requester_institution"),
    ],
)
def test_the_parties(who: Any, part: str) -> None:
    assert require_party(assigned(), who) == part


@pytest.mark.parametrize(
    ("who", "code"),
    [
        (OTHER_RESIDENT, "NOT_YOUR_RECORD"),
        (OUTSIDER, "NOT_A_PARTY"),
        (FOREIGN_CENTRE, "CROSS_CONSORTIUM"),
    ],
)
def test_the_others(who: Any, code: str) -> None:
    # Given a consultation and someone who is not its party
    # When they open it / Then they are refused with the reason
    with pytest.raises(Forbidden) as e:
        require_party(assigned(), who)
    assert e.value.code == code


# ------------------------------------------------------------------------ the resident
REPORT = {"findings": "稳定型心绞痛", "recommendations": "冠脉CTA", "signed_by_name": "陈明"}


@pytest.mark.parametrize("status", [Status.REPORTED, Status.COMPLETED])
def test_a_resident_reads_the_signed_report(status: Status) -> None:
    summary = summary_for_resident(assigned(status=status, report=REPORT))
    assert summary["report"] == REPORT
    assert [e["name"] for e in summary["experts"]] == ["陈明"]  # accepted experts only
    assert "question" not in summary and "summary" not in summary


@pytest.mark.parametrize("status", [Status.IN_PROGRESS, Status.CANCELLED, Status.SCHEDULED])
def test_a_resident_sees_no_report_before_it_is_signed(status: Status) -> None:
    summary = summary_for_resident(assigned(status=status, report=REPORT))
    assert summary["report"] is None
    assert summary["status"] == str(status)


# ------------------------------------------------------------------------ JSON
def test_a_consultation_survives_the_table() -> None:
    # Given a consultation with invitations, a session, an opinion, a report and history
    a = assigned()
    a = replace(
        a,
        invitations=(
            replace(a.invitations[0], opinion={"findings": "f", "recommendations": "r"},
                    join_url="https://meet/x?p=doc-chenming"),
            replace(a.invitations[1], state=InviteState.DECLINED, reason="出差"),
        ),
        session={"start": "2026-06-02T09:00:00+08:00", "minutes": 30, "room": "r1"},
        report=REPORT, escalated=True, rounds=2, reported_at=iso(T0),
        history=({"at": iso(T0), "action": "request", "from": "", "to": "REQUESTED"},),
    )  # fmt: skip
    # When it goes through JSON text and back
    back = Consultation.from_json(json.loads(json.dumps(a.to_json(), ensure_ascii=False)))
    # Then nothing is lost
    assert back == a
    assert back.to_json() == a.to_json()
    assert back.lead is not None and back.lead.expert == EXPERT_A
