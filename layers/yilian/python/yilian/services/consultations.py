"""Remote consultation (远程会诊): request, review, expert assignment, scheduling, opinions,
the signed report, acknowledgement; the workflow's waits and time limits; accounting.

Every action loads the consultation, checks who may act and the version they saw, saves the
next state in one transaction (StaleConsultation: someone acted first → 409), then spends the
workflow's current wait token so the Step Functions execution routes on the new state.
"""

from __future__ import annotations

import base64
import math
import secrets
from collections.abc import Callable, Mapping
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any, Protocol

from yilian.domain import clock
from yilian.domain.audit import AuditAction, AuditEvent
from yilian.domain.consultation import (
    ACTIVE,
    CENTRE_ROLES,
    Consultation,
    InviteState,
    Kind,
    Limits,
    Mode,
    Party,
    Status,
    Tariff,
    bucket_median,
    check_version,
    invitation_limit,
    invite,
    iso,
    join_token,
    minutes_between,
    move,
    new_id,
    parse_opinion,
    parse_request,
    report_bucket,
    require_open,
    require_party,
    review_limit,
    summary_for_resident,
)
from yilian.domain.errors import Conflict, Forbidden, InvalidInput, NotFound
from yilian.domain.principal import Principal, Role

MAX_ATTEMPTS = 5
STAGE_OF_STATUS = {
    Status.REQUESTED: "review",
    Status.MORE_INFO: "amendment",
    Status.ASSIGNING: "invitation",
    Status.SCHEDULED: "session",
    Status.IN_PROGRESS: "report",
    Status.REPORTED: "acknowledgement",
}


class Callbacks(Protocol):
    def resume(self, token: str, outcome: Mapping[str, Any]) -> bool: ...
    def start(self, state_machine_arn: str, name: str, payload: Mapping[str, Any]) -> bool: ...


