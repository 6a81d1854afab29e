"""Remote consultation (远程会诊): a primary doctor asks the consortium's experts for an
opinion on a patient without moving the patient. Plain Python: the rules and the states.

    REQUESTED ──accept──> ASSIGNING ──enough experts accept──> SCHEDULED (video) ──> IN_PROGRESS
        │  └─return──> MORE_INFO ──amend──> REQUESTED          └──────(written opinion)──────┘
        └─decline──> DECLINED                                   IN_PROGRESS ──lead signs──> REPORTED
    REPORTED ──requester acknowledges──> COMPLETED
    any open state ──cancel──> CANCELLED; a time limit passing ──> EXPIRED; a party missing
    the session ──> NO_SHOW. Every transition lands in the history.

The state lives in DynamoDB; the Step Functions execution (statemachines/consultation.asl.json)
holds the clock: each wait is a task token kept server-side, a person's action spends it,
and a wait's time limit escalates an urgent review, invites the next expert, moves a held
session on, or expires the consultation. Every action names the version it saw: a replay of
an action already taken is refused (409 REPLAYED) and changes nothing.
"""

from __future__ import annotations

import bisect
import hashlib
import hmac
import json
import re
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from yilian.domain.errors import Conflict, Forbidden, InvalidInput
from yilian.domain.principal import Principal, Role


class Kind(StrEnum):
    ROUTINE = "routine"  # 普通会诊
    URGENT = "urgent"  # 急会诊
    MDT = "mdt"  # 多学科会诊


class Mode(StrEnum):
    VIDEO = "video"  # 同步视频会诊
    WRITTEN = "written"  # 异步书面意见


class Status(StrEnum):
    REQUESTED = "REQUESTED"  # 待审核
    MORE_INFO = "MORE_INFO"  # 退回补充资料
    ASSIGNING = "ASSIGNING"  # 专家邀请中
    SCHEDULED = "SCHEDULED"  # 已排期 (video)
    IN_PROGRESS = "IN_PROGRESS"  # 会诊中: opinions being written
    REPORTED = "REPORTED"  # 报告已签发, awaiting the requester's acknowledgement
    COMPLETED = "COMPLETED"  # 已确认
    DECLINED = "DECLINED"
    CANCELLED = "CANCELLED"
    EXPIRED = "EXPIRED"
    NO_SHOW = "NO_SHOW"


OPEN = frozenset({Status.REQUESTED, Status.MORE_INFO, Status.ASSIGNING, Status.SCHEDULED,
                  Status.IN_PROGRESS, Status.REPORTED})  # fmt: skip
# While these last, the assigned experts have a care relationship with the patient.
ACTIVE = frozenset({Status.ASSIGNING, Status.SCHEDULED, Status.IN_PROGRESS, Status.REPORTED})
CENTRE_ROLES = (
    Role.REFERRAL_CENTRE,
    Role.CONSORTIUM_ADMIN,
)  # 会诊中心: the consortium's service centre


class InviteState(StrEnum):
    INVITED = "invited"
    ACCEPTED = "accepted"
    DECLINED = "declined"
    EXPIRED = "expired"  # silent past its limit: the next candidate is invited


@dataclass(frozen=True, slots=True)
class Limits:
    """Seconds; template parameter ConsultationLimits (JSON) overrides any of them."""

    review: Mapping[str, int] = field(default_factory=lambda: {
        "urgent": 1800, "routine": 172800, "mdt": 172800})  # fmt: skip
    escalation: int = 1800  # after an urgent review limit passes: the centre's extra time
    amendment: int = 259200
    invitation: Mapping[str, int] = field(default_factory=lambda: {
        "urgent": 3600, "routine": 86400, "mdt": 86400})  # fmt: skip
    invitation_rounds: int = 3  # rounds of next candidates before the request expires
    reminder: int = 3600  # before a video session
    session_grace: int = 1800  # after a session's start: opinions are due then
    report: int = 259200  # opinions and the signed report, after the session / acceptance
    acknowledgement: int = 604800  # then the consultation completes by itself

    @classmethod
    def from_mapping(cls, raw: Mapping[str, Any]) -> Limits:
        unknown = set(raw) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown consultation limits: {sorted(unknown)}")
        base = cls()
        values: dict[str, Any] = {}
        for name, value in raw.items():
            current = getattr(base, name)
            values[name] = {**current, **value} if isinstance(current, Mapping) else int(value)
        return replace(base, **values)


