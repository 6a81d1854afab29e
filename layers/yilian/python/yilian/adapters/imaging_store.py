"""The imaging index in DynamoDB (ImagingTable) and the files in S3 (ImagingBucket).

    STUDY#{study}   STUDY                      the study: person link, counts, report summary
        gsi1 PERSON#{person} | UNLINKED#{consortium}   {date}#{study}   a person's studies;
                                                        the reconciliation queue
        gsi2 INST#{institution}                         {date}#{study}   an institution's list
    STUDY#{study}   SERIES#{series}            the series, its thumbnail status
    STUDY#{study}   INST#{series}#{sop}        the instance: its file, viewer metadata (gzip)
    STUDY#{study}   REPORT / REPORT#V{n}       the radiologist's report, every version kept
    STUDY#{study}   SHARE#{link}               a cloud-film link of the study (pointer)
    SOP#{sop}       SOP                        the idempotency guard: one instance per SOP UID
    OBJ#{key}       OBJ                        what became of one uploaded object
    BATCH#{batch}   BATCH                      an upload batch (presigned URLs handed out)
    SHARE#{hash}    SHARE                      a cloud-film link, by its token's hash

A new instance is ONE transaction (the SOP guard, the instance, the series and study
counters, the object's status): the same file twice is one instance, and nothing is ever
half-indexed. A study's view is one query of its partition.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterable, Mapping
from dataclasses import asdict
from decimal import Decimal
from typing import Any

from boto3.dynamodb.types import TypeDeserializer, TypeSerializer

from yilian.domain.imaging import ShareLink

_ser = TypeSerializer()
_de = TypeDeserializer()


class RaceLost(Exception):
    """Another ingest created the series or study first: re-read and try again."""


def _item(values: Mapping[str, Any]) -> dict[str, Any]:
    clean = json.loads(json.dumps(values, default=str), parse_float=Decimal)
    return {k: _ser.serialize(v) for k, v in clean.items() if v is not None}


def _plain(item: Mapping[str, Any]) -> dict[str, Any]:
    return {k: _num(_de.deserialize(v)) for k, v in item.items()}


def _num(value: Any) -> Any:
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, list):
        return [_num(v) for v in value]
    if isinstance(value, set):
        return sorted(_num(v) for v in value)
    if isinstance(value, dict):
        return {k: _num(v) for k, v in value.items()}
    if isinstance(value, bytes | bytearray) or type(value).__name__ == "Binary":
        return bytes(value)
    return value


def _key(pk: str, sk: str) -> dict[str, Any]:
    return {"pk": {"S": pk}, "sk": {"S": sk}}


def study_sort(date: str, study_uid: str) -> str:
    return f"{date or '00000000'}#{study_uid}"


class DynamoImagingStore:
    def __init__(self, dynamodb: Any, table: str) -> None:
        self._db = dynamodb
        self._table = table

    # ------------------------------------------------------------------ reads
    def _get(self, pk: str, sk: str, consistent: bool = False) -> dict[str, Any] | None:
        out = self._db.get_item(TableName=self._table, Key=_key(pk, sk), ConsistentRead=consistent)
        return _plain(out["Item"]) if "Item" in out else None

    def study(self, study_uid: str, consistent: bool = False) -> dict[str, Any] | None:
        return self._get(f"STUDY#{study_uid}", "STUDY", consistent)

    def series(self, study_uid: str, series_uid: str) -> dict[str, Any] | None:
        return self._get(f"STUDY#{study_uid}", f"SERIES#{series_uid}", True)

    def sop(self, sop_uid: str) -> dict[str, Any] | None:
        return self._get(f"SOP#{sop_uid}", "SOP")

    def instance(self, study_uid: str, series_uid: str, sop_uid: str) -> dict[str, Any] | None:
        item = self._get(f"STUDY#{study_uid}", f"INST#{series_uid}#{sop_uid}")
        return _unpack(item) if item else None

    def study_items(self, study_uid: str, prefix: str = "") -> list[dict[str, Any]]:
        """The study's partition (or the part whose sort key starts with `prefix`)."""
        cond = "pk = :pk" + (" AND begins_with(sk, :p)" if prefix else "")
        values: dict[str, Any] = {":pk": {"S": f"STUDY#{study_uid}"}}
        if prefix:
            values[":p"] = {"S": prefix}
        return [_unpack(i) for i in self._query(KeyConditionExpression=cond,
                                                ExpressionAttributeValues=values)]  # fmt: skip

    def studies_of(
        self,
        index: str,
        partition: str,
        date_range: tuple[str, str] | None = None,
        limit: int = 200,
    ) -> list[dict[str, Any]]:
        """Study heads by person (gsi1 PERSON#), reconciliation (gsi1 UNLINKED#) or
        institution (gsi2 INST#), newest first."""
        name = {"gsi1": "gsi1", "gsi2": "gsi2"}[index]
        cond = f"{name}pk = :pk"
        values: dict[str, Any] = {":pk": {"S": partition}}
        if date_range:
            cond += f" AND {name}sk BETWEEN :lo AND :hi"
            values[":lo"] = {"S": f"{date_range[0]}#"}
            values[":hi"] = {"S": f"{date_range[1]}#~"}
        return self._query(
            IndexName=name, KeyConditionExpression=cond, ExpressionAttributeValues=values,
            ScanIndexForward=False, limit=limit,
        )  # fmt: skip

    def _query(self, limit: int | None = None, **kwargs: Any) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        kwargs["TableName"] = self._table
        while True:
            page = self._db.query(**kwargs)
            out.extend(_plain(i) for i in page.get("Items", []))
            if "LastEvaluatedKey" not in page or (limit and len(out) >= limit):
                return out[:limit] if limit else out
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]

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
        """Index one instance in one transaction. False: the SOP UID is already indexed
        (nothing written). RaceLost: the series or study appeared meanwhile."""
        study_uid, series_uid, sop = study["study_uid"], series["series_uid"], instance["sop_uid"]
        pk = f"STUDY#{study_uid}"
        inst = dict(instance)
        meta = inst.pop("viewer_metadata", None)
        inst_item = _item({"pk": pk, "sk": f"INST#{series_uid}#{sop}", **inst})
        if meta is not None:
            inst_item["meta"] = {"B": gzip.compress(json.dumps(meta).encode(), compresslevel=3)}
        items: list[dict[str, Any]] = [
            {"Put": {"TableName": self._table,
                     "Item": _item({"pk": f"SOP#{sop}", "sk": "SOP", "study_uid": study_uid,
                                    "series_uid": series_uid, "key": instance["key"]}),
                     "ConditionExpression": "attribute_not_exists(pk)"}},
            {"Put": {"TableName": self._table, "Item": inst_item}},
            {"Put": {"TableName": self._table, "Item": _item(status)}},
        ]  # fmt: skip
        if new_series:
            items.append({"Put": {
                "TableName": self._table,
                "Item": _item({"pk": pk, "sk": f"SERIES#{series_uid}", **series,
                               "instance_count": 1}),
                "ConditionExpression": "attribute_not_exists(pk)"}})  # fmt: skip
        else:
            items.append(_add(self._table, pk, f"SERIES#{series_uid}", {"instance_count": 1}))
        counts = {"instance_count": 1, "series_count": 1 if new_series else 0}
        if new_study:
            head = _item({"pk": pk, "sk": "STUDY", **study, **counts})
            head["modalities"] = {"SS": sorted({str(m) for m in study.get("modalities") or ()
                                                if m} or {"OT"})}  # fmt: skip
            items.append({"Put": {"TableName": self._table, "Item": head,
                                  "ConditionExpression": "attribute_not_exists(pk)"}})  # fmt: skip
        else:
            items.append(_add(self._table, pk, "STUDY", counts, modality=series.get("modality")))
        try:
            self._db.transact_write_items(TransactItems=items)
        except self._db.exceptions.TransactionCanceledException as error:
            reasons = [r.get("Code") for r in error.response.get("CancellationReasons", [])]
            if reasons and reasons[0] == "ConditionalCheckFailed":
                return False
            if "ConditionalCheckFailed" in reasons:
                raise RaceLost() from error
            raise
        return True

    def put_status(self, status: Mapping[str, Any]) -> None:
        self._db.put_item(TableName=self._table, Item=_item(status))

    def object_status(self, key: str) -> dict[str, Any] | None:
        return self._get(f"OBJ#{key}", "OBJ", True)

    def object_statuses(self, keys: Iterable[str]) -> dict[str, dict[str, Any]]:
        wanted = list(dict.fromkeys(keys))
        found: dict[str, dict[str, Any]] = {}
        for start in range(0, len(wanted), 100):
            request = {self._table: {"Keys": [_key(f"OBJ#{k}", "OBJ") for k in
                                              wanted[start:start + 100]]}}  # fmt: skip
            while request:
                page = self._db.batch_get_item(RequestItems=request)
                for item in page.get("Responses", {}).get(self._table, []):
                    plain = _plain(item)
                    found[plain["key"]] = plain
                request = page.get("UnprocessedKeys") or {}
        return found

    # ------------------------------------------------------------------ batches
    def put_batch(self, batch: Mapping[str, Any]) -> None:
        self._db.put_item(
            TableName=self._table,
            Item=_item({"pk": f"BATCH#{batch['batch_id']}", "sk": "BATCH", **batch}),
        )

    def batch(self, batch_id: str) -> dict[str, Any] | None:
        return self._get(f"BATCH#{batch_id}", "BATCH")

    # ------------------------------------------------------------------ study changes
    def update_study(self, study_uid: str, values: Mapping[str, Any], remove: Iterable[str] = (),
                     unlinked_only: bool = False) -> None:  # fmt: skip
        """Set (and remove) attributes of an existing study; `unlinked_only` refuses
        (ConditionalCheckFailedException) a study someone linked meanwhile."""
        names, vals, sets = {}, {}, []
        for i, (k, v) in enumerate(values.items()):
            names[f"#a{i}"] = k
            vals[f":v{i}"] = _ser.serialize(json.loads(json.dumps(v), parse_float=Decimal))
            sets.append(f"#a{i} = :v{i}")
        expr = "SET " + ", ".join(sets)
        drops = list(remove)
        for j, k in enumerate(drops):
            names[f"#r{j}"] = k
        if drops:
            expr += " REMOVE " + ", ".join(f"#r{j}" for j in range(len(drops)))
        condition = "attribute_exists(pk)"
        if unlinked_only:
            condition += " AND link_status = :unlinked"
            vals[":unlinked"] = {"S": "unlinked"}
        self._db.update_item(
            TableName=self._table, Key=_key(f"STUDY#{study_uid}", "STUDY"),
            UpdateExpression=expr, ExpressionAttributeNames=names,
            ExpressionAttributeValues=vals, ConditionExpression=condition,
        )  # fmt: skip

    def is_condition_failure(self, error: Exception) -> bool:
        return isinstance(error, self._db.exceptions.ConditionalCheckFailedException)

    def update_series(self, study_uid: str, series_uid: str, values: Mapping[str, Any]) -> None:
        names = {f"#a{i}": k for i, k in enumerate(values)}
        vals = {f":v{i}": _ser.serialize(json.loads(json.dumps(v), parse_float=Decimal))
                for i, v in enumerate(values.values())}  # fmt: skip
        self._db.update_item(
            TableName=self._table, Key=_key(f"STUDY#{study_uid}", f"SERIES#{series_uid}"),
            UpdateExpression="SET " + ", ".join(f"#a{i} = :v{i}" for i in range(len(values))),
            ExpressionAttributeNames=names, ExpressionAttributeValues=vals,
        )  # fmt: skip

    def save_report(self, study_uid: str, report: Mapping[str, Any], head: Mapping[str, Any],
                    expected_version: int) -> None:  # fmt: skip
        """The report's new version, the current report and the study's summary, at once;
        refused (RaceLost) when someone else signed in between."""
        pk = f"STUDY#{study_uid}"
        version = int(report["version"])
        cond = "attribute_not_exists(pk)" if expected_version == 0 else "version = :v"
        current: dict[str, Any] = {"Put": {
            "TableName": self._table, "Item": _item({"pk": pk, "sk": "REPORT", **report}),
            "ConditionExpression": cond}}  # fmt: skip
        if expected_version:
            current["Put"]["ExpressionAttributeValues"] = {":v": {"N": str(expected_version)}}
        names = {f"#h{i}": k for i, k in enumerate(head)}
        vals = {f":h{i}": _ser.serialize(json.loads(json.dumps(v), parse_float=Decimal))
                for i, v in enumerate(head.values())}  # fmt: skip
        items = [
            current,
            {"Put": {"TableName": self._table,
                     "Item": _item({"pk": pk, "sk": f"REPORT#V{version:04d}", **report}),
                     "ConditionExpression": "attribute_not_exists(pk)"}},
            {"Update": {"TableName": self._table, "Key": _key(pk, "STUDY"),
                        "UpdateExpression": "SET " + ", ".join(f"#h{i} = :h{i}"
                                                               for i in range(len(head))),
                        "ExpressionAttributeNames": names, "ExpressionAttributeValues": vals,
                        "ConditionExpression": "attribute_exists(pk)"}},
        ]  # fmt: skip
        try:
            self._db.transact_write_items(TransactItems=items)
        except self._db.exceptions.TransactionCanceledException as error:
            raise RaceLost() from error

    def report(self, study_uid: str) -> dict[str, Any] | None:
        return self._get(f"STUDY#{study_uid}", "REPORT", True)

    # ------------------------------------------------------------------ share links
    def put_share(self, link: ShareLink) -> None:
        data = asdict(link)
        pk = f"STUDY#{link.study_uid}"
        self._db.transact_write_items(TransactItems=[
            {"Put": {"TableName": self._table,
                     "Item": _item({"pk": f"SHARE#{link.token_hash}", "sk": "SHARE", **data}),
                     "ConditionExpression": "attribute_not_exists(pk)"}},
            {"Put": {"TableName": self._table,
                     "Item": _item({"pk": pk, "sk": f"SHARE#{link.link_id}",
                                    "token_hash": link.token_hash, "expires_at": link.expires_at,
                                    "created_at": link.created_at, "created_by": link.created_by,
                                    "created_by_name": link.created_by_name,
                                    "label": link.label, "has_code": link.has_code})}},
        ])  # fmt: skip

    def share(self, token_hash: str) -> ShareLink | None:
        item = self._get(f"SHARE#{token_hash}", "SHARE", True)
        if item is None:
            return None
        fields = set(ShareLink.__dataclass_fields__)
        return ShareLink(**{k: v for k, v in item.items() if k in fields})

    def count_share(self, token_hash: str, field: str) -> None:
        """views (a film opened) or failed_codes (a wrong access code)."""
        self._db.update_item(
            TableName=self._table, Key=_key(f"SHARE#{token_hash}", "SHARE"),
            UpdateExpression="ADD #f :one", ExpressionAttributeNames={"#f": field},
            ExpressionAttributeValues={":one": {"N": "1"}},
        )  # fmt: skip

    def revoke_share(self, token_hash: str, study_uid: str, link_id: str, at: str) -> None:
        self._db.transact_write_items(TransactItems=[
            {"Update": {"TableName": self._table, "Key": _key(f"SHARE#{token_hash}", "SHARE"),
                        "UpdateExpression": "SET revoked_at = :at",
                        "ExpressionAttributeValues": {":at": {"S": at}}}},
            {"Update": {"TableName": self._table,
                        "Key": _key(f"STUDY#{study_uid}", f"SHARE#{link_id}"),
                        "UpdateExpression": "SET revoked_at = :at",
                        "ExpressionAttributeValues": {":at": {"S": at}}}},
        ])  # fmt: skip

    def put_export(self, study_uid: str, export: Mapping[str, Any]) -> None:
        self._db.put_item(
            TableName=self._table,
            Item=_item(
                {"pk": f"STUDY#{study_uid}", "sk": f"EXPORT#{export['export_id']}", **export}
            ),
        )


