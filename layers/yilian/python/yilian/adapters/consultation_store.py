"""Consultations in DynamoDB (ConsultationsTable).

    CONS#{id}            CONS                 the consultation (`data`: JSON, history included),
                                              `version` (the optimistic lock), the workflow's
                                              current wait token (never returned to a client)
        gsi1 PATIENT#{c}#{person}   created#id   every consultation about a person
        gsi2 OPEN#{c}               created#id   open ones: the centre's board (sparse)
        gsi3 REQ#{c}#{institution}  created#id   a requesting institution's list
    CONS#{id}            INV#{expert}         an expert's invitation (pointer, current state)
        gsi4 EXPERT#{c}#{expert}    created#id   an expert's worklist and workload
    ACCT#{c}#{year}      {month}#E#{expert}   accounting rollups: counters ADDed when a
    ACCT#{c}#{year}      {month}#I#{inst}     report is signed (fees, kinds, m_{bucket}: the
                                              request-to-report histogram, bucketed)

A transition is ONE transaction: the consultation with its version condition, the
invitation pointers, and (when a report is signed) the rollups; so the accounting of a year
reads months x (experts + institutions) items whatever the number of consultations.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

from yilian.domain.consultation import OPEN, Consultation


class StaleConsultation(Exception):
    """The consultation changed since it was read: read again."""


def _s(v: str) -> dict[str, str]:
    return {"S": v}


class DynamoConsultationStore:
    def __init__(self, dynamodb: Any, table: str) -> None:
        self._db = dynamodb
        self._table = table

    @staticmethod
    def key(consultation_id: str) -> dict[str, Any]:
        return {"pk": _s(f"CONS#{consultation_id}"), "sk": _s("CONS")}

    def _item(self, c: Consultation) -> dict[str, Any]:
        sort = _s(f"{c.created_at}#{c.consultation_id}")
        item: dict[str, Any] = {
            **self.key(c.consultation_id),
            "data": _s(json.dumps(c.to_json(), ensure_ascii=False)),
            "status": _s(str(c.status)),
            "version": {"N": str(c.version)},
            "gsi1pk": _s(f"PATIENT#{c.consortium_id}#{c.person_id}"),
            "gsi1sk": sort,
            "gsi3pk": _s(f"REQ#{c.consortium_id}#{c.requester.institution_id}"),
            "gsi3sk": sort,
        }
        if c.status in OPEN:
            item["gsi2pk"], item["gsi2sk"] = _s(f"OPEN#{c.consortium_id}"), sort
        return item

    def _pointers(self, c: Consultation) -> list[dict[str, Any]]:
        out = []
        for inv in c.invitations:
            out.append(
                {
                    "Put": {
                        "TableName": self._table,
                        "Item": {
                            "pk": _s(f"CONS#{c.consultation_id}"),
                            "sk": _s(f"INV#{inv.expert.subject}"),
                            "state": _s(str(inv.state)),
                            "status": _s(str(c.status)),
                            "gsi4pk": _s(f"EXPERT#{c.consortium_id}#{inv.expert.subject}"),
                            "gsi4sk": _s(f"{c.created_at}#{c.consultation_id}"),
                            "consultation_id": _s(c.consultation_id),
                        },
                    }
                }
            )
        return out

    def get(self, consultation_id: str) -> tuple[Consultation, str | None] | None:
        """The consultation and the task token of the workflow's current wait."""
        out = self._db.get_item(
            TableName=self._table, Key=self.key(consultation_id[:40]), ConsistentRead=True
        )
        item = out.get("Item")
        if item is None:
            return None
        token = item.get("wait_token", {}).get("S")
        return Consultation.from_json(json.loads(item["data"]["S"])), token

    def create(self, c: Consultation) -> None:
        self._transact(
            [
                {
                    "Put": {
                        "TableName": self._table,
                        "Item": self._item(c),
                        "ConditionExpression": "attribute_not_exists(pk)",
                    }
                },
                *self._pointers(c),
            ]
        )

    def save(
        self,
        before: Consultation,
        after: Consultation,
        rollups: Iterable[tuple[str, str, Mapping[str, Any], Mapping[str, int]]] = (),
        token: str | None = None,
    ) -> None:
        """`after` replaces `before` (StaleConsultation when someone else moved it first, or
        when the workflow registered a wait since `before` was read: `token` is the wait token
        read with it, so the caller reads again and spends the new one); the wait token is
        dropped: the workflow's next wait brings a new one."""
        values = {":v": {"N": str(before.version)}}
        if token:
            values[":t"] = _s(token)
        put = {
            "Put": {
                "TableName": self._table,
                "Item": self._item(after),
                "ConditionExpression": "version = :v AND "
                + ("wait_token = :t" if token else "attribute_not_exists(wait_token)"),
                "ExpressionAttributeValues": values,
            }
        }
        writes = [put, *self._pointers(after)]
        for pk, sk, attrs, counters in rollups:
            writes.append(self._rollup(pk, sk, attrs, counters))
        self._transact(writes)

    def _rollup(
        self, pk: str, sk: str, attrs: Mapping[str, Any], counters: Mapping[str, int]
    ) -> dict[str, Any]:
        names: dict[str, str] = {}
        values: dict[str, Any] = {}
        adds, sets = [], []
        for i, (k, v) in enumerate(counters.items()):
            names[f"#c{i}"], values[f":c{i}"] = k, {"N": str(int(v))}
            adds.append(f"#c{i} :c{i}")
        for j, (k, v) in enumerate(attrs.items()):
            names[f"#a{j}"], values[f":a{j}"] = k, _s(str(v))
            sets.append(f"#a{j} = :a{j}")
        expr = "ADD " + ", ".join(adds) + (" SET " + ", ".join(sets) if sets else "")
        return {
            "Update": {
                "TableName": self._table,
                "Key": {"pk": _s(pk), "sk": _s(sk)},
                "UpdateExpression": expr,
                "ExpressionAttributeNames": names,
                "ExpressionAttributeValues": values,
            }
        }

    def _transact(self, writes: list[dict[str, Any]]) -> None:
        try:
            self._db.transact_write_items(TransactItems=writes)
        except self._db.exceptions.TransactionCanceledException as error:
            raise StaleConsultation() from error

    def register_wait(self, consultation_id: str, status: str, stage: str, token: str) -> bool:
        """Keep the workflow's task token while the consultation is still in `status`."""
        try:
            self._db.update_item(
                TableName=self._table,
                Key=self.key(consultation_id),
                UpdateExpression="SET wait_token = :t, wait_stage = :s",
                ConditionExpression="#st = :status",
                ExpressionAttributeNames={"#st": "status"},
                ExpressionAttributeValues={":t": _s(token), ":s": _s(stage), ":status": _s(status)},
            )
        except self._db.exceptions.ConditionalCheckFailedException:
            return False
        return True

    # ------------------------------------------------------------------ lists
    def _query(self, index: str, pk: str, limit: int = 200) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        kwargs: dict[str, Any] = {
            "TableName": self._table,
            "IndexName": index,
            "KeyConditionExpression": f"{index}pk = :pk",
            "ExpressionAttributeValues": {":pk": _s(pk)},
            "ScanIndexForward": False,
        }
        while len(out) < limit:
            page = self._db.query(**kwargs)
            out.extend(page.get("Items", []))
            if "LastEvaluatedKey" not in page:
                break
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]
        return out[:limit]

    def _consultations(self, items: list[dict[str, Any]]) -> list[Consultation]:
        return [Consultation.from_json(json.loads(i["data"]["S"])) for i in items if "data" in i]

    def for_patient(self, consortium_id: str, person_id: str) -> list[Consultation]:
        return self._consultations(self._query("gsi1", f"PATIENT#{consortium_id}#{person_id}"))

    def open_ones(self, consortium_id: str) -> list[Consultation]:
        return self._consultations(self._query("gsi2", f"OPEN#{consortium_id}", 500))

    def for_requesting(self, consortium_id: str, institution_id: str) -> list[Consultation]:
        return self._consultations(self._query("gsi3", f"REQ#{consortium_id}#{institution_id}"))

    def for_expert(self, consortium_id: str, subject: str) -> list[Consultation]:
        pointers = self._query("gsi4", f"EXPERT#{consortium_id}#{subject}")
        ids = [p["consultation_id"]["S"] for p in pointers]
        return self._batch(ids)

    def workload(self, consortium_id: str, subject: str) -> int:
        """Open consultations an expert is invited to or has accepted."""
        pointers = self._query("gsi4", f"EXPERT#{consortium_id}#{subject}")
        return sum(
            1
            for p in pointers
            if p["status"]["S"] in {str(s) for s in OPEN}
            and p["state"]["S"] in ("invited", "accepted")
        )

    def _batch(self, ids: list[str]) -> list[Consultation]:
        found: dict[str, Consultation] = {}
        for start in range(0, len(ids), 100):
            request = {self._table: {"Keys": [self.key(i) for i in ids[start : start + 100]]}}
            while request:
                page = self._db.batch_get_item(RequestItems=request)
                for c in self._consultations(page.get("Responses", {}).get(self._table, [])):
                    found[c.consultation_id] = c
                request = page.get("UnprocessedKeys") or {}
        return [found[i] for i in ids if i in found]

    # ------------------------------------------------------------------ accounting
    def rollups(self, consortium_id: str, first_month: str, last_month: str) -> list[dict]:
        """Accounting rollups of the months [first, last] (YYYY-MM)."""
        out: list[dict[str, Any]] = []
        for year in range(int(first_month[:4]), int(last_month[:4]) + 1):
            kwargs: dict[str, Any] = {
                "TableName": self._table,
                "KeyConditionExpression": "pk = :pk AND sk BETWEEN :lo AND :hi",
                "ExpressionAttributeValues": {
                    ":pk": _s(f"ACCT#{consortium_id}#{year}"),
                    ":lo": _s(max(first_month, f"{year}-01")),
                    ":hi": _s(min(last_month, f"{year}-12") + "#~"),
                },
            }
            while True:
                page = self._db.query(**kwargs)
                out.extend(_plain(i) for i in page.get("Items", []))
                if "LastEvaluatedKey" not in page:
                    break
                kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]
        return out


def _plain(item: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in item.items():
        if "N" in v:
            out[k] = int(v["N"])
        elif "S" in v:
            out[k] = v["S"]
    return out
