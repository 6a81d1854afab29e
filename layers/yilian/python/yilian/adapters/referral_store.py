"""Referrals in DynamoDB: one item per referral, statistics as rollup counters.

ReferralsTable, item `REF#{id}` / `REF`: the referral document (`data`, history included:
a referral has tens of transitions, never thousands), `status` and `version` (the optimistic
lock), and the task token of the workflow's current wait (`wait_token`: written by the
workflow, read by the service, never returned to a client). Sparse index keys make the
worklists single queries over open referrals only:
    gsi1  TO#{c}#{receiver}      due_at#id    open, on the receiving side
    gsi2  FROM#{c}#{referrer}    created#id   open, on the referring side
    gsi3  PATIENT#{c}#{person}   created#id   every referral of a person (residents)
    gsi4  CENTRE#{c}             due_at#id    escalated to the referral centre
The table's stream feeds functions/referral_events (workflow start, events).

ReferralStatsTable: counters (ADD) changed in the same transaction as the referral, at three
levels, so a year's statistics read a few hundred items whatever the number of referrals:
    {c}#{year}           {day}#{referrer}#{receiver}#{direction}   day rollup
    {c}#M#{year}         {YYYY-MM}#{referrer}#{receiver}#{direction}  month rollup
    {c}#D#{year}         {day}      the daily chart: the consortium's
    {c}#D#{year}#{inst}  {day}      the daily chart: the referrals an institution sent or received
A rollup holds the counters of `contribution` (dm_{minutes} included: the decision time
histogram) and SETs its route: day (month for a month rollup), source, target, direction,
target_in_county. A chart item holds `up` and `down` (and SETs `day`); a change that moves
no referral between days, directions or institutions (every transition but a
reassignment's) leaves the chart alone, and a reassignment leaves the consortium's alone.
One transaction writes the referral and at most 2 day + 2 month + 3 chart items (a
reassignment: the old and new receivers' charts), far below TransactWriteItems' 100.
Statistics read the month rollups of the period's whole months, the day rollups of the
days of its partial months, and the chart items of its days.

boto3's low-level client rather than pynamodb: transitions are one TransactWriteItems across
both tables with counters whose names are data (dm_{minutes}), which pynamodb's declared
attributes cannot express.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from decimal import Decimal
from typing import Any, NamedTuple

from yilian.domain.referral import Referral, RollupKey, Status

OPEN_SENTINEL = "9999"  # sorts an open referral without a deadline last


class StaleReferral(Exception):
    """The referral changed since it was read (another decision, a new wait token)."""


class DuplicateReferral(Exception):
    """A referral with this reference already exists (a reference collision: draw again)."""


class Rollup(NamedTuple):
    """One stats item a change ADDs into: its key, the attributes it SETs, its counters."""

    pk: str
    sk: str
    attrs: dict[str, Any]
    counters: dict[str, int]


def rollup_items(consortium_id: str, delta: Mapping[RollupKey, Mapping[str, int]]) -> list[Rollup]:
    """The day rollups, month rollups and chart items a delta adds to, one per item (the
    counters of keys falling on the same item summed). Chart counters that net to zero are
    left out, and a chart item left without counters is not written."""
    c = consortium_id
    out: dict[tuple[str, str], Rollup] = {}
    chart: dict[tuple[str, str], dict[str, int]] = {}

    def add(pk: str, sk: str, attrs: dict[str, Any], counters: Mapping[str, int]) -> None:
        row = out.setdefault((pk, sk), Rollup(pk, sk, attrs, {}))
        for name, n in counters.items():
            row.counters[name] = row.counters.get(name, 0) + n

    for key, counters in delta.items():
        year, month = key.day[:4], key.day[:7]
        route = {"source": key.source, "target": key.target, "direction": key.direction,
                 "target_in_county": key.in_county}  # fmt: skip
        path = f"{key.source}#{key.target}#{key.direction}"
        add(f"{c}#{year}", f"{key.day}#{path}", {"day": key.day, **route}, counters)
        add(f"{c}#M#{year}", f"{month}#{path}", {"month": month, **route}, counters)
        moved = counters.get(key.direction, 0)  # the up or down counter
        if moved:
            ends = sorted({key.source, key.target})
            for pk in (f"{c}#D#{year}", *(f"{c}#D#{year}#{i}" for i in ends)):
                bucket = chart.setdefault((pk, key.day), {})
                bucket[key.direction] = bucket.get(key.direction, 0) + moved
    for (pk, day), counters in sorted(chart.items()):
        kept = {name: n for name, n in counters.items() if n}
        if kept:
            add(pk, day, {"day": day}, kept)
    return list(out.values())


def _to_plain(value: Any) -> Any:
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, dict):
        return {k: _to_plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_to_plain(v) for v in value]
    return value


def referral_from_image(item: Mapping[str, Any]) -> Referral:
    """A referral from a stored item or a stream record's image (the same layout)."""
    from boto3.dynamodb.types import TypeDeserializer

    data = _to_plain(TypeDeserializer().deserialize(item["data"]))
    data["version"] = int(item["version"]["N"])
    return Referral.from_json(data)