class ConsultationService:
    def __init__(
        self,
        store: Any,
        persons: Any,
        directory: Any,
        callbacks: Callbacks,
        audit: Any,
        *,
        state_machine_arn: str = "",
        records: Any = None,
        notices: Any = None,
        limits: Limits | None = None,
        tariff: Tariff | None = None,
        stale: type[Exception] = Exception,
        video_base_url: str = "https://meet.yilian.local",
        now: Callable[[], datetime] = clock.now,
    ) -> None:
        self.store = store
        self.persons = persons
        self.directory = directory
        self.callbacks = callbacks
        self.audit = audit
        self.state_machine_arn = state_machine_arn
        self.records = records
        self.notices = notices
        self.limits = limits or Limits()
        self.tariff = tariff or Tariff()
        self._stale = stale
        self.video_base_url = video_base_url.rstrip("/")
        self.now = now

    # ================================================================== request
    def request(self, who: Principal, body: Mapping[str, Any]) -> dict[str, Any]:
        """会诊申请 by a doctor for a patient of the master index, to a consulting
        institution other than their own."""
        who.require_role(Role.DOCTOR)
        fields = parse_request(body)
        person = self.persons.get_person(str(body.get("person_id") or "")[:64])
        if person is None or person.consortium_id != who.consortium_id or person.merged_into:
            raise InvalidInput(
                "PATIENT_UNKNOWN", "the patient is not in the master index", field="person_id"
            )
        centre = str(body.get("centre_institution_id") or "")
        if centre == who.institution_id:
            raise InvalidInput(
                "CENTRE_IS_REQUESTER",
                "ask another institution for an opinion",
                field="centre_institution_id",
            )
        inst = self.directory.get_institution(who.consortium_id, centre)
        if inst is None or not inst.active:
            raise InvalidInput(
                "CENTRE_UNKNOWN",
                "no such consulting institution in the consortium",
                field="centre_institution_id",
            )
        at = self.now()
        requester = self._party(who)
        c = Consultation(
            consultation_id=new_id(at),
            consortium_id=who.consortium_id,
            person_id=person.person_id,
            patient={"name": person.name, "sex": person.sex, "birth_date": person.birth_date},
            requester=requester,
            centre_institution_id=centre,
            status=Status.REQUESTED,
            created_at=iso(at),
            updated_at=iso(at),
            due_at=iso(at + timedelta(seconds=review_limit(fields["kind"], self.limits))),
            required_accepts=1,
            history=(
                {
                    "at": iso(at),
                    "action": "request",
                    "from": "",
                    "to": "REQUESTED",
                    "by": who.subject,
                    "by_name": who.name,
                },
            ),
            **fields,
        )
        self.store.create(c)
        self._audit(who, AuditAction.CREATE, "Consultation", c)
        if self.state_machine_arn:
            self.callbacks.start(
                self.state_machine_arn, c.consultation_id, {"consultation_id": c.consultation_id}
            )
        self._tell(
            c,
            ["centre"],
            "ConsultationRequested",
            "新的会诊申请",
            f"{requester.name}（{requester.institution_id}）申请{_kind_name(c.kind)}：{c.specialty}",
        )
        return self.view(c, who)

    def _party(self, who: Principal) -> Party:
        doctor = self.directory.get_doctor(who.consortium_id, who.subject)
        if doctor is None:
            return Party(who.subject, who.name, who.institution_id or "")
        return Party(
            doctor.doctor_id, doctor.name, doctor.institution_id, doctor.department, doctor.title
        )

    # ================================================================== actions
    def act(
        self, who: Principal, consultation_id: str, action: str, body: Mapping[str, Any]
    ) -> dict[str, Any]:
        """One person's step: accept | return | decline (the centre), amend | cancel |
        acknowledge (the requester), respond (an invited expert), schedule (the centre),
        opinion | sign (accepted experts; sign: the lead), no_show (the centre)."""
        handler = ACTIONS.get(action)
        if handler is None:
            raise NotFound("ACTION_UNKNOWN", f"no action {action!r}")
        for _ in range(MAX_ATTEMPTS):
            before, token = self._load(consultation_id, who)
            if who.role is Role.RESIDENT:
                raise Forbidden(
                    "ROLE_NOT_ALLOWED", "residents read consultations; they do not act on them"
                )
            require_party(before, who)
            require_open(before)
            check_version(before, body)
            after, rollups, tell = handler(self, who, before, body)
            try:
                self.store.save(before, after, rollups, token=token)
            except self._stale:
                continue
            self._after(who, before, after, token, action)
            for recipients, kind, title, text in tell:
                self._tell(after, recipients, kind, title, text)
            return self.view(after, who)
        raise Conflict("CONSULTATION_BUSY", "the consultation kept changing; open it again")

    def _after(
        self,
        who: Principal | None,
        before: Consultation,
        after: Consultation,
        token: str | None,
        action: str,
    ) -> None:
        if who is not None:
            self._audit(who, AuditAction.UPDATE, f"Consultation.{action}", after)
        if token:
            self.callbacks.resume(token, self.outcome(after))
        if after.status is Status.REPORTED and before.status is not Status.REPORTED:
            self._file_report(after)

    # -- the centre ------------------------------------------------------------
    def _accept(self, who: Principal, c: Consultation, body: Mapping[str, Any]) -> Any:
        """会诊审核: accept and invite the experts ([{doctor_id, lead}]; MDT: several in
        parallel, `required_accepts` of them confirm the session)."""
        _centre(who)
        require_open(c, Status.REQUESTED)
        experts = body.get("experts") or []
        if (
            not isinstance(experts, list)
            or not experts
            or len(experts) > 8
            or not all(isinstance(e, dict) for e in experts)
        ):
            raise InvalidInput("EXPERTS_REQUIRED", "invite 1 to 8 experts: [{doctor_id, lead}]")
        leads = [e for e in experts if isinstance(e, dict) and e.get("lead")]
        if len(leads) > 1:
            raise InvalidInput("TWO_LEADS", "one lead expert signs the report")
        at = self.now()
        seconds = invitation_limit(c.kind, self.limits)
        invitations = []
        seen: set[str] = set()
        for n, e in enumerate(experts):
            doctor = self._expert(c, str(e.get("doctor_id") or ""))
            if doctor.subject in seen:
                raise InvalidInput(
                    "EXPERT_TWICE", "an expert is invited once", doctor_id=doctor.subject
                )
            seen.add(doctor.subject)
            lead = bool(e.get("lead")) if leads else n == 0
            invitations.append(invite(doctor, at, seconds, lead))
        required = body.get("required_accepts") or (len(invitations) if c.kind is Kind.MDT else 1)
        if (
            not isinstance(required, int)
            or isinstance(required, bool)
            or not 1 <= required <= len(invitations)
        ):
            raise InvalidInput("REQUIRED_ACCEPTS_INVALID", "required_accepts is 1..experts invited")
        after = move(
            c,
            Status.ASSIGNING,
            who,
            "accept",
            at,
            due_seconds=seconds,
            invitations=tuple(invitations),
            required_accepts=required,
            note=str(body.get("note") or "")[:500],
        )
        names = "、".join(i.expert.name for i in invitations)
        return (
            after,
            (),
            [
                (
                    [f"user:{i.expert.subject}" for i in invitations],
                    "ConsultationInvited",
                    "会诊邀请",
                    f"{c.requester.name}的{_kind_name(c.kind)}：{c.specialty}",
                ),
                (["requester"], "ConsultationAccepted", "会诊申请已受理", f"已邀请专家：{names}"),
            ],
        )

    def _return(self, who: Principal, c: Consultation, body: Mapping[str, Any]) -> Any:
        _centre(who)
        require_open(c, Status.REQUESTED)
        reason = _reason(body)
        after = move(
            c,
            Status.MORE_INFO,
            who,
            "return",
            self.now(),
            due_seconds=self.limits.amendment,
            note=reason,
        )
        return after, (), [(["requester"], "ConsultationReturned", "会诊申请退回补充", reason)]

    def _decline(self, who: Principal, c: Consultation, body: Mapping[str, Any]) -> Any:
        _centre(who)
        require_open(c, Status.REQUESTED, Status.MORE_INFO)
        reason = _reason(body)
        after = move(
            c, Status.DECLINED, who, "decline", self.now(), note=reason, closed_reason=reason
        )
        return after, (), [(["requester"], "ConsultationDeclined", "会诊申请未受理", reason)]

    def _schedule(self, who: Principal, c: Consultation, body: Mapping[str, Any]) -> Any:
        """A video session at a time every accepted expert is free; a join link each."""
        _centre(who)
        require_open(c, Status.SCHEDULED)
        start = _when(body.get("start"))
        minutes = body.get("minutes", 30)
        if not isinstance(minutes, int) or not 10 <= minutes <= 240:
            raise InvalidInput("MINUTES_INVALID", "a session lasts 10 to 240 minutes")
        at = self.now()
        if start <= at:
            raise InvalidInput("START_IN_PAST", "the session starts in the future")
        end = start + timedelta(minutes=minutes)
        for inv in c.accepted:
            clash = self._busy(c, inv.expert.subject, start, end)
            if clash:
                raise Conflict(
                    "EXPERT_BUSY",
                    f"{inv.expert.name} has another session then",
                    doctor_id=inv.expert.subject,
                    consultation_id=clash,
                )
        room = secrets.token_hex(8)
        session = {
            "start": iso(start),
            "minutes": minutes,
            "room": room,
            "provider": "yilian-video",
        }
        invitations = [
            replace(i, join_url=self._join(c, room, i.expert.subject))
            if i.state is InviteState.ACCEPTED
            else i
            for i in c.invitations
        ]
        session["requester_join_url"] = self._join(c, room, c.requester.subject)
        wait = max(1, int((start - at).total_seconds()) - self.limits.reminder)
        after = move(
            c,
            Status.SCHEDULED,
            who,
            "schedule",
            at,
            due_seconds=wait,
            session=session,
            invitations=tuple(invitations),
        )
        text = f"会诊时间：{iso(start)}（{minutes}分钟）"
        return after, (), [(["requester", "experts"], "ConsultationScheduled", "会诊已排期", text)]

    def _no_show(self, who: Principal, c: Consultation, body: Mapping[str, Any]) -> Any:
        _centre(who)
        require_open(c, Status.SCHEDULED, Status.IN_PROGRESS)
        party = str(body.get("party") or "")
        if party not in ("requester", "expert", "patient"):
            raise InvalidInput("PARTY_INVALID", "party is requester, expert or patient")
        reason = f"{party} no-show: {_reason(body)}"
        after = move(
            c, Status.NO_SHOW, who, "no_show", self.now(), note=reason, closed_reason=reason
        )
        return after, (), [(["requester", "experts"], "ConsultationNoShow", "会诊未能进行", reason)]

    # -- the requester -----------------------------------------------------------
    def _amend(self, who: Principal, c: Consultation, body: Mapping[str, Any]) -> Any:
        _requester(who, c)
        require_open(c, Status.MORE_INFO)
        summary = str(body.get("summary") or "").strip()
        if not summary or len(summary) > 8000:
            raise InvalidInput("FIELD_REQUIRED", "the amended clinical summary is required")
        at = self.now()
        after = move(
            c,
            Status.REQUESTED,
            who,
            "amend",
            at,
            due_seconds=review_limit(c.kind, self.limits),
            summary=summary,
        )
        return after, (), [(["centre"], "ConsultationAmended", "会诊申请已补充", c.specialty)]

    def _cancel(self, who: Principal, c: Consultation, body: Mapping[str, Any]) -> Any:
        if who.role not in CENTRE_ROLES:
            _requester(who, c)
        require_open(
            c,
            Status.REQUESTED,
            Status.MORE_INFO,
            Status.ASSIGNING,
            Status.SCHEDULED,
            Status.IN_PROGRESS,
        )
        reason = _reason(body)
        after = move(
            c, Status.CANCELLED, who, "cancel", self.now(), note=reason, closed_reason=reason
        )
        return (
            after,
            (),
            [(["requester", "experts", "centre"], "ConsultationCancelled", "会诊已取消", reason)],
        )

    def _acknowledge(self, who: Principal, c: Consultation, body: Mapping[str, Any]) -> Any:
        _requester(who, c)
        require_open(c, Status.REPORTED)
        after = move(
            c,
            Status.COMPLETED,
            who,
            "acknowledge",
            self.now(),
            note=str(body.get("note") or "")[:500],
        )
        return after, (), [(["experts"], "ConsultationAcknowledged", "会诊报告已确认", c.specialty)]

    # -- experts -----------------------------------------------------------------
    def _respond(self, who: Principal, c: Consultation, body: Mapping[str, Any]) -> Any:
        """An invited expert accepts or declines; a decline invites the next candidate."""
        require_open(c, Status.ASSIGNING)
        mine = c.invitation_of(who.subject)
        if mine is None or mine.state is not InviteState.INVITED:
            raise Forbidden("NOT_INVITED", "no open invitation of yours on this consultation")
        answer = str(body.get("answer") or "")
        if answer not in ("accept", "decline"):
            raise InvalidInput("ANSWER_INVALID", "answer is accept or decline")
        at = self.now()
        state = InviteState.ACCEPTED if answer == "accept" else InviteState.DECLINED
        reason = str(body.get("reason") or "")[:500]
        invitations = [
            replace(i, state=state, responded_at=iso(at), reason=reason) if i is mine else i
            for i in c.invitations
        ]
        tell: list[Any] = []
        if state is InviteState.DECLINED:
            invitations = self._replace_declined(c, invitations, [mine], at)
        c2 = replace(c, invitations=tuple(invitations))
        if len(c2.accepted) >= c.required_accepts:
            invitations = [
                replace(i, state=InviteState.EXPIRED, responded_at=iso(at), reason="名额已满")
                if i.state is InviteState.INVITED
                else i
                for i in _settle_lead(c2)
            ]
            if c.mode is Mode.VIDEO:
                after = move(
                    c2,
                    Status.SCHEDULED,
                    who,
                    "respond",
                    at,
                    due_seconds=self.limits.invitation.get("routine", 86400),
                    invitations=tuple(invitations),
                )
                tell.append(
                    (["centre"], "ConsultationReadyToSchedule", "专家已确认，请排期", c.specialty)
                )
            else:
                after = move(
                    c2,
                    Status.IN_PROGRESS,
                    who,
                    "respond",
                    at,
                    due_seconds=self.limits.report,
                    invitations=tuple(invitations),
                )
                tell.append(
                    (["requester"], "ConsultationConfirmed", "会诊专家已确认", "专家将给出书面意见")
                )
        else:
            after = move(
                c2,
                Status.ASSIGNING,
                who,
                "respond",
                at,
                due_seconds=_seconds_until(_earliest_due(invitations), at),
                note=f"{answer} {reason}".strip(),
            )
        return after, (), tell

    def _opinion(self, who: Principal, c: Consultation, body: Mapping[str, Any]) -> Any:
        require_open(c, Status.SCHEDULED, Status.IN_PROGRESS)
        mine = _accepted(c, who)
        at = self.now()
        if not _session_started(c, at):
            raise Conflict("SESSION_NOT_STARTED", "opinions follow the session")
        opinion = {**parse_opinion(body), "filed_at": iso(at)}
        invitations = [replace(i, opinion=opinion) if i is mine else i for i in c.invitations]
        after = move(
            c,
            Status.IN_PROGRESS,
            who,
            "opinion",
            at,
            due_seconds=_left(c, at) if c.status is Status.IN_PROGRESS else self.limits.report,
            invitations=tuple(invitations),
        )
        return after, (), []

    def _sign(self, who: Principal, c: Consultation, body: Mapping[str, Any]) -> Any:
        """The lead expert signs the final report (会诊报告); only once, only the lead."""
        mine = _accepted(c, who)
        if c.report:
            raise Conflict(
                "ALREADY_SIGNED",
                "the report is already signed",
                signed_by=c.report.get("signed_by_name"),
            )
        require_open(c, Status.IN_PROGRESS)
        if not mine.lead:
            raise Forbidden(
                "NOT_LEAD",
                "only the lead expert signs the report",
                lead=(c.lead.expert.name if c.lead else ""),
            )
        opinion = parse_opinion(body)
        at = self.now()
        referral = body.get("recommend_referral")
        report = {
            **opinion,
            "signed_by": who.subject,
            "signed_by_name": mine.expert.name,
            "signed_title": mine.expert.title,
            "institution_id": mine.expert.institution_id,
            "signed_at": iso(at),
            "opinions": [
                {"name": i.expert.name, "department": i.expert.department, **dict(i.opinion)}
                for i in c.accepted
                if i.opinion
            ],
            "recommend_referral": referral if isinstance(referral, dict) else None,
        }
        after = move(
            c,
            Status.REPORTED,
            who,
            "sign",
            at,
            due_seconds=self.limits.acknowledgement,
            report=report,
            reported_at=iso(at),
        )
        return (
            after,
            self._rollups(after),
            [
                (
                    ["requester", "patient"],
                    "ConsultationReported",
                    "会诊报告已签发",
                    opinion["recommendations"][:80],
                )
            ],
        )

    # ================================================================== experts and time
    def _expert(self, c: Consultation, doctor_id: str) -> Party:
        doctor = self.directory.get_doctor(c.consortium_id, doctor_id[:64]) if doctor_id else None
        if doctor is None or not doctor.active or doctor.role != "doctor":
            raise InvalidInput(
                "EXPERT_UNKNOWN", "no such doctor in the consortium", doctor_id=doctor_id
            )
        if doctor.doctor_id == c.requester.subject:
            raise InvalidInput("EXPERT_IS_REQUESTER", "the requester cannot be the expert")
        return Party(
            doctor.doctor_id, doctor.name, doctor.institution_id, doctor.department, doctor.title
        )

    def candidates(self, c: Consultation, exclude: set[str]) -> list[Party]:
        """Doctors of the consulting institution in the wanted specialty (any department
        when none matches), least busy first."""
        doctors = [
            d
            for d in self.directory.list_doctors(c.consortium_id, c.centre_institution_id)
            if d.active
            and d.role == "doctor"
            and d.doctor_id not in exclude
            and d.doctor_id != c.requester.subject
        ]
        wanted = {s.strip() for s in c.specialty.replace("，", ",").split(",") if s.strip()}
        matching = [d for d in doctors if d.department in wanted] or doctors
        ranked = sorted(
            matching, key=lambda d: (self.store.workload(c.consortium_id, d.doctor_id), d.doctor_id)
        )
        return [Party(d.doctor_id, d.name, d.institution_id, d.department, d.title) for d in ranked]

    def _replace_declined(
        self, c: Consultation, invitations: list[Any], gone: list[Any], at: datetime
    ) -> list[Any]:
        exclude = {i.expert.subject for i in invitations}
        fresh = self.candidates(c, exclude)
        seconds = invitation_limit(c.kind, self.limits)
        for old in gone:
            if not fresh:
                break
            expert = fresh.pop(0)
            invitations.append(invite(expert, at, seconds, lead=old.lead))
        return invitations

    def _busy(self, c: Consultation, subject: str, start: datetime, end: datetime) -> str:
        for other in self.store.for_expert(c.consortium_id, subject):
            if other.consultation_id == c.consultation_id or other.status is not Status.SCHEDULED:
                continue
            theirs = other.invitation_of(subject)
            if theirs is None or theirs.state is not InviteState.ACCEPTED:
                continue
            s = other.session or {}
            if not s.get("start"):
                continue
            o_start = datetime.fromisoformat(str(s["start"]))
            o_end = o_start + timedelta(minutes=int(s.get("minutes") or 30))
            if o_start < end and start < o_end:
                return other.consultation_id
        return ""

    def _join(self, c: Consultation, room: str, subject: str) -> str:
        sig = join_token(room, c.consultation_id, subject)
        return f"{self.video_base_url}/{c.consultation_id}-{room}?p={subject}&sig={sig}"

    # ================================================================== the workflow
    def outcome(self, c: Consultation) -> dict[str, Any]:
        """What the state machine routes on: the status, the wait's stage and its seconds."""
        seconds = 1
        if c.due_at:
            seconds = math.ceil((datetime.fromisoformat(c.due_at) - self.now()).total_seconds())
        return {
            "status": str(c.status),
            "stage": STAGE_OF_STATUS.get(c.status, "closed"),
            "wait_seconds": max(1, seconds),
        }

    def start_workflow(self, consultation_id: str) -> dict[str, Any]:
        c, _ = self._load(consultation_id, None)
        return self.outcome(c)

    def await_stage(self, consultation_id: str, stage: str, token: str) -> bool:
        """The workflow entered a wait: keep its token, or, when the consultation already
        left the status the wait is for, complete the wait at once."""
        c, _ = self._load(consultation_id, None)
        status = next((s for s, st in STAGE_OF_STATUS.items() if st == stage), None)
        if status is not None and self.store.register_wait(
            consultation_id, str(status), stage, token
        ):
            return True
        c, _ = self._load(consultation_id, None)
        self.callbacks.resume(token, self.outcome(c))
        return False

    def on_timeout(self, consultation_id: str, stage: str) -> dict[str, Any]:
        """A wait's limit passed: escalate an urgent review, invite the next experts, remind
        before a session and move it on after, complete an unacknowledged report, or
        expire; unless someone acted first (the outcome then routes on their change)."""
        for _ in range(MAX_ATTEMPTS):
            before, token = self._load(consultation_id, None)
            if STAGE_OF_STATUS.get(before.status) != stage:
                return self.outcome(before)
            at = self.now()
            if before.due_at and at < datetime.fromisoformat(before.due_at):
                return self.outcome(before)  # the deadline moved (an action reset it)
            after, tell = self._timeout(before, at)
            try:
                self.store.save(before, after, token=token)
            except self._stale:
                continue
            for recipients, kind, title, text in tell:
                self._tell(after, recipients, kind, title, text)
            return self.outcome(after)
        before, _ = self._load(consultation_id, None)
        return self.outcome(before)

    def _timeout(self, c: Consultation, at: datetime) -> tuple[Consultation, list[Any]]:
        if c.status is Status.REQUESTED and c.kind is Kind.URGENT and not c.escalated:
            after = move(
                c,
                c.status,
                None,
                "escalate",
                at,
                due_seconds=self.limits.escalation,
                escalated=True,
            )
            return after, [
                (
                    ["centre", "admins"],
                    "ConsultationEscalated",
                    "急会诊审核超时",
                    f"{c.consultation_id}：{c.specialty}",
                )
            ]
        if c.status is Status.ASSIGNING:
            return self._invitation_timeout(c, at)
        if c.status is Status.SCHEDULED and c.session:
            start = datetime.fromisoformat(str(c.session["start"]))
            if not c.session.get("reminded"):
                wait = max(1, int((start - at).total_seconds()) + self.limits.session_grace)
                after = move(
                    c,
                    c.status,
                    None,
                    "remind",
                    at,
                    due_seconds=wait,
                    session={**c.session, "reminded": iso(at)},
                )
                return after, [
                    (
                        ["requester", "experts"],
                        "ConsultationReminder",
                        "会诊即将开始",
                        f"会诊时间：{c.session['start']}",
                    )
                ]
            after = move(
                c, Status.IN_PROGRESS, None, "session_held", at, due_seconds=self.limits.report
            )
            return after, []
        if c.status is Status.REPORTED:
            return move(c, Status.COMPLETED, None, "auto_acknowledge", at), []
        reason = {
            Status.REQUESTED: "审核超时",
            Status.MORE_INFO: "补充资料超时",
            Status.SCHEDULED: "未能排期",
            Status.IN_PROGRESS: "会诊报告超时",
        }.get(c.status, "超时")
        after = move(c, Status.EXPIRED, None, "expire", at, note=reason, closed_reason=reason)
        return after, [(["requester", "centre"], "ConsultationExpired", "会诊已过期", reason)]

    def _invitation_timeout(self, c: Consultation, at: datetime) -> tuple[Consultation, list]:
        """Silent experts past their limit expire and the next candidates are invited (up to
        `invitation_rounds` rounds); the request expires when too few experts remain."""
        silent = [
            i
            for i in c.invitations
            if i.state is InviteState.INVITED and datetime.fromisoformat(i.due_at) <= at
        ]
        if not silent:  # nobody's limit passed yet (a decline invited someone later)
            return replace(c, due_at=_earliest_due(c.invitations) or c.due_at), []
        rounds = c.rounds + 1
        invitations = [
            replace(i, state=InviteState.EXPIRED, responded_at=iso(at)) if i in silent else i
            for i in c.invitations
        ]
        if rounds <= self.limits.invitation_rounds:
            invitations = self._replace_declined(c, invitations, silent, at)
        live = [i for i in invitations if i.state in (InviteState.INVITED, InviteState.ACCEPTED)]
        if len(live) < c.required_accepts:
            reason = "专家未在时限内确认"
            after = move(c, Status.EXPIRED, None, "expire", at, note=reason, closed_reason=reason,
                         invitations=tuple(invitations), rounds=rounds)  # fmt: skip
            return after, [(["requester", "centre"], "ConsultationExpired", "会诊已过期", reason)]
        fresh = [
            i for i in invitations if i.state is InviteState.INVITED and i not in c.invitations
        ]
        after = move(c, Status.ASSIGNING, None, "invite_next", at,
                     due_seconds=_seconds_until(_earliest_due(invitations), at),
                     invitations=tuple(invitations), rounds=rounds)  # fmt: skip
        tell = [([f"user:{i.expert.subject}" for i in fresh], "ConsultationInvited", "会诊邀请",
                 c.specialty)]  # fmt: skip
        return after, tell if fresh else []

    # ================================================================== reads
    def get(self, who: Principal, consultation_id: str) -> dict[str, Any]:
        c, _ = self._load(consultation_id, who)
        part = require_party(c, who)
        self._audit(who, AuditAction.READ, "Consultation", c)
        if part == "patient":
            return summary_for_resident(c)
        return self.view(c, who)

    def view(self, c: Consultation, who: Principal) -> dict[str, Any]:
        out = c.to_json()
        if who.role is Role.RESIDENT:
            return summary_for_resident(c)
        mine = c.invitation_of(who.subject)
        if who.subject != c.requester.subject:
            out["session"] = {
                k: v for k, v in (out["session"] or {}).items() if k != "requester_join_url"
            } or None
        for inv in out["invitations"]:
            if inv["expert"]["subject"] != who.subject:
                inv["join_url"] = ""
        out["my_part"] = (
            "expert"
            if mine
            else (
                "requester"
                if who.subject == c.requester.subject
                else "centre"
                if who.role in CENTRE_ROLES
                else ""
            )
        )
        out["actions"] = self.allowed(c, who)
        return out

    def allowed(self, c: Consultation, who: Principal) -> list[str]:
        if not c.is_open or who.role is Role.RESIDENT:
            return []
        out: list[str] = []
        centre = who.role in CENTRE_ROLES
        requester = who.subject == c.requester.subject
        mine = c.invitation_of(who.subject)
        s = c.status
        if centre and s is Status.REQUESTED:
            out += ["accept", "return", "decline"]
        if centre and s is Status.MORE_INFO:
            out += ["decline"]
        if centre and s is Status.SCHEDULED:
            out += ["schedule", "no_show"]
        if centre and s is Status.IN_PROGRESS:
            out += ["no_show"]
        if requester and s is Status.MORE_INFO:
            out += ["amend"]
        if (requester or centre) and s not in (Status.REPORTED,):
            out += ["cancel"]
        if requester and s is Status.REPORTED:
            out += ["acknowledge"]
        if mine and mine.state is InviteState.INVITED and s is Status.ASSIGNING:
            out += ["respond"]
        if (
            mine
            and mine.state is InviteState.ACCEPTED
            and s in (Status.SCHEDULED, Status.IN_PROGRESS)
        ):
            out += ["opinion"] if _session_started(c, self.now()) else []
            if mine.lead and s is Status.IN_PROGRESS and not c.report:
                out += ["sign"]
        return sorted(set(out))

    def candidate_list(self, who: Principal, consultation_id: str) -> dict[str, Any]:
        """Experts the centre may invite: the specialty at the consulting institution,
        least busy first (with their workload)."""
        _centre(who)
        c, _ = self._load(consultation_id, who)
        exclude = {i.expert.subject for i in c.invitations}
        rows = []
        for p in self.candidates(c, exclude):
            workload = self.store.workload(c.consortium_id, p.subject)
            rows.append(
                {
                    "doctor_id": p.subject,
                    "name": p.name,
                    "institution_id": p.institution_id,
                    "department": p.department,
                    "title": p.title,
                    "workload": workload,
                }
            )
        return {"candidates": rows}

    def board(self, who: Principal) -> dict[str, Any]:
        """会诊中心: every open consultation, grouped by status, overdue first."""
        _centre(who)
        items = self.store.open_ones(who.consortium_id)
        at = iso(self.now())
        rows = [{**_row(c), "overdue": bool(c.due_at and c.due_at < at)} for c in items]
        return {"consultations": rows}

    def worklist(self, who: Principal) -> dict[str, Any]:
        """An expert's invitations and consultations; the requesting doctor's own requests."""
        who.require_role(Role.DOCTOR)
        mine = self.store.for_expert(who.consortium_id, who.subject)
        asked = [
            c
            for c in self.store.for_requesting(who.consortium_id, who.institution_id or "")
            if c.requester.subject == who.subject
        ]
        calendar = [
            {
                "consultation_id": c.consultation_id,
                "start": c.session["start"],
                "minutes": c.session.get("minutes"),
                "specialty": c.specialty,
                "join_url": (
                    c.invitation_of(who.subject).join_url if c.invitation_of(who.subject) else ""
                ),
            }
            for c in mine
            if c.session
            and c.status is Status.SCHEDULED
            and (inv := c.invitation_of(who.subject)) is not None
            and inv.state is InviteState.ACCEPTED
        ]
        calendar += [  # the requester joins their own sessions too
            {
                "consultation_id": c.consultation_id,
                "start": c.session["start"],
                "minutes": c.session.get("minutes"),
                "specialty": c.specialty,
                "join_url": c.session.get("requester_join_url", ""),
            }
            for c in asked
            if c.session and c.status is Status.SCHEDULED
        ]
        return {
            "as_expert": [
                {**_row(c), "my_state": str(c.invitation_of(who.subject).state)}
                for c in mine
                if c.invitation_of(who.subject)
            ],
            "requested": [_row(c) for c in asked],
            "calendar": sorted(calendar, key=lambda e: e["start"]),
        }

    def for_resident(self, who: Principal, person_id: str | None = None) -> dict[str, Any]:
        who.require_role(Role.RESIDENT)
        pid = person_id or who.person_id or ""
        if pid != who.person_id:
            raise Forbidden("NOT_YOUR_RECORD", "a resident reads only their own consultations")
        items = self.store.for_patient(who.consortium_id, pid)
        self.audit.record(AuditEvent.by(who, AuditAction.SEARCH, "Consultation.search", (pid,)))
        return {"consultations": [summary_for_resident(c) for c in items]}

    # ================================================================== accounting
    def _rollups(self, c: Consultation) -> list[tuple[str, str, dict[str, Any], dict[str, int]]]:
        """工作量/费用: per expert who gave an opinion (or every accepted one), the fee by
        tariff, split between the consulting institution and the requester's."""
        month = c.created_at[:7]
        pk = f"ACCT#{c.consortium_id}#{month[:4]}"
        minutes = minutes_between(c.created_at, c.reported_at)
        out: list[tuple[str, str, dict[str, Any], dict[str, int]]] = []
        inst_totals: dict[tuple[str, str], dict[str, int]] = {}
        for inv in c.accepted:
            fee = self.tariff.fee(str(c.kind), inv.expert.title) * 100  # fen
            consulting = round(fee * self.tariff.consulting_share)
            out.append(
                (
                    pk,
                    f"{month}#E#{inv.expert.subject}",
                    {
                        "expert_name": inv.expert.name,
                        "department": inv.expert.department,
                        "institution_id": inv.expert.institution_id,
                        "title": inv.expert.title,
                    },
                    {"n": 1, f"n_{c.kind}": 1, "fee_fen": fee, f"m_{report_bucket(minutes)}": 1},
                )
            )
            for key, counters in (
                ((inv.expert.institution_id, "consulting"), {"fee_fen": consulting}),
                ((c.requester.institution_id, "requesting"), {"fee_fen": fee - consulting}),
            ):
                total = inst_totals.setdefault(key, {"fee_fen": 0})
                total["fee_fen"] += counters["fee_fen"]
        for (inst, side), counters in inst_totals.items():
            out.append(
                (
                    pk,
                    f"{month}#I#{inst}#{side}",
                    {"institution_id": inst, "side": side},
                    {**counters, "n": 1, f"n_{c.kind}": 1},
                )
            )
        return out

    def accounting(self, who: Principal, query: Mapping[str, str]) -> dict[str, Any]:
        """Per expert, department and institution over months [from, to]: consultations by
        kind, the median minutes from request to report (merged bucketed histograms,
        interpolated), fees (yuan) and the split between consulting and requesting
        institutions."""
        who.require_role(*CENTRE_ROLES, Role.INSTITUTION_ADMIN, Role.DOCTOR)
        first, last = _month(query.get("from"), self.now()), _month(query.get("to"), self.now())
        if first > last:
            raise InvalidInput("PERIOD_INVALID", "from is before to (YYYY-MM)")
        experts, institutions = _aggregate(self.store.rollups(who.consortium_id, first, last))
        if who.role is Role.DOCTOR:
            experts = {k: v for k, v in experts.items() if k == who.subject}
            institutions = {}
        elif who.role is Role.INSTITUTION_ADMIN:
            experts = {
                k: v for k, v in experts.items() if v["institution_id"] == who.institution_id
            }
            institutions = {k: v for k, v in institutions.items() if k == who.institution_id}
        departments = _by_department(experts.values())
        return {
            "from": first,
            "to": last,
            "experts": sorted((_finish(e) for e in experts.values()), key=lambda r: -r["n"]),
            "departments": sorted(
                (_finish(d) for d in departments.values()), key=lambda r: -r["n"]
            ),
            "institutions": sorted(
                (_yuan(i) for i in institutions.values()), key=lambda r: r["institution_id"]
            ),
        }

    # ================================================================== the record
    def _file_report(self, c: Consultation) -> None:
        """The signed report joins the patient's record as a 会诊记录 (LOINC 11488-4)."""
        if self.records is None or not c.report:
            return
        lead = c.lead
        if lead is None:
            return
        who = Principal(
            lead.expert.subject,
            Role.DOCTOR,
            c.consortium_id,
            lead.expert.institution_id,
            None,
            lead.expert.name,
        )
        self.records.submit(who, consult_bundle(c))

    # ================================================================== helpers
    def _load(self, consultation_id: str, who: Principal | None) -> tuple[Consultation, str | None]:
        found = self.store.get(consultation_id) if consultation_id else None
        if found is None or (who is not None and found[0].consortium_id != who.consortium_id):
            raise NotFound("CONSULTATION_NOT_FOUND", f"no consultation {consultation_id!r}")
        return found

    def _audit(self, who: Principal, action: AuditAction, what: str, c: Consultation) -> None:
        self.audit.record(
            AuditEvent.by(
                who, action, what, (c.person_id,), detail={"consultation_id": c.consultation_id}
            )
        )

    def _tell(
        self, c: Consultation, recipients: list[str], kind: str, title: str, body: str
    ) -> None:
        if self.notices is None:
            return
        from yilian.services.notifications import Notification

        targets: list[str] = []
        for r in recipients:
            if r == "requester":
                targets.append(f"user:{c.requester.subject}")
            elif r == "experts":
                targets += [f"user:{i.expert.subject}" for i in c.accepted]
            elif r == "centre":
                targets.append("centre")
            elif r == "patient":
                targets.append(f"person:{c.person_id}")
            else:
                targets.append(r)
        for n, target in enumerate(dict.fromkeys(targets)):
            self.notices.deliver(
                Notification(
                    notification_id=f"{c.consultation_id}-v{c.version}-{n}",
                    consortium_id=c.consortium_id,
                    recipient=target,
                    kind=kind,
                    title=title,
                    body=body,
                    at=c.updated_at,
                )
            )


