"""In-memory fakes for the consultation service, behaving like the adapters: the store with
DynamoConsultationStore's semantics (one transaction per transition: the version condition,
the invitation pointers, the accounting rollups ADDed / SET; StaleConsultation with nothing
written; the wait token dropped by every save; register_wait conditional on the status),
Step Functions callbacks that refuse unknown or spent tokens, a record service that keeps
what it is given, and the county the consultation tests share.

Consultations are kept as their JSON (as the table keeps them), so a caller can never change
a stored consultation by holding on to an object."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from tests.fakes import FakeAuditSink
from tests.support.fake_records import FakePersons
from tests.support.fake_referrals import T0, C, Clock, county_directory, person
from yilian.adapters.consultation_store import StaleConsultation
from yilian.domain.consultation import OPEN, Consultation, Limits, Tariff
from yilian.domain.directory import Doctor
from yilian.domain.principal import Principal, Role
from yilian.services.consultations import ConsultationService

_OPEN = {str(s) for s in OPEN}


def _sort(c: Consultation) -> str:  # every gsi's sort key: created#id
    return f"{c.created_at}#{c.consultation_id}"


class FakeConsultationStore:
    """The DynamoConsultationStore port in memory, with the table's layout for rollups."""

    def __init__(self) -> None:
        self.items: dict[str, dict[str, Any]] = {}  # id -> {data, version, status, wait_*}
        self.pointers: dict[tuple[str, str], dict[str, Any]] = {}  # (id, expert) -> pointer
        self.accounts: dict[tuple[str, str], dict[str, Any]] = {}  # (pk, sk) -> rollup item
        self.saves = 0  # save calls that wrote
        self._before_save: list[Callable[[], None]] = []

    # ---------------------------------------------------------------- test helpers
    def before_next_save(self, fn: Callable[[], None]) -> None:
        """Run `fn` at the start of the next save, before its condition is checked: a
        concurrent writer landing between the service's read and its write."""
        self._before_save.append(fn)

    def put(self, c: Consultation, token: str | None = None) -> None:
        """Store a consultation as it is (no condition): test setup."""
        self._write(c)
        self.items[c.consultation_id]["wait_token"] = token

    def token_of(self, consultation_id: str) -> str | None:
        return self.items[consultation_id].get("wait_token")

    def snapshot(self) -> str:
        """Everything the table holds, to compare before and after a refused step."""
        return json.dumps(
            [sorted(self.items.items()), sorted(self.pointers.items()),
             sorted(self.accounts.items())],
            ensure_ascii=False, sort_keys=True, default=str,
        )  # fmt: skip

    # ---------------------------------------------------------------- internals
    def _write(self, c: Consultation) -> None:
        self.items[c.consultation_id] = {
            "data": json.loads(json.dumps(c.to_json(), ensure_ascii=False)),
            "version": c.version,
            "status": str(c.status),
            "consortium_id": c.consortium_id,
            "wait_token": None,
            "wait_stage": None,
        }
        for inv in c.invitations:
            self.pointers[(c.consultation_id, inv.expert.subject)] = {
                "state": str(inv.state),
                "status": str(c.status),
                "gsi4pk": f"EXPERT#{c.consortium_id}#{inv.expert.subject}",
                "gsi4sk": _sort(c),
                "consultation_id": c.consultation_id,
            }

    def _consultation(self, consultation_id: str) -> Consultation:
        return Consultation.from_json(copy.deepcopy(self.items[consultation_id]["data"]))

    def _where(self, keep: Callable[[Consultation], bool], limit: int = 200) -> list:
        hits = [c for i in list(self.items) if keep(c := self._consultation(i))]
        return sorted(hits, key=_sort, reverse=True)[:limit]

    def _rollup(self, pk: str, sk: str, attrs: Mapping[str, Any], counters: Mapping[str, int]):
        row = self.accounts.setdefault((pk, sk), {"pk": pk, "sk": sk})
        for k, v in counters.items():
            row[k] = row.get(k, 0) + int(v)
        for k, v in attrs.items():
            row[k] = str(v)

    # ---------------------------------------------------------------- the adapter's methods
    def get(self, consultation_id: str) -> tuple[Consultation, str | None] | None:
        item = self.items.get(consultation_id[:40])
        if item is None:
            return None
        return self._consultation(consultation_id[:40]), item.get("wait_token")

    def create(self, c: Consultation) -> None:
        if c.consultation_id in self.items:
            raise StaleConsultation()
        self._write(c)

    def save(
        self,
        before: Consultation,
        after: Consultation,
        rollups: Iterable[tuple[str, str, Mapping[str, Any], Mapping[str, int]]] = (),
        token: str | None = None,
    ) -> None:
        if self._before_save:
            self._before_save.pop(0)()
        item = self.items.get(before.consultation_id)
        if item is None or item["version"] != before.version or item["wait_token"] != token:
            raise StaleConsultation()
        self._write(after)  # a Put of the whole item: the wait token is dropped
        for pk, sk, attrs, counters in rollups:
            self._rollup(pk, sk, attrs, counters)
        self.saves += 1

    def register_wait(self, consultation_id: str, status: str, stage: str, token: str) -> bool:
        item = self.items.get(consultation_id)
        if item is None or item["status"] != status:
            return False
        item["wait_token"], item["wait_stage"] = token, stage
        return True

    def for_patient(self, consortium_id: str, person_id: str) -> list[Consultation]:
        return self._where(lambda c: c.consortium_id == consortium_id
                           and c.person_id == person_id)  # fmt: skip

    def open_ones(self, consortium_id: str) -> list[Consultation]:
        return self._where(lambda c: c.consortium_id == consortium_id and c.is_open, 500)

    def for_requesting(self, consortium_id: str, institution_id: str) -> list[Consultation]:
        return self._where(lambda c: c.consortium_id == consortium_id
                           and c.requester.institution_id == institution_id)  # fmt: skip

    def _mine(self, consortium_id: str, subject: str) -> list[dict[str, Any]]:
        key = f"EXPERT#{consortium_id}#{subject}"
        hits = [p for p in self.pointers.values() if p["gsi4pk"] == key]
        return sorted(hits, key=lambda p: p["gsi4sk"], reverse=True)[:200]

    def for_expert(self, consortium_id: str, subject: str) -> list[Consultation]:
        return [
            self._consultation(p["consultation_id"]) for p in self._mine(consortium_id, subject)
        ]

    def workload(self, consortium_id: str, subject: str) -> int:
        return sum(
            1
            for p in self._mine(consortium_id, subject)
            if p["status"] in _OPEN and p["state"] in ("invited", "accepted")
        )

    def rollups(self, consortium_id: str, first_month: str, last_month: str) -> list[dict]:
        out: list[dict[str, Any]] = []
        for year in range(int(first_month[:4]), int(last_month[:4]) + 1):
            pk = f"ACCT#{consortium_id}#{year}"
            lo, hi = max(first_month, f"{year}-01"), min(last_month, f"{year}-12") + "#~"
            out += [
                dict(row)
                for (p, sk), row in sorted(self.accounts.items())
                if p == pk and lo <= sk <= hi
            ]
        return out