def _add(table: str, pk: str, sk: str, counts: Mapping[str, int], modality: Any = None) -> dict:
    parts = [f"#c{i} :c{i}" for i in range(len(counts))]
    names = {f"#c{i}": k for i, k in enumerate(counts)}
    values: dict[str, Any] = {f":c{i}": {"N": str(v)} for i, v in enumerate(counts.values())}
    if modality:
        parts.append("modalities :m")
        values[":m"] = {"SS": [str(modality)]}
    return {"Update": {"TableName": table, "Key": _key(pk, sk),
                       "UpdateExpression": "ADD " + ", ".join(parts),
                       "ExpressionAttributeNames": names, "ExpressionAttributeValues": values,
                       "ConditionExpression": "attribute_exists(pk)"}}  # fmt: skip


def _unpack(item: dict[str, Any]) -> dict[str, Any]:
    meta = item.pop("meta", None)
    if meta is not None:
        item["viewer_metadata"] = json.loads(gzip.decompress(bytes(meta)))
    return item


class S3ImagingFiles:
    """The imaging bucket: originals under dicom/ (never changed), derived JPEGs under
    derived/, de-identified exports under exports/."""

    def __init__(self, s3: Any, bucket: str) -> None:
        self._s3 = s3
        self.bucket = bucket

    def read(self, key: str) -> bytes:
        return bytes(self._s3.get_object(Bucket=self.bucket, Key=key)["Body"].read())

    def size(self, key: str) -> int | None:
        try:
            return int(self._s3.head_object(Bucket=self.bucket, Key=key)["ContentLength"])
        except self._s3.exceptions.ClientError:
            return None

    def read_if_exists(self, key: str) -> bytes | None:
        try:
            return self.read(key)
        except self._s3.exceptions.NoSuchKey:
            return None

    def write(self, key: str, data: bytes, content_type: str) -> None:
        self._s3.put_object(Bucket=self.bucket, Key=key, Body=data, ContentType=content_type,
                            ServerSideEncryption="AES256")  # fmt: skip

    def upload_form(self, key: str, max_bytes: int, seconds: int) -> dict[str, Any]:
        """A presigned POST: S3 itself refuses a file over max_bytes or after expiry."""
        return dict(self._s3.generate_presigned_post(
            Bucket=self.bucket, Key=key,
            Fields={"Content-Type": "application/dicom"},
            Conditions=[["content-length-range", 1, max_bytes],
                        {"Content-Type": "application/dicom"}],
            ExpiresIn=seconds,
        ))  # fmt: skip

    def upload_url(self, key: str, seconds: int) -> str:
        """A presigned PUT (for clients that cannot POST a form): the ingest enforces size."""
        return str(self._s3.generate_presigned_url(
            "put_object", Params={"Bucket": self.bucket, "Key": key,
                                  "ContentType": "application/dicom"},
            ExpiresIn=seconds))  # fmt: skip

    def download_url(self, key: str, seconds: int, filename: str = "") -> str:
        params: dict[str, Any] = {"Bucket": self.bucket, "Key": key}
        if filename:
            params["ResponseContentDisposition"] = f'attachment; filename="{filename}"'
        return str(self._s3.generate_presigned_url("get_object", Params=params,
                                                   ExpiresIn=seconds))  # fmt: skip