ACTIONS: dict[str, Callable[..., Any]] = {
    "accept": ConsultationService._accept,
    "return": ConsultationService._return,
    "decline": ConsultationService._decline,
    "schedule": ConsultationService._schedule,
    "no_show": ConsultationService._no_show,
    "amend": ConsultationService._amend,
    "cancel": ConsultationService._cancel,
    "acknowledge": ConsultationService._acknowledge,
    "respond": ConsultationService._respond,
    "opinion": ConsultationService._opinion,
    "sign": ConsultationService._sign,
}


def _centre(who: Principal) -> None:
    if who.role not in CENTRE_ROLES:
        raise Forbidden("NOT_THE_CENTRE", "the consultation centre decides this")


def _requester(who: Principal, c: Consultation) -> None:
    if who.subject != c.requester.subject:
        raise Forbidden("NOT_THE_REQUESTER", "only the requesting doctor does this")


def _accepted(c: Consultation, who: Principal) -> Any:
    mine = c.invitation_of(who.subject)
    if mine is None or mine.state is not InviteState.ACCEPTED:
        raise Forbidden("NOT_ASSIGNED", "only the assigned experts file opinions and reports")
    return mine


def _session_started(c: Consultation, at: datetime) -> bool:
    """Opinions follow the session: a video consultation's once its session began."""
    if c.status is not Status.SCHEDULED:
        return True
    return bool(c.session) and at >= datetime.fromisoformat(str((c.session or {})["start"]))