@dataclass(frozen=True, slots=True)
class Tariff:
    """会诊费: per kind and expert title (yuan), and how a fee is split between the
    consulting and the requesting institution. Template parameter ConsultationTariff."""

    fees: Mapping[str, Mapping[str, int]] = field(default_factory=lambda: {
        "routine": {"主任医师": 200, "副主任医师": 150, "主治医师": 100, "*": 80},
        "urgent": {"主任医师": 300, "副主任医师": 220, "主治医师": 150, "*": 120},
        "mdt": {"主任医师": 400, "副主任医师": 300, "主治医师": 200, "*": 150},
    })  # fmt: skip
    consulting_share: float = 0.7  # the rest stays with the requesting institution

    @classmethod
    def from_mapping(cls, raw: Mapping[str, Any]) -> Tariff:
        unknown = set(raw) - {"fees", "consulting_share"}
        if unknown:
            raise ValueError(f"unknown tariff fields: {sorted(unknown)}")
        base = cls()
        fees = {k: {**base.fees.get(k, {}), **v} for k, v in (raw.get("fees") or {}).items()}
        share = float(raw.get("consulting_share", base.consulting_share))
        if not 0 <= share <= 1:
            raise ValueError("consulting_share is between 0 and 1")
        return cls(fees={**base.fees, **fees}, consulting_share=share)

    def fee(self, kind: str, title: str) -> int:
        table = self.fees.get(kind) or {}
        return int(table.get(title, table.get("*", 0)))


@dataclass(frozen=True, slots=True)
class Party:
    subject: str
    name: str
    institution_id: str
    department: str = ""
    title: str = ""


@dataclass(frozen=True, slots=True)
class Invitation:
    expert: Party
    state: InviteState
    invited_at: str
    due_at: str
    lead: bool = False
    responded_at: str = ""
    reason: str = ""
    opinion: Mapping[str, Any] | None = None  # {findings, recommendations, filed_at}
    join_url: str = ""


def _party(p: Party) -> dict[str, str]:
    return {"subject": p.subject, "name": p.name, "institution_id": p.institution_id,
            "department": p.department, "title": p.title}  # fmt: skip


