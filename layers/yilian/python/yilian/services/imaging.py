"""Imaging for people: uploads, study lists and views, the radiologist's report, the
reconciliation queue, cloud-film share links, DICOMweb (QIDO-RS / WADO-RS subset), previews
and de-identified exports.

Who may see a study is decided in ONE place, `open_study`: the producing institution's staff
and the consortium's reading institutions (区域影像中心) see their work; everyone else goes
through the health record's access rules (RecordAccess.open: the resident, a proxy, a care
relationship, consent, break-glass). Every decision is audited. An unlinked study (the
patient matched nobody yet) is only ever seen by the producing and reading institutions.

Previews are many small reads of one viewing: the decision (and its audit event) is made
once per caller, study and a few minutes, then reused for the frames of that viewing.
"""

from __future__ import annotations

import hashlib
import io
import json
import secrets
import time
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import asdict
from datetime import datetime, timedelta
from typing import Any, Protocol
from urllib.parse import unquote_plus

from yilian.domain import clock
from yilian.domain.audit import AuditAction, AuditEvent
from yilian.domain.directory import Tier
from yilian.domain.errors import Conflict, Forbidden, InvalidInput, NotFound
from yilian.domain.imaging import (
    ImagingPolicy,
    LinkStatus,
    ReportStatus,
    ShareLink,
    check_share,
    imaging_study_resource,
    institution_of_key,
    new_share_link,
    next_report_status,
    object_key,
    parse_date_range,
    parse_modalities,
    parse_report,
    report_bundle,
    safe_file_name,
    token_hash,
)
from yilian.domain.principal import Principal, Role
from yilian.domain.record import document_id

URL_SECONDS = 300  # presigned GETs of originals, exports and the film page's thumbnails
THUMBNAIL_SECONDS = 1800  # a study page stays open while a doctor reads it
VIEWING_SECONDS = 300  # one audited decision covers a viewing's frames for this long
UPLOADERS = (Role.DOCTOR, Role.INSTITUTION_ADMIN)
MAX_QIDO = 200


class Renderer(Protocol):
    """pydicom-backed rendering (imaging layer): yilian.imaging.rendering_port."""

    def preview(self, data: bytes, frame: int, window: str | None, size: int) -> bytes: ...
    def frame(self, data: bytes, frame: int) -> bytes: ...
    def deidentify(self, files: list[bytes], subject_code: str, shift_days: int) -> list[bytes]: ...


class DeadLetters:
    """The ingest's dead-letter queue: list what failed (with the reason kept on each
    object's status) and move it back to the ingest queue."""

    def __init__(self, sqs: Any, queue_url: str, dead_letter_url: str) -> None:
        self._sqs = sqs
        self.queue_url = queue_url
        self.dead_letter_url = dead_letter_url

    def peek(self, limit: int = 100) -> list[dict[str, Any]]:
        """Up to `limit` dead letters, left in the queue: each page is held briefly so the
        next receive sees the following messages, then made visible again."""
        out: list[dict[str, Any]] = []
        try:
            while len(out) < limit:
                page = self._sqs.receive_message(
                    QueueUrl=self.dead_letter_url, MaxNumberOfMessages=10, VisibilityTimeout=30,
                    AttributeNames=["All"],
                ).get("Messages", [])  # fmt: skip
                if not page:
                    break
                out.extend(page)
        finally:
            for m in out:
                self._sqs.change_message_visibility(QueueUrl=self.dead_letter_url,
                                                    ReceiptHandle=m["ReceiptHandle"],
                                                    VisibilityTimeout=0)  # fmt: skip
        return out[:limit]

    def redrive(self, limit: int = 1000) -> int:
        moved = 0
        while moved < limit:
            page = self._sqs.receive_message(
                QueueUrl=self.dead_letter_url, MaxNumberOfMessages=10, VisibilityTimeout=30
            ).get("Messages", [])
            if not page:
                return moved
            for m in page:
                self._sqs.send_message(QueueUrl=self.queue_url, MessageBody=m["Body"])
                self._sqs.delete_message(QueueUrl=self.dead_letter_url,
                                         ReceiptHandle=m["ReceiptHandle"])  # fmt: skip
                moved += 1
        return moved