def _settle_lead(c: Consultation) -> list[Any]:
    """Exactly one accepted lead: the invited lead if they accepted, else the first to accept."""
    if c.lead is not None:
        return list(c.invitations)
    first = c.accepted[0]
    return [
        replace(i, lead=i is first) if i.state is InviteState.ACCEPTED else replace(i, lead=False)
        for i in c.invitations
    ]


def _earliest_due(invitations: Any) -> str:
    """The limit of the first open invitation to run out ("" when none is open)."""
    return min((i.due_at for i in invitations if i.state is InviteState.INVITED), default="")


def _seconds_until(due: str, at: datetime) -> int:
    return max(1, int((datetime.fromisoformat(due) - at).total_seconds())) if due else 1


def _left(c: Consultation, at: datetime) -> int:
    if not c.due_at:
        return 1
    return max(1, int((datetime.fromisoformat(c.due_at) - at).total_seconds()))


def _reason(body: Mapping[str, Any]) -> str:
    reason = str(body.get("reason") or "").strip()
    if len(reason) < 2 or len(reason) > 500:
        raise InvalidInput("REASON_REQUIRED", "give a reason (2-500 characters)", field="reason")
    return reason


def _when(raw: Any) -> datetime:
    try:
        when = datetime.fromisoformat(str(raw))
    except ValueError:
        raise InvalidInput("START_INVALID", "start is an ISO date-time with its offset") from None
    if when.tzinfo is None:
        raise InvalidInput("START_INVALID", "start is an ISO date-time with its offset")
    return when


