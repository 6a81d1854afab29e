"""The health record as use cases: contribute documents, read a person's timeline, summary,
documents, FHIR searches and export, and ask whether a recent equivalent result exists
(互认). Every read goes through RecordAccess.open (the rules and the audit trail);
every write is audited too.
"""

from __future__ import annotations

import functools
import json
import operator
import secrets
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime, timedelta
from typing import Any, Protocol

from yilian.domain.audit import AuditAction, AuditEvent
from yilian.domain.clock import now
from yilian.domain.errors import Conflict, Forbidden, InvalidInput, NotFound
from yilian.domain.person import Person
from yilian.domain.principal import Principal, Role
from yilian.domain.record import (
    LOINC,
    Document,
    Entry,
    Kind,
    Subject,
    body_hash,
    check_not_before_birth,
    china_time,
    concept_code,
    concept_text,
    document_id,
    facts_of,
    localise,
    observation_view,
    precheck,
    read_document,
    summarise,
)
from yilian.services.ports import AuditSink, InstitutionDirectory
from yilian.services.record_access import RecordAccess

MAX_BUNDLE_BYTES = 6 * 1024 * 1024  # Lambda's synchronous payload limit
MAX_UPLOAD_BYTES = 100 * 1024 * 1024  # a bundle sent through S3 (POST /records/uploads)
UPLOAD_URL_SECONDS = 900
SAVE_ATTEMPTS = 3


class DocumentStore(Protocol):
    def head(self, doc_id: str) -> dict[str, Any] | None: ...
    def save_version(
        self, entry: Entry, bundle: Mapping[str, Any], body_hash: str,
        previous: Mapping[str, Any] | None,
    ) -> None: ...  # fmt: skip
    def version(self, doc_id: str, version: int) -> dict[str, Any] | None: ...
    def entry(self, head: Mapping[str, Any]) -> Entry | None: ...
    def versions(self, doc_id: str) -> list[dict[str, Any]]: ...
    def timeline(
        self, person_ids: Iterable[str], *, since: str = "", until: str = "",
        kinds: Iterable[str] = (), institution_id: str = "", with_facts: bool = False,
    ) -> list[Entry]: ...  # fmt: skip


class Uploads(Protocol):
    def create(self, upload: Mapping[str, Any], seconds: int) -> str: ...
    def get(self, upload_id: str) -> dict[str, Any] | None: ...
    def claim(self, upload_id: str) -> bool: ...
    def finish(self, upload_id: str, state: str, outcome: Mapping[str, Any]) -> None: ...
    def read(self, key: str, max_bytes: int) -> bytes | None: ...


class SubjectResolver(Protocol):
    """Finds the person a bundle names by identifier (ID card, local number)."""

    def resolve(self, consortium_id: str, subject: Subject) -> str | None: ...