class ImagingService:
    def __init__(
        self,
        store: Any,
        files: Any,
        access: Any,  # yilian.services.record_access.RecordAccess
        records: Any,  # yilian.services.records.RecordService
        *,
        policy: ImagingPolicy | None = None,
        race_lost: type[Exception] = Exception,
        renderer: Renderer | None = None,
        dead_letters: DeadLetters | None = None,
        now: Callable[[], datetime] = clock.now,
    ) -> None:
        self.store = store
        self.files = files
        self.access = access
        self.records = records
        self.policy = policy or ImagingPolicy()
        self._race_lost = race_lost
        self.renderer = renderer
        self.dead_letters = dead_letters
        self._now = now
        self._viewings: dict[tuple[str, str], float] = {}
        self._readers: tuple[float, frozenset[str]] | None = None

    # ================================================================== the one check
    def open_study(
        self,
        who: Principal,
        study_uid: str,
        action: AuditAction = AuditAction.READ,
        what: str = "ImagingStudy",
        detail: Mapping[str, str] | None = None,
    ) -> dict[str, Any]:
        """The study, if `who` may see it; audited either way. Residents never see an
        unlinked study; other institutions' doctors reach a linked one through the health
        record's access rules."""
        study = self.store.study(study_uid[:64])
        if study is None:
            raise NotFound("STUDY_NOT_FOUND", "no such study")
        if study["consortium_id"] != who.consortium_id:
            raise Forbidden("CROSS_CONSORTIUM", "this study belongs to another consortium")
        person_id = study.get("person_id")
        info = {"study_uid": study_uid, **(detail or {})}
        basis = self._institutional_basis(who, study)
        if basis:
            self.access.audit.record(AuditEvent.by(
                who, action, what, (person_id,) if person_id else (),
                detail={**info, "basis": basis},
            ))  # fmt: skip
            return study
        if not person_id:
            if who.role is Role.RESIDENT:
                raise NotFound("STUDY_NOT_FOUND", "no such study")
            raise Forbidden("STUDY_UNLINKED", "only the producing and reading institutions see "
                            "a study not yet linked to a person")  # fmt: skip
        self.access.open(who, person_id, action, what, info)
        return study

    def _institutional_basis(self, who: Principal, study: Mapping[str, Any]) -> str:
        if who.role not in UPLOADERS or not who.institution_id:
            return ""
        if who.institution_id == study.get("institution_id"):
            return "imaging_producer"
        if who.institution_id in self.reading_institutions(who.consortium_id):
            return "imaging_reader"
        return ""

    def reading_institutions(self, consortium_id: str) -> frozenset[str]:
        """The regional imaging centre: the policy's list, else every county-tier member."""
        if self.policy.reading_institutions:
            return frozenset(self.policy.reading_institutions)
        if self._readers and self._readers[0] > time.monotonic():
            return self._readers[1]
        listed = self.access.directory.list_institutions(consortium_id)
        readers = frozenset(i.institution_id for i in listed if i.tier is Tier.COUNTY)
        self._readers = (time.monotonic() + 300, readers)
        return readers

    def _viewing(self, who: Principal, study_uid: str, what: str) -> dict[str, Any]:
        """open_study once per viewing (a caller, a study, a few minutes)."""
        key = (who.subject, study_uid)
        study = self.store.study(study_uid[:64])
        if study is not None and self._viewings.get(key, 0) > time.monotonic():
            if study["consortium_id"] == who.consortium_id:
                return study
        study = self.open_study(who, study_uid, AuditAction.READ, what)
        self._viewings[key] = time.monotonic() + VIEWING_SECONDS
        return study

    # ================================================================== uploads
    def start_upload(self, who: Principal, body: Mapping[str, Any]) -> dict[str, Any]:
        """Presigned uploads into the caller's institution prefix, a batch at a time."""
        who.require_role(*UPLOADERS)
        institution_id = str(body.get("institution_id") or who.institution_id or "")
        if institution_id != who.institution_id:
            raise Forbidden("INSTITUTION_MISMATCH", "you upload for your own institution only")
        files = body.get("files")
        if not isinstance(files, list) or not files:
            raise InvalidInput("FILES_REQUIRED", "name the files to upload: [{name, size}]")
        if len(files) > self.policy.max_batch_files:
            raise InvalidInput("TOO_MANY_FILES", f"at most {self.policy.max_batch_files} files")
        for f in files:
            size = f.get("size") if isinstance(f, dict) else None
            if not isinstance(size, int) or isinstance(size, bool) or size < 1:
                raise InvalidInput("FILE_SIZE_REQUIRED", "each file gives its size in bytes")
            if size > self.policy.max_file_bytes:
                limit = f"files are at most {self.policy.max_file_mb} MB"
                raise InvalidInput("FILE_TOO_LARGE", limit, name=str(f.get("name")))
        batch_id = "b" + secrets.token_hex(8)
        seconds = self.policy.upload_url_seconds
        now = self._now()
        out = []
        for n, f in enumerate(files):
            name = safe_file_name(str(f.get("name") or ""), n)
            name = name if name.lower().endswith(".dcm") else f"{name}.dcm"
            key = object_key(who.consortium_id, institution_id, batch_id, name)
            out.append({
                "name": str(f.get("name") or ""), "key": key, "size": f["size"],
                "post": self.files.upload_form(key, self.policy.max_file_bytes, seconds),
                "put_url": self.files.upload_url(key, seconds),
            })  # fmt: skip
        self.store.put_batch({
            "batch_id": batch_id, "consortium_id": who.consortium_id,
            "institution_id": institution_id, "created_by": who.subject,
            "created_at": now.isoformat(timespec="seconds"),
            "expires_at": (now + timedelta(seconds=seconds)).isoformat(timespec="seconds"),
            "files": [{"name": f["name"], "key": f["key"], "size": f["size"]} for f in out],
        })  # fmt: skip
        return {"batch_id": batch_id, "expires_in": seconds,
                "max_bytes": self.policy.max_file_bytes, "files": out}  # fmt: skip

    def upload_status(self, who: Principal, batch_id: str) -> dict[str, Any]:
        batch = self.store.batch(batch_id[:40])
        if batch is None or batch["consortium_id"] != who.consortium_id:
            raise NotFound("BATCH_NOT_FOUND", "no such upload batch")
        if who.role is not Role.CONSORTIUM_ADMIN and who.institution_id != batch["institution_id"]:
            raise Forbidden("INSTITUTION_MISMATCH", "this batch belongs to another institution")
        statuses = self.store.object_statuses(f["key"] for f in batch["files"])
        files = []
        for f in batch["files"]:
            s = statuses.get(f["key"], {})
            files.append({"name": f["name"], "key": f["key"],
                          "status": s.get("status", "pending"), "code": s.get("code"),
                          "message": s.get("message"), "study_uid": s.get("study_uid"),
                          "attempts": s.get("attempts")})  # fmt: skip
        counts: dict[str, int] = {}
        for f in files:
            counts[f["status"]] = counts.get(f["status"], 0) + 1
        return {"batch_id": batch_id, "institution_id": batch["institution_id"],
                "created_at": batch["created_at"], "counts": counts, "files": files}  # fmt: skip

    # ================================================================== lists and views
    def person_studies(self, who: Principal, person_id: str | None = None) -> dict[str, Any]:
        """A person's linked studies (a resident: their own, or a dependent's)."""
        pid, heads = self._visible_studies(who, person_id or who.person_id or "")
        return {"person_id": pid, "studies": [self._summary(s) for s in heads]}

    def _visible_studies(self, who: Principal, person_id: str) -> tuple[str, list[dict]]:
        """(the person, newest first, their studies the caller may see): a resident or proxy
        and a doctor with record access see them all; the producing institution's staff and
        the reading centre see their own work without a care relationship."""
        if not person_id:
            raise InvalidInput("PERSON_REQUIRED", "name the person")
        person = self.access.persons.get_person(person_id[:64])
        if person is not None and person.merged_into:
            person = self.access.persons.get_person(person.merged_into) or person
        if person is None or person.consortium_id != who.consortium_id:
            raise NotFound("PERSON_NOT_FOUND", "no such person")
        heads = [h for p in (person.person_id, *person.replaces)
                 for h in self.store.studies_of("gsi1", f"PERSON#{p}")]  # fmt: skip
        heads.sort(key=lambda h: (h.get("date") or "", h.get("time") or ""), reverse=True)
        mine = [h for h in heads if self._institutional_basis(who, h)]
        if len(mine) < len(heads) or not heads:
            try:
                self.access.open(who, person.person_id, AuditAction.SEARCH, "ImagingStudy.search")
                return person.person_id, heads
            except Forbidden:
                if not mine:
                    raise
        self.access.audit.record(AuditEvent.by(
            who, AuditAction.SEARCH, "ImagingStudy.search", (person.person_id,),
            detail={"basis": "imaging_producer", "count": str(len(mine))},
        ))  # fmt: skip
        return person.person_id, mine

    def institution_studies(
        self, who: Principal, institution_id: str | None, query: Mapping[str, str]
    ) -> dict[str, Any]:
        """An institution's worklist: its own staff, or a reading institution's;
        `institution_id=*` is the reading centre's worklist over every institution."""
        who.require_role(*UPLOADERS, Role.CONSORTIUM_ADMIN)
        inst = institution_id or who.institution_id or ""
        readers = self.reading_institutions(who.consortium_id)
        if who.role is not Role.CONSORTIUM_ADMIN and inst != who.institution_id:
            if who.institution_id not in readers:
                raise Forbidden("INSTITUTION_MISMATCH", "another institution's studies")
        dates = parse_date_range(query.get("StudyDate") or query.get("date"))
        if inst == "*":
            members = self.access.directory.list_institutions(who.consortium_id)
            heads = [
                h
                for i in members
                for h in self.store.studies_of("gsi2", f"INST#{i.institution_id}", dates)
            ]
            heads.sort(key=lambda h: (h.get("date") or "", h.get("time") or ""), reverse=True)
            heads = heads[:200]
        else:
            heads = self.store.studies_of("gsi2", f"INST#{inst}", dates)
        mods = parse_modalities(query.get("ModalitiesInStudy") or query.get("modality"))
        if mods:
            heads = [h for h in heads if mods & set(h.get("modalities") or [])]
        if query.get("unreported") in ("1", "true"):
            heads = [h for h in heads if h.get("report_status") not in ("final", "amended")]
        persons = sorted({h["person_id"] for h in heads if h.get("person_id")})
        self.access.audit.record(AuditEvent.by(
            who, AuditAction.SEARCH, "ImagingStudy.search", persons,
            detail={"institution_id": inst, "count": str(len(heads))},
        ))  # fmt: skip
        return {"institution_id": inst, "studies": [self._summary(h) for h in heads]}

    def study(self, who: Principal, study_uid: str) -> dict[str, Any]:
        study = self.open_study(who, study_uid)
        self._viewings[(who.subject, study_uid)] = time.monotonic() + VIEWING_SECONDS
        items = self.store.study_items(study_uid)
        view = self._summary(study)
        if who.role is not Role.RESIDENT:
            view["patient"] = study.get("patient")
            view["candidates"] = study.get("candidates")
            view["link_reason"] = study.get("link_reason")
        view["series"] = self._series_views(items, THUMBNAIL_SECONDS)
        report = next((i for i in items if i["sk"] == "REPORT"), None)
        view["report"] = _report_view(report) if report else None
        view["shares"] = [_share_view(i) for i in items if i["sk"].startswith("SHARE#")]
        view["can_report"] = self._can_report(who, study)
        return view

    def _series_views(self, items: list[dict[str, Any]], url_seconds: int) -> list[dict]:
        instances: dict[str, list[dict[str, Any]]] = {}
        for i in items:
            if i["sk"].startswith("INST#"):
                instances.setdefault(i["series_uid"], []).append(_instance_view(i))
        out = []
        for s in sorted((i for i in items if i["sk"].startswith("SERIES#")),
                        key=lambda s: (s.get("number") or 0, s["series_uid"])):  # fmt: skip
            view = {k: s.get(k) for k in ("series_uid", "number", "description", "modality",
                                          "body_part", "instance_count", "thumbnail")}  # fmt: skip
            if s.get("thumbnail_key"):
                view["thumbnail_url"] = self.files.download_url(s["thumbnail_key"], url_seconds)
            view["thumbnail_reason"] = s.get("thumbnail_reason")
            view["instances"] = sorted(instances.get(s["series_uid"], []),
                                       key=lambda i: (i["number"] or 0, i["sop_uid"]))  # fmt: skip
            out.append(view)
        return out

    def _summary(self, s: Mapping[str, Any]) -> dict[str, Any]:
        return {
            "study_uid": s["study_uid"], "date": s.get("date"), "time": s.get("time"),
            "description": s.get("description"), "modalities": s.get("modalities") or [],
            "accession": s.get("accession"), "institution_id": s.get("institution_id"),
            "person_id": s.get("person_id"), "link_status": s.get("link_status"),
            "series_count": s.get("series_count"), "instance_count": s.get("instance_count"),
            "report_status": s.get("report_status"), "patient_name": (s.get("patient") or {})
            .get("name") if s.get("link_status") == LinkStatus.LINKED else None,
        }  # fmt: skip

    def original_url(self, who: Principal, study_uid: str, sop_uid: str) -> dict[str, Any]:
        """The original DICOM file, as a short-lived presigned GET."""
        study = self.open_study(who, study_uid, AuditAction.EXPORT, "ImagingStudy.original",
                                {"sop_uid": sop_uid[:64]})  # fmt: skip
        inst = self._instance(study, sop_uid)
        return {"url": self.files.download_url(inst["key"], URL_SECONDS, f"{sop_uid}.dcm"),
                "expires_in": URL_SECONDS}  # fmt: skip

    def _instance(self, study: Mapping[str, Any], sop_uid: str) -> dict[str, Any]:
        guard = self.store.sop(sop_uid[:64])
        if guard is None or guard["study_uid"] != study["study_uid"]:
            raise NotFound("INSTANCE_NOT_FOUND", "no such instance in this study")
        inst = self.store.instance(study["study_uid"], guard["series_uid"], sop_uid)
        if inst is None:
            raise NotFound("INSTANCE_NOT_FOUND", "no such instance in this study")
        return dict(inst)

    # ================================================================== previews (render)
    def preview(self, who: Principal, study_uid: str, sop_uid: str, frame: int,
                window: str | None) -> bytes:  # fmt: skip
        study = self._viewing(who, study_uid, "ImagingStudy.view")
        return self._render(study, sop_uid, frame, window)

    def _render(self, study: Mapping[str, Any], sop_uid: str, frame: int,
                window: str | None) -> bytes:  # fmt: skip
        if self.renderer is None:
            raise RuntimeError("previews are rendered by the imaging render function")
        inst = self._instance(study, sop_uid)
        if not 0 <= frame < int(inst.get("frames") or 1):
            raise InvalidInput("FRAME_OUT_OF_RANGE", "no such frame", frames=inst.get("frames"))
        win = (window or "default")[:20]
        cached = f"derived/{study['study_uid']}/{inst['series_uid']}/{sop_uid}/{frame}-{win}.jpg"
        jpeg = self.files.read_if_exists(cached)
        if jpeg is None:
            jpeg = self.renderer.preview(self.files.read(inst["key"]), frame, window,
                                         self.policy.preview_px)  # fmt: skip
            self.files.write(cached, jpeg, "image/jpeg")
        return bytes(jpeg)

    def frame_pixels(self, who: Principal, study_uid: str, sop_uid: str, frame: int) -> bytes:
        """WADO-RS frames: the decoded native pixel data of one frame."""
        if self.renderer is None:
            raise RuntimeError("frames are decoded by the imaging render function")
        study = self._viewing(who, study_uid, "ImagingStudy.view")
        inst = self._instance(study, sop_uid)
        if not 0 <= frame < int(inst.get("frames") or 1):
            raise InvalidInput("FRAME_OUT_OF_RANGE", "no such frame", frames=inst.get("frames"))
        return self.renderer.frame(self.files.read(inst["key"]), frame)

    def instance_bytes(self, who: Principal, study_uid: str, sop_uid: str) -> tuple[bytes, str]:
        """WADO-RS instance retrieve: the original bytes (or, when large, a presigned URL)."""
        study = self.open_study(who, study_uid, AuditAction.EXPORT, "ImagingStudy.retrieve",
                                {"sop_uid": sop_uid[:64]})  # fmt: skip
        inst = self._instance(study, sop_uid)
        if int(inst.get("size") or 0) > 4 * 1024 * 1024:
            return b"", self.files.download_url(inst["key"], URL_SECONDS)
        return self.files.read(inst["key"]), ""

    # ================================================================== reports
    def _can_report(self, who: Principal, study: Mapping[str, Any]) -> bool:
        if who.role is not Role.DOCTOR or not who.institution_id:
            return False
        return who.institution_id == study.get("institution_id") or (
            who.institution_id in self.reading_institutions(who.consortium_id)
        )

    def file_report(self, who: Principal, study_uid: str, body: Mapping[str, Any]) -> dict:
        """结构化报告, signed by the calling radiologist; a final one joins the person's
        health record as a DiagnosticReport with its ImagingStudy."""
        who.require_role(Role.DOCTOR)
        draft = parse_report(body)
        study = self.open_study(who, study_uid, AuditAction.UPDATE, "ImagingStudy.report")
        if not self._can_report(who, study):
            raise Forbidden("NOT_A_READER", "reports come from the producing institution or the "
                            "consortium's imaging centre")  # fmt: skip
        for _ in range(3):
            current = self.store.report(study_uid)
            expected = int(current["version"]) if current else 0
            if body.get("version") is not None and body.get("version") != expected:
                raise Conflict("REPORT_CHANGED", "the report changed since you opened it",
                               version=expected)  # fmt: skip
            status = next_report_status(current and current.get("status"), draft)
            at = self._now().isoformat(timespec="seconds")
            report = {
                "study_uid": study_uid, "version": expected + 1, "status": str(status),
                "findings": draft.findings, "impression": draft.impression,
                "technique": draft.technique, "recommendation": draft.recommendation,
                "critical": draft.critical, "signed_by": who.subject, "signed_by_name": who.name,
                "institution_id": who.institution_id, "signed_at": at,
            }  # fmt: skip
            head = {"report_status": str(status), "report_signed_by": who.name,
                    "report_signed_at": at}  # fmt: skip
            try:
                self.store.save_report(study_uid, report, head, expected)
            except self._race_lost:
                continue
            break
        else:
            raise Conflict("REPORT_CHANGED", "the report kept changing; open it again")
        filed = self._file_to_record(who, study, report)
        self._tell_reported(who, study, report)
        return {**_report_view(report), "record": filed}

    def _tell_reported(self, who: Principal, study: Mapping[str, Any],
                       report: Mapping[str, Any]) -> None:  # fmt: skip
        """A signed report is news for the producing institution and, for a linked study,
        the resident; a critical finding (危急值) says so in the title."""
        notices = getattr(self.access, "notices", None)
        if notices is None or report["status"] == ReportStatus.PRELIMINARY:
            return
        from yilian.services.notifications import Notification

        what = study.get("description") or "影像检查"
        title = "危急值：影像报告已签发" if report.get("critical") else "影像报告已签发"
        recipients = [f"inst:{study['institution_id']}"]
        if study.get("person_id"):
            recipients.append(f"person:{study['person_id']}")
        tag = hashlib.sha256(study["study_uid"].encode()).hexdigest()[:16]
        body = (f"{what}（{study.get('date') or ''}）的报告由{report['signed_by_name']}签发："
                f"{report['impression'][:80]}")  # fmt: skip
        for recipient in recipients:
            notices.deliver(Notification(
                notification_id=f"img-{tag}-v{report['version']}-{recipient.split(':')[0]}",
                consortium_id=who.consortium_id, recipient=recipient, kind="ImagingReported",
                title=title, body=body, at=report["signed_at"],
            ))  # fmt: skip

    def _file_to_record(self, who: Principal, study: Mapping[str, Any],
                        report: Mapping[str, Any]) -> dict[str, Any] | None:  # fmt: skip
        """A final report of a linked study becomes (a version of) a 检查报告 document."""
        if report["status"] == ReportStatus.PRELIMINARY or not study.get("person_id"):
            return None
        series = [s for s in self.store.study_items(study["study_uid"], "SERIES#")]
        reporter = Principal(who.subject, who.role, who.consortium_id,
                             report["institution_id"], None, who.name)  # fmt: skip
        bundle = report_bundle(study, series, report, str(study["person_id"]))
        doc_id = document_id(who.consortium_id, str(report["institution_id"]),
                             bundle["identifier"]["value"])  # fmt: skip
        if int(report["version"]) > 1 and self.records.store.head(doc_id) is not None:
            result = self.records.update(reporter, doc_id, bundle)
        else:
            _, result = self.records.submit(reporter, bundle)
        return {"doc_id": result.get("doc_id", doc_id), "version": result.get("version")}

    # ================================================================== reconciliation
    def reconciliation(self, who: Principal) -> dict[str, Any]:
        who.require_role(*UPLOADERS, Role.CONSORTIUM_ADMIN)
        heads = self.store.studies_of("gsi1", f"UNLINKED#{who.consortium_id}", limit=500)
        if who.role is not Role.CONSORTIUM_ADMIN:
            readers = self.reading_institutions(who.consortium_id)
            if who.institution_id not in readers:
                heads = [h for h in heads if h.get("institution_id") == who.institution_id]
        out = []
        for h in heads:
            view = self._summary(h)
            view["patient"] = h.get("patient")
            view["candidates"] = h.get("candidates") or []
            view["link_reason"] = h.get("link_reason")
            view["created_at"] = h.get("created_at")
            out.append(view)
        return {"studies": out}

    def link(self, who: Principal, study_uid: str, body: Mapping[str, Any]) -> dict[str, Any]:
        """A human links a held study to a person of the master index."""
        who.require_role(*UPLOADERS, Role.CONSORTIUM_ADMIN)
        person_id = str(body.get("person_id") or "")
        if not person_id:
            raise InvalidInput("PERSON_REQUIRED", "name the person to link the study to")
        study = self.store.study(study_uid[:64], consistent=True)
        if study is None or study["consortium_id"] != who.consortium_id:
            raise NotFound("STUDY_NOT_FOUND", "no such study")
        if who.role is not Role.CONSORTIUM_ADMIN and not self._institutional_basis(who, study):
            raise Forbidden("INSTITUTION_MISMATCH", "another institution's study")
        if study.get("link_status") == LinkStatus.LINKED:
            raise Conflict("ALREADY_LINKED", "this study is already linked",
                           person_id=study.get("person_id"))  # fmt: skip
        person = self.access.persons.get_person(person_id[:64])
        if person is None or person.consortium_id != who.consortium_id or person.merged_into:
            raise NotFound("PERSON_NOT_FOUND", "no such person in the master index")
        at = self._now().isoformat(timespec="seconds")
        try:
            self.store.update_study(study_uid, {
                "person_id": person.person_id, "link_status": str(LinkStatus.LINKED),
                "linked_by": who.subject, "linked_at": at,
                "gsi1pk": f"PERSON#{person.person_id}", "gsi1sk": study["gsi2sk"],
            }, remove=("candidates",), unlinked_only=True)  # fmt: skip
        except Exception as error:
            if self.store.is_condition_failure(error):
                raise Conflict("ALREADY_LINKED", "this study was linked meanwhile") from error
            raise
        self.access.audit.record(AuditEvent.by(
            who, AuditAction.UPDATE, "ImagingStudy.link", (person.person_id,),
            detail={"study_uid": study_uid},
        ))  # fmt: skip
        study = {**study, "person_id": person.person_id, "link_status": LinkStatus.LINKED}
        report = self.store.report(study_uid)
        filed = None
        if report and report.get("status") != ReportStatus.PRELIMINARY:
            filed = self._file_to_record(who, study, report)
        return {**self._summary(study), "record": filed}

    # ================================================================== cloud film
    def create_share(self, who: Principal, study_uid: str, body: Mapping[str, Any]) -> dict:
        """云胶片: a link to this study for anyone holding it, until it expires or is revoked."""
        study = self.open_study(who, study_uid, AuditAction.EXPORT, "ImagingStudy.share")
        if not study.get("person_id"):
            raise Conflict("STUDY_UNLINKED", "link the study to a person before sharing it")
        link, token = new_share_link(
            study_uid=study_uid, person_id=str(study["person_id"]),
            consortium_id=who.consortium_id, created_by=who.subject,
            created_by_name=who.name, body=body, now=self._now(), policy=self.policy,
        )  # fmt: skip
        self.store.put_share(link)
        return {**_share_view(asdict(link)), "token": token, "path": f"/film/{token}"}

    def revoke_share(self, who: Principal, study_uid: str, link_id: str) -> dict[str, Any]:
        self.open_study(who, study_uid, AuditAction.UPDATE, "ImagingStudy.share.revoke")
        pointer = next((i for i in self.store.study_items(study_uid, f"SHARE#{link_id[:20]}")
                        if i["sk"] == f"SHARE#{link_id}"), None)  # fmt: skip
        if pointer is None:
            raise NotFound("SHARE_NOT_FOUND", "no such share link on this study")
        at = self._now().isoformat(timespec="seconds")
        self.store.revoke_share(pointer["token_hash"], study_uid, link_id, at)
        return {"link_id": link_id, "revoked_at": at}

    def open_film(self, token: str, code: str | None) -> tuple[ShareLink, dict[str, Any]]:
        link = self.store.share(token_hash(token[:64])) if token else None
        if link is None:
            raise NotFound("SHARE_NOT_FOUND", "no such share link")
        try:
            check_share(link, token, code, self._now())
        except Forbidden as refused:
            if refused.code == "ACCESS_CODE_WRONG":
                self.store.count_share(link.token_hash, "failed_codes")
            raise
        study = self.store.study(link.study_uid)
        if study is None or study.get("person_id") != link.person_id:
            raise NotFound("SHARE_NOT_FOUND", "the shared study is no longer available")
        return link, study

    def film(self, token: str, code: str | None) -> dict[str, Any]:
        """The cloud-film page: no sign-in, the link is the key; every opening is audited
        on the person's access log."""
        link, study = self.open_film(token, code)
        self.store.count_share(link.token_hash, "views")
        self.access.audit.record(AuditEvent(
            consortium_id=link.consortium_id, actor_subject=f"share:{link.link_id}",
            actor_role="share_link", actor_institution=None, action=AuditAction.READ,
            what="ImagingStudy.film", person_ids=(link.person_id,),
            detail={"study_uid": link.study_uid, "link_id": link.link_id,
                    "shared_by": link.created_by_name},
            actor_name=f"云胶片链接 {link.label or link.link_id}",
        ))  # fmt: skip
        items = self.store.study_items(link.study_uid)
        patient = study.get("patient") or {}
        report = next((i for i in items if i["sk"] == "REPORT"), None)
        return {
            "study": {**{k: v for k, v in self._summary(study).items()
                         if k not in ("person_id", "accession", "link_status", "patient_name")},
                      "patient": {"name": _mask_name(patient.get("name", "")),
                                  "sex": patient.get("sex"),
                                  "birth_year": (patient.get("birth_date") or "")[:4]}},
            "series": self._series_views(items, URL_SECONDS),
            "report": _report_view(report) if report and report.get("status") != "preliminary"
            else None,
            "expires_at": link.expires_at,
        }  # fmt: skip

    def film_preview(self, token: str, code: str | None, sop_uid: str, frame: int,
                     window: str | None) -> bytes:  # fmt: skip
        _, study = self.open_film(token, code)
        return self._render(study, sop_uid, frame, window)

    # ================================================================== DICOMweb
    def qido_studies(self, who: Principal, query: Mapping[str, str]) -> list[dict[str, Any]]:
        """QIDO-RS /studies: StudyInstanceUID, PatientID (a person id, or the caller's
        institution's local number is not resolved here: use the person id), StudyDate,
        ModalitiesInStudy, AccessionNumber, limit, offset."""
        limit = min(_count(query, "limit", 100), MAX_QIDO)
        offset = _count(query, "offset", 0)
        dates = parse_date_range(query.get("StudyDate"))
        mods = parse_modalities(query.get("ModalitiesInStudy"))
        if query.get("StudyInstanceUID"):
            heads = [self.open_study(who, query["StudyInstanceUID"], AuditAction.SEARCH,
                                     "ImagingStudy.search")]  # fmt: skip
        elif query.get("PatientID"):
            heads = self._visible_studies(who, query["PatientID"][:64])[1]
        else:
            heads = self.institution_studies(who, query.get("institution_id"), query)["studies"]
            heads = [self.store.study(h["study_uid"]) for h in heads]
        out = []
        for h in heads:
            if h is None:
                continue
            if dates and not dates[0] <= (h.get("date") or "") <= dates[1]:
                continue
            if mods and not mods & set(h.get("modalities") or []):
                continue
            if query.get("AccessionNumber") and h.get("accession") != query["AccessionNumber"]:
                continue
            out.append(_study_json(h))
        return out[offset : offset + limit]

    def qido_series(self, who: Principal, study_uid: str) -> list[dict[str, Any]]:
        study = self.open_study(who, study_uid, AuditAction.SEARCH, "ImagingSeries.search")
        return [_series_json(study, s) for s in self.store.study_items(study_uid, "SERIES#")]

    def qido_instances(self, who: Principal, study_uid: str, series_uid: str) -> list[dict]:
        study = self.open_study(who, study_uid, AuditAction.SEARCH, "ImagingInstance.search")
        items = self.store.study_items(study_uid, f"INST#{series_uid[:64]}#")
        return [_instance_json(study, i) for i in items]

    def series_metadata(self, who: Principal, study_uid: str, series_uid: str) -> list[dict]:
        """WADO-RS metadata: what a viewer needs of every instance, from the index."""
        study = self._viewing(who, study_uid, "ImagingStudy.view")
        items = self.store.study_items(study_uid, f"INST#{series_uid[:64]}#")
        if not items:
            raise NotFound("SERIES_NOT_FOUND", "no such series in this study")
        return [{**_study_json(study), **(i.get("viewer_metadata") or {})} for i in items]

    def fhir_study(self, who: Principal, study_uid: str) -> dict[str, Any]:
        """The study as a FHIR ImagingStudy (linked studies: the subject is the person)."""
        study = self.open_study(who, study_uid, AuditAction.READ, "ImagingStudy.fhir")
        if not study.get("person_id"):
            raise NotFound("STUDY_NOT_FOUND", "the study is not linked to a person yet")
        series = self.store.study_items(study_uid, "SERIES#")
        date, time_ = str(study.get("date") or ""), str(study.get("time") or "")
        started = (f"{date[:4]}-{date[4:6]}-{date[6:8]}" if len(date) == 8 else
                   str(study.get("created_at") or "")[:10])  # fmt: skip
        if len(date) == 8 and len(time_) >= 4 and time_[:4].isdigit():
            started += f"T{time_[:2]}:{time_[2:4]}:00+08:00"
        resource = imaging_study_resource(study, series, str(study["person_id"]), started)
        return {**resource, "id": hashlib.sha256(study_uid.encode()).hexdigest()[:40]}

    # ================================================================== de-identified export
    def export(self, who: Principal, study_uid: str, body: Mapping[str, Any]) -> dict[str, Any]:
        """A de-identified copy (PS3.15 basic profile, dates shifted, UIDs remapped) for
        teaching or research, as a new zip object; the originals are never touched."""
        who.require_role(Role.DOCTOR)
        purpose = str(body.get("purpose") or "")
        if purpose not in ("teaching", "research"):
            raise InvalidInput("PURPOSE_REQUIRED", "purpose is teaching or research")
        if self.renderer is None:
            raise RuntimeError("exports are made by the imaging render function")
        self.open_study(
            who, study_uid, AuditAction.EXPORT, "ImagingStudy.deidentify", {"purpose": purpose}
        )
        items = self.store.study_items(study_uid, "INST#")
        if len(items) > 2000:
            raise InvalidInput("STUDY_TOO_LARGE", "exports are limited to 2000 instances")
        export_id = "x" + secrets.token_hex(8)
        shift = -(30 + secrets.randbelow(335))
        subject = "YL-" + hashlib.sha256(f"{export_id}{study_uid}".encode()).hexdigest()[:10]
        outputs = self.renderer.deidentify([self.files.read(i["key"]) for i in items],
                                           subject, shift)  # fmt: skip
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
            for n, data in enumerate(outputs):
                archive.writestr(f"{subject}/{n + 1:05d}.dcm", data)
        key = f"exports/{export_id}/{subject}.zip"
        self.files.write(key, buffer.getvalue(), "application/zip")
        record = {"export_id": export_id, "study_uid": study_uid, "purpose": purpose,
                  "subject_code": subject, "instances": len(outputs), "key": key,
                  "created_by": who.subject,
                  "created_at": self._now().isoformat(timespec="seconds")}  # fmt: skip
        self.store.put_export(study_uid, record)
        return {**{k: v for k, v in record.items() if k != "key"},
                "url": self.files.download_url(key, URL_SECONDS, f"{subject}.zip")}  # fmt: skip

    # ================================================================== dead letters
    def dead_letter_list(self, who: Principal) -> dict[str, Any]:
        who.require_role(Role.CONSORTIUM_ADMIN, Role.INSTITUTION_ADMIN)
        if self.dead_letters is None:
            return {"messages": []}
        out = []
        for m in self.dead_letters.peek():
            records = json.loads(m["Body"]).get("Records", [])
            keys = [unquote_plus(r["s3"]["object"]["key"]) for r in records]
            statuses = self.store.object_statuses(keys)
            for k in keys:
                s = statuses.get(k, {})
                if (
                    who.role is Role.INSTITUTION_ADMIN
                    and institution_of_key(k) != who.institution_id
                ):
                    continue
                out.append({"key": k, "status": s.get("status", "failed"), "code": s.get("code"),
                            "message": s.get("message"), "attempts": s.get("attempts"),
                            "updated_at": s.get("updated_at")})  # fmt: skip
        return {"messages": out}

    def redrive(self, who: Principal) -> dict[str, Any]:
        who.require_role(Role.CONSORTIUM_ADMIN)
        moved = self.dead_letters.redrive() if self.dead_letters else 0
        return {"redriven": moved}

    def object_status(self, who: Principal, key: str) -> dict[str, Any]:
        status = self.store.object_status(key)
        if status is None:
            return {"key": key, "status": "pending"}
        if (
            who.role is not Role.CONSORTIUM_ADMIN
            and status.get("institution_id") != who.institution_id
        ):
            raise Forbidden("INSTITUTION_MISMATCH", "another institution's upload")
        return {k: v for k, v in status.items() if k not in ("pk", "sk")}