def _month(raw: str | None, now: datetime) -> str:
    value = (raw or now.strftime("%Y-%m"))[:7]
    if (
        len(value) != 7
        or value[4] != "-"
        or not (value[:4] + value[5:]).isdigit()
        or not 1 <= int(value[5:]) <= 12
    ):
        raise InvalidInput("PERIOD_INVALID", "from and to are months: YYYY-MM")
    return value


def _merge(row: dict[str, Any], item: Mapping[str, Any]) -> None:
    """ADD one rollup's counters (n, fee, n_{kind}, m_{minutes}) into an accounting row."""
    row["n"] += item.get("n", 0)
    row["fee_fen"] += item.get("fee_fen", 0)
    for k, v in item.items():
        if k.startswith("n_"):
            row["by_kind"][k[2:]] = row["by_kind"].get(k[2:], 0) + v
        elif k.startswith("m_"):
            row["hist"][int(k[2:])] = row["hist"].get(int(k[2:]), 0) + v


def _aggregate(items: list[dict[str, Any]]) -> tuple[dict[str, dict], dict[str, dict]]:
    """Rollup items -> (expert rows by doctor id, institution rows by institution id)."""
    experts: dict[str, dict[str, Any]] = {}
    institutions: dict[str, dict[str, Any]] = {}
    for it in items:
        if "#E#" in it["sk"]:
            doctor_id = it["sk"].split("#E#")[1]
            row = experts.setdefault(
                doctor_id,
                {
                    "doctor_id": doctor_id,
                    "name": it.get("expert_name"),
                    "department": it.get("department"),
                    "institution_id": it.get("institution_id"),
                    "title": it.get("title"),
                    "n": 0,
                    "by_kind": {},
                    "fee_fen": 0,
                    "hist": {},
                },
            )
            _merge(row, it)
        elif "#I#" in it["sk"]:
            inst = institutions.setdefault(
                it["institution_id"],
                {
                    "institution_id": it["institution_id"],
                    "consulting_n": 0,
                    "requesting_n": 0,
                    "fee_received_fen": 0,
                    "fee_retained_fen": 0,
                },
            )
            side = "consulting" if it.get("side") == "consulting" else "requesting"
            inst[f"{side}_n"] += it.get("n", 0)
            inst["fee_received_fen" if side == "consulting" else "fee_retained_fen"] += it.get(
                "fee_fen", 0
            )
    return experts, institutions


