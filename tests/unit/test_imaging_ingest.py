"""Indexing uploaded DICOM (ImagingIngest) with the real parser and thumbnail renderer over
in-memory fakes: one instance per SOP UID, one link per study, one thumbnail per series, a
clear status for every bad input with nothing half-indexed, and failures kept for the
dead-letter screen."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import pytest

from tests.support import dicom_factory as factory
from tests.support.fake_directory import FakeDirectoryStore
from tests.support.fake_imaging import FakeFiles, FakeImagingStore
from tests.support.fake_referrals import Clock, county_directory
from yilian.adapters.imaging_store import RaceLost
from yilian.domain.clock import CHINA_TZ
from yilian.domain.errors import InvalidInput
from yilian.domain.imaging import DicomPatient, ImagingPolicy, object_key
from yilian.imaging.dicom import parse
from yilian.imaging.render import Undecodable, thumbnail
from yilian.services.imaging_ingest import ImagingIngest, LinkResult

C = "demo-county"
NOW = datetime(2026, 11, 20, 10, 0, tzinfo=CHINA_TZ)
INST = "qiaotou"
PERSON = "p-zhangsan"
SMALL = {"rows": 64, "cols": 64}


class FakeLinker:
    """The master index's answer by the DICOM PatientID: who it is, or nobody."""

    def __init__(self, known: dict[str, str] | None = None) -> None:
        self.known = dict(known or {})
        self.calls: list[tuple[str, str, DicomPatient]] = []
        self.refuse: Exception | None = None

    def link(self, consortium_id: str, institution_id: str, patient: DicomPatient) -> LinkResult:
        self.calls.append((consortium_id, institution_id, patient))
        if self.refuse is not None:
            raise self.refuse
        person_id = self.known.get(patient.patient_id)
        if person_id:
            return LinkResult(person_id, "MATCHED")
        return LinkResult(None, "POSSIBLE_MATCH", ({"person_id": "p-maybe", "score": 0.71},))


@dataclass
class World:
    store: FakeImagingStore = field(default_factory=FakeImagingStore)
    files: FakeFiles = field(default_factory=FakeFiles)
    linker: FakeLinker = field(default_factory=lambda: FakeLinker({"P0001": PERSON}))
    directory: FakeDirectoryStore = field(default_factory=county_directory)
    policy: ImagingPolicy = field(default_factory=lambda: ImagingPolicy(thumbnail_px=64))
    ingest: ImagingIngest = field(init=False)
    _n: int = 0

    def __post_init__(self) -> None:
        self.ingest = ImagingIngest(
            self.store, self.files, self.linker, self.directory,
            parse=parse, thumbnail=lambda ds, size: thumbnail(ds, size=size),
            undecodable=Undecodable, race_lost=RaceLost, policy=self.policy,
            now=Clock(NOW),
        )  # fmt: skip

    def upload(self, data: bytes, institution: str = INST, batch: str = "gateway") -> str:
        self._n += 1
        key = object_key(C, institution, batch, f"{self._n:05d}.dcm")
        self.files.put(key, data)
        return key

    def run(self, data: bytes, **kw: Any) -> dict[str, Any]:
        key = self.upload(data, **kw)
        return self.ingest.ingest(C, key, len(data))

    def index_items(self) -> list[tuple[str, str]]:
        """Everything but the objects' statuses and batches: what a half-index would leave."""
        return [k for k in self.store.items if not k[0].startswith(("OBJ#", "BATCH#"))]


@pytest.fixture
def w() -> World:
    return World()


# ----------------------------------------------------------------------------- indexing
def test_a_ct_series_is_indexed_linked_and_counted(w: World) -> None:
    # Given three slices of one CT series of a patient the master index knows
    files = factory.ct_series(3, **SMALL)
    # When each is ingested
    results = [w.run(f) for f in files]
    # Then each is a new instance of one linked study with one series
    assert [r["status"] for r in results] == ["indexed"] * 3
    study = w.store.study(results[0]["study_uid"])
    assert study is not None
    assert (study["instance_count"], study["series_count"]) == (3, 1)
    assert (study["person_id"], study["link_status"], study["gsi1pk"]) == (
        PERSON,
        "linked",
        f"PERSON#{PERSON}",
    )
    assert study["modalities"] == ["CT"] and study["institution_id"] == INST
    assert study["patient"]["name"] == "张三"
    series = w.store.series(study["study_uid"], results[0]["series_uid"])
    assert series is not None and series["instance_count"] == 3
    # And the person's list and the institution's list both show it
    assert [s["study_uid"] for s in w.store.studies_of("gsi1", f"PERSON#{PERSON}")] == [
        study["study_uid"]
    ]
    assert len(w.store.studies_of("gsi2", f"INST#{INST}")) == 1