class FakeCallbacks:
    """Step Functions: `issue` opens a wait's token; `resume` completes it once (an unknown,
    spent or timed-out token is refused: False); `start` names one execution per id."""

    def __init__(self) -> None:
        self.live: set[str] = set()
        self.calls: list[tuple[str, dict[str, Any], bool]] = []
        self.started: dict[str, tuple[str, dict[str, Any]]] = {}

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

    def start(self, state_machine_arn: str, name: str, payload: Mapping[str, Any]) -> bool:
        if name in self.started:
            return False
        self.started[name] = (state_machine_arn, dict(payload))
        return True

    @property
    def completed(self) -> dict[str, dict[str, Any]]:
        return {token: outcome for token, outcome, ok in self.calls if ok}


class FakeRecordService:
    """RecordService.submit: keeps who filed which bundle."""

    def __init__(self) -> None:
        self.submitted: list[tuple[Principal, dict[str, Any]]] = []

    def submit(self, who: Principal, bundle: Any) -> tuple[int, dict[str, Any]]:
        self.submitted.append((who, copy.deepcopy(bundle)))
        return 201, {"doc_id": f"doc-{len(self.submitted)}"}


class FakeNotices:
    def __init__(self) -> None:
        self.delivered: list[Any] = []

    def deliver(self, notification: Any) -> None:
        self.delivered.append(notification)


# ------------------------------------------------------------------------ the county
# county_directory(): county-hospital (the consulting centre), qiaotou / xiadu townships...
# plus the county hospital's experts below. The requester is the qiaotou doctor 王芳.
COUNTY, TOWNSHIP, TOWNSHIP_2, CLOSED = "county-hospital", "qiaotou", "xiadu", "old-clinic"
PATIENT_ID = "p-zhangwei"

EXPERTS = (
    Doctor("doc-chenming", C, COUNTY, "陈明", "心血管内科", "主任医师"),
    Doctor("doc-liuyan", C, COUNTY, "刘艳", "神经内科", "副主任医师"),
    Doctor("doc-zhaolei", C, COUNTY, "赵磊", "骨科", "主治医师"),
    Doctor("doc-heping", C, COUNTY, "何平", "心血管内科", "主治医师"),
    Doctor("doc-xuqing", C, COUNTY, "徐青", "心血管内科", "住院医师"),
    Doctor("doc-retired", C, COUNTY, "退休", "心血管内科", "主任医师", active=False),
    Doctor("adm-county", C, COUNTY, "县医院管理员", "医务科", "", role="institution_admin"),
    Doctor("doc-qiaoli", C, TOWNSHIP, "乔丽", "全科", "主治医师"),
)