@dataclass(frozen=True, slots=True)
class Consultation:
    consultation_id: str
    consortium_id: str
    person_id: str
    requester: Party
    centre_institution_id: str  # the consulting institution (会诊中心所在机构)
    kind: Kind
    mode: Mode
    specialty: str  # the department wanted (MDT: several, comma-separated)
    question: str
    summary: str
    attachments: Mapping[str, Sequence[str]]  # {"documents": [doc ids], "studies": [uids]}
    preferred_times: Sequence[str]
    status: Status
    created_at: str
    updated_at: str
    version: int = 1
    due_at: str = ""  # the current wait's limit
    required_accepts: int = 1
    invitations: Sequence[Invitation] = ()
    session: Mapping[str, Any] | None = None  # {start, minutes, provider, room}
    report: Mapping[str, Any] | None = None  # {findings, recommendations, signed_by, ...}
    escalated: bool = False
    rounds: int = 0
    closed_reason: str = ""
    reported_at: str = ""
    history: Sequence[Mapping[str, Any]] = ()
    patient: Mapping[str, str] = field(default_factory=dict)  # name, sex, birth date as asked

    @property
    def is_open(self) -> bool:
        return self.status in OPEN

    def invitation_of(self, subject: str) -> Invitation | None:
        live = [i for i in self.invitations if i.expert.subject == subject]
        return live[-1] if live else None

    @property
    def accepted(self) -> list[Invitation]:
        return [i for i in self.invitations if i.state is InviteState.ACCEPTED]

    @property
    def lead(self) -> Invitation | None:
        return next((i for i in self.accepted if i.lead), None)

    def to_json(self) -> dict[str, Any]:
        return {
            "consultation_id": self.consultation_id, "consortium_id": self.consortium_id,
            "person_id": self.person_id, "requester": _party(self.requester),
            "centre_institution_id": self.centre_institution_id, "kind": str(self.kind),
            "mode": str(self.mode), "specialty": self.specialty, "question": self.question,
            "summary": self.summary,
            "attachments": {k: list(v) for k, v in self.attachments.items()},
            "preferred_times": list(self.preferred_times), "status": str(self.status),
            "created_at": self.created_at, "updated_at": self.updated_at,
            "version": self.version, "due_at": self.due_at,
            "required_accepts": self.required_accepts,
            "invitations": [_invitation_json(i) for i in self.invitations],
            "session": dict(self.session) if self.session else None,
            "report": dict(self.report) if self.report else None,
            "escalated": self.escalated, "rounds": self.rounds,
            "closed_reason": self.closed_reason, "reported_at": self.reported_at,
            "history": [dict(h) for h in self.history],
            "patient": dict(self.patient),
        }  # fmt: skip

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Consultation:
        return cls(
            consultation_id=d["consultation_id"], consortium_id=d["consortium_id"],
            person_id=d["person_id"], requester=Party(**d["requester"]),
            centre_institution_id=d["centre_institution_id"], kind=Kind(d["kind"]),
            mode=Mode(d["mode"]), specialty=d["specialty"], question=d["question"],
            summary=d["summary"], attachments=d.get("attachments") or {},
            preferred_times=tuple(d.get("preferred_times") or ()), status=Status(d["status"]),
            created_at=d["created_at"], updated_at=d["updated_at"], version=int(d["version"]),
            due_at=d.get("due_at") or "", required_accepts=int(d.get("required_accepts") or 1),
            invitations=tuple(
                Invitation(expert=Party(**i["expert"]), state=InviteState(i["state"]),
                           invited_at=i["invited_at"], due_at=i["due_at"],
                           lead=bool(i.get("lead")), responded_at=i.get("responded_at") or "",
                           reason=i.get("reason") or "", opinion=i.get("opinion"),
                           join_url=i.get("join_url") or "")
                for i in d.get("invitations") or ()),
            session=d.get("session"), report=d.get("report"),
            escalated=bool(d.get("escalated")), rounds=int(d.get("rounds") or 0),
            closed_reason=d.get("closed_reason") or "", reported_at=d.get("reported_at") or "",
            history=tuple(d.get("history") or ()),
            patient=d.get("patient") or {},
        )  # fmt: skip


def _invitation_json(i: Invitation) -> dict[str, Any]:
    return {"expert": _party(i.expert), "state": str(i.state), "invited_at": i.invited_at,
            "due_at": i.due_at, "lead": i.lead, "responded_at": i.responded_at,
            "reason": i.reason, "opinion": dict(i.opinion) if i.opinion else None,
            "join_url": i.join_url}  # fmt: skip


def iso(t: datetime) -> str:
    return t.isoformat(timespec="seconds")


def new_id(now: datetime) -> str:
    """HZ + China date + 6 random characters: short enough to say on the phone."""
    return f"HZ{now:%Y%m%d}{secrets.token_hex(3).upper()}"


# ---------------------------------------------------------------------- requests

TEXT_LIMITS = {"question": 2000, "summary": 8000}
ISO_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}")


