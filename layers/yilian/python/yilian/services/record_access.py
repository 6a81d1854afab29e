"""Record access as a use case: the guard every read of a person's record passes (`open`),
consents, proxies (dependents), break-glass, the resident's access log and the admins'
audit search.

`open` gathers the facts the rules need (cheapest first), asks `yilian.domain.access.decide`
and audits the outcome — allowed or denied — before any data is read. Other services (the
imaging issue's study views, consultations) call `open` the same way: one call, one place.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, Protocol

from yilian.domain.access import (
    AccessFacts,
    Basis,
    BreakGlass,
    Consent,
    Decision,
    Proxy,
    RecordPolicy,
    Relation,
    decide,
    guardian_until,
    is_minor,
    new_break_glass,
    new_consent,
    revoke,
)
from yilian.domain.audit import AuditAction, AuditEvent, AuditOutcome
from yilian.domain.clock import iso, now, parse_time
from yilian.domain.errors import Conflict, Forbidden, InvalidInput, NotFound
from yilian.domain.person import Person
from yilian.domain.principal import CLINICAL_ROLES, Principal, Role
from yilian.services.ports import AuditSink, InstitutionDirectory

BREAK_GLASS_FLAG = "break_glass"
NAME_CACHE_SECONDS = 300


class GrantStore(Protocol):
    def access_facts(
        self, person_id: str
    ) -> tuple[list[Consent], list[Proxy], list[BreakGlass]]: ...
    def put_consent(self, consent: Consent, *, new: bool) -> None: ...
    def put_proxy(self, proxy: Proxy) -> None: ...
    def dependents(self, proxy_person_id: str) -> list[Proxy]: ...
    def put_break_glass(self, grant: BreakGlass) -> None: ...


class Persons(Protocol):
    def get_person(self, person_id: str) -> Person | None: ...
    def get_persons(self, person_ids: Any) -> dict[str, Person]: ...


class Care(Protocol):
    def find(self, who: Principal, person_id: str, now: datetime) -> str | None: ...


class AuditReader(Protocol):
    def query(
        self, by: str, consortium_id: str, value: str, *, since: str = "", until: str = "",
        limit: int = 100, cursor: str | None = None,
    ) -> tuple[list[dict[str, Any]], str | None]: ...  # fmt: skip


class Notices(Protocol):
    def deliver(self, notification: Any) -> None: ...


@dataclass(frozen=True, slots=True)
class Access:
    """An opened record: the person (the survivor, if the id given was merged away), the
    ids whose documents make up their record, and the decision that allowed it."""

    person: Person
    decision: Decision

    @property
    def person_ids(self) -> tuple[str, ...]:
        return (self.person.person_id, *self.person.replaces)


class RecordAccess:
    def __init__(
        self,
        grants: GrantStore,
        persons: Persons,
        care: Care,
        audit: AuditSink,
        directory: InstitutionDirectory,
        *,
        audit_reader: AuditReader | None = None,
        notices: Notices | None = None,
        policy: RecordPolicy | None = None,
        clock: Callable[[], datetime] = now,
    ) -> None:
        self.grants = grants
        self.persons = persons
        self.care = care
        self.audit = audit
        self.directory = directory
        self.audit_reader = audit_reader
        self.notices = notices
        self.policy = policy or RecordPolicy()
        self.clock = clock
        self._names: dict[tuple[str, str], tuple[float, str]] = {}

    # ------------------------------------------------------------------ the guard
    def open(
        self,
        who: Principal,
        person_id: str,
        action: AuditAction,
        what: str,
        detail: Mapping[str, str] | None = None,
    ) -> Access:
        """Allow or refuse `who` reading `person_id`'s record; audit either way."""
        person = self._person(who, person_id, action, what)
        at = self.clock()
        decision = decide(who, person.person_id, self._facts(who, person, at), at)
        if not decision.allowed:
            self._record(who, action, what, person.person_id, decision, detail)
            raise Forbidden(
                decision.code,
                _DENIED.get(decision.code, "you may not read this person's record"),
                break_glass_allowed=decision.break_glass_allowed,
                person_id=person.person_id,  # a document link's refusal can offer break-glass
            )
        self._record(who, action, what, person.person_id, decision, detail)
        return Access(person, decision)

    def _person(self, who: Principal, person_id: str, action: AuditAction, what: str) -> Person:
        person = self.persons.get_person(person_id[:64])
        if person is not None and person.merged_into:
            person = self.persons.get_person(person.merged_into) or person
        if person is None:
            raise NotFound("PERSON_NOT_FOUND", "no such person")
        if person.consortium_id != who.consortium_id:
            denied = Decision(False, code="CROSS_CONSORTIUM")
            self._record(who, action, what, person_id, denied, None)
            raise Forbidden("CROSS_CONSORTIUM", "this person belongs to another consortium")
        return person

    def _facts(self, who: Principal, person: Person, at: datetime) -> AccessFacts:
        if who.role is Role.RESIDENT and who.person_id == person.person_id:
            return AccessFacts()
        if who.role not in (Role.RESIDENT, Role.DOCTOR):
            return AccessFacts()
        consents, proxies, glass = self.grants.access_facts(person.person_id)
        facts = AccessFacts(tuple(proxies), tuple(consents), None, ())
        if who.role is Role.DOCTOR and not decide(who, person.person_id, facts, at).allowed:
            # Care relationships cost a query per source: asked only when a consent does
            # not already allow the read; asked before break-glass, so a doctor who also
            # has a relationship is not logged as an emergency.
            facts = replace(facts, care=self.care.find(who, person.person_id, at))
        return replace(facts, break_glass=tuple(glass))

    def _record(
        self,
        who: Principal,
        action: AuditAction,
        what: str,
        person_id: str,
        decision: Decision,
        detail: Mapping[str, str] | None,
    ) -> None:
        info = dict(detail or {})
        if decision.allowed:
            info["basis"] = str(decision.basis)
            info.update({k: v for k, v in decision.detail.items() if k != "reason"})
            if decision.emergency:
                info["reason"] = decision.detail.get("reason", "")
        else:
            info["denied"] = decision.code
        self.audit.record(
            AuditEvent.by(
                who, action, what, (person_id,),
                outcome=AuditOutcome.SUCCESS if decision.allowed else AuditOutcome.DENIED,
                detail=info,
                purpose="emergency" if decision.emergency else "treatment",
                flag=BREAK_GLASS_FLAG if decision.emergency else "",
            )
        )  # fmt: skip

    # ------------------------------------------------------------------ break-glass
    def break_glass(self, who: Principal, person_id: str, reason: str) -> dict[str, Any]:
        """紧急调阅: a doctor without a relationship opens the record for a few hours, saying
        why. Flagged in the audit trail for the consortium admin; the resident is told."""
        who.require_role(Role.DOCTOR)
        what = "Record.break_glass"
        person = self._person(who, person_id, AuditAction.READ, what)
        at = self.clock()
        grant = new_break_glass(
            "g" + secrets.token_hex(8), person.person_id, who, reason, at, self.policy
        )
        self.grants.put_break_glass(grant)
        decision = Decision(True, Basis.BREAK_GLASS, detail={"grant_id": grant.grant_id,
                                                             "reason": grant.reason})  # fmt: skip
        self._record(who, AuditAction.READ, what, person.person_id, decision, None)
        self._tell_break_glass(who, person, grant)
        return {"grant_id": grant.grant_id, "person_id": person.person_id,
                "expires_at": grant.expires_at, "reason": grant.reason}  # fmt: skip

    def _tell_break_glass(self, who: Principal, person: Person, grant: BreakGlass) -> None:
        if self.notices is None:
            return
        from yilian.services.notifications import Notification

        inst = self.directory.get_institution(who.consortium_id, grant.institution_id)
        place = inst.name if inst else grant.institution_id
        body = f"{place} {who.name or who.subject} 医生因紧急情况调阅了您的健康档案：{grant.reason}"
        for recipient in (f"person:{person.person_id}", "admins"):
            self.notices.deliver(
                Notification(
                    notification_id=f"{grant.grant_id}-{recipient.split(':')[0]}",
                    consortium_id=who.consortium_id, recipient=recipient,
                    kind="RecordBreakGlass", title="健康档案紧急调阅", body=body,
                    at=grant.started_at,
                )
            )  # fmt: skip

    # ------------------------------------------------------------------ consents
    def _as_person(self, who: Principal, person_id: str | None) -> Person:
        """The resident themself, or a dependent they are the active proxy for."""
        who.require_role(Role.RESIDENT)
        target = person_id or who.person_id or ""
        what = "Record.consent"
        person = self._person(who, target, AuditAction.READ, what)
        at = self.clock()
        decision = decide(who, person.person_id, self._facts(who, person, at), at)
        if not decision.allowed:
            self._record(who, AuditAction.READ, what, person.person_id, decision, None)
            raise Forbidden("NOT_YOUR_RECORD", "you act only for yourself and your dependents")
        return person

    def consents(self, who: Principal, person_id: str | None = None) -> dict[str, Any]:
        person = self._as_person(who, person_id)
        consents, _, _ = self.grants.access_facts(person.person_id)
        at = self.clock()
        names = self.institution_names(who.consortium_id, {c.institution_id for c in consents})
        items = sorted(consents, key=lambda c: c.granted_at, reverse=True)
        return {"person_id": person.person_id, "items": [
            c.view(at) | {"institution_name": names.get(c.institution_id, "")} for c in items
        ]}  # fmt: skip

    def grant_consent(self, who: Principal, body: Mapping[str, Any]) -> dict[str, Any]:
        person = self._as_person(who, body.get("person_id"))
        institution_id = str(body.get("institution_id") or "")
        inst = self.directory.get_institution(who.consortium_id, institution_id)
        if inst is None or not inst.active or not inst.in_county:
            raise InvalidInput(
                "UNKNOWN_INSTITUTION", "consent is given to an institution of this consortium"
            )
        at = self.clock()
        start = parse_time(body["valid_from"], "valid_from") if body.get("valid_from") else at
        until = parse_time(str(body.get("valid_until") or ""), "valid_until")
        consent = new_consent(
            "c" + secrets.token_hex(8), person.person_id, institution_id, start, until, who,
            at, self.policy, str(body.get("note") or "")[:200],
        )  # fmt: skip
        self.grants.put_consent(consent, new=True)
        self._record_change(
            who,
            AuditAction.CREATE,
            "Consent",
            person.person_id,
            {"consent_id": consent.consent_id, "institution_id": institution_id},
        )
        return consent.view(at) | {"institution_name": inst.name}

    def revoke_consent(
        self, who: Principal, consent_id: str, person_id: str | None = None
    ) -> dict[str, Any]:
        person = self._as_person(who, person_id)
        consents, _, _ = self.grants.access_facts(person.person_id)
        consent = next((c for c in consents if c.consent_id == consent_id), None)
        if consent is None:
            raise NotFound("CONSENT_NOT_FOUND", "no such consent")
        if consent.revoked_at:
            raise Conflict("CONSENT_REVOKED", "this consent was revoked already")
        at = self.clock()
        revoked = revoke(consent, who, at)
        self.grants.put_consent(revoked, new=False)
        self._record_change(who, AuditAction.UPDATE, "Consent.revoke", person.person_id,
                            {"consent_id": consent_id})  # fmt: skip
        return revoked.view(at)

    # ------------------------------------------------------------------ proxies
    def add_proxy(self, who: Principal, body: Mapping[str, Any]) -> dict[str, Any]:
        """Recorded by clinic staff who saw the papers (household register for a child, the
        elder in person for a delegation): residents cannot name themselves proxies."""
        who.require_role(Role.DOCTOR, Role.INSTITUTION_ADMIN)
        person = self._load_member(who, str(body.get("person_id") or ""))
        proxy_person = self._load_member(who, str(body.get("proxy_person_id") or ""))
        if person.person_id == proxy_person.person_id:
            raise InvalidInput("SAME_PERSON", "a person cannot be their own proxy")
        at = self.clock()
        try:
            relation = Relation(str(body.get("relation") or ""))
        except ValueError:
            raise InvalidInput("RELATION_INVALID", "relation is child or delegated") from None
        if relation is Relation.CHILD:
            if not is_minor(person.birth_date, at.date()):
                raise InvalidInput("NOT_A_MINOR", "a guardian is recorded for a minor only")
            until = guardian_until(person.birth_date)
        else:
            until = iso(parse_time(str(body.get("valid_until") or ""), "valid_until"))
            if until <= iso(at):
                raise InvalidInput("DELEGATION_IN_PAST", "a delegation must end in the future")
            if (parse_time(until) - at).days > self.policy.delegation_max_days:
                raise InvalidInput("DELEGATION_TOO_LONG", "a delegation lasts at most 3 years")
        proxy = Proxy(person.person_id, proxy_person.person_id, relation, iso(at), until,
                      who.subject, iso(at))  # fmt: skip
        self.grants.put_proxy(proxy)
        self._record_change(
            who, AuditAction.CREATE, "Proxy", person.person_id,
            {"proxy_person_id": proxy_person.person_id, "relation": str(relation)},
        )  # fmt: skip
        return proxy.view(at)

    def revoke_delegation(self, who: Principal, proxy_person_id: str) -> dict[str, Any]:
        """An adult ends a delegation they gave (a guardian of a child is not revocable by
        the child; it ends at 18)."""
        person = self._as_person(who, None)
        _, proxies, _ = self.grants.access_facts(person.person_id)
        proxy = next((p for p in proxies if p.proxy_person_id == proxy_person_id), None)
        if proxy is None or proxy.revoked_at:
            raise NotFound("PROXY_NOT_FOUND", "no such active delegation")
        if proxy.relation is not Relation.DELEGATED:
            raise Forbidden("GUARDIAN_NOT_REVOCABLE", "a guardian's access ends at 18")
        at = self.clock()
        ended = replace(proxy, revoked_at=iso(at))
        self.grants.put_proxy(ended)
        self._record_change(who, AuditAction.UPDATE, "Proxy.revoke", person.person_id,
                            {"proxy_person_id": proxy_person_id})  # fmt: skip
        return ended.view(at)

    def dependents(self, who: Principal) -> dict[str, Any]:
        """Whose records I may read, and who may read mine."""
        who.require_role(Role.RESIDENT)
        at = self.clock()
        mine = [p for p in self.grants.dependents(who.person_id or "") if p.active(at)]
        _, proxies, _ = self.grants.access_facts(who.person_id or "")
        readers = [p for p in proxies if p.active(at)]
        ids = {p.person_id for p in mine} | {p.proxy_person_id for p in readers}
        persons = self.persons.get_persons(ids) if ids else {}

        def name(pid: str) -> str:
            return persons[pid].name if pid in persons else ""

        return {
            "dependents": [p.view(at) | {"name": name(p.person_id)} for p in mine],
            "proxies": [p.view(at) | {"name": name(p.proxy_person_id)} for p in readers],
        }

    def _load_member(self, who: Principal, person_id: str) -> Person:
        person = self.persons.get_person(person_id[:64]) if person_id else None
        if person is None or not person.active:
            raise NotFound("PERSON_NOT_FOUND", "no such person", person_id=person_id[:64])
        who.require_consortium(person.consortium_id)
        return person

    # ------------------------------------------------------------------ audit reads
    def access_log(
        self, who: Principal, person_id: str | None = None, limit: int = 100
    ) -> dict[str, Any]:
        """Who looked at my record (or my dependent's): newest first, break-glass marked."""
        person = self._as_person(who, person_id)
        assert self.audit_reader is not None
        events: list[dict[str, Any]] = []
        for pid in (person.person_id, *person.replaces):
            events += self.audit_reader.query("person", who.consortium_id, pid, limit=limit)[0]
        events.sort(key=lambda e: e["recorded"], reverse=True)
        names = self.institution_names(
            who.consortium_id, {e["agent"].get("institution") or "" for e in events}
        )
        return {"person_id": person.person_id,
                "items": [_log_view(e, names, who) for e in events[:limit]]}  # fmt: skip

    def search_audit(self, who: Principal, query: Mapping[str, str]) -> dict[str, Any]:
        """Admins: by actor, by person, or the flagged (break-glass) events; an institution
        admin sees only what their own institution's staff did."""
        who.require_role(Role.CONSORTIUM_ADMIN, Role.INSTITUTION_ADMIN)
        assert self.audit_reader is not None
        by, value = _audit_selector(query)
        since, until = query.get("from") or "", query.get("to") or ""
        raw_limit = query.get("limit") or "100"
        if not raw_limit.isdigit():
            raise InvalidInput("LIMIT_INVALID", "limit is a number of events (1-500)")
        limit = min(500, max(1, int(raw_limit)))
        events, cursor = self.audit_reader.query(
            by, who.consortium_id, value, since=since, until=until, limit=limit,
            cursor=query.get("cursor") or None,
        )  # fmt: skip
        if who.role is Role.INSTITUTION_ADMIN:
            events = [e for e in events if e["agent"].get("institution") == who.institution_id]
        self.audit.record(AuditEvent.by(
            who, AuditAction.SEARCH, "AuditEvent.search",
            (value,) if by == "person" else (),
            detail={"by": by},
        ))  # fmt: skip
        return {"by": by, "value": value, "items": events, "cursor": cursor}

    # ------------------------------------------------------------------ helpers
    def _record_change(
        self, who: Principal, action: AuditAction, what: str, person_id: str,
        detail: dict[str, str],
    ) -> None:  # fmt: skip
        self.audit.record(AuditEvent.by(who, action, what, (person_id,), detail=detail))

    def institution_names(self, consortium_id: str, ids: set[str]) -> dict[str, str]:
        """Names to show beside documents and log lines; kept for NAME_CACHE_SECONDS in a
        warm function (a timeline names the same few institutions on every read)."""
        at = self.clock().timestamp()
        out = {}
        for i in ids - {""}:
            cached = self._names.get((consortium_id, i))
            if cached is None or at - cached[0] > NAME_CACHE_SECONDS:
                inst = self.directory.get_institution(consortium_id, i)
                cached = (at, inst.name if inst is not None else "")
                self._names[(consortium_id, i)] = cached
            if cached[1]:
                out[i] = cached[1]
        return out


