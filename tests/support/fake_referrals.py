"""In-memory fakes for the referral service, behaving like the adapters: the store with
DynamoReferralStore's conditions (version + wait token on save, status on register_wait,
DuplicateReferral / StaleReferral with nothing changed), Step Functions callbacks that
refuse unknown or spent tokens, and the relay's starter and publisher. Plus the county the
referral tests share: its institutions, doctors, people and a settable clock."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any

from tests.fakes import CONSORTIUM
from tests.support.fake_directory import FakeDirectoryStore
from yilian.adapters.referral_store import OPEN_SENTINEL, DuplicateReferral, StaleReferral
from yilian.domain.clock import CHINA_TZ
from yilian.domain.directory import Doctor, Institution, InstitutionType, Tier
from yilian.domain.person import Person
from yilian.domain.principal import Principal, Role
from yilian.domain.referral import Application, Referral, RollupKey, Status, TimeLimits, Urgency


def _by_due(r: Referral) -> str:  # the gsi1 / gsi4 sort key
    return f"{r.due_at or OPEN_SENTINEL}#{r.referral_id}"


def _by_created(r: Referral) -> str:  # the gsi2 / gsi3 sort key
    return f"{r.created_at}#{r.referral_id}"


class FakeReferralStore:
    """The ReferralStorePort in memory. Referrals are kept as their JSON (as the table keeps
    them), so a caller can never change a stored referral by holding on to an object."""

    def __init__(self) -> None:
        self.items: dict[str, dict[str, Any]] = {}  # id -> {data, version, wait_token, ...}
        self.stats: dict[tuple[str, str], dict[str, Any]] = {}  # (pk, sk) -> rollup row
        self.save_attempts = 0
        self._before_save: list[Callable[[], None]] = []

    # ---------------------------------------------------------------- test helpers
    def before_next_save(self, fn: Callable[[], None]) -> None:
        """Run `fn` at the start of the next save, before its conditions are checked: a
        concurrent writer landing between the service's read and its write."""
        self._before_save.append(fn)

    def put(self, r: Referral, token: str | None = None) -> None:
        """Store a referral as it is (no conditions, no statistics): test setup."""
        self.items[r.referral_id] = {"data": r.to_json(), "version": r.version,
                                     "wait_token": token, "wait_stage": None}  # fmt: skip

    def token_of(self, referral_id: str) -> str | None:
        return self.items[referral_id]["wait_token"]

    # ---------------------------------------------------------------- reads
    def _referral(self, item: Mapping[str, Any]) -> Referral:
        return Referral.from_json({**item["data"], "version": item["version"]})

    def get(self, referral_id: str) -> tuple[Referral, str | None] | None:
        item = self.items.get(referral_id)
        if item is None:
            return None
        return self._referral(item), item["wait_token"]

    def _where(self, consortium_id: str, keep: Callable[[Referral], bool]) -> list[Referral]:
        return [
            r for i in self.items.values()
            if (r := self._referral(i)).consortium_id == consortium_id and keep(r)
        ]  # fmt: skip

    def open_for_receiver(self, consortium_id: str, institution_id: str) -> list[Referral]:
        hits = self._where(
            consortium_id, lambda r: r.is_open and r.target.institution_id == institution_id
        )
        return sorted(hits, key=_by_due)

    def open_for_referrer(self, consortium_id: str, institution_id: str) -> list[Referral]:
        hits = self._where(
            consortium_id, lambda r: r.is_open and r.source.institution_id == institution_id
        )
        return sorted(hits, key=_by_created, reverse=True)

    def escalated(self, consortium_id: str) -> list[Referral]:
        return sorted(
            self._where(consortium_id, lambda r: r.status is Status.ESCALATED), key=_by_due
        )

    def for_patient(self, consortium_id: str, person_id: str, limit: int = 100) -> list[Referral]:
        hits = self._where(consortium_id, lambda r: r.person_id == person_id)
        return sorted(hits, key=_by_created, reverse=True)[:limit]

    def _level(self, prefix: str, first: str, last: str) -> list[dict[str, Any]]:
        out = []
        for year in range(int(first[:4]), int(last[:4]) + 1):
            pk = f"{prefix}{year}"
            rows = [
                (sk, row) for (p, sk), row in self.stats.items()
                if p == pk and first <= sk <= last
            ]  # fmt: skip
            out.extend(dict(row) for _, row in sorted(rows, key=lambda x: x[0]))
        return out

    def rollups(self, consortium_id: str, first_day: str, last_day: str) -> list[dict[str, Any]]:
        return self._level(f"{consortium_id}#", first_day, f"{last_day}#~")

    def month_rollups(
        self, consortium_id: str, first_month: str, last_month: str
    ) -> list[dict[str, Any]]:
        return self._level(f"{consortium_id}#M#", first_month, f"{last_month}#~")

    def daily_counts(
        self, consortium_id: str, first_day: str, last_day: str, institution_id: str | None = None
    ) -> list[dict[str, Any]]:
        at = f"#{institution_id}" if institution_id else ""
        out = []
        for year in range(int(first_day[:4]), int(last_day[:4]) + 1):
            pk = f"{consortium_id}#D#{year}{at}"
            out += [
                {"day": sk, "up": row.get("up", 0), "down": row.get("down", 0)}
                for (p, sk), row in sorted(self.stats.items())
                if p == pk and first_day <= sk <= last_day
            ]  # fmt: skip
        return out

    # ---------------------------------------------------------------- writes
    def create(self, r: Referral, delta: Mapping[RollupKey, Mapping[str, int]]) -> None:
        if r.referral_id in self.items:
            raise DuplicateReferral()
        self.put(r)
        self._add(r.consortium_id, delta)

    def save(
        self,
        before: Referral,
        after: Referral,
        token: str | None,
        delta: Mapping[RollupKey, Mapping[str, int]],
    ) -> None:
        self.save_attempts += 1
        if self._before_save:
            self._before_save.pop(0)()
        item = self.items.get(before.referral_id)
        if item is None or item["version"] != before.version or item["wait_token"] != token:
            raise StaleReferral()
        self.put(after)  # the finished wait's token is spent
        self._add(after.consortium_id, delta)

    def register_wait(self, referral_id: str, status: Status, stage: str, token: str) -> bool:
        item = self.items.get(referral_id)
        if item is None or item["data"]["status"] != str(status):
            return False
        item["wait_token"], item["wait_stage"] = token, stage
        return True

    def _add(self, consortium_id: str, delta: Mapping[RollupKey, Mapping[str, int]]) -> None:
        """The day and month rollups of each key, and the daily chart's up/down, of the
        consortium and of the institutions at either end (left alone where they net to 0)."""
        chart: dict[tuple[str, str], dict[str, int]] = {}
        for key, counters in delta.items():
            year, month = key.day[:4], key.day[:7]
            route = f"{key.source}#{key.target}#{key.direction}"
            for pk, sk, when in (
                (f"{consortium_id}#{year}", f"{key.day}#{route}", {"day": key.day}),
                (f"{consortium_id}#M#{year}", f"{month}#{route}", {"month": month}),
            ):
                row = self.stats.setdefault((pk, sk), {"pk": pk, "sk": sk})
                row.update(when, source=key.source, target=key.target,
                           direction=key.direction, target_in_county=key.in_county)  # fmt: skip
                for name, n in counters.items():
                    row[name] = row.get(name, 0) + n
            for at in {"", f"#{key.source}", f"#{key.target}"}:
                day = chart.setdefault((f"{consortium_id}#D#{year}{at}", key.day), {})
                day[key.direction] = day.get(key.direction, 0) + counters.get(key.direction, 0)
        for (pk, d), counters in chart.items():
            moved = {name: n for name, n in counters.items() if n}
            if moved:
                row = self.stats.setdefault((pk, d), {"pk": pk, "sk": d, "day": d})
                for name, n in moved.items():
                    row[name] = row.get(name, 0) + n


