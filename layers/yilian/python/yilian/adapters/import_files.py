"""Bulk registration's storage: files in the import bucket (S3), job records in the platform
table (DynamoDB: pk IMPORT#{consortium}#{job}, sk JOB; `status` drives the conditional
start, so a job runs once however often S3 delivers its event)."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from yilian.domain.errors import InvalidInput
from yilian.services.bulk_import import ImportJob


class S3ImportFiles:
    def __init__(self, s3: Any, bucket: str) -> None:
        self._s3 = s3
        self._bucket = bucket

    def presign_put(self, key: str, seconds: int) -> str:
        return str(
            self._s3.generate_presigned_url(
                "put_object", Params={"Bucket": self._bucket, "Key": key}, ExpiresIn=seconds
            )
        )

    def presign_get(self, key: str, seconds: int) -> str:
        return str(
            self._s3.generate_presigned_url(
                "get_object", Params={"Bucket": self._bucket, "Key": key}, ExpiresIn=seconds
            )
        )

    def read(self, key: str, max_bytes: int) -> bytes:
        obj = self._s3.get_object(Bucket=self._bucket, Key=key)
        if int(obj.get("ContentLength") or 0) > max_bytes:
            raise InvalidInput("FILE_TOO_LARGE", f"an import file has at most {max_bytes} bytes")
        return bytes(obj["Body"].read())

    def write(self, key: str, body: bytes, content_type: str) -> None:
        self._s3.put_object(Bucket=self._bucket, Key=key, Body=body, ContentType=content_type)


class DynamoImportJobs:
    def __init__(self, dynamodb: Any, table: str) -> None:
        self._db = dynamodb
        self._table = table

    @staticmethod
    def _key(consortium_id: str, job_id: str) -> dict[str, Any]:
        return {"pk": {"S": f"IMPORT#{consortium_id}#{job_id}"}, "sk": {"S": "JOB"}}

    def _item(self, job: ImportJob) -> dict[str, Any]:
        return {
            **self._key(job.consortium_id, job.job_id),
            "kind": {"S": "import_job"},
            "status": {"S": job.status},
            "data": {"S": json.dumps(dataclasses.asdict(job), ensure_ascii=False)},
        }

    def create(self, job: ImportJob) -> None:
        self._db.put_item(
            TableName=self._table,
            Item=self._item(job),
            ConditionExpression="attribute_not_exists(pk)",
        )

    def get(self, consortium_id: str, job_id: str) -> ImportJob | None:
        item = self._db.get_item(
            TableName=self._table, Key=self._key(consortium_id, job_id), ConsistentRead=True
        ).get("Item")
        return ImportJob(**json.loads(item["data"]["S"])) if item else None

    def start(self, job: ImportJob, at: str) -> ImportJob | None:
        current = self.get(job.consortium_id, job.job_id)
        if current is None or current.status not in ("awaiting_upload", "failed"):
            return None
        started = dataclasses.replace(current, status="running", started_at=at, error=None)
        try:
            self._db.put_item(
                TableName=self._table,
                Item=self._item(started),
                ConditionExpression="#st = :was",
                ExpressionAttributeNames={"#st": "status"},
                ExpressionAttributeValues={":was": {"S": current.status}},
            )
        except self._db.exceptions.ConditionalCheckFailedException:
            return None  # another delivery of the event started it
        return started

    def save(self, job: ImportJob) -> None:
        self._db.put_item(TableName=self._table, Item=self._item(job))