_DENIED = {
    "NOT_YOUR_RECORD": "a resident reads only their own and their dependents' records",
    "ROLE_NOT_ALLOWED": "only doctors read clinical records; admins use the audit trail",
    "NO_CARE_RELATIONSHIP": (
        "no care relationship, consent or emergency grant for this person: "
        "use break-glass with a reason if this is an emergency"
    ),
}


def _audit_selector(query: Mapping[str, str]) -> tuple[str, str]:
    for by in ("actor", "person"):
        if query.get(by):
            return by, str(query[by])[:80]
    if query.get("flag") in (BREAK_GLASS_FLAG,):
        return "flag", BREAK_GLASS_FLAG
    raise InvalidInput("AUDIT_QUERY", "search the audit trail by actor, person or flag")


def _log_view(e: Mapping[str, Any], names: Mapping[str, str], who: Principal) -> dict[str, Any]:
    agent = e.get("agent") or {}
    clinical = agent.get("role") in {str(r) for r in CLINICAL_ROLES}
    return {
        "at": e["recorded"],
        "what": e["what"],
        "action": e["action"],
        "outcome": "denied" if e.get("outcome") == str(AuditOutcome.DENIED) else "allowed",
        "who": "本人" if agent.get("subject") == who.subject else (agent.get("name") or ""),
        "role": agent.get("role"),
        "institution_id": agent.get("institution") or "",
        "institution_name": names.get(agent.get("institution") or "", ""),
        "clinical": clinical,
        "basis": (e.get("detail") or {}).get("basis", ""),
        "relationship": (e.get("detail") or {}).get("relationship", ""),
        "break_glass": e.get("flag") == BREAK_GLASS_FLAG,
        "reason": (e.get("detail") or {}).get("reason", "") if e.get("flag") else "",
    }
