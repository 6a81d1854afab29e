"""In-memory fakes for the health record's ports, behaving like the adapters: the document
store (DynamoRecordsStore's head/version/timeline, the version condition on save raising
StaleDocument with nothing written), the grant store (consents, proxies, break-glass), care
relationships that count how often they are asked, persons by id and an audit reader over
the fake sink's events shaped as DynamoAuditSink stores them."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from tests.fakes import FakeAuditSink
from yilian.adapters.records_store import StaleDocument
from yilian.domain.access import BreakGlass, Consent, Proxy
from yilian.domain.audit import AuditEvent
from yilian.domain.person import Person
from yilian.domain.principal import Principal
from yilian.domain.record import Entry, Subject


class FakeRecordsStore:
    """The DocumentStore port. Bundles are kept as JSON text, as the table keeps them."""

    def __init__(self) -> None:
        self.heads: dict[str, dict[str, Any]] = {}
        self.bodies: dict[tuple[str, int], dict[str, Any]] = {}
        self.entries: dict[str, Entry] = {}  # doc_id -> the current timeline entry
        self.saves = 0

    def item_count(self) -> int:
        return len(self.heads) + len(self.bodies) + len(self.entries)

    def head(self, doc_id: str) -> dict[str, Any] | None:
        head = self.heads.get(doc_id)
        return dict(head) if head else None

    def save_version(
        self, entry: Entry, bundle: Mapping[str, Any], body_hash: str,
        previous: Mapping[str, Any] | None,
    ) -> None:  # fmt: skip
        self.saves += 1
        current = self.heads.get(entry.doc_id)
        if (current is None) != (previous is None) or (
            current is not None and previous is not None
            and current["version"] != previous["version"]
        ):  # fmt: skip
            raise StaleDocument(entry.doc_id)
        if (entry.doc_id, entry.version) in self.bodies:
            raise StaleDocument(entry.doc_id)
        self.heads[entry.doc_id] = {
            "doc_id": entry.doc_id, "person_id": entry.person_id,
            "institution_id": entry.institution_id, "source_id": entry.source_id,
            "version": entry.version, "body_hash": body_hash,
            "timeline_sk": f"DOC#{entry.effective}#{entry.doc_id}", "kind": str(entry.kind),
            "effective": entry.effective,
        }  # fmt: skip
        self.bodies[(entry.doc_id, entry.version)] = {
            "bundle": json.dumps(bundle, ensure_ascii=False), "body_hash": body_hash,
            "submitted_at": entry.submitted_at, "submitted_by": entry.submitted_by,
        }  # fmt: skip
        self.entries[entry.doc_id] = entry

    def version(self, doc_id: str, version: int) -> dict[str, Any] | None:
        stored = self.bodies.get((doc_id, version))
        if stored is None:
            return None
        return {**stored, "bundle": json.loads(stored["bundle"])}

    def entry(self, head: Mapping[str, Any]) -> Entry | None:
        e = self.entries.get(head["doc_id"])
        return _without_facts(e) if e else None

    def versions(self, doc_id: str) -> list[dict[str, Any]]:
        return [
            {"version": v, "body_hash": b["body_hash"], "submitted_at": b["submitted_at"],
             "submitted_by": b["submitted_by"]}
            for (d, v), b in sorted(self.bodies.items()) if d == doc_id
        ]  # fmt: skip

    def timeline(
        self, person_ids: Iterable[str], *, since: str = "", until: str = "",
        kinds: Iterable[str] = (), institution_id: str = "", with_facts: bool = False,
    ) -> list[Entry]:  # fmt: skip
        """As the adapter's key condition: DOC#{effective}#{doc} BETWEEN DOC#{since} AND
        DOC#{until or 9999}~, then kind / institution filters."""
        ids, kinds = set(person_ids), set(kinds)
        lo, hi = f"DOC#{since}", f"DOC#{until or '9999'}~"
        out = []
        for e in self.entries.values():
            if e.person_id not in ids or not lo <= f"DOC#{e.effective}#{e.doc_id}" <= hi:
                continue
            if (kinds and str(e.kind) not in kinds) or (
                institution_id and e.institution_id != institution_id
            ):
                continue
            out.append(e if with_facts else _without_facts(e))
        out.sort(key=lambda e: (e.effective, e.doc_id), reverse=True)
        return out


def _without_facts(e: Entry) -> Entry:
    from dataclasses import replace

    return replace(e, facts=())


