"""Bulk registration (批量建档): an institution loads its existing patient list into the index.

POST /imports creates a job and returns a presigned S3 PUT URL for the file (CSV with a
header, or JSON lines) at imports/{consortium}/{institution}/{job}.{csv|jsonl}; the upload's
ObjectCreated event runs the job (functions/empi_import). A small file can come inline and
is processed at once. Each row ends `matched` (to an existing person, or to an earlier row of
the same file), `new`, `review` (new person, queued with its candidates) or `rejected` (with
the reason code of the registration API), in a CSV report at reports/{...}/{job}.csv.

Re-running a file is harmless: every row carries the institution's patient number, which is
an identifier of the index, so a row registered before is a deterministic match to the same
person and nothing is written for it.

Speed: rows are validated and their identifiers protected before any I/O, then processed in
chunks. Per chunk the job takes the consortium's write fence (adapters/persons_store.py),
reads every identifier and block of the chunk with consistent BatchGetItems, decides every
row in memory (a row sees the persons created by the rows before it), and writes with
BatchWriteItem. Transactions (commit) check the fence, so no registration slips between the
job's reads and writes: identifier uniqueness holds with no per-item conditional write.
"""

from __future__ import annotations

import csv
import io
import json
import re
import secrets
import time
import unicodedata
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, Protocol

from yilian.domain import clock
from yilian.domain.audit import AuditAction, AuditEvent
from yilian.domain.errors import DomainError, Forbidden, InvalidInput, NotFound
from yilian.domain.identity import mask
from yilian.domain.matching import Candidate, Outcome, contradicts, decide
from yilian.domain.person import (
    Change,
    Fence,
    HistoryEntry,
    Person,
    WriteFenceHeld,
    head_updates,
)
from yilian.domain.principal import Principal, Role
from yilian.services.empi import EmpiService, NewRecord, Plan, new_person_change

FORMATS = ("csv", "jsonl")
MAX_ROWS = 200_000
MAX_FILE_BYTES = 64 * 1024 * 1024
URL_SECONDS = 900
KEY = re.compile(r"^imports/([^/]+)/([^/]+)/([0-9a-f]{16})\.(csv|jsonl)$")

# Column names as county systems export them: English, or the Chinese headers of HIS lists.
ALIASES = {
    "local_id": ("local_id", "patient_no", "patient_id", "local_number", "门诊号", "病历号",
                 "病案号", "患者编号", "就诊卡号", "患者id"),
    "name": ("name", "姓名"),
    "sex": ("sex", "gender", "性别"),
    "birth_date": ("birth_date", "birthdate", "dob", "出生日期"),
    "id_card": ("id_card", "id_number", "身份证号", "身份证号码", "证件号码"),
    "health_card": ("health_card", "电子健康卡", "健康卡号"),
    "insurance": ("insurance", "医保号", "医保电子凭证", "医保卡号"),
    "phone": ("phone", "mobile", "联系电话", "电话", "手机号"),
    "address": ("address", "住址", "现住址", "地址"),
    "household": ("household", "户籍", "户籍地址", "户号"),
}  # fmt: skip
_FIELD_OF = {alias.lower(): name for name, aliases in ALIASES.items() for alias in aliases}


# ---------------------------------------------------------------------------- jobs, ports


@dataclass(frozen=True, slots=True)
class ImportJob:
    job_id: str
    consortium_id: str
    institution_id: str
    format: str
    status: str  # awaiting_upload | running | done | failed
    created_by: str
    created_role: str
    created_at: str
    started_at: str | None = None
    finished_at: str | None = None
    counts: dict[str, int] = field(default_factory=dict)
    error: str | None = None

    @property
    def file_key(self) -> str:
        return f"imports/{self.consortium_id}/{self.institution_id}/{self.job_id}.{self.format}"

    @property
    def report_key(self) -> str:
        return f"reports/{self.consortium_id}/{self.institution_id}/{self.job_id}.csv"