class DynamoReferralStore:
    def __init__(self, dynamodb: Any, table: str, stats_table: str) -> None:
        from boto3.dynamodb.types import TypeDeserializer, TypeSerializer

        self._db = dynamodb
        self._table = table
        self._stats = stats_table
        self._ser = TypeSerializer()
        self._de = TypeDeserializer()

    # ---------------------------------------------------------------- items
    @staticmethod
    def key(referral_id: str) -> dict[str, Any]:
        return {"pk": {"S": f"REF#{referral_id}"}, "sk": {"S": "REF"}}

    def item(self, r: Referral) -> dict[str, Any]:
        c = r.consortium_id
        due = r.due_at or OPEN_SENTINEL
        attrs: dict[str, Any] = {
            "pk": f"REF#{r.referral_id}",
            "sk": "REF",
            "data": r.to_json(),
            "status": str(r.status),
            "version": r.version,
            "consortium_id": c,
            "gsi3pk": f"PATIENT#{c}#{r.person_id}",
            "gsi3sk": f"{r.created_at}#{r.referral_id}",
        }
        if r.is_open:
            attrs["gsi1pk"] = f"TO#{c}#{r.target.institution_id}"
            attrs["gsi1sk"] = f"{due}#{r.referral_id}"
            attrs["gsi2pk"] = f"FROM#{c}#{r.source.institution_id}"
            attrs["gsi2sk"] = f"{r.created_at}#{r.referral_id}"
        if r.status is Status.ESCALATED:
            attrs["gsi4pk"] = f"CENTRE#{c}"
            attrs["gsi4sk"] = f"{due}#{r.referral_id}"
        return {k: self._ser.serialize(v) for k, v in attrs.items()}

    def _referral(self, item: Mapping[str, Any]) -> Referral:
        return referral_from_image(item)

    # ---------------------------------------------------------------- reads
    def get(self, referral_id: str) -> tuple[Referral, str | None] | None:
        """The referral and the task token of the workflow's current wait (if registered)."""
        out = self._db.get_item(
            TableName=self._table, Key=self.key(referral_id), ConsistentRead=True
        )
        item = out.get("Item")
        if not item:
            return None
        token = item.get("wait_token", {}).get("S")
        return self._referral(item), token

    def _query(
        self, index: str, pk: str, limit: int = 500, newest_first: bool = False
    ) -> list[Referral]:
        items: list[Referral] = []
        kwargs: dict[str, Any] = {
            "TableName": self._table,
            "IndexName": index,
            "KeyConditionExpression": f"{index}pk = :pk",
            "ExpressionAttributeValues": {":pk": {"S": pk}},
            "ScanIndexForward": not newest_first,
        }
        while len(items) < limit:
            out = self._db.query(**kwargs)
            items.extend(self._referral(i) for i in out.get("Items", []))
            if "LastEvaluatedKey" not in out:
                break
            kwargs["ExclusiveStartKey"] = out["LastEvaluatedKey"]
        return items[:limit]

    def open_for_receiver(self, consortium_id: str, institution_id: str) -> list[Referral]:
        return self._query("gsi1", f"TO#{consortium_id}#{institution_id}")

    def open_for_referrer(self, consortium_id: str, institution_id: str) -> list[Referral]:
        return self._query("gsi2", f"FROM#{consortium_id}#{institution_id}", newest_first=True)

    def escalated(self, consortium_id: str) -> list[Referral]:
        return self._query("gsi4", f"CENTRE#{consortium_id}")

    def for_patient(self, consortium_id: str, person_id: str, limit: int = 100) -> list[Referral]:
        return self._query("gsi3", f"PATIENT#{consortium_id}#{person_id}", limit, newest_first=True)

    # ---------------------------------------------------------------- writes
    def create(self, r: Referral, delta: Mapping[RollupKey, Mapping[str, int]]) -> None:
        put = {
            "Put": {
                "TableName": self._table,
                "Item": self.item(r),
                "ConditionExpression": "attribute_not_exists(pk)",
            }
        }
        self._transact(
            [put, *self._rollup_updates(r.consortium_id, delta)], on_item=DuplicateReferral
        )

    def save(
        self,
        before: Referral,
        after: Referral,
        token: str | None,
        delta: Mapping[RollupKey, Mapping[str, int]],
    ) -> None:
        """Replace the referral if nobody changed it since it was read (same version, same
        wait token), with its rollup counters, in one transaction. The new item carries no
        wait token: the token of the finished wait is spent."""
        values: dict[str, Any] = {":v": {"N": str(before.version)}}
        condition = "version = :v AND "
        if token:
            condition += "wait_token = :t"
            values[":t"] = {"S": token}
        else:
            condition += "attribute_not_exists(wait_token)"
        put = {
            "Put": {
                "TableName": self._table,
                "Item": self.item(after),
                "ConditionExpression": condition,
                "ExpressionAttributeValues": values,
            }
        }
        self._transact(
            [put, *self._rollup_updates(after.consortium_id, delta)], on_item=StaleReferral
        )

    def attach_appointment(self, referral_id: str, appointment: Mapping[str, Any]) -> None:
        """The booking service's seam: show a booking on the referral. Bumps the version,
        so a transition that read the referral before re-reads it and keeps the booking."""
        self._db.update_item(
            TableName=self._table,
            Key=self.key(referral_id),
            UpdateExpression="SET #d.#a = :a, version = version + :one",
            ConditionExpression="attribute_exists(pk)",
            ExpressionAttributeNames={"#d": "data", "#a": "appointment"},
            ExpressionAttributeValues={
                ":a": self._ser.serialize(dict(appointment)),
                ":one": {"N": "1"},
            },
        )

    def register_wait(self, referral_id: str, status: Status, stage: str, token: str) -> bool:
        """Keep the token of the wait the workflow entered, if the referral is still in the
        status that wait is for; False when it has moved on already."""
        try:
            self._db.update_item(
                TableName=self._table,
                Key=self.key(referral_id),
                UpdateExpression="SET wait_token = :t, wait_stage = :stage",
                ConditionExpression="#s = :s",
                ExpressionAttributeNames={"#s": "status"},
                ExpressionAttributeValues={
                    ":t": {"S": token},
                    ":stage": {"S": stage},
                    ":s": {"S": str(status)},
                },
            )
        except self._db.exceptions.ConditionalCheckFailedException:
            return False
        return True

    def _transact(self, writes: list[dict[str, Any]], on_item: type[Exception]) -> None:
        """A failed condition on the referral, or DynamoDB cancelling the transaction for a
        concurrent one on the same items (TransactionConflict: the referral or a hot
        statistics counter), both mean "read again": the service retries with fresh state."""
        try:
            self._db.transact_write_items(TransactItems=writes)
        except self._db.exceptions.TransactionCanceledException as exc:
            reasons = exc.response.get("CancellationReasons") or []
            if reasons and reasons[0].get("Code") == "ConditionalCheckFailed":
                raise on_item() from None
            if any(r.get("Code") == "TransactionConflict" for r in reasons):
                raise on_item() from None
            raise

    def _rollup_updates(
        self, consortium_id: str, delta: Mapping[RollupKey, Mapping[str, int]]
    ) -> list[dict[str, Any]]:
        updates = []
        for row in rollup_items(consortium_id, delta):
            names: dict[str, str] = {}
            values: dict[str, Any] = {}
            sets, adds = [], []
            for n, (name, value) in enumerate(row.attrs.items()):
                names[f"#a{n}"] = name
                values[f":a{n}"] = self._ser.serialize(value)
                sets.append(f"#a{n} = :a{n}")
            for n, (name, amount) in enumerate(sorted(row.counters.items())):
                names[f"#c{n}"] = name
                values[f":c{n}"] = {"N": str(amount)}
                adds.append(f"#c{n} :c{n}")
            updates.append(
                {
                    "Update": {
                        "TableName": self._stats,
                        "Key": {"pk": {"S": row.pk}, "sk": {"S": row.sk}},
                        "UpdateExpression": f"SET {', '.join(sets)} ADD {', '.join(adds)}",
                        "ExpressionAttributeNames": names,
                        "ExpressionAttributeValues": values,
                    }
                }
            )
        return updates

    @staticmethod
    def rollup_key(consortium_id: str, key: RollupKey) -> dict[str, Any]:
        return {
            "pk": {"S": f"{consortium_id}#{key.day[:4]}"},
            "sk": {"S": f"{key.day}#{key.source}#{key.target}#{key.direction}"},
        }

    # ---------------------------------------------------------------- statistics
    def rollups(
        self, consortium_id: str, first_day: str, last_day: str
    ) -> Iterable[dict[str, Any]]:
        """Every day rollup of [first_day, last_day]: one query per calendar year it spans."""
        return self._level(lambda y: f"{consortium_id}#{y}", first_day, f"{last_day}#~")

    def month_rollups(
        self, consortium_id: str, first_month: str, last_month: str
    ) -> Iterable[dict[str, Any]]:
        """Every month rollup of [first_month, last_month] (YYYY-MM): one query per year."""
        return self._level(lambda y: f"{consortium_id}#M#{y}", first_month, f"{last_month}#~")

    def daily_counts(
        self, consortium_id: str, first_day: str, last_day: str, institution_id: str | None = None
    ) -> Iterable[dict[str, Any]]:
        """The chart of [first_day, last_day]: {day, up, down} for each day with referrals,
        the consortium's or those `institution_id` sent or received (its days only)."""
        at = f"#{institution_id}" if institution_id else ""
        for item in self._level(lambda y: f"{consortium_id}#D#{y}{at}", first_day, last_day):
            yield {"day": item["sk"], "up": item.get("up", 0), "down": item.get("down", 0)}

    def _level(
        self, partition: Callable[[int], str], first: str, last: str
    ) -> Iterable[dict[str, Any]]:
        """The items of the partitions partition(year) with sk in [first, last], in sk order:
        one query (and its pages) per calendar year."""
        for year in range(int(first[:4]), int(last[:4]) + 1):
            kwargs: dict[str, Any] = {
                "TableName": self._stats,
                "KeyConditionExpression": "pk = :pk AND sk BETWEEN :a AND :b",
                "ExpressionAttributeValues": {
                    ":pk": {"S": partition(year)},
                    ":a": {"S": first},
                    ":b": {"S": last},
                },
            }
            while True:
                out = self._db.query(**kwargs)
                for item in out.get("Items", []):
                    yield _to_plain({k: self._de.deserialize(v) for k, v in item.items()})
                if "LastEvaluatedKey" not in out:
                    break
                kwargs["ExclusiveStartKey"] = out["LastEvaluatedKey"]