def test_the_same_file_twice_is_one_instance(w: World) -> None:
    # Given a slice already indexed
    data = factory.ct_instance(**SMALL)
    first = w.run(data)
    # When the modality sends the very same file again (under another key)
    second = w.run(data)
    # Then it is a duplicate: still one instance, counts unchanged
    assert (first["status"], second["status"]) == ("indexed", "duplicate")
    study = w.store.study(first["study_uid"])
    assert study is not None and study["instance_count"] == 1
    assert len(w.store.study_items(first["study_uid"], "INST#")) == 1
    assert w.store.object_status(second["key"])["status"] == "duplicate"


def test_a_study_is_linked_once_not_once_per_instance(w: World) -> None:
    # Given a study of a CT series (3) and an MR series (1)
    files = factory.study((("ct", 3), ("mr", 1)))
    # When all four files are ingested
    results = [w.run(f) for f in files]
    # Then the master index was asked once, and the study has both modalities
    assert len(w.linker.calls) == 1
    study = w.store.study(results[0]["study_uid"])
    assert study is not None
    assert (study["series_count"], study["instance_count"]) == (2, 4)
    assert study["modalities"] == ["CT", "MR"]


def test_a_patient_matching_nobody_waits_for_reconciliation(w: World) -> None:
    # Given a patient the master index cannot place
    data = factory.ct_instance(**SMALL, patient_id="QT9999", id_card="430725197001010014")
    # When ingested
    result = w.run(data)
    # Then the study is indexed but unlinked, in the consortium's reconciliation queue
    study = w.store.study(result["study_uid"])
    assert study is not None and result["status"] == "indexed"
    assert (study["link_status"], study.get("person_id")) == ("unlinked", None)
    assert study["gsi1pk"] == f"UNLINKED#{C}" and study["link_reason"] == "POSSIBLE_MATCH"
    assert study["candidates"] == [{"person_id": "p-maybe", "score": 0.71}]
    assert w.store.studies_of("gsi1", f"UNLINKED#{C}")[0]["study_uid"] == result["study_uid"]
    # And the ID card is kept only masked
    assert study["patient"]["id_card_masked"] == "4307**********0014"
    assert "430725197001010014" not in str(w.store.items)


def test_demographics_the_index_refuses_leave_the_study_unlinked(w: World) -> None:
    # Given a master index that refuses the DICOM demographics outright
    w.linker.refuse = InvalidInput("ID_FORMAT", "not an ID card")
    # When ingested / Then the study is held with the index's reason, not a crash
    result = w.run(factory.ct_instance(**SMALL))
    study = w.store.study(result["study_uid"])
    assert study is not None and result["status"] == "indexed"
    assert (study["link_status"], study["link_reason"]) == ("unlinked", "ID_FORMAT")


# ----------------------------------------------------------------------------- thumbnails
def test_a_thumbnail_is_written_once_per_series(w: World) -> None:
    # Given a study with a 4-slice CT series and one MR series
    files = factory.study((("ct", 4), ("mr", 1)))
    # When ingested
    results = [w.run(f) for f in files]
    # Then one JPEG per series was written beside the study, and each series says ready
    thumbs = w.files.writes_under("derived/")
    assert len(thumbs) == 2 and len(set(thumbs)) == 2
    for key in thumbs:
        assert w.files.objects[key][0][:2] == b"\xff\xd8"  # a JPEG
    uid = results[0]["study_uid"]
    assert {s["thumbnail"] for s in w.store.study_items(uid, "SERIES#")} == {"ready"}


def test_a_series_nobody_can_decode_is_indexed_without_a_thumbnail(w: World) -> None:
    # Given a JPEG-lossless slice (no decoder installed)
    data = factory.jpeg_lossless_instance()
    # When ingested
    result = w.run(data)
    # Then it is indexed, its series says no_decoder with the reason, and no JPEG was written
    assert result["status"] == "indexed"
    series = w.store.series(result["study_uid"], result["series_uid"])
    assert series is not None
    assert series["thumbnail"] == "no_decoder"
    assert series["transfer_syntax"] == "1.2.840.10008.1.2.4.70" and series["thumbnail_reason"]
    assert w.files.writes_under("derived/") == []