class ImportFiles(Protocol):
    """The import bucket."""

    def presign_put(self, key: str, seconds: int) -> str: ...

    def presign_get(self, key: str, seconds: int) -> str: ...

    def read(self, key: str, max_bytes: int) -> bytes: ...

    def write(self, key: str, body: bytes, content_type: str) -> None: ...


class ImportJobs(Protocol):
    """Job records (the platform table)."""

    def create(self, job: ImportJob) -> None: ...

    def get(self, consortium_id: str, job_id: str) -> ImportJob | None: ...

    def start(self, job: ImportJob, at: str) -> ImportJob | None:
        """awaiting_upload/failed -> running; None when it is running or done already."""

    def save(self, job: ImportJob) -> None: ...


# ------------------------------------------------------------------------------- results


@dataclass(frozen=True, slots=True)
class RowResult:
    row: int
    outcome: str  # matched | new | review | rejected
    local_id: str = ""
    person_id: str = ""
    score: float | None = None
    reason: str = ""
    candidates: tuple[str, ...] = ()


@dataclass
class ImportResult:
    rows: list[RowResult] = field(default_factory=list)
    items_written: int = 0
    requests: Counter[str] = field(default_factory=Counter)
    seconds: float = 0.0

    @property
    def counts(self) -> dict[str, int]:
        c = Counter(r.outcome for r in self.rows)
        return {
            "total": len(self.rows),
            **{k: c.get(k, 0) for k in ("matched", "new", "review", "rejected")},
        }

    def report_csv(self) -> bytes:
        out = io.StringIO()
        w = csv.writer(out)
        w.writerow(["row", "local_id", "outcome", "person_id", "score", "reason", "candidates"])
        for r in self.rows:
            score = "" if r.score is None else f"{r.score:.3f}"
            w.writerow(
                [r.row, r.local_id, r.outcome, r.person_id, score, r.reason, " ".join(r.candidates)]
            )
        return out.getvalue().encode("utf-8-sig")  # Excel opens it as UTF-8


# ------------------------------------------------------------------------------- parsing


def parse_rows(content: bytes | str, fmt: str) -> Iterator[tuple[int, Mapping[str, Any] | str]]:
    """(row number, row as field -> value) or (row number, reason code) for rows that are not
    rows. CSV row numbers count the header as row 1, as a spreadsheet shows them."""
    text = content if isinstance(content, str) else _decode(content)
    if fmt == "csv":
        reader = csv.reader(io.StringIO(text))
        header = next(reader, None)
        if header is None:
            return
        names = [
            _FIELD_OF.get(unicodedata.normalize("NFKC", h).strip().lower(), "") for h in header
        ]
        for n, values in enumerate(reader, start=2):
            if not any(v.strip() for v in values):
                continue
            yield n, {k: v.strip() for k, v in zip(names, values, strict=False) if k}
    else:
        for n, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except ValueError:
                yield n, "MALFORMED_ROW"
                continue
            if not isinstance(obj, dict):
                yield n, "MALFORMED_ROW"
                continue
            yield n, {_FIELD_OF.get(str(k).lower(), ""): v for k, v in obj.items()}


def _decode(raw: bytes) -> str:
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        return raw.decode("gb18030")  # Excel on Chinese Windows saves CSV as GBK


def registration_of(row: Mapping[str, Any], institution_id: str) -> dict[str, Any]:
    local = str(row.get("local_id") or "").strip()
    if not local:
        raise InvalidInput("LOCAL_ID_REQUIRED", "every row needs the institution's patient number")
    ids = [{"type": "local", "value": local, "assigner": institution_id}]
    for kind in ("id_card", "health_card", "insurance"):
        if str(row.get(kind) or "").strip():
            ids.append({"type": kind, "value": str(row[kind])})
    return {
        k: row.get(k) for k in ("name", "sex", "birth_date", "phone", "address", "household")
    } | {"identifiers": ids}


# ------------------------------------------------------------------------ the importer


