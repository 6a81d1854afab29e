"""Patient index: bulk registration speed against raw writes, and match latency.

Run: ./scripts/bench empi [--n 20000] [--searches 2000]. Everything runs in the embedded
local stack (the real template deployed into moto), in this process.

- bulk_ratio: raw BatchWriteItem time for exactly the items the import wrote (scanned back
  and written to a scratch table of the same schema) / the import's own time. Target >= 0.5:
  validation, hashing, sealing and matching cost less than the writes themselves.
- match_p50_ms / match_p99_ms: the matching step of a registration (EmpiService.match) for
  --searches perturbed records (no ID card; homophone names, transposed dates, new phones,
  and strangers) against the --n residents.
- queries_per_match_max: DynamoDB requests one match made, at most (target <= 3).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import time
from datetime import date, timedelta

from yilian.domain.directory import Institution, InstitutionType, Tier
from yilian.domain.principal import Principal, Role
from yilian.settings import Settings
from yilian_local.demo_county import GIVEN, HOMOPHONES, SURNAMES, make_id_number
from yilian_local.stack import LocalStack, load_county_params

INSTITUTION = "bench-township"


def residents(n: int, rng: random.Random) -> list[dict]:
    rows, seen = [], set()
    for i in range(n):
        sex = rng.choice(["male", "female"])
        while True:
            birth = date(1935, 1, 1) + timedelta(days=rng.randrange(0, 365 * 88))
            id_card = make_id_number(birth, sex, rng.randrange(500))
            if id_card not in seen:
                seen.add(id_card)
                break
        given = "".join(rng.choice(GIVEN) for _ in range(rng.choice([1, 2, 2])))
        rows.append({
            "local_id": f"B{i:06d}", "name": rng.choice(SURNAMES) + given, "sex": sex,
            "birth_date": birth.isoformat(), "id_card": id_card,
            "phone": f"1{rng.choice('3589')}{rng.randrange(10**9):09d}",
            "address": f"示范县桥头镇{rng.choice('东南西北')}村{rng.randrange(1, 200)}号",
        })  # fmt: skip
    return rows


def perturbed(row: dict, rng: random.Random, k: int) -> dict:
    """A re-registration of `row` as it goes wrong at a front desk, or a stranger."""
    reg = {"name": row["name"], "sex": row["sex"], "birth_date": row["birth_date"],
           "phone": row["phone"], "address": row["address"], "identifiers": []}  # fmt: skip
    kind = k % 4
    if kind == 0:
        reg["name"] = row["name"][0] + "".join(HOMOPHONES.get(c, c) for c in row["name"][1:])
    elif kind == 1:
        y, m, d = row["birth_date"].split("-")
        reg["birth_date"] = f"{y}-{d}-{m}" if int(d) <= 12 else row["birth_date"]
    elif kind == 2:
        reg["phone"] = row["phone"][:-4] + f"{rng.randrange(10**4):04d}"
    else:
        reg["name"] = rng.choice(SURNAMES) + rng.choice(GIVEN) + rng.choice(GIVEN)
        reg["phone"] = f"1{rng.choice('3589')}{rng.randrange(10**9):09d}"
    return reg


def scan_all(db, table: str) -> list[dict]:
    items, kwargs = [], {"TableName": table}
    while True:
        page = db.scan(**kwargs)
        items += page["Items"]
        if "LastEvaluatedKey" not in page:
            return items
        kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]


def raw_batch_write(db, source_table: str, items: list[dict]) -> float:
    """Write `items` with plain BatchWriteItem into a scratch table of the same schema."""
    desc = db.describe_table(TableName=source_table)["Table"]
    scratch = source_table + "-scratch"
    gsis = [
        {k: g[k] for k in ("IndexName", "KeySchema", "Projection")}
        for g in desc.get("GlobalSecondaryIndexes", [])
    ]
    db.create_table(
        TableName=scratch, KeySchema=desc["KeySchema"], BillingMode="PAY_PER_REQUEST",
        AttributeDefinitions=desc["AttributeDefinitions"],
        **({"GlobalSecondaryIndexes": gsis} if gsis else {}),
    )  # fmt: skip
    t0 = time.perf_counter()
    for i in range(0, len(items), 25):
        request = {scratch: [{"PutRequest": {"Item": it}} for it in items[i : i + 25]]}
        while request:
            request = db.batch_write_item(RequestItems=request).get("UnprocessedItems") or {}
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=20_000)
    parser.add_argument("--searches", type=int, default=2_000)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "bench")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "bench")
    params = load_county_params("demo")
    with LocalStack(params) as stack:
        from yilian.adapters.directory_store import DirectoryStore
        from yilian.adapters.empi_wiring import build_empi

        consortium = params["ConsortiumId"]
        settings = Settings(
            consortium_id=consortium, region=stack.region, aws_endpoint_url=stack.endpoint_url,
            persons_table=stack.physical_id("PersonsTable"),
            directory_table=stack.physical_id("DirectoryTable"),
            platform_table=stack.physical_id("PlatformTable"),
            audit_table=stack.physical_id("AuditTable"),
            import_bucket=stack.physical_id("ImportBucket"),
            data_key=stack.physical_id("DataKey"),
        )  # fmt: skip
        DirectoryStore(settings.directory_table, stack.endpoint_url, stack.region).add_institution(
            Institution(INSTITUTION, consortium, "基准镇卫生院", Tier.TOWNSHIP,
                        InstitutionType.TOWNSHIP_HEALTH_CENTRE)
        )  # fmt: skip
        empi = build_empi(settings)
        admin = Principal("bench", Role.INSTITUTION_ADMIN, consortium, INSTITUTION)
        rows = residents(args.n, rng)

        t0 = time.perf_counter()
        result = empi.importer.import_rows(admin, INSTITUTION, rows)
        t_import = time.perf_counter() - t0
        counts = result.counts
        db = stack.client("dynamodb")
        items = scan_all(db, settings.persons_table)
        t_raw = raw_batch_write(db, settings.persons_table, items)
        print(f"bulk: {args.n} rows in {t_import:.1f} s ({args.n / t_import:.0f} rows/s), "
              f"outcomes {counts}; {len(items)} items raw BatchWriteItem {t_raw:.1f} s "
              f"({len(items) / t_raw:.0f} items/s)")  # fmt: skip

        doctor = Principal("bench-doc", Role.DOCTOR, consortium, INSTITUTION)
        latencies, per_match, outcomes = [], [], {}
        for k in range(args.searches):
            reg = perturbed(rows[rng.randrange(len(rows))], rng, k)
            before = sum(empi.store.requests.values())
            t = time.perf_counter()
            plan = empi.service.match(doctor, reg)
            latencies.append((time.perf_counter() - t) * 1000)
            per_match.append(sum(empi.store.requests.values()) - before)
            outcomes[str(plan.outcome)] = outcomes.get(str(plan.outcome), 0) + 1
        latencies.sort()
        p50 = statistics.median(latencies)
        p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
        print(f"match: {args.searches} at {args.n} residents: p50 {p50:.1f} ms, "
              f"p99 {p99:.1f} ms, DynamoDB requests per match max {max(per_match)} "
              f"(mean {statistics.mean(per_match):.2f}); outcomes {outcomes}")  # fmt: skip
        print(json.dumps({
            "bench": "empi", "n": args.n, "import_s": round(t_import, 2),
            "raw_batch_write_s": round(t_raw, 2), "items": len(items),
            "bulk_ratio": round(t_raw / t_import, 3), "import_outcomes": counts,
            "searches": args.searches, "match_p50_ms": round(p50, 2),
            "match_p99_ms": round(p99, 2), "queries_per_match_max": max(per_match),
            "match_outcomes": outcomes,
        }, ensure_ascii=False))  # fmt: skip


if __name__ == "__main__":
    main()
