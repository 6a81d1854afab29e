"""Who may read a person's health record: the rules of yilian.domain.access.decide over every
role and grant, the grants' own rules (consents, break-glass, guardianship), and the guard
RecordAccess.open that applies them and audits every outcome, with consents, proxies and
the admins' audit search."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import date, datetime, timedelta
from typing import Any

import pytest

from tests.fakes import FakeAuditSink
from tests.support.fake_records import (
    FakeAuditReader,
    FakeCare,
    FakeGrantStore,
    FakePersons,
)
from tests.support.fake_referrals import Clock, county_directory, person
from yilian.domain.access import (
    AccessFacts,
    Basis,
    BreakGlass,
    Consent,
    Proxy,
    RecordPolicy,
    Relation,
    decide,
    guardian_until,
    is_minor,
    new_break_glass,
    new_consent,
)
from yilian.domain.audit import AuditAction, AuditOutcome
from yilian.domain.clock import CHINA_TZ, iso
from yilian.domain.errors import Conflict, Forbidden, InvalidInput, NotFound
from yilian.domain.person import PersonStatus
from yilian.domain.principal import Principal, Role
from yilian.services.record_access import BREAK_GLASS_FLAG, RecordAccess

C = "demo-county"
NOW = datetime(2026, 6, 1, 9, 0, tzinfo=CHINA_TZ)
PAST, LONG_AGO = iso(NOW - timedelta(days=10)), iso(NOW - timedelta(days=400))
SOON, LATER = iso(NOW + timedelta(days=10)), iso(NOW + timedelta(days=40))
YESTERDAY = iso(NOW - timedelta(days=1))
PID = "p-patient"
INST, OTHER_INST = "qiaotou", "county-hospital"

SELF = Principal("res-self", Role.RESIDENT, C, person_id=PID, name="张伟")
STRANGER = Principal("res-other", Role.RESIDENT, C, person_id="p-other", name="某人")
PARENT = Principal("res-parent", Role.RESIDENT, C, person_id="p-parent", name="张父")
DOCTOR = Principal("doc-wang", Role.DOCTOR, C, INST, name="王芳")
COLLEAGUE = Principal("doc-zhao", Role.DOCTOR, C, INST, name="赵医生")
HOSPITAL_DOCTOR = Principal("doc-chen", Role.DOCTOR, C, OTHER_INST, name="陈医生")
NO_INST_DOCTOR = Principal("doc-none", Role.DOCTOR, C, None, name="无机构")
INST_ADMIN = Principal("adm-qiaotou", Role.INSTITUTION_ADMIN, C, INST, name="桥头管理员")
CONS_ADMIN = Principal("cadm", Role.CONSORTIUM_ADMIN, C, name="医共体管理员")
CENTRE = Principal("centre-1", Role.REFERRAL_CENTRE, C, OTHER_INST, name="转诊中心")


def proxy(
    relation: Relation = Relation.CHILD, of: str = PID, by: str = "p-parent",
    start: str = LONG_AGO, until: str = LATER, revoked: str | None = None,
) -> Proxy:  # fmt: skip
    return Proxy(of, by, relation, start, until, "doc-wang", start, revoked)


def consent(inst: str = INST, start: str = PAST, until: str = LATER,
            revoked: str | None = None, of: str = PID, cid: str = "c1") -> Consent:  # fmt: skip
    return Consent(cid, of, inst, start, until, "res-self", start, revoked_at=revoked)


def glass(actor: str = "doc-wang", start: str = iso(NOW - timedelta(hours=1)),
          until: str = iso(NOW + timedelta(hours=3)), of: str = PID) -> BreakGlass:  # fmt: skip
    return BreakGlass("g1", of, actor, "王芳", INST, "患者昏迷，急需查看既往病史", start, until)


F = AccessFacts
ALLOW, DENY = True, False
NYR, RNA, NCR = "NOT_YOUR_RECORD", "ROLE_NOT_ALLOWED", "NO_CARE_RELATIONSHIP"

# Each case: its name, the caller, the facts, then allowed, basis and code expected.
MATRIX: list[tuple[str, Principal, AccessFacts, bool, Basis | None, str]] = [
    # residents
    ("resident self", SELF, F(), ALLOW, Basis.SELF, ""),
    ("resident self, any grants", SELF, F(consents=(consent(revoked=PAST),)), ALLOW, Basis.SELF,
     ""),
    ("resident other", STRANGER, F(), DENY, None, NYR),
    ("resident other, with a consent to an institution", STRANGER, F(consents=(consent(),)),
     DENY, None, NYR),
    ("resident proxy: child, active", PARENT, F(proxies=(proxy(),)), ALLOW, Basis.PROXY, ""),
    ("resident proxy: child after 18", PARENT, F(proxies=(proxy(until=YESTERDAY),)), DENY,
     None, NYR),
    ("resident proxy: delegated, active", PARENT, F(proxies=(proxy(Relation.DELEGATED),)),
     ALLOW, Basis.PROXY, ""),
    ("resident proxy: delegated, revoked", PARENT,
     F(proxies=(proxy(Relation.DELEGATED, revoked=YESTERDAY),)), DENY, None, NYR),
    ("resident proxy: delegated, expired", PARENT,
     F(proxies=(proxy(Relation.DELEGATED, until=YESTERDAY),)), DENY, None, NYR),
    ("resident proxy: delegated, not yet started", PARENT,
     F(proxies=(proxy(Relation.DELEGATED, start=SOON),)), DENY, None, NYR),
    ("resident proxy of someone else", PARENT, F(proxies=(proxy(of="p-x"),)), DENY, None, NYR),
    ("another resident than the proxy", STRANGER, F(proxies=(proxy(),)), DENY, None, NYR),
    # doctors
    ("doctor with care", DOCTOR, F(care="referral:R1"), ALLOW, Basis.CARE, ""),
    ("doctor with care and a consent: care first", DOCTOR,
     F(care="booking:A1", consents=(consent(),)), ALLOW, Basis.CARE, ""),
    ("doctor, consent for own institution, active", DOCTOR, F(consents=(consent(),)), ALLOW,
     Basis.CONSENT, ""),
    ("doctor, colleague's institution consent counts", COLLEAGUE, F(consents=(consent(),)),
     ALLOW, Basis.CONSENT, ""),
    ("doctor, consent not yet started", DOCTOR, F(consents=(consent(start=SOON),)), DENY, None,
     NCR),
    ("doctor, consent expired", DOCTOR, F(consents=(consent(start=LONG_AGO, until=YESTERDAY),)),
     DENY, None, NCR),
    ("doctor, consent revoked", DOCTOR, F(consents=(consent(revoked=YESTERDAY),)), DENY, None,
     NCR),
    ("doctor, consent for another institution", HOSPITAL_DOCTOR, F(consents=(consent(),)),
     DENY, None, NCR),
    ("doctor, consent for another person", DOCTOR, F(consents=(consent(of="p-x"),)), DENY,
     None, NCR),
    ("doctor, own break-glass active", DOCTOR, F(break_glass=(glass(),)), ALLOW,
     Basis.BREAK_GLASS, ""),
    ("doctor, own break-glass expired", DOCTOR,
     F(break_glass=(glass(start=LONG_AGO, until=YESTERDAY),)), DENY, None, NCR),
    ("doctor, someone else's break-glass", COLLEAGUE, F(break_glass=(glass(),)), DENY, None,
     NCR),
    ("doctor, own break-glass on another person", DOCTOR, F(break_glass=(glass(of="p-x"),)),
     DENY, None, NCR),
    ("doctor with nothing", DOCTOR, F(), DENY, None, NCR),
    ("doctor without an institution", NO_INST_DOCTOR, F(care="referral:R1"), DENY, None, RNA),
    # everyone else reads no clinical record, whatever grants exist
    ("institution admin", INST_ADMIN, F(care="referral:R1", consents=(consent(),)), DENY,
     None, RNA),
    ("consortium admin", CONS_ADMIN, F(care="referral:R1"), DENY, None, RNA),
    ("referral centre", CENTRE, F(care="referral:R1", break_glass=(glass("centre-1"),)), DENY,
     None, RNA),
]  # fmt: skip


@pytest.mark.parametrize(
    ("who", "facts", "allowed", "basis", "code"),
    [pytest.param(*case[1:], id=case[0]) for case in MATRIX],
)
def test_decide_matrix(
    who: Principal, facts: AccessFacts, allowed: bool, basis: Basis | None, code: str
) -> None:
    # Given a caller and the grants on the person
    # When the rules decide
    d = decide(who, PID, facts, NOW)
    # Then the outcome, its basis and the reason are exactly the expected ones
    assert (d.allowed, d.basis, d.code) == (allowed, basis, code)
    assert d.break_glass_allowed is (code == NCR)
    assert d.emergency is (basis is Basis.BREAK_GLASS)


def test_decision_details_name_the_grant_used() -> None:
    # Given / When each allowing grant
    care = decide(DOCTOR, PID, F(care="referral:R1"), NOW)
    by_consent = decide(DOCTOR, PID, F(consents=(consent(cid="c9"),)), NOW)
    emergency = decide(DOCTOR, PID, F(break_glass=(glass(),)), NOW)
    delegated = decide(PARENT, PID, F(proxies=(proxy(Relation.DELEGATED),)), NOW)
    # Then the decision says which
    assert care.detail == {"relationship": "referral:R1"}
    assert by_consent.detail == {"consent_id": "c9"}
    assert emergency.detail["grant_id"] == "g1" and emergency.detail["reason"]
    assert delegated.detail == {"relation": "delegated"}


def test_grant_windows_are_half_open() -> None:
    # Given a consent from NOW until an hour later
    c = consent(start=iso(NOW), until=iso(NOW + timedelta(hours=1)))
    # Then it is active at its start and not at its end
    assert c.active(NOW) and not c.active(NOW + timedelta(hours=1))
    g = glass(start=iso(NOW), until=iso(NOW + timedelta(hours=4)))
    assert g.active(NOW) and not g.active(NOW + timedelta(hours=4))


# ----------------------------------------------------------------- constructing grants
POLICY = RecordPolicy()


def make_consent(start: datetime, until: datetime, policy: RecordPolicy = POLICY) -> Consent:
    return new_consent("c1", PID, INST, start, until, SELF, NOW, policy)


@pytest.mark.parametrize(
    ("start", "until", "code"),
    [
        pytest.param(NOW + timedelta(days=2), NOW + timedelta(days=2), "CONSENT_WINDOW_EMPTY",
                     id="empty window"),
        pytest.param(NOW + timedelta(days=5), NOW + timedelta(days=1), "CONSENT_WINDOW_EMPTY",
                     id="ends before it starts"),
        pytest.param(NOW - timedelta(days=5), NOW - timedelta(days=1), "CONSENT_IN_PAST",
                     id="in the past"),
        pytest.param(NOW, NOW, "CONSENT_WINDOW_EMPTY", id="zero length now"),
        pytest.param(NOW, NOW + timedelta(days=367), "CONSENT_TOO_LONG", id="too long"),
    ],
)  # fmt: skip
def test_new_consent_refuses_bad_windows(start: datetime, until: datetime, code: str) -> None:
    # Given / When a consent with a bad window
    with pytest.raises(InvalidInput) as exc:
        make_consent(start, until)
    # Then the reason is named
    assert exc.value.code == code


def test_new_consent_is_not_retroactive_and_records_its_granter() -> None:
    # Given a consent asked to start a month ago
    c = make_consent(NOW - timedelta(days=30), NOW + timedelta(days=30))
    # Then it starts now, granted by the resident
    assert c.valid_from == iso(NOW) and c.valid_until == iso(NOW + timedelta(days=30))
    assert (c.granted_by, c.granted_at, c.revoked_at) == ("res-self", iso(NOW), None)
    # And a start within the five minutes' clock skew is kept as given
    assert make_consent(NOW - timedelta(minutes=3), NOW + timedelta(days=1)).valid_from == iso(
        NOW - timedelta(minutes=3)
    )


def test_new_consent_limit_follows_policy_and_counts_from_now() -> None:
    # Given the policy's maximum, exactly
    ok = make_consent(NOW, NOW + timedelta(days=366))
    assert ok.active(NOW)
    # Then a retroactive start does not make it too long (it is clamped to now first)
    assert make_consent(NOW - timedelta(days=100), NOW + timedelta(days=300)).active(NOW)
    # And a stricter policy refuses what the default allows
    with pytest.raises(InvalidInput) as exc:
        make_consent(NOW, NOW + timedelta(days=31), RecordPolicy(consent_max_days=30))
    assert exc.value.code == "CONSENT_TOO_LONG" and exc.value.details["limit_days"] == 30


@pytest.mark.parametrize("reason", ["", "   ", "急诊", "  急  诊  抢  救  ", None])
def test_break_glass_needs_a_stated_reason(reason: str | None) -> None:
    # Given / When a break-glass with no reason, blank, or one too short
    with pytest.raises(InvalidInput) as exc:
        new_break_glass("g1", PID, DOCTOR, reason, NOW, POLICY)  # type: ignore[arg-type]
    # Then it is refused, saying how long a reason must be
    assert exc.value.code == "REASON_REQUIRED"
    assert exc.value.details["min_length"] == POLICY.break_glass_min_reason


def test_break_glass_expires_after_the_policy_hours() -> None:
    # Given a reason with extra whitespace, under a 2-hour policy
    g = new_break_glass("g1", PID, DOCTOR, "  患者昏迷 \n 急需查看既往病史  ", NOW,
                        RecordPolicy(break_glass_hours=2))  # fmt: skip
    # Then the grant is the doctor's, the reason normalised, lasting 2 hours
    assert (g.actor_subject, g.institution_id, g.person_id) == ("doc-wang", INST, PID)
    assert g.reason == "患者昏迷 急需查看既往病史"
    assert (g.started_at, g.expires_at) == (iso(NOW), iso(NOW + timedelta(hours=2)))
    assert g.active(NOW + timedelta(hours=1, minutes=59))
    assert not g.active(NOW + timedelta(hours=2))


@pytest.mark.parametrize(
    ("born", "until"),
    [
        ("2010-05-01", "2028-05-01"),
        ("2008-02-29", "2026-02-28"),  # no 29 February that year: the day before
        ("2004-02-29", "2022-02-28"),
        ("2006-02-28", "2024-02-28"),  # 2024 is a leap year: 28 stays 28
        ("2007-12-31", "2025-12-31"),
    ],
)
def test_guardian_until_the_18th_birthday(born: str, until: str) -> None:
    # Given / When / Then a guardian reads until the start of the 18th birthday
    assert guardian_until(born) == f"{until}T00:00:00+08:00"


def test_is_minor_until_the_18th_birthday() -> None:
    # Given a child born 2008-06-01
    # Then a minor the day before their 18th birthday, an adult on it
    assert is_minor("2008-06-01", date(2026, 5, 31))
    assert not is_minor("2008-06-01", date(2026, 6, 1))


def test_record_policy_from_mapping() -> None:
    # Given the template parameter as JSON (numbers as strings too, an unknown key)
    policy = RecordPolicy.from_mapping({"care_window_days": "45", "break_glass_hours": 2,
                                        "unknown": "x"})  # fmt: skip
    # Then known keys are read as integers, the rest default
    assert policy.care_window_days == 45 and policy.break_glass_hours == 2
    assert policy.consent_max_days == RecordPolicy().consent_max_days
    assert RecordPolicy.from_mapping({}) == RecordPolicy()


# ----------------------------------------------------------------- the guard, with fakes
@dataclass
class World:
    grants: FakeGrantStore = field(default_factory=FakeGrantStore)
    persons: FakePersons = field(default_factory=FakePersons)
    care: FakeCare = field(default_factory=FakeCare)
    audit: FakeAuditSink = field(default_factory=FakeAuditSink)
    clock: Clock = field(default_factory=lambda: Clock(NOW))
    access: Any = None
    notices: list[Any] = field(default_factory=list)

    def __post_init__(self) -> None:
        world = self

        class Notices:
            def deliver(self, n: Any) -> None:
                world.notices.append(n)

        self.persons.add(
            person(PID, C, name="张伟", birth_date="1958-04-02", replaces=("p-old",)),
            person("p-old", C, status=PersonStatus.MERGED, merged_into=PID),
            person("p-parent", C, name="张父"),
            person("p-other", C, name="某人"),
            person("p-child", C, name="张小明", birth_date="2015-03-01"),
            person("p-teen", C, name="张大明", birth_date="2008-06-05"),
            person("p-adult", C, name="张成年", birth_date="2008-05-01"),
            person("p-far", "other-county", name="外县人"),
        )
        self.access = RecordAccess(
            self.grants, self.persons, self.care, self.audit, county_directory(),
            audit_reader=FakeAuditReader(self.audit), notices=Notices(), clock=self.clock,
        )  # fmt: skip

    def open(self, who: Principal, pid: str = PID) -> Any:
        return self.access.open(who, pid, AuditAction.READ, "Record.summary", {"k": "v"})


@pytest.fixture
def w() -> World:
    return World()


def test_open_audits_an_allowed_read_with_its_basis(w: World) -> None:
    # Given a doctor whose institution has a referral for the person
    w.care.relationships[("doc-wang", PID)] = "referral:R1"
    # When they open the record
    opened = w.open(DOCTOR)
    # Then it is allowed on the care relationship, and audited as a treatment read
    assert opened.decision.basis is Basis.CARE
    assert opened.person_ids == (PID, "p-old")
    (event,) = w.audit.events
    assert (event.actor_subject, event.action, event.what, event.person_ids) == (
        "doc-wang",
        AuditAction.READ,
        "Record.summary",
        (PID,),
    )
    assert event.outcome is AuditOutcome.SUCCESS
    assert (event.purpose, event.flag) == ("treatment", "")
    assert event.detail == {"k": "v", "basis": "care_relationship", "relationship": "referral:R1"}


def test_open_audits_a_denied_attempt_and_offers_break_glass(w: World) -> None:
    # Given a doctor with no relationship, consent or grant
    # When they open the record
    with pytest.raises(Forbidden) as exc:
        w.open(DOCTOR)
    # Then it is refused (break-glass offered) and the attempt is audited as denied
    assert exc.value.code == "NO_CARE_RELATIONSHIP"
    assert exc.value.details["break_glass_allowed"] is True
    (event,) = w.audit.events
    assert event.outcome is AuditOutcome.DENIED
    assert event.detail == {"k": "v", "denied": "NO_CARE_RELATIONSHIP"}
    assert event.person_ids == (PID,)


@pytest.mark.parametrize(
    ("who", "code"),
    [(STRANGER, "NOT_YOUR_RECORD"), (INST_ADMIN, "ROLE_NOT_ALLOWED"),
     (CONS_ADMIN, "ROLE_NOT_ALLOWED"), (CENTRE, "ROLE_NOT_ALLOWED")],
)  # fmt: skip
def test_open_refuses_and_audits_other_roles(w: World, who: Principal, code: str) -> None:
    # Given a grant that would let a doctor of that institution in
    w.grants.put_consent(consent(), new=True)
    # When they open the record
    with pytest.raises(Forbidden) as exc:
        w.open(who)
    # Then refused, no break-glass offered, audited as denied
    assert exc.value.code == code and exc.value.details["break_glass_allowed"] is False
    assert [(e.outcome, e.detail["denied"]) for e in w.audit.events] == [
        (AuditOutcome.DENIED, code)
    ]
    # And nobody asked the referral and booking stores
    assert w.care.asked == []


def test_open_after_break_glass_is_flagged_as_an_emergency(w: World) -> None:
    # Given a doctor who opened break-glass with a reason
    grant = w.access.break_glass(DOCTOR, PID, "患者昏迷，急需查看既往病史")
    # When they read the record within the grant
    opened = w.open(DOCTOR)
    # Then the basis is break-glass, and both events are flagged with the reason
    assert opened.decision.emergency
    assert grant["expires_at"] == iso(NOW + timedelta(hours=4))
    assert len(w.audit.events) == 2
    for event in w.audit.events:
        assert (event.purpose, event.flag) == ("emergency", BREAK_GLASS_FLAG)
        assert event.detail["basis"] == "break_glass"
        assert event.detail["reason"] == "患者昏迷，急需查看既往病史"
        assert event.outcome is AuditOutcome.SUCCESS
    # And the resident and the admins are told
    assert sorted(n.recipient for n in w.notices) == ["admins", f"person:{PID}"]
    assert "桥头镇卫生院" in w.notices[0].body
    # And a colleague does not share the grant
    with pytest.raises(Forbidden):
        w.open(COLLEAGUE)
    # And after the grant expires the doctor is refused again
    w.clock.t = NOW + timedelta(hours=4)
    with pytest.raises(Forbidden):
        w.open(DOCTOR)


def test_break_glass_is_for_doctors_with_a_reason(w: World) -> None:
    # Given / When an admin or a doctor without a reason tries
    with pytest.raises(Forbidden):
        w.access.break_glass(CONS_ADMIN, PID, "患者昏迷，急需查看既往病史")
    with pytest.raises(InvalidInput) as exc:
        w.access.break_glass(DOCTOR, PID, "急")
    # Then nothing is granted
    assert exc.value.code == "REASON_REQUIRED"
    assert w.grants.glass == [] and w.notices == []


def test_cross_consortium_person_is_forbidden_and_audited(w: World) -> None:
    # Given a person of another consortium, and a doctor who would have care
    w.care.relationships[("doc-wang", "p-far")] = "referral:R1"
    # When the doctor opens their record
    with pytest.raises(Forbidden) as exc:
        w.open(DOCTOR, "p-far")
    # Then refused as cross-consortium, and the attempt audited
    assert exc.value.code == "CROSS_CONSORTIUM"
    (event,) = w.audit.events
    assert (event.outcome, event.detail["denied"]) == (AuditOutcome.DENIED, "CROSS_CONSORTIUM")
    assert w.care.asked == []


def test_unknown_person_is_not_found(w: World) -> None:
    with pytest.raises(NotFound) as exc:
        w.open(DOCTOR, "p-nobody")
    assert exc.value.code == "PERSON_NOT_FOUND"


def test_merged_person_opens_the_survivor(w: World) -> None:
    # Given a resident whose duplicate record was merged into theirs
    # When their doctor opens the old id
    w.care.relationships[("doc-wang", PID)] = "booking:A1"
    opened = w.open(DOCTOR, "p-old")
    # Then the survivor is opened, with the merged id's documents, and audited on it
    assert opened.person.person_id == PID
    assert opened.person_ids == (PID, "p-old")
    assert w.audit.events[0].person_ids == (PID,)
    # And the resident may open their own old id too
    assert w.open(SELF, "p-old").decision.basis is Basis.SELF


def test_care_is_asked_only_when_grants_do_not_allow(w: World) -> None:
    # Given a consent for the doctor's institution
    w.grants.put_consent(consent(), new=True)
    w.care.relationships[("doc-wang", PID)] = "referral:R1"
    # When the doctor opens the record
    assert w.open(DOCTOR).decision.basis is Basis.CONSENT
    # Then the care relationships were not asked
    assert w.care.asked == []
    # But a doctor of another institution is asked about
    with pytest.raises(Forbidden):
        w.open(HOSPITAL_DOCTOR)
    assert w.care.asked == [("doc-chen", PID)]


def test_resident_reading_self_asks_no_store(w: World) -> None:
    # Given / When the resident opens their own record
    assert w.open(SELF).decision.basis is Basis.SELF
    # Then no grant nor care store was read
    assert (w.grants.reads, w.care.asked) == (0, [])


# ----------------------------------------------------------------- consents
def test_resident_grants_and_revokes_a_consent(w: World) -> None:
    # Given a resident granting their township centre a month
    until = iso(NOW + timedelta(days=30))
    view = w.access.grant_consent(SELF, {"institution_id": INST, "valid_until": until,
                                         "note": "复诊"})  # fmt: skip
    # Then the consent is active and lets that institution's doctors read
    assert view["active"] and view["institution_name"] == "桥头镇卫生院"
    assert (view["person_id"], view["valid_from"], view["valid_until"]) == (PID, iso(NOW), until)
    assert w.open(DOCTOR).decision.basis is Basis.CONSENT
    listed = w.access.consents(SELF)["items"]
    assert [c["consent_id"] for c in listed] == [view["consent_id"]]
    # When the resident revokes it
    revoked = w.access.revoke_consent(SELF, view["consent_id"])
    # Then it is inactive and the doctor is refused
    assert not revoked["active"] and revoked["revoked_at"] == iso(NOW)
    with pytest.raises(Forbidden):
        w.open(DOCTOR)
    # And both changes were audited
    changes = [(e.action, e.what) for e in w.audit.events if e.what.startswith("Consent")]
    assert changes == [(AuditAction.CREATE, "Consent"), (AuditAction.UPDATE, "Consent.revoke")]
    # And revoking twice is a conflict
    with pytest.raises(Conflict) as exc:
        w.access.revoke_consent(SELF, view["consent_id"])
    assert exc.value.code == "CONSENT_REVOKED"


def test_consent_is_to_an_institution_of_this_consortium(w: World) -> None:
    until = iso(NOW + timedelta(days=30))
    for inst in ("nowhere", "city-hospital", "old-clinic"):
        with pytest.raises(InvalidInput) as exc:
            w.access.grant_consent(SELF, {"institution_id": inst, "valid_until": until})
        assert exc.value.code == "UNKNOWN_INSTITUTION"
    assert w.grants.consents == {}


def test_proxy_grants_and_revokes_for_a_dependent(w: World) -> None:
    # Given a parent recorded as the guardian of a child
    w.grants.put_proxy(proxy(of="p-child"))
    until = iso(NOW + timedelta(days=30))
    # When the parent grants a consent for the child
    view = w.access.grant_consent(PARENT, {"person_id": "p-child", "institution_id": INST,
                                           "valid_until": until})  # fmt: skip
    # Then it is the child's consent, granted by the parent
    assert view["person_id"] == "p-child" and view["granted_by"] == "res-parent"
    assert w.access.consents(PARENT, "p-child")["items"][0]["consent_id"] == view["consent_id"]
    # And the parent may revoke it
    assert not w.access.revoke_consent(PARENT, view["consent_id"], "p-child")["active"]


def test_a_stranger_may_not_act_on_consents(w: World) -> None:
    # Given a consent the resident granted
    view = w.access.grant_consent(SELF, {"institution_id": INST,
                                         "valid_until": iso(NOW + timedelta(days=5))})  # fmt: skip
    # When another resident tries to grant, list or revoke for them
    for act in (
        lambda: w.access.grant_consent(STRANGER, {"person_id": PID, "institution_id": INST,
                                                  "valid_until": iso(NOW + timedelta(days=5))}),
        lambda: w.access.consents(STRANGER, PID),
        lambda: w.access.revoke_consent(STRANGER, view["consent_id"], PID),
    ):  # fmt: skip
        with pytest.raises(Forbidden) as exc:
            act()
        # Then refused
        assert exc.value.code == "NOT_YOUR_RECORD"
    # And the consent is unchanged
    assert w.grants.consents[view["consent_id"]].revoked_at is None
    assert len(w.grants.consents) == 1
    # And a doctor may not grant a consent
    with pytest.raises(Forbidden):
        w.access.grant_consent(DOCTOR, {"person_id": PID, "institution_id": INST})


def test_revoking_an_unknown_consent_is_not_found(w: World) -> None:
    with pytest.raises(NotFound) as exc:
        w.access.revoke_consent(SELF, "c-nope")
    assert exc.value.code == "CONSENT_NOT_FOUND"


# ----------------------------------------------------------------- proxies
def test_add_child_proxy_lasts_until_18(w: World) -> None:
    # Given a doctor who saw the household register
    # When they record the parent as the child's guardian
    view = w.access.add_proxy(DOCTOR, {"person_id": "p-child", "proxy_person_id": "p-parent",
                                       "relation": "child"})  # fmt: skip
    # Then the guardian reads until the 18th birthday
    assert view["valid_until"] == "2033-03-01T00:00:00+08:00" and view["active"]
    assert w.open(PARENT, "p-child").decision.basis is Basis.PROXY
    deps = w.access.dependents(PARENT)
    assert [(d["person_id"], d["name"]) for d in deps["dependents"]] == [("p-child", "张小明")]
    assert (
        w.access.dependents(Principal("res-child", Role.RESIDENT, C, person_id="p-child"))[
            "proxies"
        ][0]["proxy_person_id"]
        == "p-parent"
    )
    # And the change is audited
    assert (w.audit.events[0].action, w.audit.events[0].what) == (AuditAction.CREATE, "Proxy")


def test_child_proxy_needs_a_minor(w: World) -> None:
    # Given a person who turned 18 a month ago
    with pytest.raises(InvalidInput) as exc:
        w.access.add_proxy(DOCTOR, {"person_id": "p-adult", "proxy_person_id": "p-parent",
                                    "relation": "child"})  # fmt: skip
    # Then a guardian is not recorded
    assert exc.value.code == "NOT_A_MINOR"
    # But a 17-year-old a few days before their birthday still is a minor
    view = w.access.add_proxy(DOCTOR, {"person_id": "p-teen", "proxy_person_id": "p-parent",
                                       "relation": "child"})  # fmt: skip
    assert view["valid_until"] == "2026-06-05T00:00:00+08:00"
    assert len(w.grants.proxies) == 1


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"relation": "delegated"}, "INVALID_TIME"),
        ({"relation": "delegated", "valid_until": YESTERDAY}, "DELEGATION_IN_PAST"),
        ({"relation": "delegated", "valid_until": iso(NOW + timedelta(days=3 * 366 + 2))},
         "DELEGATION_TOO_LONG"),
        ({"relation": "spouse"}, "RELATION_INVALID"),
        ({"relation": "delegated", "proxy_person_id": PID}, "SAME_PERSON"),
    ],
)  # fmt: skip
def test_add_delegation_refusals(w: World, body: dict[str, str], code: str) -> None:
    # Given / When a delegation without a valid future end, or otherwise wrong
    with pytest.raises(InvalidInput) as exc:
        w.access.add_proxy(DOCTOR, {"person_id": PID, "proxy_person_id": "p-parent", **body})
    # Then refused, nothing recorded
    assert exc.value.code == code
    assert w.grants.proxies == {} and w.audit.events == []


def test_add_proxy_is_for_staff_of_this_consortium(w: World) -> None:
    body = {"person_id": PID, "proxy_person_id": "p-parent", "relation": "delegated",
            "valid_until": LATER}  # fmt: skip
    with pytest.raises(Forbidden):
        w.access.add_proxy(SELF, body)
    with pytest.raises(Forbidden) as exc:
        w.access.add_proxy(DOCTOR, body | {"proxy_person_id": "p-far"})
    assert exc.value.code == "CROSS_CONSORTIUM"
    with pytest.raises(NotFound):
        w.access.add_proxy(DOCTOR, body | {"person_id": "p-old"})  # merged away
    assert w.grants.proxies == {}


def test_delegation_is_revocable_by_the_elder(w: World) -> None:
    # Given an elder who delegated reading to a family member
    w.access.add_proxy(INST_ADMIN, {"person_id": PID, "proxy_person_id": "p-parent",
                                    "relation": "delegated", "valid_until": LATER})  # fmt: skip
    assert w.open(PARENT).decision.basis is Basis.PROXY
    # When the elder revokes it
    ended = w.access.revoke_delegation(SELF, "p-parent")
    # Then the family member is refused from now on, and it is audited
    assert not ended["active"] and ended["revoked_at"] == iso(NOW)
    with pytest.raises(Forbidden):
        w.open(PARENT)
    assert w.audit.events[-2].what == "Proxy.revoke"
    # And revoking again finds no active delegation
    with pytest.raises(NotFound) as exc:
        w.access.revoke_delegation(SELF, "p-parent")
    assert exc.value.code == "PROXY_NOT_FOUND"


def test_guardian_is_not_revocable_by_the_child(w: World) -> None:
    # Given a guardian of a child
    w.grants.put_proxy(proxy(of="p-child"))
    child = Principal("res-child", Role.RESIDENT, C, person_id="p-child")
    # When the child tries to revoke it
    with pytest.raises(Forbidden) as exc:
        w.access.revoke_delegation(child, "p-parent")
    # Then refused: it ends at 18; the guardian still reads
    assert exc.value.code == "GUARDIAN_NOT_REVOCABLE"
    assert w.open(PARENT, "p-child").decision.allowed


# ----------------------------------------------------------------- audit reads
def test_access_log_shows_the_resident_who_read_and_why(w: World) -> None:
    # Given a care read, a denied attempt and an emergency read
    w.care.relationships[("doc-wang", PID)] = "referral:R1"
    w.open(DOCTOR)
    with pytest.raises(Forbidden):
        w.open(HOSPITAL_DOCTOR)
    w.access.break_glass(COLLEAGUE, PID, "患者昏迷，急需查看既往病史")
    # When the resident lists their access log
    log = w.access.access_log(SELF)["items"]
    # Then each is there, the denied one marked, the emergency flagged with its reason
    rows = {(r["who"], r["outcome"], r["basis"], r["break_glass"]) for r in log}
    assert rows == {("王芳", "allowed", "care_relationship", False),
                    ("陈医生", "denied", "", False),
                    ("赵医生", "allowed", "break_glass", True)}  # fmt: skip
    emergency = next(r for r in log if r["break_glass"])
    assert emergency["reason"] == "患者昏迷，急需查看既往病史"
    assert emergency["institution_name"] == "桥头镇卫生院"


def _some_events(w: World) -> None:
    w.care.relationships[("doc-wang", PID)] = "referral:R1"
    w.care.relationships[("doc-chen", PID)] = "booking:A1"
    w.open(DOCTOR)
    w.open(HOSPITAL_DOCTOR)
    w.access.break_glass(COLLEAGUE, PID, "患者昏迷，急需查看既往病史")


def test_search_audit_by_actor_flag_and_person(w: World) -> None:
    # Given reads by two institutions' doctors and a break-glass
    _some_events(w)
    # When the consortium admin searches
    by_actor = w.access.search_audit(CONS_ADMIN, {"actor": "doc-chen"})
    flagged = w.access.search_audit(CONS_ADMIN, {"flag": "break_glass"})
    by_person = w.access.search_audit(CONS_ADMIN, {"person": PID})
    # Then each finds what it names
    assert [e["agent"]["subject"] for e in by_actor["items"]] == ["doc-chen"]
    assert [e["agent"]["subject"] for e in flagged["items"]] == ["doc-zhao"]
    assert {e["agent"]["subject"] for e in by_person["items"]} == {
        "doc-wang",
        "doc-chen",
        "doc-zhao",
    }
    # And each search is itself audited
    searches = [e for e in w.audit.events if e.what == "AuditEvent.search"]
    assert [e.detail["by"] for e in searches] == ["actor", "flag", "person"]


def test_search_audit_by_person_audits_the_person_once(w: World) -> None:
    # Given three events on the person
    _some_events(w)
    # When the consortium admin searches the audit trail by that person
    w.access.search_audit(CONS_ADMIN, {"person": PID})
    # Then the search's own audit event names the person once (the audit store writes one
    # item per person named, keyed by the event: a repeated person cannot be stored twice)
    search = next(e for e in w.audit.events if e.what == "AuditEvent.search")
    assert search.person_ids == (PID,)


def test_institution_admin_sees_only_own_institutions_staff(w: World) -> None:
    # Given reads by a township doctor, a hospital doctor and a township colleague
    _some_events(w)
    # When the township's admin searches by person
    found = w.access.search_audit(INST_ADMIN, {"person": PID})
    # Then only their own staff's events are there
    assert {e["agent"]["institution"] for e in found["items"]} == {INST}
    assert {e["agent"]["subject"] for e in found["items"]} == {"doc-wang", "doc-zhao"}
    # And searching another institution's doctor gives nothing
    assert w.access.search_audit(INST_ADMIN, {"actor": "doc-chen"})["items"] == []


@pytest.mark.parametrize("who", [DOCTOR, SELF, CENTRE])
def test_search_audit_is_for_admins(w: World, who: Principal) -> None:
    with pytest.raises(Forbidden) as exc:
        w.access.search_audit(who, {"actor": "doc-wang"})
    assert exc.value.code == "ROLE_NOT_ALLOWED"


@pytest.mark.parametrize("query", [{}, {"flag": "other"}, {"actor": ""}, {"since": "2026"}])
def test_search_audit_needs_a_selector(w: World, query: dict[str, str]) -> None:
    with pytest.raises(InvalidInput) as exc:
        w.access.search_audit(CONS_ADMIN, query)
    assert exc.value.code == "AUDIT_QUERY"


def test_expired_child_proxy_is_listed_nowhere(w: World) -> None:
    # Given a guardianship that ended yesterday
    w.grants.put_proxy(replace(proxy(of="p-child"), valid_until=YESTERDAY))
    # Then the parent has no dependent and cannot read
    assert w.access.dependents(PARENT)["dependents"] == []
    with pytest.raises(Forbidden):
        w.open(PARENT, "p-child")
