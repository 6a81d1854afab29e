"""One contract, two implementations: the in-memory fake and DynamoReferralStore (moto,
tables from template.yaml: ReferralsTable, ReferralStatsTable) keep referrals, their wait
tokens, worklists and rollup counters alike."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta

import pytest

from tests.support.fake_referrals import (
    CENTRE,
    COUNTY,
    COUNTY_DOCTOR,
    LIMITS,
    PATIENT_ID,
    RECEIVER,
    REFERRER,
    REGIONAL,
    T0,
    TOWNSHIP,
    TOWNSHIP_2,
    VILLAGE,
    C,
    FakeReferralStore,
    application,
)
from tests.support.store_contract import fake_and_dynamodb_store
from yilian.adapters.referral_store import DuplicateReferral, DynamoReferralStore, StaleReferral
from yilian.domain.clock import CHINA_TZ
from yilian.domain.referral import (
    Action,
    Change,
    Referral,
    Status,
    apply,
    rollup_delta,
    transition,
)

store = fake_and_dynamodb_store(
    FakeReferralStore,
    lambda db, names: DynamoReferralStore(db, names["ReferralsTable"], names["ReferralStatsTable"]),
)


def new(
    rid: str, *, at: datetime = T0, urgency: str = "routine", target=TOWNSHIP,
    person: str = PATIENT_ID, consortium: str = C, down: bool = False,
) -> Referral:  # fmt: skip
    who, source = (COUNTY_DOCTOR, COUNTY) if down else (REFERRER, VILLAGE)
    who = replace(who, consortium_id=consortium)
    app = application(direction="down" if down else "up", urgency=urgency,
                      target_institution_id=target.institution_id)  # fmt: skip
    return apply(
        app, who, referral_id=rid, patient={"person_id": person, "name": "张伟"},
        source=source, target=target, target_doctor=None, now=at, limits=LIMITS,
    )  # fmt: skip


def created(store, r: Referral) -> Referral:
    store.create(r, rollup_delta(None, r))
    return r


def moved(store, r: Referral, action: Action, who, token: str | None = None, **change):
    after = transition(r, action, who, Change(**change), now=T0 + timedelta(minutes=7),
                       limits=LIMITS)  # fmt: skip
    store.save(r, after, token, rollup_delta(r, after))
    return after


def ids(referrals: list[Referral]) -> list[str]:
    return [r.referral_id for r in referrals]


def day_rows(store, first: str, last: str | None = None) -> list[dict]:
    return list(store.rollups(C, first, last or first))


def month_rows(store, first: str, last: str | None = None, consortium: str = C) -> list[dict]:
    return list(store.month_rollups(consortium, first, last or first))


def chart(store, first: str, last: str, institution: str | None = None, consortium: str = C):
    return list(store.daily_counts(consortium, first, last, institution))


def counters(row: dict) -> dict[str, int]:
    return {k: v for k, v in row.items() if isinstance(v, int) and not isinstance(v, bool)}


# --------------------------------------------------------------------- create / get
def test_create_then_get_returns_the_same_referral_and_no_token(store):
    r = created(store, new("R1", urgency="emergency"))
    assert store.get("R1") == (r, None)
    assert store.get("R2") is None


def test_a_downward_referral_with_its_plan_round_trips(store):
    app = application(
        direction="down", discharge_summary="出院小结",
        follow_up_plan=[{"item": "复查", "due_date": "2026-07-01"}],
        attachments=[{"kind": "imaging", "ref": "s3://x", "title": "CT"}],
    )  # fmt: skip
    r = apply(app, COUNTY_DOCTOR, referral_id="R1", patient={"person_id": PATIENT_ID},
              source=COUNTY, target=TOWNSHIP, target_doctor={"doctor_id": "d", "name": "王"},
              now=T0, limits=LIMITS)  # fmt: skip
    created(store, r)
    acknowledged = moved(store, r, Action.ACKNOWLEDGE, RECEIVER, reason="已建档")
    assert store.get("R1") == (acknowledged, None)


def test_a_duplicate_reference_is_refused_and_nothing_changes(store):
    first = created(store, new("R1"))
    with pytest.raises(DuplicateReferral):
        created(store, new("R1", person="p-other", urgency="urgent"))
    assert store.get("R1") == (first, None)
    (row,) = day_rows(store, "2026-06-01")
    assert row["applied"] == 1


# ----------------------------------------------------------------------------- save
def test_save_replaces_the_referral_with_its_counters(store):
    r = created(store, new("R1"))
    after = moved(store, r, Action.ACCEPT, RECEIVER)
    assert store.get("R1") == (after, None) and after.version == 2
    (row,) = day_rows(store, "2026-06-01")
    assert (row["applied"], row["accepted"], row["decided"], row["dm_7"]) == (1, 1, 1, 1)


def test_a_stale_version_is_refused_and_nothing_changes(store):
    # Given a referral someone accepted after we read it
    r = created(store, new("R1"))
    accepted = moved(store, r, Action.ACCEPT, RECEIVER)
    # When our rejection, based on the old version, is saved
    rejected = transition(r, Action.REJECT, RECEIVER, Change(reason_code="OTHER"), now=T0,
                          limits=LIMITS)  # fmt: skip
    with pytest.raises(StaleReferral):
        store.save(r, rejected, None, rollup_delta(r, rejected))
    # Then neither the referral nor its counters changed
    assert store.get("R1") == (accepted, None)
    (row,) = day_rows(store, "2026-06-01")
    assert row.get("rejected", 0) == 0 and row["decided"] == 1


def test_saving_a_referral_that_does_not_exist_is_stale(store):
    r = new("R1")
    after = transition(r, Action.ESCALATE, None, Change(), now=T0, limits=LIMITS)
    with pytest.raises(StaleReferral):
        store.save(r, after, None, rollup_delta(r, after))
    assert store.get("R1") is None and day_rows(store, "2026-06-01") == []


def test_save_needs_the_current_wait_token_and_spends_it(store):
    # Given the workflow's review wait registered its token
    r = created(store, new("R1"))
    assert store.register_wait("R1", Status.PENDING_REVIEW, "review", "tok-1") is True
    assert store.get("R1") == (r, "tok-1")
    after = transition(r, Action.ACCEPT, RECEIVER, Change(), now=T0, limits=LIMITS)
    # When saved without the token, or with another one: stale, nothing changed
    for token in (None, "tok-0"):
        with pytest.raises(StaleReferral):
            store.save(r, after, token, rollup_delta(r, after))
        assert store.get("R1") == (r, "tok-1")
    # When saved with it: saved, and the token is gone
    store.save(r, after, "tok-1", rollup_delta(r, after))
    assert store.get("R1") == (after, None)
    # A save that still names the spent token is stale
    arrived = transition(after, Action.ARRIVE, RECEIVER, Change(), now=T0, limits=LIMITS)
    with pytest.raises(StaleReferral):
        store.save(after, arrived, "tok-1", rollup_delta(after, arrived))
    assert store.get("R1") == (after, None)
    (row,) = day_rows(store, "2026-06-01")
    assert row["accepted"] == 1 and row.get("arrived", 0) == 0


# --------------------------------------------------------------------- register_wait
def test_register_wait_only_in_the_status_the_wait_is_for(store):
    r = created(store, new("R1"))
    assert store.register_wait("R1", Status.ACCEPTED, "arrival", "tok-a") is False
    assert store.get("R1") == (r, None)
    assert store.register_wait("R1", Status.PENDING_REVIEW, "review", "tok-1") is True
    # a later wait of the same status replaces the token (a reassignment's fresh wait)
    assert store.register_wait("R1", Status.PENDING_REVIEW, "review", "tok-2") is True
    assert store.get("R1") == (r, "tok-2")
    # a wait for a status the referral left is refused and keeps nothing
    moved(store, r, Action.ACCEPT, RECEIVER, token="tok-2")
    assert store.register_wait("R1", Status.PENDING_REVIEW, "review", "tok-3") is False
    assert store.get("R1")[1] is None


def test_register_wait_for_an_unknown_referral_is_refused(store):
    assert store.register_wait("R404", Status.PENDING_REVIEW, "review", "tok") is False
    assert store.get("R404") is None


# ------------------------------------------------------------------------ worklists
def test_worklists_list_open_referrals_and_a_closed_one_leaves_them(store):
    # Given referrals to the township: routine, emergency (due first), one escalated,
    # one downward (from the county), one for another consortium; and one sent elsewhere
    routine = created(store, new("R1"))
    emergency = created(store, new("R2", at=T0 + timedelta(minutes=1), urgency="emergency"))
    late = created(store, new("R3", at=T0 + timedelta(minutes=2), urgency="urgent"))
    escalated = moved(store, late, Action.ESCALATE, None)
    down = created(store, new("R4", at=T0 + timedelta(minutes=3), down=True))
    created(store, new("R5", consortium="other-county"))
    county = created(store, new("R6", at=T0 + timedelta(minutes=4), target=COUNTY))
    # Then the receiver's list is its open referrals, soonest deadline first
    assert ids(store.open_for_receiver(C, "qiaotou")) == ["R2", "R3", "R1", "R4"]
    assert store.open_for_receiver(C, "qiaotou")[1] == escalated
    # the referrer's list is what it sent and is open, newest first
    assert ids(store.open_for_referrer(C, "qiaotou-lijia")) == ["R6", "R3", "R2", "R1"]
    assert ids(store.open_for_referrer(C, "county-hospital")) == ["R4"]
    # the referral centre's list is the escalated ones
    assert ids(store.escalated(C)) == ["R3"]
    assert ids(store.escalated("other-county")) == []
    assert ids(store.open_for_receiver("other-county", "qiaotou")) == ["R5"]
    # When some close (cancelled, expired, rejected)
    moved(store, routine, Action.CANCEL, REFERRER, reason="患者拒绝")
    moved(store, escalated, Action.EXPIRE, None)
    moved(store, county, Action.REJECT, CENTRE, reason_code="NO_CAPACITY")
    # Then they leave the open lists, and the patient still sees all of theirs, newest first
    assert ids(store.open_for_receiver(C, "qiaotou")) == ["R2", "R4"]
    assert ids(store.open_for_referrer(C, "qiaotou-lijia")) == ["R2"]
    assert ids(store.open_for_receiver(C, "county-hospital")) == []
    assert ids(store.escalated(C)) == []
    assert ids(store.for_patient(C, PATIENT_ID)) == ["R6", "R4", "R3", "R2", "R1"]
    assert ids(store.for_patient(C, PATIENT_ID, limit=2)) == ["R6", "R4"]
    assert store.for_patient(C, PATIENT_ID)[3] == emergency
    assert store.for_patient(C, PATIENT_ID)[1] == down


def test_a_reassigned_referral_moves_to_the_new_receiver_s_list(store):
    r = created(store, new("R1"))
    moved(store, r, Action.REASSIGN, CENTRE, new_target=TOWNSHIP_2, reason="无床位")
    assert ids(store.open_for_receiver(C, "qiaotou")) == []
    assert ids(store.open_for_receiver(C, "xiadu")) == ["R1"]


def test_for_patient_is_the_patient_s_only(store):
    created(store, new("R1"))
    created(store, new("R2", person="p-other"))
    created(store, new("R3", consortium="other-county"))
    assert ids(store.for_patient(C, PATIENT_ID)) == ["R1"]
    assert ids(store.for_patient(C, "p-other")) == ["R2"]
    assert ids(store.for_patient(C, "p-nobody")) == []


# -------------------------------------------------------------------------- rollups
def test_rollups_add_up_per_day_route_and_direction(store):
    # Given three referrals on one day: two on one route, one out of county
    created(store, new("R1"))
    r2 = created(store, new("R2", at=T0 + timedelta(hours=3)))
    created(store, new("R3", target=REGIONAL))
    moved(store, r2, Action.ESCALATE, None)
    # Then one row per route, counters added
    assert day_rows(store, "2026-06-01") == [
        {"pk": f"{C}#2026", "sk": "2026-06-01#qiaotou-lijia#city-hospital#up",
         "day": "2026-06-01", "source": "qiaotou-lijia", "target": "city-hospital",
         "direction": "up", "target_in_county": False,
         "applied": 1, "up": 1, "out_of_county": 1},
        {"pk": f"{C}#2026", "sk": "2026-06-01#qiaotou-lijia#qiaotou#up",
         "day": "2026-06-01", "source": "qiaotou-lijia", "target": "qiaotou",
         "direction": "up", "target_in_county": True,
         "applied": 2, "up": 2, "in_county": 2, "escalated": 1},
    ]  # fmt: skip


def test_a_reassignment_moves_counts_between_rows_and_leaves_zeros(store):
    r = created(store, new("R1"))
    moved(store, r, Action.REASSIGN, CENTRE, new_target=TOWNSHIP_2, reason="无床位")
    rows = {x["target"]: x for x in day_rows(store, "2026-06-01")}
    assert (rows["qiaotou"]["applied"], rows["qiaotou"]["in_county"]) == (0, 0)
    assert (rows["xiadu"]["applied"], rows["xiadu"]["in_county"]) == (1, 1)


def test_rollups_are_queried_by_period_across_a_year_boundary(store):
    # Given referrals on New Year's Eve and New Year's Day (China time), and a day before
    eve = datetime(2026, 12, 31, 23, 30, tzinfo=CHINA_TZ)
    created(store, new("R0", at=eve - timedelta(days=1)))
    created(store, new("R1", at=eve))
    created(store, new("R2", at=eve + timedelta(hours=1), down=True))
    created(store, new("R3", at=eve, consortium="other-county"))
    # Then a period spanning both years finds both days, in day order
    both = store.rollups(C, "2026-12-31", "2027-01-01")
    assert [(x["pk"], x["day"], x["direction"]) for x in both] == [
        (f"{C}#2026", "2026-12-31", "up"), (f"{C}#2027", "2027-01-01", "down"),
    ]  # fmt: skip
    # And each bound is inclusive, one day at a time
    assert [x["day"] for x in day_rows(store, "2027-01-01")] == ["2027-01-01"]
    assert [x["day"] for x in day_rows(store, "2026-12-30")] == ["2026-12-30"]
    assert [x["day"] for x in day_rows(store, "2026-12-29", "2027-12-31")] == [
        "2026-12-30", "2026-12-31", "2027-01-01",
    ]  # fmt: skip
    assert day_rows(store, "2027-01-02", "2027-03-01") == []
    assert [x["day"] for x in store.rollups("other-county", "2026-01-01", "2027-12-31")] == [
        "2026-12-31",
    ]  # fmt: skip


def test_month_rollups_add_up_the_days_of_a_month_per_route(store):
    # Given referrals on the first and last days of June (China time) on one route, one out
    # of county, one accepted, and one on the first of July
    r1 = created(store, new("R1"))
    created(store, new("R2", at=datetime(2026, 6, 30, 23, 30, tzinfo=CHINA_TZ)))
    created(store, new("R3", at=T0 + timedelta(days=9), target=REGIONAL))
    created(store, new("R4", at=datetime(2026, 7, 1, 0, 10, tzinfo=CHINA_TZ)))
    moved(store, r1, Action.ACCEPT, RECEIVER)
    # Then June has one row per route, its days' counters added, the route set as a day's
    assert month_rows(store, "2026-06", "2026-06") == [
        {"pk": f"{C}#M#2026", "sk": "2026-06#qiaotou-lijia#city-hospital#up",
         "month": "2026-06", "source": "qiaotou-lijia", "target": "city-hospital",
         "direction": "up", "target_in_county": False,
         "applied": 1, "up": 1, "out_of_county": 1},
        {"pk": f"{C}#M#2026", "sk": "2026-06#qiaotou-lijia#qiaotou#up",
         "month": "2026-06", "source": "qiaotou-lijia", "target": "qiaotou",
         "direction": "up", "target_in_county": True,
         "applied": 2, "up": 2, "in_county": 2, "accepted": 1, "decided": 1, "dm_7": 1},
    ]  # fmt: skip
    # and each month's rows are the sums of its days' rows
    for month, days in (("2026-06", ("2026-06-01", "2026-06-30")),
                        ("2026-07", ("2026-07-01", "2026-07-31"))):  # fmt: skip
        summed: dict[str, dict[str, int]] = {}
        for row in day_rows(store, *days):
            route = summed.setdefault(row["sk"].split("#", 1)[1], {})
            for name, n in counters(row).items():
                route[name] = route.get(name, 0) + n
        assert {x["sk"].split("#", 1)[1]: counters(x) for x in month_rows(store, month)} == summed


def test_a_reassignment_moves_month_counts_between_rows_and_leaves_zeros(store):
    r = created(store, new("R1"))
    moved(store, r, Action.REASSIGN, CENTRE, new_target=TOWNSHIP_2, reason="无床位")
    rows = {x["target"]: x for x in month_rows(store, "2026-06", "2026-06")}
    assert (rows["qiaotou"]["applied"], rows["qiaotou"]["in_county"]) == (0, 0)
    assert (rows["xiadu"]["applied"], rows["xiadu"]["in_county"]) == (1, 1)


def test_month_rollups_are_queried_by_months_across_a_year_boundary(store):
    # Given referrals in November, on New Year's Eve, on New Year's Day (China time), and
    # in February; one for another consortium
    eve = datetime(2026, 12, 31, 23, 30, tzinfo=CHINA_TZ)
    created(store, new("R0", at=datetime(2026, 11, 30, 12, 0, tzinfo=CHINA_TZ)))
    created(store, new("R1", at=eve))
    created(store, new("R2", at=eve + timedelta(hours=1), down=True))
    created(store, new("R3", at=datetime(2027, 2, 1, 8, 0, tzinfo=CHINA_TZ)))
    created(store, new("R4", at=eve, consortium="other-county"))
    # Then the months asked for, inclusive, in month order, each in its year's partition
    months = month_rows(store, "2026-12", "2027-01")
    assert [(x["pk"], x["month"], x["direction"]) for x in months] == [
        (f"{C}#M#2026", "2026-12", "up"), (f"{C}#M#2027", "2027-01", "down"),
    ]  # fmt: skip
    assert [x["month"] for x in month_rows(store, "2026-01", "2027-12")] == [
        "2026-11", "2026-12", "2027-01", "2027-02",
    ]  # fmt: skip
    assert [x["month"] for x in month_rows(store, "2027-02", "2027-02")] == ["2027-02"]
    assert month_rows(store, "2027-03", "2027-12") == []
    assert [x["month"] for x in month_rows(store, "2026-01", "2027-12", "other-county")] == [
        "2026-12",
    ]  # fmt: skip
    # and the day levels keep only days, the month level only months
    assert all("month" not in x for x in day_rows(store, "2026-01-01", "2027-12-31"))


# ----------------------------------------------------------------------- daily chart
def test_daily_counts_per_day_for_the_consortium_and_each_institution(store):
    # Given two upward referrals and a downward one on 1 June, one up on 2 June
    r1 = created(store, new("R1"))
    created(store, new("R2", target=REGIONAL))
    created(store, new("R3", down=True))
    created(store, new("R4", at=T0 + timedelta(days=1)))
    # When one is accepted (no referral moves: the chart stays as it is)
    moved(store, r1, Action.ACCEPT, RECEIVER)
    # Then the consortium's chart counts each referral on its application day
    assert chart(store, "2026-06-01", "2026-06-02") == [
        {"day": "2026-06-01", "up": 2, "down": 1}, {"day": "2026-06-02", "up": 1, "down": 0},
    ]  # fmt: skip
    # and an institution's chart counts the referrals it sent or received, on its days only
    assert chart(store, "2026-06-01", "2026-06-02", "qiaotou") == [
        {"day": "2026-06-01", "up": 1, "down": 1}, {"day": "2026-06-02", "up": 1, "down": 0},
    ]  # fmt: skip
    assert chart(store, "2026-06-01", "2026-06-02", "city-hospital") == [
        {"day": "2026-06-01", "up": 1, "down": 0},
    ]  # fmt: skip
    assert chart(store, "2026-06-01", "2026-06-02", "county-hospital") == [
        {"day": "2026-06-01", "up": 0, "down": 1},
    ]  # fmt: skip
    assert chart(store, "2026-06-01", "2026-06-02", "xiadu") == []
    assert chart(store, "2026-06-02", "2026-06-02") == [
        {"day": "2026-06-02", "up": 1, "down": 0},
    ]  # fmt: skip


def test_a_reassignment_keeps_the_consortium_chart_and_moves_the_institutions(store):
    r = created(store, new("R1"))
    moved(store, r, Action.REASSIGN, CENTRE, new_target=TOWNSHIP_2, reason="无床位")
    assert chart(store, "2026-06-01", "2026-06-01") == [
        {"day": "2026-06-01", "up": 1, "down": 0},
    ]  # fmt: skip
    assert chart(store, "2026-06-01", "2026-06-01", "qiaotou-lijia") == [
        {"day": "2026-06-01", "up": 1, "down": 0},
    ]  # fmt: skip
    assert chart(store, "2026-06-01", "2026-06-01", "xiadu") == [
        {"day": "2026-06-01", "up": 1, "down": 0},
    ]  # fmt: skip
    # the old receiver keeps the day, at zero, as its day rollup does
    assert chart(store, "2026-06-01", "2026-06-01", "qiaotou") == [
        {"day": "2026-06-01", "up": 0, "down": 0},
    ]  # fmt: skip


def test_daily_counts_are_queried_by_period_across_a_year_boundary(store):
    eve = datetime(2026, 12, 31, 23, 30, tzinfo=CHINA_TZ)
    created(store, new("R0", at=eve - timedelta(days=1)))
    created(store, new("R1", at=eve))
    created(store, new("R2", at=eve + timedelta(hours=1), down=True))
    created(store, new("R3", at=eve, consortium="other-county"))
    assert chart(store, "2026-12-31", "2027-01-01") == [
        {"day": "2026-12-31", "up": 1, "down": 0}, {"day": "2027-01-01", "up": 0, "down": 1},
    ]  # fmt: skip
    assert [x["day"] for x in chart(store, "2026-12-29", "2027-12-31")] == [
        "2026-12-30", "2026-12-31", "2027-01-01",
    ]  # fmt: skip
    assert [x["day"] for x in chart(store, "2026-12-30", "2026-12-30")] == [
        "2026-12-30",
    ]  # fmt: skip
    assert chart(store, "2027-01-02", "2027-03-01") == []
    assert chart(store, "2026-01-01", "2027-12-31", consortium="other-county") == [
        {"day": "2026-12-31", "up": 1, "down": 0},
    ]  # fmt: skip
