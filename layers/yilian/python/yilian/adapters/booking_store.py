"""Sessions, slots and appointments in DynamoDB (BookingsTable).

    SLOTS#{institution}#{date}   SESSION#{session_id}   a session (its day's partition)
    SLOTS#{institution}#{date}   {slot_id}              a slot and its counters
    APPT#{appointment_id}        APPT                   an appointment (with its history)
        gsi1 PERSON#{c}#{person}     start#id   a resident's appointments
        gsi2 DAY#{institution}#{date} start#id  the day list for check-in
        gsi3 SLOTAPPT#{slot_id}      id         a slot's appointments (session cancelled)
    LOCK#{c}#{person}#{doctor or department}#{date}  LOCK   one active booking per doctor/day
    RESIDENT#{c}#{person}        STANDING              active bookings, recent no-shows
    QUOTA#{institution}          {department}          reserved share and release time
    TEMPLATE#{institution}       {template_id}         a recurring weekly session

A search for a day at an institution is one query of one partition. Booking, cancelling,
rescheduling, checking in and marking a no-show are each ONE TransactWriteItems whose
conditions carry the rules (capacity per quota, the slot still open and bookable now, one
active booking per doctor per day, the resident's limit and suspension): correct under any
concurrency on DynamoDB itself, not only in the serialised local stack.
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from yilian.domain.booking import (
    Appointment,
    BookingPolicy,
    Quota,
    ResidentStanding,
    Session,
    Slot,
)

CONFLICT_RETRIES = 4


class DuplicateSession(Exception):
    """A session with this id exists already (a template published twice for a day)."""


class BookingRefused(Exception):
    """A transaction condition failed; `reason` says which rule."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _plain(value: Any) -> Any:
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def _dynamo(value: Any) -> Any:
    if isinstance(value, float):
        return Decimal(str(value))
    if isinstance(value, dict):
        return {k: _dynamo(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_dynamo(v) for v in value]
    return value


def slot_partition(slot_id: str) -> str:
    """Slot ids are {institution}.{date}.{n}.{HHMM}: the key follows from the id."""
    institution, day = slot_id.split(".")[:2]
    return f"SLOTS#{institution}#{day}"


@dataclass(frozen=True)
class Booking:
    """One booking's writes: the appointment, from which quota of which slot."""

    appointment: Appointment
    slot: Slot
    lock_key: str


class DynamoBookingStore:
    def __init__(self, dynamodb: Any, table: str) -> None:
        from boto3.dynamodb.types import TypeDeserializer, TypeSerializer

        self._db = dynamodb
        self._table = table
        self._ser = TypeSerializer()
        self._de = TypeDeserializer()

    # ---------------------------------------------------------------- encoding
    def _item(self, attrs: Mapping[str, Any]) -> dict[str, Any]:
        return {k: self._ser.serialize(_dynamo(v)) for k, v in attrs.items() if v is not None}

    def _attrs(self, item: Mapping[str, Any]) -> dict[str, Any]:
        return {k: _plain(self._de.deserialize(v)) for k, v in item.items()}

    def _key(self, pk: str, sk: str) -> dict[str, Any]:
        return {"pk": {"S": pk}, "sk": {"S": sk}}

    @staticmethod
    def lock_key(appt: Appointment) -> str:
        who = appt.doctor_id or f"dept:{appt.department}"
        return f"LOCK#{appt.consortium_id}#{appt.person_id}#{who}#{appt.day}"

    # ---------------------------------------------------------------- sessions and slots
    def put_session(self, session: Session, slots: list[Slot]) -> None:
        """A session and its slots, all or nothing (a session has at most ~100 slots)."""
        part = f"SLOTS#{session.institution_id}#{session.date}"
        writes = [
            {
                "Put": {
                    "TableName": self._table,
                    "ConditionExpression": "attribute_not_exists(pk)",
                    "Item": self._item(
                        {
                            "pk": part,
                            "sk": f"SESSION#{session.session_id}",
                            "kind": "session",
                            **session.to_json(),
                        }
                    ),
                }
            }
        ]
        for slot in slots:
            writes.append(
                {
                    "Put": {
                        "TableName": self._table,
                        "ConditionExpression": "attribute_not_exists(pk)",
                        "Item": self._item(
                            {
                                "pk": part,
                                "sk": slot.slot_id,
                                "kind": "slot",
                                "public_cap": slot.public_cap,
                                **slot.to_json(),
                            }
                        ),
                    }
                }
            )
        for start in range(0, len(writes), 100):
            try:
                self._db.transact_write_items(TransactItems=writes[start : start + 100])
            except self._db.exceptions.TransactionCanceledException as exc:
                reasons = exc.response.get("CancellationReasons") or []
                if start == 0 and reasons and reasons[0].get("Code") == "ConditionalCheckFailed":
                    raise DuplicateSession(session.session_id) from None
                raise

    def day(self, institution_id: str, day: str) -> tuple[list[Session], list[Slot]]:
        """Every session and slot of an institution on a day: one partition."""
        sessions, slots = [], []
        for attrs in self._query_partition(f"SLOTS#{institution_id}#{day}"):
            kind = attrs.pop("kind", "")
            attrs.pop("pk"), attrs.pop("sk")
            if kind == "session":
                sessions.append(Session.from_json(attrs))
            elif kind == "slot":
                slots.append(Slot.from_json(attrs))
        return sessions, slots

    def get_slot(self, slot_id: str) -> Slot | None:
        try:
            key = self._key(slot_partition(slot_id), slot_id)
        except ValueError:
            return None
        item = self._db.get_item(TableName=self._table, Key=key, ConsistentRead=True).get("Item")
        if not item or item.get("kind", {}).get("S") != "slot":
            return None
        attrs = self._attrs(item)
        return Slot.from_json(attrs)

    def get_session(self, institution_id: str, day: str, session_id: str) -> Session | None:
        key = self._key(f"SLOTS#{institution_id}#{day}", f"SESSION#{session_id}")
        item = self._db.get_item(TableName=self._table, Key=key, ConsistentRead=True).get("Item")
        if not item:
            return None
        attrs = self._attrs(item)
        for storage in ("pk", "sk", "kind"):
            attrs.pop(storage, None)
        return Session.from_json(attrs)

    def cancel_session(self, session: Session, reason: str) -> None:
        """The session and every slot closed to booking (existing bookings are cancelled one
        by one by the service, each in its own transaction)."""
        part = f"SLOTS#{session.institution_id}#{session.date}"
        _, slots = self.day(session.institution_id, session.date)
        keys = [f"SESSION#{session.session_id}"] + [
            s.slot_id for s in slots if s.session_id == session.session_id
        ]
        for sk in keys:
            self._db.update_item(
                TableName=self._table,
                Key=self._key(part, sk),
                UpdateExpression="SET #s = :c, cancel_reason = :r",
                ExpressionAttributeNames={"#s": "status"},
                ExpressionAttributeValues={":c": {"S": "CANCELLED"}, ":r": {"S": reason}},
            )

    def _query_partition(self, pk: str) -> Iterable[dict[str, Any]]:
        kwargs: dict[str, Any] = {
            "TableName": self._table,
            "KeyConditionExpression": "pk = :pk",
            "ExpressionAttributeValues": {":pk": {"S": pk}},
        }
        while True:
            out = self._db.query(**kwargs)
            for item in out.get("Items", []):
                yield self._attrs(item)
            if "LastEvaluatedKey" not in out:
                return
            kwargs["ExclusiveStartKey"] = out["LastEvaluatedKey"]

    # ---------------------------------------------------------------- appointments
    def appointment_item(self, appt: Appointment, version: int) -> dict[str, Any]:
        attrs: dict[str, Any] = {
            "pk": f"APPT#{appt.appointment_id}",
            "sk": "APPT",
            "version": version,
            "data": appt.to_json(),
            "status": str(appt.status),
            "gsi1pk": f"PERSON#{appt.consortium_id}#{appt.person_id}",
            "gsi1sk": f"{appt.start}#{appt.appointment_id}",
            "gsi2pk": f"DAY#{appt.institution_id}#{appt.day}",
            "gsi2sk": f"{appt.start}#{appt.appointment_id}",
            "gsi3pk": f"SLOTAPPT#{appt.slot_id}",
            "gsi3sk": appt.appointment_id,
        }
        if appt.referral_id:
            attrs["gsi4pk"] = f"REFERRAL#{appt.referral_id}"
            attrs["gsi4sk"] = appt.appointment_id
        return self._item(attrs)

    def get_appointment(self, appointment_id: str) -> tuple[Appointment, int] | None:
        key = self._key(f"APPT#{appointment_id}", "APPT")
        item = self._db.get_item(TableName=self._table, Key=key, ConsistentRead=True).get("Item")
        if not item:
            return None
        attrs = self._attrs(item)
        return Appointment.from_json(attrs["data"]), int(attrs["version"])

    def _appointments(self, index: str, pk: str, limit: int | None = None) -> list[Appointment]:
        """Every appointment under an index key (all pages), or the first `limit`."""
        kwargs: dict[str, Any] = {
            "TableName": self._table,
            "IndexName": index,
            "KeyConditionExpression": f"{index}pk = :pk",
            "ExpressionAttributeValues": {":pk": {"S": pk}},
        }
        out: list[Appointment] = []
        while limit is None or len(out) < limit:
            page = self._db.query(**kwargs)
            out.extend(Appointment.from_json(self._attrs(i)["data"]) for i in page.get("Items", []))
            if "LastEvaluatedKey" not in page:
                break
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]
        return out if limit is None else out[:limit]

    def for_person(self, consortium_id: str, person_id: str) -> list[Appointment]:
        return self._appointments("gsi1", f"PERSON#{consortium_id}#{person_id}")

    def day_list(self, institution_id: str, day: str) -> list[Appointment]:
        return self._appointments("gsi2", f"DAY#{institution_id}#{day}")

    def in_slot(self, slot_id: str) -> list[Appointment]:
        return self._appointments("gsi3", f"SLOTAPPT#{slot_id}")

    def for_referral(self, referral_id: str) -> list[Appointment]:
        return self._appointments("gsi4", f"REFERRAL#{referral_id}")

    def standing(self, consortium_id: str, person_id: str) -> tuple[ResidentStanding, int]:
        key = self._key(f"RESIDENT#{consortium_id}#{person_id}", "STANDING")
        item = self._db.get_item(TableName=self._table, Key=key, ConsistentRead=True).get("Item")
        if not item:
            return ResidentStanding(person_id), 0
        a = self._attrs(item)
        standing = ResidentStanding(
            person_id,
            int(a.get("active", 0)),
            tuple(a.get("no_shows") or ()),
            a.get("suspended_until"),
        )
        return standing, int(a.get("version", 0))

    # ---------------------------------------------------------------- transactions
    def _slot_take(self, slot: Slot, quota: Quota, now: str, delta: int) -> dict[str, Any]:
        """Take one place of `quota` in the slot, under the rules: the slot open, started
        neither too early nor too late, below capacity; the public below its share until the
        release time; a reserved place only while one is held."""
        names = {
            "#b": "booked",
            "#q": f"booked_{quota}",
            "#s": "status",
            "#start": "start",
            "#opens": "opens_at",
            "#cap": "capacity",
            "#rel": "release_at",
        }
        values: dict[str, Any] = {
            ":d": {"N": str(delta)},
            ":open": {"S": "OPEN"},
            ":now": {"S": now},
        }
        condition = "#s = :open AND #start > :now AND #opens <= :now AND #b < #cap"
        if quota is Quota.RESERVED:
            names.update({"#res": "reserved"})
            condition += " AND #q < #res AND #rel > :now"
        else:
            names.update({"#pcap": "public_cap"})
            condition += " AND (#q < #pcap OR #rel <= :now)"
        return {
            "Update": {
                "TableName": self._table,
                "Key": self._key(slot_partition(slot.slot_id), slot.slot_id),
                "UpdateExpression": "ADD #b :d, #q :d",
                "ConditionExpression": condition,
                "ExpressionAttributeNames": names,
                "ExpressionAttributeValues": values,
            }
        }

    def _standing_take(self, appt: Appointment, policy: BookingPolicy, now: str) -> dict[str, Any]:
        return {
            "Update": {
                "TableName": self._table,
                "Key": self._key(f"RESIDENT#{appt.consortium_id}#{appt.person_id}", "STANDING"),
                "UpdateExpression": "ADD #a :one, #v :one",
                "ConditionExpression": "(attribute_not_exists(#a) OR #a < :max) AND "
                "(attribute_not_exists(#u) OR #u <= :now)",
                "ExpressionAttributeNames": {
                    "#a": "active",
                    "#u": "suspended_until",
                    "#v": "version",
                },
                "ExpressionAttributeValues": {
                    ":one": {"N": "1"},
                    ":max": {"N": str(policy.max_active_bookings)},
                    ":now": {"S": now},
                },
            }
        }

    def _standing_release(self, appt: Appointment) -> dict[str, Any]:
        return {
            "Update": {
                "TableName": self._table,
                "Key": self._key(f"RESIDENT#{appt.consortium_id}#{appt.person_id}", "STANDING"),
                "UpdateExpression": "ADD #a :minus, #v :one",
                "ConditionExpression": "#a >= :one",
                "ExpressionAttributeNames": {"#a": "active", "#v": "version"},
                "ExpressionAttributeValues": {":minus": {"N": "-1"}, ":one": {"N": "1"}},
            }
        }

    def _lock_put(self, appt: Appointment) -> dict[str, Any]:
        return {
            "Put": {
                "TableName": self._table,
                "Item": self._item(
                    {"pk": self.lock_key(appt), "sk": "LOCK", "appointment_id": appt.appointment_id}
                ),
                "ConditionExpression": "attribute_not_exists(pk)",
            }
        }

    def _lock_delete(self, appt: Appointment) -> dict[str, Any]:
        return {
            "Delete": {
                "TableName": self._table,
                "Key": self._key(self.lock_key(appt), "LOCK"),
                "ConditionExpression": "appointment_id = :a",
                "ExpressionAttributeValues": {":a": {"S": appt.appointment_id}},
            }
        }

    def _appt_put_new(self, appt: Appointment) -> dict[str, Any]:
        return {
            "Put": {
                "TableName": self._table,
                "Item": self.appointment_item(appt, 1),
                "ConditionExpression": "attribute_not_exists(pk)",
            }
        }

    def _appt_replace(self, appt: Appointment, version: int, expected: str) -> dict[str, Any]:
        return {
            "Put": {
                "TableName": self._table,
                "Item": self.appointment_item(appt, version + 1),
                "ConditionExpression": "version = :v AND #s = :expected",
                "ExpressionAttributeNames": {"#s": "status"},
                "ExpressionAttributeValues": {
                    ":v": {"N": str(version)},
                    ":expected": {"S": expected},
                },
            }
        }

    def book(self, appt: Appointment, slot: Slot, policy: BookingPolicy, now: str) -> None:
        """Take a place, write the appointment, hold the doctor-day lock and count the
        resident's active booking: all or nothing."""
        writes = [
            self._slot_take(slot, appt.quota, now, 1),
            self._appt_put_new(appt),
            self._lock_put(appt),
            self._standing_take(appt, policy, now),
        ]
        self._transact(writes, ["SLOT", "APPOINTMENT_EXISTS", "DUPLICATE_BOOKING", "STANDING"])

    def release(
        self, before: Appointment, version: int, after: Appointment, give_back_place: bool
    ) -> None:
        """Cancel (the place goes back), check in or mark a no-show (it does not): the
        appointment moves on, the lock and the active count are released."""
        writes = [
            self._appt_replace(after, version, str(before.status)),
            self._lock_delete(before),
            self._standing_release(before),
        ]
        roles = ["APPOINTMENT_CHANGED", "LOCK", "STANDING"]
        if give_back_place:
            writes.append(self._slot_give_back(before))
            roles.append("SLOT")
        self._transact(writes, roles)

    def _slot_give_back(self, appt: Appointment) -> dict[str, Any]:
        return {
            "Update": {
                "TableName": self._table,
                "Key": self._key(slot_partition(appt.slot_id), appt.slot_id),
                "UpdateExpression": "ADD #b :minus, #q :minus",
                "ConditionExpression": "#b >= :one AND #q >= :one",
                "ExpressionAttributeNames": {"#b": "booked", "#q": f"booked_{appt.quota}"},
                "ExpressionAttributeValues": {":minus": {"N": "-1"}, ":one": {"N": "1"}},
            }
        }

    def reschedule(
        self,
        before: Appointment,
        version: int,
        cancelled: Appointment,
        new: Appointment,
        new_slot: Slot,
        now: str,
    ) -> None:
        """Cancel one appointment and book another in one transaction: the resident never
        holds both, nor loses the first if the second is refused."""
        writes = [
            self._appt_replace(cancelled, version, str(before.status)),
            self._slot_give_back(before),
            self._slot_take(new_slot, new.quota, now, 1),
            self._appt_put_new(new),
        ]
        roles = ["APPOINTMENT_CHANGED", "OLD_SLOT", "SLOT", "APPOINTMENT_EXISTS"]
        if self.lock_key(before) == self.lock_key(new):
            writes.append(
                {
                    "Update": {
                        "TableName": self._table,
                        "Key": self._key(self.lock_key(new), "LOCK"),
                        "UpdateExpression": "SET appointment_id = :new",
                        "ConditionExpression": "appointment_id = :old",
                        "ExpressionAttributeValues": {
                            ":new": {"S": new.appointment_id},
                            ":old": {"S": before.appointment_id},
                        },
                    }
                }
            )
            roles.append("LOCK")
        else:
            writes += [self._lock_delete(before), self._lock_put(new)]
            roles += ["LOCK", "DUPLICATE_BOOKING"]
        self._transact(writes, roles)

    def save_no_show(
        self,
        before: Appointment,
        version: int,
        after: Appointment,
        standing: ResidentStanding,
        standing_version: int,
    ) -> None:
        """A no-show: the appointment, the lock released, the resident's record (active
        count, recent no-shows, suspension) replaced if unchanged since read."""
        record = self._item(
            {
                "pk": f"RESIDENT#{before.consortium_id}#{before.person_id}",
                "sk": "STANDING",
                "active": max(0, standing.active - 1),
                "no_shows": list(standing.no_shows),
                "suspended_until": standing.suspended_until,
                "version": standing_version + 1,
            }
        )
        condition = "attribute_not_exists(pk) OR version = :v"
        if standing_version == 0:
            condition = "attribute_not_exists(pk) OR attribute_not_exists(version)"
        put: dict[str, Any] = {
            "TableName": self._table,
            "Item": record,
            "ConditionExpression": condition,
        }
        if standing_version:
            put["ExpressionAttributeValues"] = {":v": {"N": str(standing_version)}}
        writes = [
            self._appt_replace(after, version, str(before.status)),
            self._lock_delete(before),
            {"Put": put},
        ]
        self._transact(writes, ["APPOINTMENT_CHANGED", "LOCK", "STANDING"])

    def _transact(self, writes: list[dict[str, Any]], roles: list[str]) -> None:
        """One transaction; a refused condition names its rule. DynamoDB cancels a
        transaction that collides with a concurrent one on the same item
        (TransactionConflict): that is retried with a short backoff, never reported."""
        for attempt in range(CONFLICT_RETRIES + 1):
            try:
                self._db.transact_write_items(TransactItems=writes)
                return
            except self._db.exceptions.TransactionCanceledException as exc:
                reasons = exc.response.get("CancellationReasons") or []
                for role, reason in zip(roles, reasons, strict=False):
                    if reason.get("Code") == "ConditionalCheckFailed":
                        raise BookingRefused(role) from None
                conflict = any(r.get("Code") == "TransactionConflict" for r in reasons)
                if not conflict or attempt == CONFLICT_RETRIES:
                    raise
                time.sleep(0.02 * (2**attempt) * (0.5 + random.random()))

    # ---------------------------------------------------------------- configuration
    def quota(self, institution_id: str, department: str) -> dict[str, Any] | None:
        key = self._key(f"QUOTA#{institution_id}", department)
        item = self._db.get_item(TableName=self._table, Key=key).get("Item")
        return self._attrs(item) if item else None

    def set_quota(self, institution_id: str, department: str, share: float, hours: int) -> None:
        self._db.put_item(
            TableName=self._table,
            Item=self._item(
                {
                    "pk": f"QUOTA#{institution_id}",
                    "sk": department,
                    "reserved_share": share,
                    "release_hours": hours,
                }
            ),
        )

    def quotas(self, institution_id: str) -> list[dict[str, Any]]:
        return list(self._query_partition(f"QUOTA#{institution_id}"))

    def put_template(self, institution_id: str, template_id: str, data: Mapping[str, Any]) -> None:
        self._db.put_item(
            TableName=self._table,
            Item=self._item(
                {"pk": f"TEMPLATE#{institution_id}", "sk": template_id, "data": dict(data)}
            ),
        )

    def templates(self, institution_id: str) -> list[dict[str, Any]]:
        return [a["data"] for a in self._query_partition(f"TEMPLATE#{institution_id}")]