class FakeCallbacks:
    """Step Functions' task tokens: `issue` opens a wait; `resume` completes it once. An
    unknown, spent or timed-out token is refused (False), as the adapter reports it."""

    def __init__(self) -> None:
        self.live: set[str] = set()
        self.calls: list[tuple[str, dict[str, Any], bool]] = []

    def issue(self, token: str) -> str:
        self.live.add(token)
        return token

    def time_out(self, token: str) -> None:
        self.live.discard(token)

    def resume(self, token: str, outcome: Mapping[str, Any]) -> bool:
        ok = token in self.live
        self.live.discard(token)
        self.calls.append((token, dict(outcome), ok))
        return ok

    @property
    def completed(self) -> dict[str, dict[str, Any]]:
        return {token: outcome for token, outcome, ok in self.calls if ok}


class FakeStarter:
    def __init__(self) -> None:
        self.started: dict[str, tuple[str, dict[str, Any]]] = {}
        self.calls = 0

    def start(self, state_machine_arn: str, name: str, payload: Mapping[str, Any]) -> bool:
        self.calls += 1
        if name in self.started:
            return False
        self.started[name] = (state_machine_arn, dict(payload))
        return True


class FakePublisher:
    def __init__(self) -> None:
        self.batches: list[list[tuple[str, dict[str, Any]]]] = []

    def publish(self, events: Sequence[tuple[str, Mapping[str, Any]]]) -> None:
        self.batches.append([(t, dict(d)) for t, d in events])


