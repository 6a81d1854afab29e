"""In-memory fakes of the imaging ports, behaving like the adapters of
yilian.adapters.imaging_store: the index (DynamoImagingStore: one "transaction" per new
instance, the SOP guard, RaceLost when a series or study appeared meanwhile, conditional
study updates, versioned reports) and the bucket (S3ImagingFiles), with counters so a test
can tell how often a file was read or written.

Items go through a JSON round trip on the way in, as the adapter's serialiser does, so a
test never sees a value the table could not have kept (None attributes are dropped)."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterable, Mapping
from dataclasses import asdict
from typing import Any

from yilian.adapters.imaging_store import RaceLost
from yilian.domain.imaging import ShareLink


class ConditionFailed(Exception):
    """What DynamoDB's ConditionalCheckFailedException is to the adapter."""


class TransactionCanceled(Exception):
    """A transaction refused for a reason the adapter does not translate (it re-raises)."""


def _clean(values: Mapping[str, Any]) -> dict[str, Any]:
    plain = json.loads(json.dumps(values, default=str))
    return {k: v for k, v in plain.items() if v is not None}


class FakeImagingStore:
    """The DynamoImagingStore port: items by (pk, sk), the same key layout."""

    def __init__(self) -> None:
        self.items: dict[tuple[str, str], dict[str, Any]] = {}
        self.transactions = 0  # index_instance calls that wrote
        self.status_writes: list[dict[str, Any]] = []

    # ------------------------------------------------------------------ helpers
    def _get(self, pk: str, sk: str) -> dict[str, Any] | None:
        item = self.items.get((pk, sk))
        return copy.deepcopy(item) if item is not None else None

    def _put(self, values: Mapping[str, Any]) -> None:
        item = _clean(values)
        self.items[(item["pk"], item["sk"])] = item

    def partition(self, pk: str) -> list[dict[str, Any]]:
        """Every item of a partition (a test's view of the table)."""
        return [copy.deepcopy(v) for (p, _), v in sorted(self.items.items()) if p == pk]

    # ------------------------------------------------------------------ reads
    def study(self, study_uid: str, consistent: bool = False) -> dict[str, Any] | None:
        return self._get(f"STUDY#{study_uid}", "STUDY")

    def series(self, study_uid: str, series_uid: str) -> dict[str, Any] | None:
        return self._get(f"STUDY#{study_uid}", f"SERIES#{series_uid}")

    def sop(self, sop_uid: str) -> dict[str, Any] | None:
        return self._get(f"SOP#{sop_uid}", "SOP")

    def instance(self, study_uid: str, series_uid: str, sop_uid: str) -> dict[str, Any] | None:
        return self._get(f"STUDY#{study_uid}", f"INST#{series_uid}#{sop_uid}")

    def study_items(self, study_uid: str, prefix: str = "") -> list[dict[str, Any]]:
        return [i for i in self.partition(f"STUDY#{study_uid}") if i["sk"].startswith(prefix)]

    def studies_of(
        self,
        index: str,
        partition: str,
        date_range: tuple[str, str] | None = None,
        limit: int = 200,
    ) -> list[dict[str, Any]]:
        name = {"gsi1": "gsi1", "gsi2": "gsi2"}[index]
        lo, hi = (f"{date_range[0]}#", f"{date_range[1]}#~") if date_range else ("", "\uffff")
        hits = [
            i
            for i in self.items.values()
            if i.get(f"{name}pk") == partition and lo <= str(i.get(f"{name}sk", "")) <= hi
        ]
        hits.sort(key=lambda i: i[f"{name}sk"], reverse=True)
        return [copy.deepcopy(i) for i in hits[:limit]]

    # ------------------------------------------------------------------ ingest
    def index_instance(
        self,
        *,
        study: Mapping[str, Any],
        new_study: bool,
        series: Mapping[str, Any],
        new_series: bool,
        instance: Mapping[str, Any],
        status: Mapping[str, Any],
    ) -> bool:
        study_uid, series_uid, sop = study["study_uid"], series["series_uid"], instance["sop_uid"]
        pk = f"STUDY#{study_uid}"
        # The conditions, in the adapter's order: the SOP guard first (False, nothing
        # written), then the series and study (RaceLost, nothing written).
        if (f"SOP#{sop}", "SOP") in self.items:
            return False
        series_there = (pk, f"SERIES#{series_uid}") in self.items
        study_there = (pk, "STUDY") in self.items
        if series_there == new_series or study_there == new_study:
            raise RaceLost()
        self.transactions += 1
        self._put({"pk": f"SOP#{sop}", "sk": "SOP", "study_uid": study_uid,
                   "series_uid": series_uid, "key": instance["key"]})  # fmt: skip
        self._put({"pk": pk, "sk": f"INST#{series_uid}#{sop}", **instance})
        self._put(status)
        self.status_writes.append(_clean(status))
        if new_series:
            self._put({"pk": pk, "sk": f"SERIES#{series_uid}", **series, "instance_count": 1})
        else:
            self.items[(pk, f"SERIES#{series_uid}")]["instance_count"] += 1
        if new_study:
            mods = sorted({str(m) for m in study.get("modalities") or () if m} or {"OT"})
            self._put({"pk": pk, "sk": "STUDY", **study, "modalities": mods,
                       "instance_count": 1, "series_count": 1 if new_series else 0})  # fmt: skip
        else:
            head = self.items[(pk, "STUDY")]
            head["instance_count"] = head.get("instance_count", 0) + 1
            head["series_count"] = head.get("series_count", 0) + (1 if new_series else 0)
            if series.get("modality"):
                head["modalities"] = sorted({*head.get("modalities", []), series["modality"]})
        return True

    def put_status(self, status: Mapping[str, Any]) -> None:
        self._put(status)
        self.status_writes.append(_clean(status))

    def object_status(self, key: str) -> dict[str, Any] | None:
        return self._get(f"OBJ#{key}", "OBJ")

    def object_statuses(self, keys: Iterable[str]) -> dict[str, dict[str, Any]]:
        found = {}
        for k in dict.fromkeys(keys):
            item = self.object_status(k)
            if item is not None:
                found[item["key"]] = item
        return found

    # ------------------------------------------------------------------ batches
    def put_batch(self, batch: Mapping[str, Any]) -> None:
        self._put({"pk": f"BATCH#{batch['batch_id']}", "sk": "BATCH", **batch})

    def batch(self, batch_id: str) -> dict[str, Any] | None:
        return self._get(f"BATCH#{batch_id}", "BATCH")

    # ------------------------------------------------------------------ study changes
    def update_study(
        self,
        study_uid: str,
        values: Mapping[str, Any],
        remove: Iterable[str] = (),
        unlinked_only: bool = False,
    ) -> None:
        head = self.items.get((f"STUDY#{study_uid}", "STUDY"))
        if head is None or (unlinked_only and head.get("link_status") != "unlinked"):
            raise ConditionFailed(f"STUDY#{study_uid}")
        head.update(_clean(values))
        for name in remove:
            head.pop(name, None)

    def is_condition_failure(self, error: Exception) -> bool:
        return isinstance(error, ConditionFailed)

    def update_series(self, study_uid: str, series_uid: str, values: Mapping[str, Any]) -> None:
        key = (f"STUDY#{study_uid}", f"SERIES#{series_uid}")  # an upsert, as update_item is
        self.items.setdefault(key, {"pk": key[0], "sk": key[1]}).update(_clean(values))

    def save_report(
        self,
        study_uid: str,
        report: Mapping[str, Any],
        head: Mapping[str, Any],
        expected_version: int,
    ) -> None:
        pk = f"STUDY#{study_uid}"
        current = self.items.get((pk, "REPORT"))
        version = int(report["version"])
        stale = (current is not None) if expected_version == 0 else (
            current is None or current.get("version") != expected_version
        )  # fmt: skip
        if stale or (pk, f"REPORT#V{version:04d}") in self.items or (pk, "STUDY") not in self.items:
            raise RaceLost()
        self._put({"pk": pk, "sk": "REPORT", **report})
        self._put({"pk": pk, "sk": f"REPORT#V{version:04d}", **report})
        self.items[(pk, "STUDY")].update(_clean(head))

    def report(self, study_uid: str) -> dict[str, Any] | None:
        return self._get(f"STUDY#{study_uid}", "REPORT")

    # ------------------------------------------------------------------ share links
    def put_share(self, link: ShareLink) -> None:
        if (f"SHARE#{link.token_hash}", "SHARE") in self.items:
            raise TransactionCanceled("a share link with this token exists")
        self._put({"pk": f"SHARE#{link.token_hash}", "sk": "SHARE", **asdict(link)})
        self._put({
            "pk": f"STUDY#{link.study_uid}", "sk": f"SHARE#{link.link_id}",
            "token_hash": link.token_hash, "expires_at": link.expires_at,
            "created_at": link.created_at, "created_by": link.created_by,
            "created_by_name": link.created_by_name, "label": link.label,
            "has_code": link.has_code,
        })  # fmt: skip

    def share(self, token_hash: str) -> ShareLink | None:
        item = self._get(f"SHARE#{token_hash}", "SHARE")
        if item is None:
            return None
        fields = set(ShareLink.__dataclass_fields__)
        return ShareLink(**{k: v for k, v in item.items() if k in fields})

    def count_share(self, token_hash: str, field: str) -> None:
        key = (f"SHARE#{token_hash}", "SHARE")  # ADD creates what is missing, as DynamoDB does
        item = self.items.setdefault(key, {"pk": key[0], "sk": key[1]})
        item[field] = int(item.get(field, 0)) + 1

    def revoke_share(self, token_hash: str, study_uid: str, link_id: str, at: str) -> None:
        for key in ((f"SHARE#{token_hash}", "SHARE"), (f"STUDY#{study_uid}", f"SHARE#{link_id}")):
            self.items.setdefault(key, {"pk": key[0], "sk": key[1]})["revoked_at"] = at

    def put_export(self, study_uid: str, export: Mapping[str, Any]) -> None:
        self._put({"pk": f"STUDY#{study_uid}", "sk": f"EXPORT#{export['export_id']}", **export})