@dataclass
class _Chunk:
    """What a chunk knows while it decides: identifier holders, block members, persons."""

    consortium_id: str
    owners: dict[str, str]
    blocks: dict[str, dict[str, Candidate]]
    read_blocks: dict[str, dict[str, Candidate]]
    extra: dict[str, Candidate]
    touched: dict[str, tuple[Person | None, Person]] = field(default_factory=dict)
    attach: dict[str, list[tuple[NewRecord, float, int]]] = field(default_factory=dict)
    change: Change = field(default_factory=Change)

    def candidate(self, pid: str) -> Candidate | None:
        for block in self.blocks.values():
            if pid in block:
                return block[pid]
        return self.extra.get(pid)

    def index(self, person: Person, old: Candidate | None = None) -> None:
        for k in person.identifier_keys():
            self.owners[k] = person.person_id
        if old is not None:
            for block in old.block_keys():
                self.blocks.get(block, {}).pop(person.person_id, None)
        projection = person.candidate()
        for block in person.block_keys():
            self.blocks.setdefault(block, {})[person.person_id] = projection


class BulkImporter:
    def __init__(
        self,
        empi: EmpiService,
        files: ImportFiles,
        jobs: ImportJobs,
        *,
        chunk_size: int = 500,
        lease_seconds: float = 60.0,
        fence_wait_seconds: float = 120.0,
        now: Callable[[], datetime] = clock.now,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.empi = empi
        self._store = empi.store
        self._files = files
        self._jobs = jobs
        self._chunk = chunk_size
        self._lease = lease_seconds
        self._fence_wait = fence_wait_seconds
        self._now = now
        self._sleep = sleep

    # --------------------------------------------------------------------- API
    def start(
        self,
        who: Principal,
        fmt: str,
        institution_id: str | None = None,
        content: str | None = None,
    ) -> tuple[int, dict[str, Any]]:
        """Create a job. With `content` (a small file inline) it runs at once: 201 with the
        finished job; without, 202 with the URL to PUT the file to."""
        institution = self._institution_of(who, institution_id)
        if fmt not in FORMATS:
            raise InvalidInput("FORMAT_INVALID", "format is csv or jsonl", allowed=list(FORMATS))
        job = ImportJob(
            job_id=secrets.token_hex(8),
            consortium_id=who.consortium_id,
            institution_id=institution,
            format=fmt,
            status="awaiting_upload",
            created_by=who.subject,
            created_role=str(who.role),
            created_at=self._now().isoformat(),
        )
        self._jobs.create(job)
        if content is not None:
            started = self._jobs.start(job, self._now().isoformat())
            assert started is not None
            done = self._run(started, content.encode("utf-8"))
            return 201, {"job": self.job_view(done)}
        url = self._files.presign_put(job.file_key, URL_SECONDS)
        body = {
            "job": self.job_view(job),
            "upload": {"url": url, "method": "PUT", "key": job.file_key, "expires_in": URL_SECONDS},
        }
        return 202, body

    def status(self, who: Principal, job_id: str) -> dict[str, Any]:
        job = self._jobs.get(who.consortium_id, job_id)
        if job is None:
            raise NotFound("IMPORT_NOT_FOUND", "no such import job")
        if who.role is not Role.CONSORTIUM_ADMIN:
            who.require_role(Role.DOCTOR, Role.INSTITUTION_ADMIN)
            if who.institution_id != job.institution_id:
                raise Forbidden("NOT_YOUR_INSTITUTION", "this job belongs to another institution")
        return {"job": self.job_view(job)}

    def job_view(self, job: ImportJob) -> dict[str, Any]:
        view: dict[str, Any] = {
            "job_id": job.job_id,
            "status": job.status,
            "institution_id": job.institution_id,
            "format": job.format,
            "counts": job.counts,
            "created_at": job.created_at,
            "started_at": job.started_at,
            "finished_at": job.finished_at,
            "error": job.error,
        }
        if job.status == "done":
            url = self._files.presign_get(job.report_key, URL_SECONDS)
            view["report"] = {"url": url, "key": job.report_key, "expires_in": URL_SECONDS}
        return view

    # ----------------------------------------------------------- the S3 event
    def run_uploaded(self, key: str) -> ImportJob | None:
        """Run the job whose file just landed at `key`. A file no job expects is ignored; a
        job already running or done is left alone (S3 may deliver an event twice)."""
        m = KEY.match(key)
        if not m:
            return None
        consortium_id, institution_id, job_id, fmt = m.groups()
        job = self._jobs.get(consortium_id, job_id)
        if job is None or job.institution_id != institution_id or job.format != fmt:
            return None
        started = self._jobs.start(job, self._now().isoformat())
        if started is None:
            return job
        try:
            content = self._files.read(key, MAX_FILE_BYTES)
        except DomainError as exc:
            return self._fail(started, exc.code)
        return self._run(started, content)

    # ------------------------------------------------------------ the engine
    def import_rows(
        self,
        who: Principal,
        institution_id: str,
        rows: Iterable[Mapping[str, Any]],
        job_id: str | None = None,
    ) -> ImportResult:
        """Register rows given in memory (field -> value, as parse_rows yields them) for an
        institution: what a job runs, without S3 or a job record (benchmarks call this)."""
        numbered = ((n, row) for n, row in enumerate(rows, start=1))
        return self._process(
            who.consortium_id,
            institution_id,
            numbered,
            actor=f"import:{job_id or 'direct'}",
            actor_role=str(who.role),
        )

    def _run(self, job: ImportJob, content: bytes) -> ImportJob:
        try:
            rows = list(parse_rows(content, job.format))
        except (UnicodeDecodeError, csv.Error):
            return self._fail(job, "FILE_UNREADABLE")
        if len(rows) > MAX_ROWS:
            return self._fail(job, "TOO_MANY_ROWS")
        try:
            result = self._process(
                job.consortium_id,
                job.institution_id,
                iter(rows),
                actor=f"import:{job.job_id}",
                actor_role=job.created_role,
            )
        except Exception as exc:
            # failed, not stuck 'running': the event's retry (or a new upload) may start it
            # again, and the rows written so far match themselves then
            self._fail(job, getattr(exc, "code", "INTERNAL"))
            raise
        self._files.write(job.report_key, result.report_csv(), "text/csv; charset=utf-8")
        done = replace(
            job, status="done", finished_at=self._now().isoformat(), counts=result.counts
        )
        self._jobs.save(done)
        self.empi.audit.record(
            AuditEvent(
                consortium_id=job.consortium_id,
                actor_subject=job.created_by,
                actor_role=job.created_role,
                actor_institution=job.institution_id,
                action=AuditAction.CREATE,
                what="Person.bulk_import",
                person_ids=(),
                detail={"job_id": job.job_id, **{k: str(v) for k, v in result.counts.items()}},
            )
        )
        return done

    def _fail(self, job: ImportJob, code: str) -> ImportJob:
        failed = replace(job, status="failed", finished_at=self._now().isoformat(), error=code)
        self._jobs.save(failed)
        return failed

    def _process(
        self,
        consortium_id: str,
        institution_id: str,
        rows: Iterator[tuple[int, Mapping[str, Any] | str]],
        actor: str,
        actor_role: str,
    ) -> ImportResult:
        started = time.perf_counter()
        before = Counter(self._store.requests)
        result = ImportResult()
        prep = self.empi.preparer(consortium_id)
        while True:
            chunk: list[tuple[int, NewRecord | RowResult]] = []
            for n, row in rows:
                chunk.append((n, self._prepare(prep, n, row, institution_id)))
                if len(chunk) == self._chunk:
                    break
            if not chunk:
                break
            outcomes, written = self._chunk_with_fence(consortium_id, chunk, actor, actor_role)
            result.rows.extend(outcomes)
            result.items_written += written
        result.requests = Counter(self._store.requests) - before
        result.seconds = time.perf_counter() - started
        return result

    @staticmethod
    def _prepare(prep: Any, n: int, row: Mapping[str, Any] | str, institution_id: str) -> Any:
        if isinstance(row, str):
            return RowResult(n, "rejected", reason=row)
        local = str(row.get("local_id") or "").strip()
        try:
            return prep.prepare(registration_of(row, institution_id), source="import")
        except InvalidInput as exc:
            reason = exc.code + (f":{exc.details['field']}" if "field" in exc.details else "")
            return RowResult(n, "rejected", local_id=mask(local), reason=reason)

    def _chunk_with_fence(
        self,
        consortium_id: str,
        chunk: list[tuple[int, NewRecord | RowResult]],
        actor: str,
        actor_role: str,
    ) -> tuple[list[RowResult], int]:
        owner = f"{actor}#{secrets.token_hex(4)}"
        waited = 0.0
        delay = 0.05
        lapses = 0
        while True:
            try:
                fence = self._store.acquire_fence(consortium_id, owner, self._lease)
            except WriteFenceHeld:
                if waited >= self._fence_wait:
                    raise
                self._sleep(delay)
                waited += delay
                delay = min(delay * 2, 2.0)
                continue
            try:
                return self._decide_and_write(fence, chunk, actor, actor_role)
            except WriteFenceHeld:
                lapses += 1  # the lease lapsed mid-chunk: read and decide again
                if lapses > 3:
                    raise
                continue
            finally:
                self._store.release_fence(fence)

    def _decide_and_write(
        self,
        fence: Fence,
        chunk: list[tuple[int, NewRecord | RowResult]],
        actor: str,
        actor_role: str,
    ) -> tuple[list[RowResult], int]:
        c = fence.consortium_id
        records = [r for _, r in chunk if isinstance(r, NewRecord)]
        id_keys = {k for r in records for k in r.id_keys()}
        blocks = {b for r in records for b in r.block_keys()}
        lookup = self._store.lookup(c, id_keys, blocks, consistent=True)
        members = lookup.members()
        outside = set(lookup.owners.values()) - members.keys()
        extra = {}
        if outside:
            extra = {p: x.candidate() for p, x in self._store.get_persons(outside).items()}
        state = _Chunk(
            consortium_id=c,
            owners=dict(lookup.owners),
            blocks={b: dict(m) for b, m in lookup.blocks.items()},
            read_blocks=lookup.blocks,
            extra=extra,
        )
        at = self._now().isoformat()
        results = [
            item
            if isinstance(item, RowResult)
            else self._decide(state, n, item, at, actor, actor_role)
            for n, item in chunk
        ]
        self._apply_attachments(state, at, actor, actor_role)
        heads = dict(state.read_blocks)
        unread = set(head_updates(state.change)) - blocks
        if unread:  # blocks of matched persons that no row of the chunk shares
            heads.update(self._store.lookup(c, [], unread, consistent=True).blocks)
        written = self._store.bulk_write(fence, state.change, heads)
        return results, written

    def _decide(
        self, state: _Chunk, n: int, record: NewRecord, at: str, actor: str, actor_role: str
    ) -> RowResult:
        local = next((i.masked for i in record.identifiers if i.assigner), "")
        probe = record.candidate()
        owners = {state.owners[k] for k in record.id_keys() if k in state.owners}
        if len(owners) > 1:
            return RowResult(n, "rejected", local, reason="IDENTIFIERS_SPLIT")
        held = state.candidate(next(iter(owners))) if owners else None
        if held is not None:
            if contradicts(probe, held):
                return RowResult(n, "rejected", local, held.person_id, reason="IDENTIFIER_CONFLICT")
            plan = Plan(Outcome.MATCH, 1.0, held.person_id, deterministic=True)
        else:
            pool = {
                pid: m for b in record.block_keys() for pid, m in state.blocks.get(b, {}).items()
            }
            d = decide(
                probe, list(pool.values()), self.empi.match_threshold, self.empi.review_threshold
            )
            cands = tuple((s.person_id, s.score, s.breakdown) for s in d.candidates)
            plan = Plan(d.outcome, d.score, d.person_id, cands)
        if plan.outcome is Outcome.MATCH:
            assert plan.person_id is not None
            self._attach(state, plan.person_id, record, plan.score, n, at, actor, actor_role)
            return RowResult(n, "matched", local, plan.person_id, plan.score)
        change = new_person_change(
            state.consortium_id, record, plan, at,
            actor=actor, actor_role=actor_role, source={"row": n},
        )  # fmt: skip
        person = change.persons[0][1]
        state.touched[person.person_id] = (None, person)
        state.change.history.extend(change.history)
        state.change.reviews.extend(change.reviews)
        state.index(person)
        outcome = "review" if plan.outcome is Outcome.POSSIBLE_MATCH else "new"
        return RowResult(
            n,
            outcome,
            local,
            person.person_id,
            plan.score,
            candidates=tuple(x[0] for x in plan.candidates),
        )

    def _attach(
        self, state: _Chunk, pid: str, record: NewRecord, score: float, n: int, at: str,
        actor: str, actor_role: str,
    ) -> None:  # fmt: skip
        """Attach a row's identifiers to the person it matched: at once to a person this
        chunk created; for an existing person remember them (its profile is read once for
        the whole chunk), and let the rows after this one see them now."""
        if pid in state.touched:
            old, person = state.touched[pid]
            have = person.identifier_keys()
            new = tuple(replace(i, source="match") for i in record.identifiers if i.key not in have)
            if new:
                state.touched[pid] = (old, replace(person, identifiers=person.identifiers + new))
                state.index(state.touched[pid][1])
                state.change.history.append(_attached(pid, at, actor, actor_role, score, n, new))
            return
        held = state.candidate(pid)
        if held is not None and set(record.id_keys()) <= {k.key for k in held.ids}:
            return  # holds them all already (a re-run): nothing to read or write
        state.attach.setdefault(pid, []).append((record, score, n))
        if held is not None:
            ids = held.ids + tuple(i.id_key for i in record.identifiers if i.id_key not in held.ids)
            projection = replace(held, ids=ids)
            for k in record.id_keys():
                state.owners[k] = pid
            for block in held.block_keys():
                if pid in state.blocks.get(block, {}):
                    state.blocks[block][pid] = projection
            state.extra[pid] = projection

    def _apply_attachments(self, state: _Chunk, at: str, actor: str, actor_role: str) -> None:
        """New persons as they are; existing persons that rows matched, read (consistently,
        under the fence) and given the rows' new identifiers."""
        waiting = {pid: rows for pid, rows in state.attach.items() if rows}
        existing = self._store.get_persons(waiting) if waiting else {}
        for pid, rows in waiting.items():
            person = existing.get(pid)
            if person is None or not person.active:
                continue
            updated = person
            for record, score, n in rows:
                have = updated.identifier_keys()
                new = tuple(
                    replace(i, source="match") for i in record.identifiers if i.key not in have
                )
                if not new:
                    continue
                updated = replace(updated, identifiers=updated.identifiers + new)
                state.change.history.append(_attached(pid, at, actor, actor_role, score, n, new))
            if updated is not person:
                state.touched[pid] = (person, updated.bumped(at))
        state.change.persons.extend(state.touched.values())

    # --------------------------------------------------------------- helpers
    def _institution_of(self, who: Principal, institution_id: str | None) -> str:
        if who.role is Role.CONSORTIUM_ADMIN:
            if not institution_id:
                raise InvalidInput(
                    "INSTITUTION_REQUIRED", "name the institution whose list this is"
                )
            chosen = institution_id
        else:
            who.require_role(Role.DOCTOR, Role.INSTITUTION_ADMIN)
            if not who.institution_id:
                raise Forbidden("NOT_YOUR_INSTITUTION", "you work for no institution")
            if institution_id and institution_id != who.institution_id:
                raise Forbidden(
                    "NOT_YOUR_INSTITUTION", "you may import your institution's list only"
                )
            chosen = who.institution_id
        inst = self.empi.directory.get_institution(who.consortium_id, chosen)
        if inst is None or not inst.active:
            raise InvalidInput("UNKNOWN_INSTITUTION", "no such institution in this consortium")
        return chosen


def _attached(
    pid: str, at: str, actor: str, role: str, score: float, row: int, new: tuple[Any, ...]
) -> HistoryEntry:
    details = {
        "score": score,
        "row": row,
        "identifiers": [{"type": str(i.type), "value": i.masked} for i in new],
    }
    return HistoryEntry(pid, at, "identifiers_attached", actor, role, "", details)