class FakePatients:
    """The PatientIndex port: persons by id."""

    def __init__(self, *persons: Person) -> None:
        self.persons = {p.person_id: p for p in persons}

    def get_person(self, person_id: str) -> Person | None:
        return self.persons.get(person_id)


class Clock:
    """A settable clock (Asia/Shanghai)."""

    def __init__(self, t: datetime) -> None:
        self.t = t

    def __call__(self) -> datetime:
        return self.t


# ------------------------------------------------------------------------ the county
C = CONSORTIUM
T0 = datetime(2026, 6, 1, 9, 0, tzinfo=CHINA_TZ)


def _inst(iid: str, name: str, tier: Tier, kind: InstitutionType, **kw: Any) -> Institution:
    return Institution(iid, kw.pop("consortium_id", C), name, tier, kind, **kw)


COUNTY = _inst("county-hospital", "示范县人民医院", Tier.COUNTY, InstitutionType.GENERAL_HOSPITAL)
TCM = _inst("county-tcm", "示范县中医院", Tier.COUNTY, InstitutionType.TCM_HOSPITAL)
TOWNSHIP = _inst(
    "qiaotou", "桥头镇卫生院", Tier.TOWNSHIP, InstitutionType.TOWNSHIP_HEALTH_CENTRE,
    parent_id="county-hospital",
)  # fmt: skip
TOWNSHIP_2 = _inst(
    "xiadu", "夏渡镇卫生院", Tier.TOWNSHIP, InstitutionType.TOWNSHIP_HEALTH_CENTRE,
    parent_id="county-hospital",
)  # fmt: skip
VILLAGE = _inst(
    "qiaotou-lijia", "桥头镇李家村卫生室", Tier.VILLAGE, InstitutionType.VILLAGE_CLINIC,
    parent_id="qiaotou",
)  # fmt: skip
REGIONAL = _inst(
    "city-hospital", "市第一人民医院", Tier.REGIONAL, InstitutionType.REGIONAL_HOSPITAL
)
CLOSED = _inst(
    "old-clinic", "旧卫生室", Tier.TOWNSHIP, InstitutionType.TOWNSHIP_HEALTH_CENTRE, active=False
)
INSTITUTIONS = (COUNTY, TCM, TOWNSHIP, TOWNSHIP_2, VILLAGE, REGIONAL, CLOSED)