def test_a_file_without_pixels_is_indexed_with_no_pixels(w: World) -> None:
    ds = factory.ct_dataset(**SMALL)
    del ds.PixelData
    result = w.run(factory.to_bytes(ds))
    series = w.store.series(result["study_uid"], result["series_uid"])
    assert series is not None and series["thumbnail"] == "no_pixels"


@pytest.mark.parametrize(
    "make",
    [
        lambda: factory.rle_instance("ct", **SMALL),
        lambda: factory.j2k_instance("ct", **SMALL),
        lambda: factory.us_rgb_instance(**SMALL),
        lambda: factory.multiframe_instance(3, **SMALL),
    ],
    ids=["rle", "j2k", "us-rgb", "multiframe"],
)
def test_decodable_kinds_get_a_thumbnail(w: World, make: Callable[[], bytes]) -> None:
    result = w.run(make())
    series = w.store.series(result["study_uid"], result["series_uid"])
    assert series is not None and series["thumbnail"] == "ready"
    assert w.files.writes_under("derived/") == [series["thumbnail_key"]]


# ----------------------------------------------------------------------------- bad inputs
@pytest.mark.parametrize(
    ("make", "code"),
    [
        (lambda: factory.not_dicom(), "NOT_DICOM"),
        (lambda: factory.missing_uids("study"), "MISSING_UID"),
        (lambda: factory.truncated(factory.ct_instance(**SMALL), 0.6), "TRUNCATED"),
        (lambda: factory.unknown_transfer_syntax(), "UNKNOWN_TRANSFER_SYNTAX"),
        (lambda: factory.pixel_size_mismatch(), "PIXEL_SIZE_MISMATCH"),
    ],
    ids=["not-dicom", "missing-uid", "truncated", "unknown-syntax", "pixel-size"],
)
def test_a_bad_file_is_rejected_with_its_code_and_nothing_indexed(
    w: World, make: Callable[[], bytes], code: str
) -> None:
    # Given a bad upload
    data = make()
    # When ingested
    result = w.run(data)
    # Then its status says rejected and why; no study, series, instance or SOP guard exists
    assert (result["status"], result["code"]) == ("rejected", code)
    assert w.store.object_status(result["key"])["code"] == code
    assert w.index_items() == []
    assert w.linker.calls == [] and w.files.writes == []
    # And the original is kept as it was
    assert w.files.objects[result["key"]][0] == data


def test_a_batch_under_another_institutions_prefix_is_wrong_prefix(w: World) -> None:
    # Given a batch issued to qiaotou, and a file put under xiadu's prefix with that batch id
    w.store.put_batch({"batch_id": "b1", "consortium_id": C, "institution_id": INST,
                       "files": []})  # fmt: skip
    data = factory.ct_instance(**SMALL)
    # When ingested
    result = w.run(data, institution="xiadu", batch="b1")
    # Then it is refused; the file was never read
    assert (result["status"], result["code"]) == ("rejected", "WRONG_PREFIX")
    assert w.files.reads == [] and w.index_items() == []


def test_a_file_in_its_own_batch_is_indexed(w: World) -> None:
    w.store.put_batch({"batch_id": "b1", "consortium_id": C, "institution_id": INST,
                       "files": []})  # fmt: skip
    result = w.run(factory.ct_instance(**SMALL), batch="b1")
    assert result["status"] == "indexed" and result["batch_id"] == "b1"


def test_a_batch_id_nobody_issued_is_wrong_prefix(w: World) -> None:
    result = w.run(factory.ct_instance(**SMALL), batch="b-made-up")
    assert (result["status"], result["code"]) == ("rejected", "WRONG_PREFIX")


def test_another_consortiums_prefix_is_wrong_prefix(w: World) -> None:
    key = "dicom/other-county/qiaotou/gateway/a.dcm"
    w.files.put(key, factory.ct_instance(**SMALL))
    result = w.ingest.ingest(C, key, 100)
    assert (result["status"], result["code"]) == ("rejected", "WRONG_PREFIX")
    assert w.files.reads == []


@pytest.mark.parametrize("institution", ["no-such-clinic", "old-clinic"], ids=["unknown", "closed"])
def test_an_unknown_or_closed_institution_is_refused(w: World, institution: str) -> None:
    result = w.run(factory.ct_instance(**SMALL), institution=institution)
    assert (result["status"], result["code"]) == ("rejected", "UNKNOWN_INSTITUTION")
    assert w.files.reads == [] and w.index_items() == []