class RecordService:
    def __init__(
        self,
        store: DocumentStore,
        access: RecordAccess,
        resolver: SubjectResolver,
        audit: AuditSink,
        directory: InstitutionDirectory,
        *,
        validate_fhir: Callable[[Mapping[str, Any]], None],
        stale: type[Exception] = Exception,
        uploads: Uploads | None = None,
        clock: Callable[[], datetime] = now,
    ) -> None:
        self.store = store
        self.access = access
        self.resolver = resolver
        self.audit = audit
        self.directory = directory
        self.validate_fhir = validate_fhir
        self.stale = stale
        self.uploads = uploads
        self.clock = clock

    # ------------------------------------------------------------------ contribute
    def submit(self, who: Principal, bundle: Any) -> tuple[int, dict[str, Any]]:
        """A new document (201), or the same one again (200, unchanged). The same source id
        with a different body is refused: an update names the document (PUT)."""
        doc, person, institution_id = self._read(who, bundle)
        doc_id = document_id(who.consortium_id, institution_id, doc.source_id)
        digest = body_hash(bundle)
        for _ in range(SAVE_ATTEMPTS):
            head = self.store.head(doc_id)
            if head is not None:
                if head["body_hash"] == digest:
                    return 200, self._result(head, "unchanged")
                raise Conflict(
                    "DUPLICATE_SOURCE_CHANGED",
                    "this institution already submitted a document with this id and another "
                    "body; to correct it, PUT the new version to /records/documents/{doc_id}",
                    doc_id=doc_id,
                    version=head["version"],
                )
            entry = self._entry(who, doc, person, doc_id, institution_id, 1)
            try:
                self.store.save_version(entry, bundle, digest, None)
            except self.stale:
                continue  # a concurrent submit won: re-read, likely the same body
            self._audit_write(who, AuditAction.CREATE, entry)
            return 201, self._result(_head_of(entry), "created")
        raise Conflict("DOCUMENT_BUSY", "the document is being written concurrently; retry")

    def update(self, who: Principal, doc_id: str, bundle: Any) -> dict[str, Any]:
        """A new version of a document; earlier versions stay readable."""
        doc, person, institution_id = self._read(who, bundle)
        if document_id(who.consortium_id, institution_id, doc.source_id) != doc_id:
            raise InvalidInput(
                "SOURCE_ID_MISMATCH",
                "the Bundle's identifier is not this document's (a new document is a POST)",
            )
        digest = body_hash(bundle)
        for _ in range(SAVE_ATTEMPTS):
            head = self.store.head(doc_id)
            if head is None:
                raise NotFound("DOCUMENT_NOT_FOUND", "no such document; submit it with POST")
            if head["person_id"] != person.person_id:
                raise Conflict(
                    "SUBJECT_CHANGED",
                    "a new version cannot move a document to another person",
                )
            if head["body_hash"] == digest:
                return self._result(head, "unchanged")
            entry = self._entry(who, doc, person, doc_id, institution_id, int(head["version"]) + 1)
            try:
                self.store.save_version(entry, bundle, digest, head)
            except self.stale:
                continue
            self._audit_write(who, AuditAction.UPDATE, entry)
            return self._result(_head_of(entry), "updated")
        raise Conflict("DOCUMENT_BUSY", "the document is being written concurrently; retry")

    # ------------------------------------------------------------------ large bundles
    def start_upload(self, who: Principal) -> dict[str, Any]:
        """A presigned S3 PUT for a bundle over the API's 6 MB; the document is submitted as
        the caller when the file lands (GET /records/uploads/{id} tells the outcome)."""
        self._contributor(who)
        assert self.uploads is not None
        upload_id = "u" + secrets.token_hex(10)
        key = f"uploads/{who.consortium_id}/{who.institution_id}/{upload_id}.json"
        upload = {"upload_id": upload_id, "key": key, "who": who.to_context(),
                  "created_at": self.clock().isoformat(timespec="seconds")}  # fmt: skip
        url = self.uploads.create(upload, UPLOAD_URL_SECONDS)
        return {"upload_id": upload_id, "method": "PUT", "url": url,
                "headers": {"Content-Type": "application/fhir+json"},
                "expires_in": UPLOAD_URL_SECONDS, "max_bytes": MAX_UPLOAD_BYTES}  # fmt: skip

    def upload_status(self, who: Principal, upload_id: str) -> dict[str, Any]:
        assert self.uploads is not None
        upload = self.uploads.get(upload_id[:40])
        if upload is None or upload["who"].get("consortium_id") != who.consortium_id:
            raise NotFound("UPLOAD_NOT_FOUND", "no such upload")
        if upload["who"].get("institution_id") != who.institution_id:
            raise Forbidden("NOT_YOUR_UPLOAD", "an upload is seen by its institution")
        return {"upload_id": upload["upload_id"], "state": upload["state"],
                "created_at": upload["created_at"], "outcome": upload.get("outcome")}  # fmt: skip

    def ingest_upload(self, key: str) -> dict[str, Any] | None:
        """The S3 side: submit the uploaded bundle as the caller who asked for the URL. A
        bad bundle ends `failed` with the same error the API would give; nothing is stored."""
        from yilian.domain.errors import DomainError

        assert self.uploads is not None
        upload_id = key.rsplit("/", 1)[-1].removesuffix(".json")
        upload = self.uploads.get(upload_id)
        if upload is None or upload["key"] != key or not self.uploads.claim(upload_id):
            return None  # not ours, or delivered twice
        who = Principal.from_context(upload["who"])
        try:
            raw = self.uploads.read(key, MAX_UPLOAD_BYTES)
            if raw is None:
                raise InvalidInput("FILE_TOO_LARGE", f"an upload has at most {MAX_UPLOAD_BYTES}"
                                   " bytes")  # fmt: skip
            try:
                bundle = json.loads(raw)
            except ValueError:
                raise InvalidInput("MALFORMED_JSON", "the uploaded file is not JSON") from None
            status, result = self.submit(who, bundle)
        except DomainError as exc:
            outcome = {"error": {"code": exc.code, "message": exc.message,
                                 "details": exc.details}}  # fmt: skip
            self.uploads.finish(upload_id, "failed", outcome)
            return outcome
        self.uploads.finish(upload_id, "done", {"status": status, "result": result})
        return result

    def _contributor(self, who: Principal) -> None:
        who.require_role(Role.DOCTOR, Role.INSTITUTION_ADMIN)
        if not who.institution_id:
            raise Forbidden("NO_INSTITUTION", "documents are contributed by an institution")

    def _read(self, who: Principal, bundle: Any) -> tuple[Document, Person, str]:
        """Pre-checks, fhir.resources, business rules, subject resolution: in that order,
        each with its own clear error, before anything is stored."""
        self._contributor(who)
        assert who.institution_id
        precheck(bundle)
        self.validate_fhir(bundle)
        doc = read_document(bundle, who.institution_id, self.clock())
        person = self._subject(who, doc.subject)
        check_not_before_birth(doc, person.birth_date)
        return doc, person, who.institution_id

    def _subject(self, who: Principal, subject: Subject) -> Person:
        person_id = subject.person_id or self.resolver.resolve(who.consortium_id, subject)
        person = self.access.persons.get_person(person_id) if person_id else None
        if person is not None and person.merged_into:
            person = self.access.persons.get_person(person.merged_into)
        if person is None:
            raise InvalidInput(
                "SUBJECT_NOT_IN_INDEX",
                "the subject is not in the master patient index: register the person first",
            )
        if person.consortium_id != who.consortium_id:
            raise Forbidden("CROSS_CONSORTIUM", "this person belongs to another consortium")
        return person

    def _entry(
        self, who: Principal, doc: Document, person: Person, doc_id: str, institution_id: str,
        version: int,
    ) -> Entry:  # fmt: skip
        resources = localise(doc, doc_id, person.person_id)
        return Entry(
            doc_id=doc_id,
            person_id=person.person_id,
            institution_id=institution_id,
            source_id=doc.source_id,
            kind=doc.kind,
            effective=doc.effective,
            title=doc.title,
            author=doc.author or who.name,
            version=version,
            submitted_at=self.clock().isoformat(timespec="seconds"),
            submitted_by=who.subject,
            resource_count=len(resources),
            facts=tuple(facts_of(resources)),
        )

    def _audit_write(self, who: Principal, action: AuditAction, entry: Entry) -> None:
        self.audit.record(AuditEvent.by(
            who, action, "Record.document", (entry.person_id,),
            detail={"doc_id": entry.doc_id, "kind": str(entry.kind),
                    "version": str(entry.version)},
        ))  # fmt: skip

    @staticmethod
    def _result(head: Mapping[str, Any], status: str) -> dict[str, Any]:
        from yilian.domain.record import KIND_NAMES

        kind = Kind(head["kind"])
        return {
            "status": status, "doc_id": head["doc_id"], "version": head["version"],
            "person_id": head["person_id"], "source_id": head["source_id"],
            "kind": str(kind), "kind_name": KIND_NAMES[kind].name, "spec": KIND_NAMES[kind].spec,
            "date": head["effective"],
        }  # fmt: skip

    # ------------------------------------------------------------------ read
    def timeline(self, who: Principal, person_id: str, q: Mapping[str, str]) -> dict[str, Any]:
        kinds = [k for k in (q.get("kind") or "").split(",") if k]
        for k in kinds:
            if k not in {str(x) for x in Kind}:
                raise InvalidInput("KIND_INVALID", f"unknown document kind {k!r}",
                                   allowed=[str(x) for x in Kind])  # fmt: skip
        since, until = _date_range(q)
        access = self.access.open(who, person_id, AuditAction.SEARCH, "Record.timeline",
                                  {"filter": ",".join(kinds)})  # fmt: skip
        entries = self.store.timeline(
            access.person_ids, since=since, until=until, kinds=kinds,
            institution_id=(q.get("institution_id") or "")[:40],
        )  # fmt: skip
        names = self._names(who, {e.institution_id for e in entries})
        return {
            "person": _person_head(access.person),
            "access": _access_view(access),
            "items": [e.view(names) for e in entries],
            "count": len(entries),
        }

    def summary(self, who: Principal, person_id: str) -> dict[str, Any]:
        access = self.access.open(who, person_id, AuditAction.READ, "Record.summary")
        entries = self.store.timeline(access.person_ids, with_facts=True)
        names = self._names(who, {e.institution_id for e in entries})
        out = summarise(entries, self.clock().date())
        for section in out.values():
            for item in section:
                item["institution_name"] = names.get(item.get("institution_id", ""), "")
        by_kind: dict[str, int] = {}
        for e in entries:
            by_kind[str(e.kind)] = by_kind.get(str(e.kind), 0) + 1
        return {
            "person": _person_head(access.person),
            "access": _access_view(access),
            **out,
            "documents": {"count": len(entries), "by_kind": by_kind,
                          "institutions": sorted({e.institution_id for e in entries})},
        }  # fmt: skip

    def document(self, who: Principal, doc_id: str, version: int | None = None) -> dict[str, Any]:
        head = self.store.head(doc_id[:40])
        if head is None:
            raise NotFound("DOCUMENT_NOT_FOUND", "no such document")
        access = self.access.open(who, head["person_id"], AuditAction.READ, "Record.document",
                                  {"doc_id": doc_id})  # fmt: skip
        n = version or int(head["version"])
        stored = self.store.version(doc_id, n)
        if stored is None:
            raise NotFound("VERSION_NOT_FOUND", "no such version", version=n)
        entry = self.store.entry(head)
        doc = read_document(stored["bundle"], head["institution_id"], self.clock() + _FAR)
        names = self._names(who, {head["institution_id"]})
        return {
            "document": (entry.view(names) if entry else {}) | {"version": n},
            "current_version": head["version"],
            "versions": self.store.versions(doc_id),
            "resources": localise(doc, doc_id, head["person_id"]),
            "access": _access_view(access),
        }

    def search(
        self, who: Principal, resource_type: str, q: Mapping[str, str]
    ) -> list[dict[str, Any]]:
        """FHIR search: Observation / DiagnosticReport by patient (required), code
        ([system|]code, comma = OR), category and date (ge/le/gt/lt/eq prefixes)."""
        if resource_type not in ("Observation", "DiagnosticReport"):
            raise NotFound("RESOURCE_TYPE", f"searching {resource_type} is not supported")
        patient = (q.get("patient") or q.get("subject") or "").removeprefix("Patient/")
        if not patient:
            raise InvalidInput("PATIENT_REQUIRED", "a search names its patient (patient=)")
        codes = {c.split("|")[-1] for c in (q.get("code") or "").split(",") if c}
        category = (q.get("category") or "").split("|")[-1]
        window = _fhir_dates(q.get("date_list") or q.get("date") or "")
        access = self.access.open(who, patient, AuditAction.SEARCH, f"{resource_type}.search",
                                  {"code": ",".join(sorted(codes))[:100]})  # fmt: skip
        out = []
        for e in self.store.timeline(access.person_ids, with_facts=True):
            for res in e.facts:
                if res.get("resourceType") != resource_type:
                    continue
                if codes and concept_code(res.get("code"), (LOINC,)) not in codes:
                    continue
                if category and category not in _categories(res):
                    continue
                when = _res_date(res, e.effective)
                if all(op(when) for op in window):
                    out.append(res)
        out.sort(key=lambda r: _res_date(r, ""), reverse=True)
        return out

    def everything(self, who: Principal, person_id: str) -> tuple[Person, list[dict[str, Any]]]:
        """Patient/$everything: every resource of every current document version."""
        access = self.access.open(who, person_id, AuditAction.EXPORT, "Patient.$everything")
        resources: list[dict[str, Any]] = []
        for e in self.store.timeline(access.person_ids):
            stored = self.store.version(e.doc_id, e.version)
            if stored is None:
                continue
            doc = read_document(stored["bundle"], e.institution_id, self.clock() + _FAR)
            resources.extend(localise(doc, e.doc_id, access.person.person_id))
        return access.person, resources

    def recognition(self, who: Principal, person_id: str, item_key: str) -> dict[str, Any]:
        """互认: a result recent enough to stand in for the exam about to be ordered."""
        from yilian.domain.terminology.recognition import ITEMS, item_for

        item = item_for(item_key)
        if item is None:
            raise InvalidInput("RECOGNITION_ITEM_UNKNOWN", "no mutual-recognition item for this",
                               items=[i.key for i in ITEMS])  # fmt: skip
        access = self.access.open(who, person_id, AuditAction.SEARCH, "Record.recognition",
                                  {"item": item.key})  # fmt: skip
        since = (self.clock() - timedelta(days=item.valid_days)).date().isoformat()
        found = []
        for e in self.store.timeline(access.person_ids, since=since, with_facts=True):
            for res in e.facts:
                if res.get("resourceType") not in ("DiagnosticReport", "Observation"):
                    continue
                if concept_code(res.get("code"), (LOINC,)) not in item.codes:
                    continue
                if res.get("status") not in ("final", "amended", "corrected"):
                    continue
                when = _res_date(res, e.effective)
                if when[:10] >= since:
                    found.append(_recognised(res, when, e))
        found.sort(key=lambda r: r["date"], reverse=True)
        names = self._names(who, {r["institution_id"] for r in found})
        for r in found:
            r["institution_name"] = names.get(r["institution_id"], "")
        return {"item": {"key": item.key, "name": item.name, "category": item.category,
                         "valid_days": item.valid_days},
                "recognised": bool(found), "results": found}  # fmt: skip

    def _names(self, who: Principal, ids: set[str]) -> dict[str, str]:
        return self.access.institution_names(who.consortium_id, ids)