class FakeGrantStore:
    """The GrantStore port: consents, proxies and break-glass grants on a person."""

    def __init__(self) -> None:
        self.consents: dict[str, Consent] = {}
        self.proxies: dict[tuple[str, str], Proxy] = {}
        self.glass: list[BreakGlass] = []
        self.reads = 0

    def access_facts(self, person_id: str) -> tuple[list[Consent], list[Proxy], list[BreakGlass]]:
        self.reads += 1
        return (
            [c for c in self.consents.values() if c.person_id == person_id],
            [p for p in self.proxies.values() if p.person_id == person_id],
            [g for g in self.glass if g.person_id == person_id],
        )

    def put_consent(self, consent: Consent, *, new: bool) -> None:
        if new == (consent.consent_id in self.consents):
            raise AssertionError("conditional put failed")  # the adapter's condition
        self.consents[consent.consent_id] = consent

    def put_proxy(self, proxy: Proxy) -> None:
        self.proxies[(proxy.person_id, proxy.proxy_person_id)] = proxy

    def dependents(self, proxy_person_id: str) -> list[Proxy]:
        return [p for p in self.proxies.values() if p.proxy_person_id == proxy_person_id]

    def put_break_glass(self, grant: BreakGlass) -> None:
        self.glass.append(grant)


class FakeCare:
    """Care relationships: (subject, person_id) -> basis; counts the questions asked."""

    def __init__(self, relationships: Mapping[tuple[str, str], str] | None = None) -> None:
        self.relationships = dict(relationships or {})
        self.asked: list[tuple[str, str]] = []

    def find(self, who: Principal, person_id: str, now: datetime) -> str | None:
        self.asked.append((who.subject, person_id))
        return self.relationships.get((who.subject, person_id))


class FakePersons:
    """Persons by id (the Persons port of RecordAccess)."""

    def __init__(self, *persons: Person) -> None:
        self.persons = {p.person_id: p for p in persons}

    def add(self, *persons: Person) -> None:
        self.persons.update({p.person_id: p for p in persons})

    def get_person(self, person_id: str) -> Person | None:
        return self.persons.get(person_id)

    def get_persons(self, person_ids: Any) -> dict[str, Person]:
        return {i: self.persons[i] for i in set(person_ids) if i in self.persons}


class FakeResolver:
    """The SubjectResolver port: ID card or (assigner, local number) -> person id."""

    def __init__(self) -> None:
        self.id_cards: dict[str, str] = {}
        self.locals: dict[tuple[str, str], str] = {}

    def resolve(self, consortium_id: str, subject: Subject) -> str | None:
        if subject.id_card:
            return self.id_cards.get(subject.id_card)
        return self.locals.get((subject.local_assigner or "", subject.local_number or ""))


def audit_body(event: AuditEvent, n: int) -> dict[str, Any]:
    """An event as DynamoAuditSink stores it (its JSON body)."""
    return {
        "id": f"e{n:06d}", "recorded": event.recorded_at, "action": str(event.action),
        "what": event.what, "outcome": str(event.outcome), "purpose": event.purpose,
        "agent": {"subject": event.actor_subject, "name": event.actor_name,
                  "role": event.actor_role, "institution": event.actor_institution},
        "persons": list(event.person_ids), "detail": event.detail, "flag": event.flag,
    }  # fmt: skip


class FakeAuditReader:
    """The AuditReader port over a FakeAuditSink: by person (every person an event
    touched), actor or flag (the event's first item only), newest first."""

    def __init__(self, sink: FakeAuditSink) -> None:
        self.sink = sink
        self.queries: list[tuple[str, str, str]] = []

    def query(
        self, by: str, consortium_id: str, value: str, *, since: str = "", until: str = "",
        limit: int = 100, cursor: str | None = None,
    ) -> tuple[list[dict[str, Any]], str | None]:  # fmt: skip
        self.queries.append((by, consortium_id, value))
        hits = []
        for n, e in enumerate(self.sink.events):
            if e.consortium_id != consortium_id:
                continue
            key = {"person": value in e.person_ids, "actor": e.actor_subject == value,
                   "flag": e.flag == value}[by]  # fmt: skip
            sort = f"{e.recorded_at}#{n:06d}"
            if key and (since or "0") <= sort <= (until or "9999") + "~":
                hits.append((sort, audit_body(e, n)))
        hits.sort(key=lambda h: h[0], reverse=True)
        return [b for _, b in hits[: max(1, min(limit, 500))]], None
