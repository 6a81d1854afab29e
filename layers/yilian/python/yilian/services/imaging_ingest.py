"""Indexing uploaded DICOM: one object key at a time, as the S3 event (through the ingest
queue) names it.

A bad file is REJECTED with its reason and never retried; the same SOP instance twice is one
instance (DUPLICATE); anything unexpected raises, so the queue retries with back-off and
finally dead-letters it (the status keeps the reason for the re-drive screen). The original
is never changed or removed. The study is linked to a person of the master index once, when
its first instance arrives; a study that matches nobody waits in the reconciliation queue.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from yilian.domain import clock
from yilian.domain.errors import DomainError
from yilian.domain.imaging import (
    DicomPatient,
    DicomRejected,
    ImagingPolicy,
    LinkStatus,
    ObjectStatus,
    ThumbnailStatus,
    institution_of_key,
    mask_id_card,
    parse_object_key,
)

FINAL_STATUSES = {ObjectStatus.INDEXED, ObjectStatus.DUPLICATE, ObjectStatus.REJECTED}


@dataclass(frozen=True, slots=True)
class LinkResult:
    person_id: str | None
    reason: str  # MATCHED | POSSIBLE_MATCH | NO_MATCH | DEMOGRAPHICS_INCOMPLETE | ...
    candidates: tuple[dict[str, Any], ...] = ()


class PatientLinker(Protocol):
    def link(self, consortium_id: str, institution_id: str, patient: DicomPatient) -> LinkResult:
        """Who in the master index this DICOM patient is, if the index can tell."""
        ...


class Files(Protocol):
    def read(self, key: str) -> bytes: ...
    def write(self, key: str, data: bytes, content_type: str) -> None: ...


def thumbnail_key(study_uid: str, series_uid: str) -> str:
    return f"derived/{study_uid}/{series_uid}/thumbnail.jpg"


class ImagingIngest:
    def __init__(
        self,
        store: Any,
        files: Files,
        linker: PatientLinker,
        directory: Any,
        *,
        parse: Callable[[bytes], Any],
        thumbnail: Callable[[Any, int], bytes],
        undecodable: type[Exception],
        race_lost: type[Exception],
        policy: ImagingPolicy | None = None,
        now: Callable[[], datetime] = clock.now,
    ) -> None:
        self.store = store
        self.files = files
        self.linker = linker
        self.directory = directory
        self._parse = parse
        self._thumbnail = thumbnail
        self._undecodable = undecodable
        self._race_lost = race_lost
        self.policy = policy or ImagingPolicy()
        self._now = now
        self._institutions: dict[str, bool] = {}
        # batch id -> the institution it was issued to: a batch never changes hands, so one
        # read serves every file of it that this container ingests (its item lists every
        # file, ~100 bytes each: re-reading it per file made a batch quadratic)
        self._batch_owner: dict[str, str] = {}
        self._known_series: set[tuple[str, str]] = set()  # (study, series) indexed before

    def ingest(self, consortium_id: str, key: str, size: int | None, attempt: int = 1) -> dict:
        """Index the object at `key`; returns its status (what GET /imaging/uploads shows)."""
        previous = self.store.object_status(key)
        if previous and previous.get("status") in FINAL_STATUSES:
            return previous  # a second delivery of the same event
        status: dict[str, Any] = {"pk": f"OBJ#{key}", "sk": "OBJ", "key": key, "size": size,
                  "attempts": attempt, "updated_at": self._stamp()}  # fmt: skip
        try:
            where = parse_object_key(key, consortium_id)
            status["institution_id"] = where.institution_id
            status["batch_id"] = where.batch_id
            self._check_uploader(consortium_id, where.institution_id, where.batch_id)
            if size is not None and size > self.policy.max_file_bytes:
                raise DicomRejected(
                    "TOO_LARGE", f"files are at most {self.policy.max_file_mb} MB", size=size
                )
            parsed = self._parse(self.files.read(key))
        except DicomRejected as rejected:
            status.update(status=str(ObjectStatus.REJECTED), code=rejected.code,
                          message=rejected.message, details=rejected.details)  # fmt: skip
            self.store.put_status(status)
            return status
        return self._index(consortium_id, status, parsed)

    def record_failure(self, key: str, attempt: int, error: BaseException) -> None:
        """An unexpected error: kept on the object's status so the dead-letter screen can say
        why; the queue retries the message."""
        if (self.store.object_status(key) or {}).get("status") in FINAL_STATUSES:
            return
        self.store.put_status({
            "pk": f"OBJ#{key}", "sk": "OBJ", "key": key, "status": str(ObjectStatus.FAILED),
            "institution_id": institution_of_key(key) or None,
            "code": type(error).__name__, "message": str(error)[:500], "attempts": attempt,
            "updated_at": self._stamp(),
        })  # fmt: skip

    # ------------------------------------------------------------------ internals
    def _check_uploader(self, consortium_id: str, institution_id: str, batch_id: str) -> None:
        if institution_id not in self._institutions:
            inst = self.directory.get_institution(consortium_id, institution_id)
            self._institutions[institution_id] = inst is not None and inst.active
        if not self._institutions[institution_id]:
            raise DicomRejected("UNKNOWN_INSTITUTION", "the prefix names no active institution")
        if batch_id == "gateway":
            return  # the institution's own gateway: IAM limits it to its prefix
        owner = self._batch_owner.get(batch_id)
        if owner is None:
            batch = self.store.batch(batch_id)
            owner = str((batch or {}).get("institution_id") or "")
            if owner and len(self._batch_owner) < 10_000:
                self._batch_owner[batch_id] = owner
        if owner != institution_id:
            raise DicomRejected(
                "WRONG_PREFIX", "the file is under a prefix its upload batch was not issued for"
            )

    def _index(self, consortium_id: str, status: dict[str, Any], parsed: Any) -> dict:
        """One transaction per instance. A series this container has already seen needs no
        reads first (its study and series exist; a duplicate SOP fails the transaction's
        guard); a new one is read, linked and thumbnailed before its first instance."""
        status.update(study_uid=parsed.study_uid, series_uid=parsed.series_uid,
                      sop_uid=parsed.sop_uid)  # fmt: skip
        where = (parsed.study_uid, parsed.series_uid)
        for _ in range(5):
            study: dict[str, Any] | None = {"study_uid": parsed.study_uid}
            series: dict[str, Any] | None = {"series_uid": parsed.series_uid,
                                             "modality": parsed.modality}  # fmt: skip
            if where not in self._known_series:
                if self.store.sop(parsed.sop_uid) is not None:
                    return self._duplicate(status)
                study = self.store.study(parsed.study_uid, consistent=True)
                series = self.store.series(parsed.study_uid, parsed.series_uid)
            status["status"] = str(ObjectStatus.INDEXED)
            try:
                created = self.store.index_instance(
                    study=study or self._new_study(consortium_id, status, parsed),
                    new_study=study is None,
                    series=series or self._new_series(parsed),
                    new_series=series is None,
                    instance=self._instance(status["key"], parsed, status.get("size")),
                    status=status,
                )  # fmt: skip
            except self._race_lost:
                self._known_series.discard(where)
                continue
            if len(self._known_series) > 10_000:
                self._known_series.clear()
            self._known_series.add(where)
            return status if created else self._duplicate(status)
        raise RuntimeError("the study kept changing under this ingest; retried 5 times")

    def _duplicate(self, status: dict[str, Any]) -> dict[str, Any]:
        status["status"] = str(ObjectStatus.DUPLICATE)
        status["message"] = "this SOP instance is already indexed"
        self.store.put_status(status)
        return status

    def _new_study(self, consortium_id: str, status: dict[str, Any], parsed: Any) -> dict:
        institution_id = status["institution_id"]
        try:
            link = self.linker.link(consortium_id, institution_id, parsed.patient)
        except DomainError as error:  # demographics the index cannot use: a human links it
            link = LinkResult(None, error.code)
        p = parsed.patient
        now = self._stamp()
        head = {
            "study_uid": parsed.study_uid,
            "consortium_id": consortium_id,
            "institution_id": institution_id,
            **parsed.study,
            "modalities": [parsed.modality] if parsed.modality else [],
            "patient": {"patient_id": p.patient_id, "name": p.name, "sex": p.sex,
                        "birth_date": p.birth_date,
                        "id_card_masked": mask_id_card(p.id_card) if p.id_card else ""},
            "created_at": now,
            "gsi2pk": f"INST#{institution_id}",
            "gsi2sk": f"{parsed.study['date'] or '00000000'}#{parsed.study_uid}",
        }  # fmt: skip
        if link.person_id:
            head.update(person_id=link.person_id, link_status=str(LinkStatus.LINKED),
                        linked_by="auto", linked_at=now,
                        gsi1pk=f"PERSON#{link.person_id}", gsi1sk=head["gsi2sk"])  # fmt: skip
        else:
            head.update(link_status=str(LinkStatus.UNLINKED), link_reason=link.reason,
                        candidates=list(link.candidates), gsi1pk=f"UNLINKED#{consortium_id}",
                        gsi1sk=f"{now}#{parsed.study_uid}")  # fmt: skip
        return head

    def _new_series(self, parsed: Any) -> dict[str, Any]:
        series = {"series_uid": parsed.series_uid, **parsed.series,
                  "first_sop": parsed.sop_uid}  # fmt: skip
        if not parsed.has_pixels:
            series["thumbnail"] = str(ThumbnailStatus.NO_PIXELS)
            return series
        try:
            jpeg = self._thumbnail(parsed.dataset, self.policy.thumbnail_px)
        except self._undecodable as error:
            code = str(getattr(error, "code", "PIXEL_DATA_INVALID")).lower()
            series["thumbnail"] = code if code in set(ThumbnailStatus) else "pixel_data_invalid"
            series["thumbnail_reason"] = str(error)[:300]
            series["transfer_syntax"] = parsed.transfer_syntax
            return series
        key = thumbnail_key(parsed.study_uid, parsed.series_uid)
        self.files.write(key, jpeg, "image/jpeg")
        series.update(thumbnail=str(ThumbnailStatus.READY), thumbnail_key=key)
        return series

    def _instance(self, key: str, parsed: Any, size: int | None) -> dict[str, Any]:
        return {
            "sop_uid": parsed.sop_uid,
            "series_uid": parsed.series_uid,
            "sop_class_uid": parsed.sop_class_uid,
            "transfer_syntax": parsed.transfer_syntax,
            "key": key,
            "size": size,
            **parsed.instance,
            "viewer_metadata": parsed.viewer_metadata,
        }

    def _stamp(self) -> str:
        return self._now().isoformat(timespec="seconds")


class EmpiPatientLinker:
    """Links through the master index's own matching: a deterministic identifier (the
    institution's local number, an ID card) or demographics scoring above the match
    threshold. Anything less waits for a human, with the candidates the index proposed."""

    def __init__(self, empi: Any) -> None:
        self._empi = empi

    def link(self, consortium_id: str, institution_id: str, patient: DicomPatient) -> LinkResult:
        if not patient.name or not patient.birth_date or patient.sex not in ("M", "F"):
            return LinkResult(None, "DEMOGRAPHICS_INCOMPLETE")
        preparer = self._empi.preparer(consortium_id)
        record = preparer.prepare(patient.registration(institution_id), source="imaging")
        plan = self._empi.plan(consortium_id, record)
        candidates = tuple({"person_id": pid, "score": round(score, 3)}
                           for pid, score, _ in plan.candidates[:5])  # fmt: skip
        if str(plan.outcome) == "MATCH" and plan.person_id:
            return LinkResult(plan.person_id, "MATCHED")
        return LinkResult(None, str(plan.outcome), candidates)