def doctor(d: Doctor) -> Principal:
    return Principal(d.doctor_id, Role.DOCTOR, C, d.institution_id, name=d.name)


CHENMING, LIUYAN, ZHAOLEI, HEPING, XUQING = (doctor(d) for d in EXPERTS[:5])
REQUESTER = Principal("doc-wang", Role.DOCTOR, C, TOWNSHIP, name="王芳")
COLLEAGUE = doctor(EXPERTS[7])  # the requester's institution
OUTSIDER = Principal("doc-xia", Role.DOCTOR, C, TOWNSHIP_2, name="夏医生")
CENTRE = Principal("centre-1", Role.REFERRAL_CENTRE, C, COUNTY, name="会诊中心")
CONSORTIUM_ADMIN = Principal("cadm", Role.CONSORTIUM_ADMIN, C, name="医共体管理员")
COUNTY_ADMIN = Principal("adm-county", Role.INSTITUTION_ADMIN, C, COUNTY, name="县医院管理员")
TOWNSHIP_ADMIN = Principal("adm-qiaotou", Role.INSTITUTION_ADMIN, C, TOWNSHIP, name="桥头管理员")
RESIDENT = Principal("res-zw", Role.RESIDENT, C, person_id=PATIENT_ID, name="张伟")
OTHER_RESIDENT = Principal("res-x", Role.RESIDENT, C, person_id="p-other", name="某人")
FOREIGN_CENTRE = Principal("centre-x", Role.REFERRAL_CENTRE, "other-county", COUNTY, name="外县")


def consultation_directory() -> Any:
    directory = county_directory()
    for d in EXPERTS:
        directory.add_doctor(d, None)
    return directory


def request_body(**kw: Any) -> dict[str, Any]:
    """王芳's written request to the county hospital's cardiology, as the API passes it."""
    return {
        "person_id": PATIENT_ID,
        "centre_institution_id": COUNTY,
        "kind": "routine",
        "mode": "written",
        "specialty": "心血管内科",
        "question": "胸痛待查，是否需要冠脉造影？",
        "summary": "65岁男性，反复胸痛三天，心电图ST段压低",
        **kw,
    }


@dataclass
class Harness:
    """A ConsultationService over the fakes, with the clock the test moves."""

    limits: Limits = field(default_factory=Limits)
    tariff: Tariff = field(default_factory=Tariff)
    store: FakeConsultationStore = field(default_factory=FakeConsultationStore)
    callbacks: FakeCallbacks = field(default_factory=FakeCallbacks)
    records: FakeRecordService = field(default_factory=FakeRecordService)
    notices: FakeNotices = field(default_factory=FakeNotices)
    audit: FakeAuditSink = field(default_factory=FakeAuditSink)
    clock: Clock = field(default_factory=lambda: Clock(T0))
    persons: FakePersons = field(
        default_factory=lambda: FakePersons(
            person(), person("p-other", name="某人"), person("p-foreign", "other-county")
        )  # fmt: skip
    )
    directory: Any = field(default_factory=consultation_directory)
    service: ConsultationService = field(init=False)

    def __post_init__(self) -> None:
        self.service = ConsultationService(
            self.store, self.persons, self.directory, self.callbacks, self.audit,
            state_machine_arn="arn:aws:states:cn-north-1:0:stateMachine:consultation",
            records=self.records, notices=self.notices, limits=self.limits,
            tariff=self.tariff, stale=StaleConsultation, now=self.clock,
        )  # fmt: skip

    def stored(self, consultation_id: str) -> Consultation:
        found = self.store.get(consultation_id)
        assert found is not None
        return found[0]

    def act(self, who: Principal, cid: str, action: str, **body: Any) -> dict[str, Any]:
        """`who` takes a step on the version they see now (unless the body names one)."""
        body.setdefault("version", self.stored(cid).version)
        return self.service.act(who, cid, action, body)

    def wait(self, cid: str, token: str) -> bool:
        """The workflow enters the wait of the consultation's current stage."""
        from yilian.services.consultations import STAGE_OF_STATUS

        self.callbacks.issue(token)
        return self.service.await_stage(cid, STAGE_OF_STATUS[self.stored(cid).status], token)

    def advance(self, seconds: float) -> None:
        from datetime import timedelta

        self.clock.t = self.clock.t + timedelta(seconds=seconds)