# ---------------------------------------------------------------------- views


def _count(query: Mapping[str, str], name: str, default: int) -> int:
    raw = query.get(name) or ""
    if not raw:
        return default
    if not raw.isdigit():
        raise InvalidInput("QUERY_INVALID", f"{name} is a whole number", field=name)
    return int(raw)


def _share_view(i: Mapping[str, Any]) -> dict[str, Any]:
    return {"link_id": i.get("link_id") or str(i.get("sk", ""))[6:],
            "created_at": i.get("created_at"), "expires_at": i.get("expires_at"),
            "created_by_name": i.get("created_by_name"), "label": i.get("label"),
            "has_code": bool(i.get("has_code") or i.get("code_hash")),
            "revoked_at": i.get("revoked_at") or None}  # fmt: skip


def _report_view(r: Mapping[str, Any]) -> dict[str, Any]:
    keys = ("version", "status", "technique", "findings", "impression", "recommendation",
            "critical", "signed_by_name", "institution_id", "signed_at")  # fmt: skip
    return {k: r.get(k) for k in keys}


def _instance_view(i: Mapping[str, Any]) -> dict[str, Any]:
    return {"sop_uid": i["sop_uid"], "number": i.get("number"), "frames": i.get("frames") or 1,
            "rows": i.get("rows"), "columns": i.get("columns"),
            "transfer_syntax": i.get("transfer_syntax"), "window": i.get("window")}  # fmt: skip