def _by_department(experts: Any) -> dict[tuple[str, str], dict[str, Any]]:
    departments: dict[tuple[str, str], dict[str, Any]] = {}
    for e in experts:
        d = departments.setdefault(
            (e["institution_id"], e["department"]),
            {
                "institution_id": e["institution_id"],
                "department": e["department"],
                "n": 0,
                "by_kind": {},
                "fee_fen": 0,
                "hist": {},
            },
        )
        _merge(
            d,
            {
                "n": e["n"],
                "fee_fen": e["fee_fen"],
                **{f"n_{k}": v for k, v in e["by_kind"].items()},
                **{f"m_{m}": v for m, v in e["hist"].items()},
            },
        )
    return departments


def _finish(row: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in row.items() if k != "hist"}
    out["median_minutes_to_report"] = bucket_median(row["hist"])
    out["fee_yuan"] = row["fee_fen"] / 100
    return out


def _yuan(row: dict[str, Any]) -> dict[str, Any]:
    return {
        **row,
        "fee_received_yuan": row["fee_received_fen"] / 100,
        "fee_retained_yuan": row["fee_retained_fen"] / 100,
    }


def _row(c: Consultation) -> dict[str, Any]:
    return {
        "consultation_id": c.consultation_id,
        "person_id": c.person_id,
        "patient_name": c.patient.get("name", ""),
        "kind": str(c.kind),
        "mode": str(c.mode),
        "specialty": c.specialty,
        "status": str(c.status),
        "created_at": c.created_at,
        "due_at": c.due_at,
        "escalated": c.escalated,
        "requester": {"name": c.requester.name, "institution_id": c.requester.institution_id},
        "centre_institution_id": c.centre_institution_id,
        "experts": [
            {"name": i.expert.name, "state": str(i.state), "lead": i.lead} for i in c.invitations
        ],
        "session_start": (c.session or {}).get("start"),
        "version": c.version,
    }