def test_a_file_over_the_size_limit_is_refused_without_reading_it(w: World) -> None:
    # Given a 1 MB policy and an object S3 reports as 2 MB
    w.ingest.policy = ImagingPolicy(max_file_mb=1)
    key = w.upload(b"never read")
    # When ingested
    result = w.ingest.ingest(C, key, 2 * 1024 * 1024)
    # Then it is TOO_LARGE, and the file was not read
    assert (result["status"], result["code"]) == ("rejected", "TOO_LARGE")
    assert result["details"]["size"] == 2 * 1024 * 1024
    assert w.files.reads == [] and w.index_items() == []


# ----------------------------------------------------------------------------- races, retries
def test_losing_a_race_for_the_new_study_retries_and_joins_it(w: World) -> None:
    # Given two slices of one series, and another ingest that creates the study while the
    # first slice is being indexed
    first, second = factory.ct_series(2, **SMALL)
    store = w.store
    real = store.index_instance
    raced: list[dict] = []
    calls: list[str] = []

    def racing(**kw: Any) -> bool:
        calls.append(kw["instance"]["sop_uid"])
        if len(calls) == 1:
            raced.append(w.run(second))  # the other ingest wins the race
        return real(**kw)

    store.index_instance = racing  # type: ignore[method-assign]
    # When the first slice is ingested
    result = w.run(first)
    # Then it lost once (RaceLost), re-read the study and joined it: one study, two instances
    assert result["status"] == "indexed" and raced[0]["status"] == "indexed"
    assert calls.count(result["sop_uid"]) == 2  # the lost attempt and the one that held
    study = store.study(result["study_uid"])
    assert study is not None
    assert (study["instance_count"], study["series_count"]) == (2, 1)
    assert len(store.study_items(result["study_uid"], "SERIES#")) == 1


def test_a_study_that_keeps_changing_raises_for_the_queue_to_retry(w: World) -> None:
    # Given a store that always loses the race
    def always(**kw: Any) -> bool:
        raise RaceLost()

    w.store.index_instance = always  # type: ignore[method-assign]
    key = w.upload(factory.ct_instance(**SMALL))
    # When ingested / Then it raises (the queue retries with back-off), nothing indexed
    with pytest.raises(RuntimeError):
        w.ingest.ingest(C, key, 100)
    assert w.index_items() == []


def test_record_failure_keeps_failed_with_the_error_name(w: World) -> None:
    # Given an object whose ingest blew up on its second attempt
    key = w.upload(factory.ct_instance(**SMALL))
    # When the failure is recorded
    w.ingest.record_failure(key, 2, TimeoutError("S3 read timed out"))
    # Then its status says failed, why, and how often it was tried
    status = w.store.object_status(key)
    assert status is not None
    assert (status["status"], status["code"], status["attempts"]) == ("failed", "TimeoutError", 2)
    assert "timed out" in status["message"]
    # And a later delivery indexes it normally
    assert w.ingest.ingest(C, key, 100, attempt=3)["status"] == "indexed"


def test_record_failure_does_not_overwrite_a_final_status(w: World) -> None:
    # Given an object already indexed
    result = w.run(factory.ct_instance(**SMALL))
    # When a late failure of an earlier delivery is recorded
    w.ingest.record_failure(result["key"], 1, RuntimeError("late"))
    # Then the object still says indexed
    assert w.store.object_status(result["key"])["status"] == "indexed"


@pytest.mark.parametrize("bad", [False, True], ids=["indexed", "rejected"])
def test_a_redelivered_event_returns_the_final_status_unchanged(w: World, bad: bool) -> None:
    # Given an object whose ingest already finished
    data = factory.not_dicom() if bad else factory.ct_instance(**SMALL)
    first = w.run(data)
    reads, writes = len(w.files.reads), len(w.store.status_writes)
    # When the same S3 event is delivered again
    again = w.ingest.ingest(C, first["key"], len(data), attempt=2)
    # Then the same status comes back, nothing read or written again
    assert {k: again.get(k) for k in ("status", "code", "study_uid")} == {
        k: first.get(k) for k in ("status", "code", "study_uid")
    }
    assert len(w.files.reads) == reads and len(w.store.status_writes) == writes