def _mask_name(name: str) -> str:
    return name[:1] + "*" * max(1, len(name) - 1) if name else ""


def _attr(vr: str, *values: Any) -> dict[str, Any]:
    clean = [v for v in values if v not in (None, "")]
    return {"vr": vr, "Value": clean} if clean else {"vr": vr}


def _study_json(s: Mapping[str, Any]) -> dict[str, Any]:
    """A study as DICOM JSON (PS3.18 F.2), the attributes QIDO-RS returns for studies."""
    patient = s.get("patient") or {}
    return {
        "00080020": _attr("DA", s.get("date")), "00080030": _attr("TM", s.get("time")),
        "00080050": _attr("SH", s.get("accession")),
        "00080061": _attr("CS", *(s.get("modalities") or [])),
        "00081030": _attr("LO", s.get("description")),
        "00100010": _attr("PN", {"Alphabetic": patient.get("name")} if patient.get("name")
                          else None),
        "00100020": _attr("LO", s.get("person_id") or patient.get("patient_id")),
        "00100030": _attr("DA", patient.get("birth_date")),
        "00100040": _attr("CS", patient.get("sex")),
        "0020000D": _attr("UI", s["study_uid"]),
        "00201206": _attr("IS", s.get("series_count")),
        "00201208": _attr("IS", s.get("instance_count")),
    }  # fmt: skip


def _series_json(study: Mapping[str, Any], s: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "0020000D": _attr("UI", study["study_uid"]), "0020000E": _attr("UI", s["series_uid"]),
        "00080060": _attr("CS", s.get("modality")), "00200011": _attr("IS", s.get("number")),
        "0008103E": _attr("LO", s.get("description")),
        "00180015": _attr("CS", s.get("body_part")),
        "00201209": _attr("IS", s.get("instance_count")),
    }  # fmt: skip


def _instance_json(study: Mapping[str, Any], i: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "0020000D": _attr("UI", study["study_uid"]), "0020000E": _attr("UI", i["series_uid"]),
        "00080016": _attr("UI", i.get("sop_class_uid")), "00080018": _attr("UI", i["sop_uid"]),
        "00200013": _attr("IS", i.get("number")), "00280010": _attr("US", i.get("rows")),
        "00280011": _attr("US", i.get("columns")), "00280008": _attr("IS", i.get("frames")),
    }  # fmt: skip