_FAR = timedelta(days=36500)  # re-reading a stored bundle: its dates were checked on submit


def _head_of(entry: Entry) -> dict[str, Any]:
    """What the store's head says after saving `entry` (without reading it back)."""
    return {"doc_id": entry.doc_id, "version": entry.version, "person_id": entry.person_id,
            "source_id": entry.source_id, "kind": str(entry.kind),
            "effective": entry.effective}  # fmt: skip


def _person_head(p: Person) -> dict[str, Any]:
    return {"person_id": p.person_id, "name": p.name, "sex": p.sex, "birth_date": p.birth_date}


def _access_view(access: Any) -> dict[str, Any]:
    d = access.decision
    return {"basis": str(d.basis), "emergency": d.emergency,
            **{k: v for k, v in d.detail.items() if k in ("relationship", "relation")}}  # fmt: skip


def _categories(res: Mapping[str, Any]) -> set[str]:
    cats = res.get("category") or []
    cats = cats if isinstance(cats, list) else [cats]
    return {str(c.get("code")) for cat in cats for c in (cat.get("coding") or [])}


def _res_date(res: Mapping[str, Any], fallback: str) -> str:
    for name in ("effectiveDateTime", "issued"):
        if isinstance(res.get(name), str):
            return china_time(str(res[name]))
    return fallback