# The village doctor refers up to the township centre (the usual case in these tests).
REFERRER = Principal("doc-li", Role.DOCTOR, C, VILLAGE.institution_id, name="李医生")
COLLEAGUE = Principal("doc-zhao", Role.DOCTOR, C, VILLAGE.institution_id, name="赵医生")
SOURCE_ADMIN = Principal("adm-lijia", Role.INSTITUTION_ADMIN, C, VILLAGE.institution_id,
                         name="李家村管理员")  # fmt: skip
RECEIVER = Principal("doc-wang", Role.DOCTOR, C, TOWNSHIP.institution_id, name="王芳")
RECEIVER_ADMIN = Principal("adm-qiaotou", Role.INSTITUTION_ADMIN, C, TOWNSHIP.institution_id,
                           name="桥头管理员")  # fmt: skip
OTHER_TOWNSHIP = Principal("doc-xia", Role.DOCTOR, C, TOWNSHIP_2.institution_id, name="夏医生")
COUNTY_DOCTOR = Principal("doc-chen", Role.DOCTOR, C, COUNTY.institution_id, name="陈医生")
CENTRE = Principal("centre-1", Role.REFERRAL_CENTRE, C, COUNTY.institution_id, name="转诊中心")
CONSORTIUM_ADMIN = Principal("cadm", Role.CONSORTIUM_ADMIN, C, name="医共体管理员")
PATIENT_ID = "p-zhangwei"
RESIDENT = Principal("res-zw", Role.RESIDENT, C, person_id=PATIENT_ID, name="张伟")
OTHER_RESIDENT = Principal("res-x", Role.RESIDENT, C, person_id="p-other", name="某人")
OUTSIDER = Principal("doc-out", Role.DOCTOR, "other-county", TOWNSHIP.institution_id, name="外县")

DOCTORS = (
    Doctor("doc-wang", C, TOWNSHIP.institution_id, "王芳", "全科", "主治医师"),
    Doctor("doc-xia", C, TOWNSHIP_2.institution_id, "夏医生", "内科", "主治医师"),
    Doctor("doc-chen", C, COUNTY.institution_id, "陈医生", "神经内科", "主任医师"),
)


def person(person_id: str = PATIENT_ID, consortium_id: str = C, **kw: Any) -> Person:
    return Person(person_id, consortium_id, kw.pop("name", "张伟"), ("zhang", "wei"),
                  kw.pop("sex", "male"), kw.pop("birth_date", "1958-04-02"), **kw)  # fmt: skip


# What a referral keeps of the patient, person() above, when it is applied for.
PATIENT_SNAPSHOT = {
    "person_id": PATIENT_ID,
    "name": "张伟",
    "sex": "male",
    "birth_date": "1958-04-02",
}


def county_directory() -> FakeDirectoryStore:
    directory = FakeDirectoryStore()
    for inst in INSTITUTIONS:
        directory.add_institution(inst)
    for doctor in DOCTORS:
        directory.add_doctor(doctor, None)
    return directory


# Distinct limits per wait and urgency, so a deadline taken from the wrong one shows.
LIMITS = TimeLimits(
    review={Urgency.ROUTINE: 3000, Urgency.URGENT: 300, Urgency.EMERGENCY: 30},
    escalation={Urgency.ROUTINE: 4000, Urgency.URGENT: 400, Urgency.EMERGENCY: 40},
    amendment=5000,
    arrival={Urgency.ROUTINE: 7000, Urgency.URGENT: 700, Urgency.EMERGENCY: 70},
)


def application(**kw: Any) -> Application:
    """The village doctor's upward referral to the township centre, as the API passes it."""
    body = {
        "patient_id": PATIENT_ID,
        "direction": "up",
        "urgency": "routine",
        "target_institution_id": TOWNSHIP.institution_id,
        "reason": "胸痛待查",
        "diagnosis": {"code": "I20.9", "text": "心绞痛"},
        "clinical_summary": "反复胸痛三天",
        **kw,
    }
    return Application(**body)