def parse_request(body: Mapping[str, Any]) -> dict[str, Any]:
    """The request's own fields, checked (the patient and institutions are the service's)."""
    try:
        kind = Kind(str(body.get("kind") or "routine"))
        mode = Mode(str(body.get("mode") or "written"))
    except ValueError:
        raise InvalidInput(
            "KIND_INVALID", "kind is routine|urgent|mdt, mode video|written"
        ) from None
    out: dict[str, Any] = {"kind": kind, "mode": mode}
    for name, limit in TEXT_LIMITS.items():
        text = str(body.get(name) or "").strip()
        if not text:
            raise InvalidInput("FIELD_REQUIRED", f"{name} is required", field=name)
        if len(text) > limit:
            raise InvalidInput(
                "FIELD_TOO_LONG", f"{name} is at most {limit} characters", field=name
            )
        out[name] = text
    specialty = str(body.get("specialty") or "").strip()
    if not specialty or len(specialty) > 100:
        raise InvalidInput("FIELD_REQUIRED", "specialty (the department wanted) is required",
                           field="specialty")  # fmt: skip
    out["specialty"] = specialty
    times = body.get("preferred_times") or []
    if (
        not isinstance(times, list)
        or len(times) > 5
        or any(not isinstance(t, str) or not ISO_TIME.match(t) for t in times)
    ):
        raise InvalidInput("TIMES_INVALID", "preferred_times: up to 5 ISO date-times")
    out["preferred_times"] = tuple(times)
    attachments = body.get("attachments") or {}
    docs = attachments.get("documents") or [] if isinstance(attachments, dict) else None
    studies = attachments.get("studies") or [] if isinstance(attachments, dict) else None
    if not isinstance(docs, list) or not isinstance(studies, list):
        docs = studies = None
    if docs is None or studies is None or len(docs) > 50 or len(studies) > 20:
        raise InvalidInput("ATTACHMENTS_INVALID", "attachments: {documents: [], studies: []}")
    out["attachments"] = {"documents": [str(d)[:64] for d in docs],
                          "studies": [str(s)[:64] for s in studies]}  # fmt: skip
    return out


def review_limit(kind: Kind, limits: Limits) -> int:
    return int(limits.review.get(str(kind), limits.review.get("routine", 172800)))


def invitation_limit(kind: Kind, limits: Limits) -> int:
    return int(limits.invitation.get(str(kind), limits.invitation.get("routine", 86400)))


# ---------------------------------------------------------------------- transitions


def check_version(c: Consultation, body: Mapping[str, Any]) -> None:
    """Every action names the version it saw; a replay of a spent step changes nothing."""
    seen = body.get("version")
    if not isinstance(seen, int) or isinstance(seen, bool):
        raise InvalidInput("VERSION_REQUIRED", "name the consultation version you acted on")
    if seen != c.version:
        raise Conflict("REPLAYED", "this step was already taken (or the consultation moved on)",
                       version=c.version, status=str(c.status))  # fmt: skip


def require_open(c: Consultation, *allowed: Status) -> None:
    if not c.is_open:
        raise Conflict("CONSULTATION_CLOSED", "the consultation is closed",
                       status=str(c.status))  # fmt: skip
    if allowed and c.status not in allowed:
        raise Conflict("WRONG_STATE", f"not possible while {c.status}", status=str(c.status))


def move(
    c: Consultation,
    status: Status,
    who: Principal | None,
    action: str,
    at: datetime,
    *,
    due_seconds: int | None = None,
    note: str = "",
    **changes: Any,
) -> Consultation:
    """The next state of `c`, with the transition in its history and the version bumped."""
    entry = {"at": iso(at), "action": action, "from": str(c.status), "to": str(status),
             "by": who.subject if who else "workflow", "by_name": who.name if who else "",
             **({"note": note} if note else {})}  # fmt: skip
    due = iso(at + timedelta(seconds=due_seconds)) if due_seconds is not None else ""
    return replace(c, status=status, updated_at=iso(at), version=c.version + 1, due_at=due,
                   history=(*c.history, entry), **changes)  # fmt: skip


def with_invitations(c: Consultation, invitations: Sequence[Invitation]) -> Consultation:
    return replace(c, invitations=tuple(invitations))


def invite(expert: Party, at: datetime, seconds: int, lead: bool = False) -> Invitation:
    return Invitation(expert, InviteState.INVITED, iso(at), iso(at + timedelta(seconds=seconds)),
                      lead=lead)  # fmt: skip