def _kind_name(kind: Kind) -> str:
    return {Kind.ROUTINE: "普通会诊", Kind.URGENT: "急会诊", Kind.MDT: "多学科会诊"}[kind]


def consult_bundle(c: Consultation) -> dict[str, Any]:
    """The signed report as a FHIR transaction: a DocumentReference typed 11488-4 (Consult
    note → 会诊记录), named after the consultation so a re-filing is the same document."""
    r = c.report or {}
    lines = [
        f"会诊类型：{_kind_name(c.kind)}（{'视频' if c.mode is Mode.VIDEO else '书面'}）",
        f"申请：{c.requester.name}（{c.requester.institution_id}）",
        f"会诊目的：{c.question}",
        f"会诊意见：{r.get('findings', '')}",
        f"建议：{r.get('recommendations', '')}",
    ]
    for o in r.get("opinions") or []:
        lines.append(
            f"{o.get('name')}（{o.get('department')}）：{o.get('findings')}；{o.get('recommendations')}"
        )
    lines.append(
        f"签发：{r.get('signed_by_name')} {r.get('signed_title', '')} {r.get('signed_at')}"
    )
    text = "\n".join(lines)
    doc = {
        "resourceType": "DocumentReference",
        "status": "current",
        "docStatus": "final",
        "type": {
            "coding": [{"system": "http://loinc.org", "code": "11488-4", "display": "会诊记录"}],
            "text": "会诊记录",
        },
        "subject": {"reference": f"Patient/{c.person_id}"},
        "date": r.get("signed_at"),
        "author": [{"display": str(r.get("signed_by_name") or "")}],
        "description": f"{c.specialty}会诊报告",
        "content": [
            {
                "attachment": {
                    "contentType": "text/plain; charset=utf-8",
                    "language": "zh-CN",
                    "title": "会诊报告",
                    "data": base64.b64encode(text.encode()).decode(),
                    "creation": r.get("signed_at"),
                }
            }
        ],
    }
    return {
        "resourceType": "Bundle",
        "type": "transaction",
        "identifier": {
            "system": f"https://yilian.example/fhir/sid/document/{r.get('institution_id')}",
            "value": f"consultation-{c.consultation_id}",
        },
        "timestamp": r.get("signed_at"),
        "entry": [
            {
                "fullUrl": "urn:uuid:00000000-0000-4000-8000-0000000000c1",
                "resource": doc,
                "request": {"method": "POST", "url": "DocumentReference"},
            }
        ],
    }


__all__ = ["ACTIVE", "ConsultationService"]