def _recognised(res: Mapping[str, Any], when: str, e: Entry) -> dict[str, Any]:
    out = {
        "resource_type": res["resourceType"], "id": res.get("id"), "doc_id": e.doc_id,
        "code": concept_code(res.get("code"), (LOINC,)), "name": concept_text(res.get("code")),
        "date": when, "institution_id": e.institution_id,
    }  # fmt: skip
    if res["resourceType"] == "Observation":
        out["value"] = observation_view(res, when)["value"]
    else:
        out["conclusion"] = str(res.get("conclusion") or "")
    return out


def _date_range(q: Mapping[str, str]) -> tuple[str, str]:
    from yilian.domain.clock import parse_date

    since = parse_date(q["from"], "from").isoformat() if q.get("from") else ""
    until = parse_date(q["to"], "to").isoformat() if q.get("to") else ""
    if since and until and until < since:
        raise InvalidInput("DATE_RANGE", "'to' is before 'from'")
    return since, until


def _fhir_dates(raw: str) -> list[Callable[[str], bool]]:
    """FHIR date parameters ('ge2025-01-01,le2025-12-31' or repeated) as predicates on the
    ISO date-time of a resource, compared at the precision given."""
    tests: list[Callable[[str], bool]] = []
    for part in [p for p in raw.split(",") if p]:
        prefix, value = (part[:2], part[2:]) if part[:2].isalpha() else ("eq", part)
        if not value or not value[:4].isdigit():
            raise InvalidInput("DATE_PARAMETER", f"not a FHIR date parameter: {part!r}")
        if prefix not in _COMPARE:
            raise InvalidInput("DATE_PARAMETER", f"unsupported date prefix {prefix!r}")
        tests.append(functools.partial(_compare, _COMPARE[prefix], value))
    return tests


_COMPARE: dict[str, Callable[[str, str], bool]] = {
    "eq": operator.eq, "ge": operator.ge, "le": operator.le, "gt": operator.gt,
    "lt": operator.lt,
}  # fmt: skip


def _compare(op: Callable[[str, str], bool], value: str, when: str) -> bool:
    return op(when[: len(value)], value)