class NoSuchKey(Exception):
    """What S3's NoSuchKey is to S3ImagingFiles."""


class FakeFiles:
    """The S3ImagingFiles port: objects by key, every read and write counted."""

    bucket = "fake-imaging-bucket"

    def __init__(self) -> None:
        self.objects: dict[str, tuple[bytes, str]] = {}
        self.reads: list[str] = []
        self.writes: list[str] = []

    def put(self, key: str, data: bytes) -> None:
        """An upload (the client's PUT / POST, or a gateway's put): not counted as a write."""
        self.objects[key] = (bytes(data), "application/dicom")

    def read(self, key: str) -> bytes:
        self.reads.append(key)
        if key not in self.objects:
            raise NoSuchKey(key)
        return self.objects[key][0]

    def size(self, key: str) -> int | None:
        return len(self.objects[key][0]) if key in self.objects else None

    def read_if_exists(self, key: str) -> bytes | None:
        try:
            return self.read(key)
        except NoSuchKey:
            return None

    def write(self, key: str, data: bytes, content_type: str) -> None:
        self.writes.append(key)
        self.objects[key] = (bytes(data), content_type)

    def writes_under(self, prefix: str) -> list[str]:
        return [k for k in self.writes if k.startswith(prefix)]

    def upload_form(self, key: str, max_bytes: int, seconds: int) -> dict[str, Any]:
        return {"url": f"https://{self.bucket}.s3.local/",
                "fields": {"key": key, "Content-Type": "application/dicom",
                           "max-bytes": str(max_bytes), "expires-in": str(seconds)}}  # fmt: skip

    def upload_url(self, key: str, seconds: int) -> str:
        return f"https://{self.bucket}.s3.local/{key}?method=PUT&expires={seconds}"

    def download_url(self, key: str, seconds: int, filename: str = "") -> str:
        name = f"&filename={filename}" if filename else ""
        return f"https://{self.bucket}.s3.local/{key}?expires={seconds}{name}"