def join_token(secret: str, consultation_id: str, subject: str) -> str:
    """A participant's join link signature (the video provider checks it)."""
    digest = hmac.new(secret.encode(), f"{consultation_id}|{subject}".encode(), hashlib.sha256)
    return digest.hexdigest()[:32]


def parse_opinion(body: Mapping[str, Any]) -> dict[str, str]:
    findings = str(body.get("findings") or "").strip()
    recommendations = str(body.get("recommendations") or "").strip()
    if not findings or not recommendations:
        raise InvalidInput("OPINION_INCOMPLETE", "findings and recommendations are required")
    if len(findings) > 8000 or len(recommendations) > 4000:
        raise InvalidInput("FIELD_TOO_LONG", "findings ≤ 8000, recommendations ≤ 4000 characters")
    return {"findings": findings, "recommendations": recommendations}


def require_party(c: Consultation, who: Principal) -> str:
    """The consultation's parties: the requester's institution, the invited experts, the
    centre; the patient reads the final report only. Returns the caller's part."""
    if who.consortium_id != c.consortium_id:
        raise Forbidden("CROSS_CONSORTIUM", "this consultation belongs to another consortium")
    if who.role is Role.RESIDENT:
        if who.person_id != c.person_id:
            raise Forbidden("NOT_YOUR_RECORD", "a resident reads only their own consultations")
        return "patient"
    if who.role in CENTRE_ROLES:
        return "centre"
    if who.subject == c.requester.subject:
        return "requester"
    if c.invitation_of(who.subject) is not None:
        return "expert"
    if who.institution_id == c.requester.institution_id:
        return "requester_institution"
    raise Forbidden("NOT_A_PARTY", "only the consultation's parties read it")


def summary_for_resident(c: Consultation) -> dict[str, Any]:
    """A resident sees that a consultation happened and, once signed, its final report."""
    signed = c.status in (Status.REPORTED, Status.COMPLETED) and c.report
    return {"consultation_id": c.consultation_id, "kind": str(c.kind), "mode": str(c.mode),
            "specialty": c.specialty, "status": str(c.status), "created_at": c.created_at,
            "requester": {"name": c.requester.name, "institution_id": c.requester.institution_id},
            "experts": [{"name": i.expert.name, "institution_id": i.expert.institution_id,
                         "department": i.expert.department, "title": i.expert.title}
                        for i in c.accepted],
            "report": dict(c.report) if signed and c.report else None}  # fmt: skip


# Minutes from request to report, counted in buckets (lower edges) for the accounting: a
# rollup then holds at most len(REPORT_BUCKETS) histogram counters however many consultations
# it sums, and the median is interpolated inside its bucket (exact to the bucket).
REPORT_BUCKETS = (0, 15, 30, 45, 60, 90, 120, 180, 240, 360, 480, 720, 960, 1440, 2160,
                  2880, 4320, 5760, 7200, 10080, 14400, 20160)  # fmt: skip


def report_bucket(minutes: int) -> int:
    return REPORT_BUCKETS[bisect.bisect_right(REPORT_BUCKETS, max(0, minutes)) - 1]


def bucket_median(hist: Mapping[int, int]) -> float | None:
    """The median of a bucketed histogram (lower edge -> count), interpolated linearly
    inside the bucket that holds it; the last bucket is taken to span a week."""
    total = sum(hist.values())
    if not total:
        return None
    half, seen = total / 2, 0
    for edge in sorted(hist):
        if seen + hist[edge] >= half:
            upper = next((b for b in REPORT_BUCKETS if b > edge), edge + 10080)
            return round(edge + (upper - edge) * (half - seen) / hist[edge], 1)
        seen += hist[edge]
    return float(max(hist))


def minutes_between(start: str, end: str) -> int:
    a, b = datetime.fromisoformat(start), datetime.fromisoformat(end)
    return max(0, int((b - a).total_seconds() // 60))


def dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))
