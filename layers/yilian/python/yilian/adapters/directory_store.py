"""The institution directory in DynamoDB (pynamodb), and doctors' sign-in accounts.

Item layout (DirectoryTable, pk/sk + gsi1):
  institution  pk=INST#{consortium}#{id}   sk=PROFILE  gsi1pk=INSTS#{consortium}  gsi1sk={tier}#{id}
  doctor       pk=DOC#{consortium}#{id}    sk=PROFILE  gsi1pk=DOCS#{consortium}#{institution}
                                                       gsi1sk={department}#{id}
  account      pk=USER#{username}          sk=ACCOUNT  (doctor id, role, password hash)
Creates are conditional puts: an id or username is never silently overwritten.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from yilian.domain.directory import Doctor, Institution, InstitutionType, Tier
from yilian.domain.errors import Conflict


def _models(table: str, endpoint: str | None, aws_region: str | None) -> Any:
    from pynamodb.attributes import JSONAttribute, UnicodeAttribute
    from pynamodb.indexes import AllProjection, GlobalSecondaryIndex
    from pynamodb.models import Model

    class Gsi1(GlobalSecondaryIndex):  # type: ignore[type-arg]
        class Meta:
            index_name = "gsi1"
            projection = AllProjection()

        gsi1pk = UnicodeAttribute(hash_key=True)
        gsi1sk = UnicodeAttribute(range_key=True)

    class DirectoryItem(Model):
        class Meta:
            table_name = table
            host = endpoint
            region = aws_region

        pk = UnicodeAttribute(hash_key=True)
        sk = UnicodeAttribute(range_key=True)
        gsi1pk = UnicodeAttribute(null=True)
        gsi1sk = UnicodeAttribute(null=True)
        kind = UnicodeAttribute()
        data = JSONAttribute()
        gsi1 = Gsi1()

    return DirectoryItem


def _institution(data: dict[str, Any]) -> Institution:
    return Institution(
        **{**data, "tier": Tier(data["tier"]), "type": InstitutionType(data["type"])}
    )


class DirectoryStore:
    def __init__(self, table: str, host: str | None = None, region: str | None = None) -> None:
        self._Item = _models(table, host, region)

    # institutions ---------------------------------------------------------------
    def add_institution(self, inst: Institution) -> None:
        self._put_new(
            f"INST#{inst.consortium_id}#{inst.institution_id}",
            "PROFILE",
            "institution",
            dataclasses.asdict(inst),
            gsi=(f"INSTS#{inst.consortium_id}", f"{inst.tier}#{inst.institution_id}"),
            conflict_code="INSTITUTION_EXISTS",
        )

    def save_institution(self, inst: Institution) -> None:
        self._Item(
            f"INST#{inst.consortium_id}#{inst.institution_id}",
            "PROFILE",
            kind="institution",
            data=dataclasses.asdict(inst),
            gsi1pk=f"INSTS#{inst.consortium_id}",
            gsi1sk=f"{inst.tier}#{inst.institution_id}",
        ).save()

    def get_institution(self, consortium_id: str, institution_id: str) -> Institution | None:
        item = self._get(f"INST#{consortium_id}#{institution_id}", "PROFILE")
        return _institution(item.data) if item else None

    def list_institutions(self, consortium_id: str, tier: Tier | None = None) -> list[Institution]:
        cond = self._Item.gsi1sk.startswith(f"{tier}#") if tier else None
        items = self._Item.gsi1.query(f"INSTS#{consortium_id}", cond)
        return [_institution(i.data) for i in items]

    # doctors ----------------------------------------------------------------------
    def add_doctor(self, doctor: Doctor, password_hash: str | None) -> None:
        """The doctor and (when a username is given) their account, both or neither."""
        from pynamodb.exceptions import TransactWriteError
        from pynamodb.transactions import TransactWrite

        doc_item = self._doctor_item(doctor)
        try:
            with TransactWrite(connection=self._Item._get_connection().connection) as tx:
                tx.save(doc_item, condition=self._Item.pk.does_not_exist())
                if doctor.username:
                    tx.save(
                        self._account_item(doctor, password_hash),
                        condition=self._Item.pk.does_not_exist(),
                    )
        except TransactWriteError as exc:
            reasons = [getattr(r, "code", None) for r in (exc.cancellation_reasons or [])]
            if len(reasons) > 1 and reasons[1] == "ConditionalCheckFailed":
                raise Conflict("USERNAME_TAKEN", "that username is already in use") from exc
            if reasons and reasons[0] == "ConditionalCheckFailed":
                raise Conflict("DOCTOR_EXISTS", "a doctor with that id exists") from exc
            raise

    def _account_item(self, doctor: Doctor, password_hash: str | None) -> Any:
        return self._Item(
            f"USER#{doctor.username}",
            "ACCOUNT",
            kind="account",
            data={
                "doctor_id": doctor.doctor_id,
                "consortium_id": doctor.consortium_id,
                "password_hash": password_hash or "",
            },
        )

    def save_doctor(self, doctor: Doctor) -> None:
        self._doctor_item(doctor).save()

    def get_doctor(self, consortium_id: str, doctor_id: str) -> Doctor | None:
        item = self._get(f"DOC#{consortium_id}#{doctor_id}", "PROFILE")
        return Doctor(**item.data) if item else None

    def list_doctors(self, consortium_id: str, institution_id: str) -> list[Doctor]:
        items = self._Item.gsi1.query(f"DOCS#{consortium_id}#{institution_id}")
        return [Doctor(**i.data) for i in items]

    def get_account(self, username: str) -> dict[str, Any] | None:
        item = self._get(f"USER#{username}", "ACCOUNT")
        return dict(item.data) if item else None

    # helpers ------------------------------------------------------------------------
    def _doctor_item(self, doctor: Doctor) -> Any:
        return self._Item(
            f"DOC#{doctor.consortium_id}#{doctor.doctor_id}",
            "PROFILE",
            kind="doctor",
            data=dataclasses.asdict(doctor),
            gsi1pk=f"DOCS#{doctor.consortium_id}#{doctor.institution_id}",
            gsi1sk=f"{doctor.department}#{doctor.doctor_id}",
        )

    def _get(self, pk: str, sk: str) -> Any:
        try:
            return self._Item.get(pk, sk, consistent_read=True)
        except self._Item.DoesNotExist:
            return None

    def _put_new(
        self,
        pk: str,
        sk: str,
        kind: str,
        data: dict[str, Any],
        gsi: tuple[str, str],
        conflict_code: str,
    ) -> None:
        from pynamodb.exceptions import PutError

        item = self._Item(pk, sk, kind=kind, data=data, gsi1pk=gsi[0], gsi1sk=gsi[1])
        try:
            item.save(condition=self._Item.pk.does_not_exist())
        except PutError as exc:
            if exc.cause_response_code == "ConditionalCheckFailedException":
                raise Conflict(conflict_code, "it already exists") from exc
            raise
