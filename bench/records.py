"""Cross-institution health records (issue 6): the timeline of a person with 500 documents,
whether it stays flat as the table grows, and the cost of ingesting a 50-entry bundle.

Run: ./scripts/bench records [--documents 500] [--others 200000] [--reads 100] [--bundles 60]
     ./scripts/bench records --quick     (a small run: 100 documents, 20,000 others)
Everything runs in the embedded local stack (the real template deployed into moto), in this
process, over HTTP through the local gateway where a client would. Setup goes through the
API: the consortium admin creates the demo county's institutions (POST /institutions); a
doctor of each registers persons (POST /persons); the person grants the county hospital a
consent (POST /me/consents, as a resident); each document is submitted by a doctor of the
institution that wrote it (POST /records/documents).

- timeline_p50_ms / timeline_p99_ms: GET /records/persons/{id}/timeline as a county
  hospital doctor who holds the person's consent, for a person with --documents documents
  (yilian_local.sample_records.history_for: visits, labs, imaging, stays and allergies over
  eight years at every institution of the county), while the table holds --others other
  documents; nearest-rank percentiles of --reads reads after 5 warm-up reads. Every answer
  is checked: exactly the person's documents, newest first (timeline_correct).
- flatness_ratio: timeline p50 with --others other documents / p50 with 1,000 (target
  <= 1.2). Both are measured in the same run, interleaved in rounds of --round reads: the
  other documents are written as the store's own items (what DynamoRecordsStore.save_version
  writes for a new document: the HEAD item in the document's partition and the timeline
  entry, with its gzip'd facts, in its person's partition; 20 documents a person, copied
  from save_version's items for real sample bundles with their keys and dates changed) with
  BatchWriteItem; 1,000 first, then the rest. Between rounds the bench moves the partitions
  of the rest out of the emulator's table and back (a dict swap inside moto, outside the
  timings), so the two table sizes alternate rather than follow one another. For scale,
  each read is followed by the store's timeline query alone (DynamoRecordsStore.timeline
  with boto3 from the bench: the person's partition, every page, decoded). While loading,
  the collector is paused, the loader's client skips parameter validation and moto checks
  an item's size once (as bench/booking.py does). The version items (the bundles) of the
  other documents are not written: a timeline never reads them.
- ingest_bundles_per_s: --bundles 50-entry transaction bundles
  (sample_records.bundle_with_entries(n_entries=50), each a new document for one of a few
  persons) submitted one at a time (POST /records/documents, 201) per second of the time
  spent in those requests.
- ingest_ratio: the mean HTTP time of one ingest / the mean time of fhir.resources
  validation alone of the same bundle (Bundle.model_validate from fhir.resources.R4B), the
  two interleaved bundle by bundle in the same run, after warm-ups. The breakdown shows how
  much of an ingest the authorizer and the records function take.
"""

from __future__ import annotations

import argparse
import copy
import gc
import json
import os
import random
import statistics
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

import booking
import referral
from booking import item_sizes_checked_once, pct_ms, today
from referral import Invocations, batch_write, lines, median_ms, ms

from yilian.adapters.records_store import DynamoRecordsStore
from yilian.domain.clock import CHINA_TZ
from yilian.domain.principal import Principal, Role
from yilian_local.demo_county import INSTITUTIONS, residents
from yilian_local.issuer import mint
from yilian_local.sample_records import bundle_with_entries, history_for
from yilian_local.stack import ACCOUNT_ID, LocalStack, load_county_params

READER_INSTITUTION = "county-hospital"
IN_COUNTY = [i["institution_id"] for i in INSTITUTIONS if i["institution_id"] != "city-first"]
DOCS_PER_OTHER = 20  # documents per other person
SMALL = 1_000  # other documents in the small table


def institution_of(bundle: dict[str, Any]) -> str:
    """The institution whose document this is (its identifier's system ends with it)."""
    return str(bundle["identifier"]["system"]).rsplit("/", 1)[-1]


# ------------------------------------------------------------------------------ the county
@dataclass
class Env:
    stack: LocalStack
    params: dict[str, str]
    api: referral.Api
    db: Any
    table: str
    invocations: Invocations
    doctors: dict[str, str] = field(default_factory=dict)  # institution -> doctor token
    _kms: Any = None

    @property
    def consortium(self) -> str:
        return self.params["ConsortiumId"]

    def token(self, who: Principal) -> str:
        if self._kms is None:
            self._kms = self.stack.client("kms")
        return mint(self._kms, self.stack.outputs["TokenSigningKeyArn"], self.params, who, 7200)

    def fn(self, logical_id: str) -> str:
        return str(self.stack.physical_id(logical_id))

    def ok(self, method: str, path: str, token: str, body: Any = None) -> Any:
        status, out, _ = self.api.call(method, path, token, body)
        if status not in (200, 201):
            sys.exit(f"{method} {path}: {status} {str(out)[:300]}")
        return out


@dataclass
class Person:
    person_id: str
    birth_date: date
    token: str  # the resident's own


def setup(stack: LocalStack, params: dict[str, str]) -> Env:
    """The demo county's institutions (through the API) and a doctor token for each."""
    env = Env(stack, params, referral.Api(stack.api_url), stack.client("dynamodb"),
              stack.physical_id("RecordsTable"), Invocations())  # fmt: skip
    admin = env.token(Principal("bench-admin", Role.CONSORTIUM_ADMIN, env.consortium,
                                READER_INSTITUTION, name="管理员"))  # fmt: skip
    for inst in INSTITUTIONS:
        status, out, _ = env.api.call("POST", "/institutions", admin, inst)
        if status not in (201, 409):
            sys.exit(f"POST /institutions: {status} {out}")
    for k, inst in enumerate(IN_COUNTY):
        env.doctors[inst] = env.token(Principal(f"bench-doc-{k}", Role.DOCTOR, env.consortium,
                                                inst, name=f"医生{k}"))  # fmt: skip
    return env


def register(env: Env, k: int) -> Person:
    """The demo county's k-th resident, registered by a doctor of their village clinic."""
    r = residents()[k]
    out = env.ok("POST", "/persons", env.doctors[r.registered_at], r.registration())
    pid = out["person"]["person_id"]
    token = env.token(Principal(f"bench-res-{pid}", Role.RESIDENT, env.consortium,
                                person_id=pid, name=r.name))  # fmt: skip
    return Person(pid, date.fromisoformat(r.birth_date), token)


def adult(k: int) -> bool:
    return (today() - date.fromisoformat(residents()[k].birth_date)).days > 30 * 365


def consent(env: Env, person: Person) -> None:
    until = (datetime.now(CHINA_TZ) + timedelta(days=30)).isoformat(timespec="seconds")
    env.ok("POST", "/me/consents", person.token,
           {"institution_id": READER_INSTITUTION, "valid_until": until})  # fmt: skip


def submit_history(env: Env, person: Person, n: int) -> tuple[set[str], float]:
    """n documents of a multi-year history, each POSTed by a doctor of its institution."""
    bundles = history_for(person.person_id, IN_COUNTY, seed="bench", n_documents=n,
                          today=today(), birth_date=person.birth_date)  # fmt: skip
    doc_ids: set[str] = set()
    t0 = time.perf_counter()
    for b in bundles:
        out = env.ok("POST", "/records/documents", env.doctors[institution_of(b)], b)
        doc_ids.add(out["doc_id"])
    return doc_ids, time.perf_counter() - t0


# ------------------------------------------------------------------ the other documents
class Recorder(booking.Recorder):
    """booking's stand-in DynamoDB client, with the exception save_version catches."""

    class exceptions:  # noqa: N801 - boto3's spelling
        TransactionCanceledException = RuntimeError


def templates(env: Env, person: Person, doc_ids: set[str]) -> list[tuple[dict, dict]]:
    """(HEAD item, timeline entry item) as save_version writes them for real documents: the
    person's own, read back from the store and written again into a recorder."""
    store = DynamoRecordsStore(env.db, env.table)
    entries = store.timeline([person.person_id], with_facts=True)[:40]
    out = []
    for e in entries:
        recorder = Recorder()
        head = store.head(e.doc_id) or {}
        DynamoRecordsStore(recorder, "recorded").save_version(e, {}, head["body_hash"], None)
        by_sk = {i["sk"]["S"]: i for i in recorder.items}
        out.append((by_sk["HEAD"], next(v for k, v in by_sk.items() if k.startswith("DOC#"))))
    return out


def other_items(tpl: list[tuple[dict, dict]], first: int, n: int) -> Iterator[dict[str, Any]]:
    """Other documents first..first+n: the template items with new keys and dates."""
    rng = random.Random(first)
    start = datetime(2018, 1, 1, 8, tzinfo=CHINA_TZ)
    for k in range(first, first + n):
        head, entry = tpl[k % len(tpl)]
        doc_id, person = f"bo{k:08d}", f"bench-other-{k // DOCS_PER_OTHER:06d}"
        when = (start + timedelta(minutes=rng.randrange(8 * 365 * 24 * 60))).isoformat()
        tl_sk = f"DOC#{when}#{doc_id}"
        data = json.loads(head["data"]["S"]) | {"doc_id": doc_id, "person_id": person,
                                                "source_id": doc_id, "timeline_sk": tl_sk,
                                                "effective": when}  # fmt: skip
        yield {**head, "pk": {"S": f"DOC#{doc_id}"}, "data": {"S": json.dumps(data)}}
        view = json.loads(entry["entry"]["S"])
        view |= {"doc_id": doc_id, "person_id": person, "source_id": doc_id, "effective": when}
        yield {**entry, "pk": {"S": f"PERSON#{person}"}, "sk": {"S": tl_sk},
               "entry": {"S": json.dumps(view, ensure_ascii=False)}}  # fmt: skip


def load_others(env: Env, tpl: list[tuple[dict, dict]], first: int, n: int,
                writers: int) -> float:  # fmt: skip
    from botocore.config import Config

    config = Config(parameter_validation=False)  # the items are the store's own
    gc.disable()  # the loaded objects are long-lived: collecting them is the bench's cost
    try:
        t0 = time.perf_counter()
        with item_sizes_checked_once():
            chunk = 20_000
            for at in range(first, first + n, chunk):
                items = list(other_items(tpl, at, min(chunk, first + n - at)))
                client = lambda: env.stack.client("dynamodb", config=config)  # noqa: E731
                batch_write(client, env.table, items, writers)
        return time.perf_counter() - t0
    finally:
        gc.enable()
        gc.collect()
        gc.freeze()


class Swap:
    """The partitions written after a point, moved out of moto's table and back."""

    def __init__(self, env: Env) -> None:
        from moto.dynamodb.models import dynamodb_backends

        self.table = dynamodb_backends[ACCOUNT_ID][env.stack.region].get_table(env.table)
        self.before = set(self.table.items)
        self.aside: dict[Any, Any] = {}

    def taken(self) -> int:
        """Marks what was written since: those partitions are the ones swapped."""
        self.aside = {k: v for k, v in self.table.items.items() if k not in self.before}
        return len(self.aside)

    @contextmanager
    def out(self) -> Iterator[None]:
        for k in self.aside:
            del self.table.items[k]
        try:
            yield
        finally:
            self.table.items.update(self.aside)


# ------------------------------------------------------------------------------ timeline
def read_timeline(env: Env, person: Person, want: list[str],
                  inside: list[float] | None = None) -> tuple[float, list[str]]:  # fmt: skip
    path = f"/records/persons/{person.person_id}/timeline"
    t0 = time.perf_counter()
    status, out, dt = env.api.call("GET", path, env.doctors[READER_INSTITUTION])
    if inside is not None:
        inside.append(env.invocations.within(env.fn("RecordsFunction"), t0, time.perf_counter()))
    if status != 200:
        return dt, [f"{status} {str(out)[:200]}"]
    got = [i["doc_id"] for i in out["items"]]
    if got != want:
        return dt, [f"{len(got)} documents ({len(set(got) & set(want))} of the person's), "
                    f"expected {len(want)} newest first"]  # fmt: skip
    return dt, []


def measure_timeline(env: Env, person: Person, doc_ids: set[str], args: argparse.Namespace
                     ) -> dict[str, Any]:  # fmt: skip
    store = DynamoRecordsStore(env.db, env.table)
    want = [e.doc_id for e in store.timeline([person.person_id])]
    if set(want) != doc_ids:
        sys.exit(f"the store holds {len(want)} documents for the person, {len(doc_ids)} sent")
    tpl = templates(env, person, doc_ids)
    small_s = load_others(env, tpl, 0, SMALL, args.writers)
    swap = Swap(env)
    big_s = load_others(env, tpl, SMALL, args.others - SMALL, args.writers)
    partitions = swap.taken()
    print(f"timeline: {SMALL} other documents loaded in {small_s:.1f} s, then "
          f"{args.others - SMALL} more in {big_s:.1f} s ({partitions} partitions; "
          f"{args.others // DOCS_PER_OTHER} other persons)")  # fmt: skip
    times: dict[str, list[float]] = {"small": [], "big": []}
    inside: dict[str, list[float]] = {"small": [], "big": []}
    raw: dict[str, list[float]] = {"small": [], "big": []}
    problems: list[str] = []
    for _ in range(5):
        read_timeline(env, person, want)
    rounds = max(1, args.reads // args.round)
    for r in range(rounds):
        for state in ("small", "big") if r % 2 == 0 else ("big", "small"):
            ctx = swap.out() if state == "small" else nullcontext()
            with ctx:
                for _ in range(args.round):
                    dt, bad = read_timeline(env, person, want, inside[state])
                    times[state].append(dt)
                    problems += bad
                    t0 = time.perf_counter()
                    store.timeline([person.person_id])
                    raw[state].append(time.perf_counter() - t0)
    small50, big50 = pct_ms(times["small"], 50), pct_ms(times["big"], 50)
    flat = round(big50 / small50, 3) if small50 and big50 else None
    print(f"  {len(times['big'])} reads each, interleaved in rounds of {args.round}: with "
          f"{args.others} others p50 {big50} ms p99 {pct_ms(times['big'], 99)} ms; with {SMALL} "
          f"others p50 {small50} ms p99 {pct_ms(times['small'], 99)} ms; flatness {flat}; "
          f"answers {'OK' if not problems else 'WRONG'}{lines(problems)}\n"
          f"  inside a read (p50): the records function {median_ms(inside['big'])} ms (with "
          f"{args.others} others), {median_ms(inside['small'])} ms (with {SMALL}); the store's "
          f"timeline query alone (boto3 from the bench, interleaved): {median_ms(raw['big'])} "
          f"ms (with {args.others}), {median_ms(raw['small'])} ms (with {SMALL})")  # fmt: skip
    return {"timeline_function_p50_ms": median_ms(inside["big"]),
            "timeline_query_p50_ms": median_ms(raw["big"]),
            "timeline_query_small_p50_ms": median_ms(raw["small"]),
            "timeline_p50_ms": big50, "timeline_p99_ms": pct_ms(times["big"], 99),
            "flatness_ratio": flat, "timeline_correct": not problems,
            "timeline_small_p50_ms": small50, "timeline_small_p99_ms": pct_ms(times["small"], 99),
            "timeline_documents": len(want), "timeline_reads": len(times["big"]),
            "other_documents": args.others, "others_load_s": round(small_s + big_s, 1)}  # fmt: skip


# -------------------------------------------------------------------------------- ingest
def measure_ingest(env: Env, persons: list[Person], args: argparse.Namespace) -> dict[str, Any]:
    from fhir.resources.R4B.bundle import Bundle

    start = datetime.now(CHINA_TZ) - timedelta(days=400)
    bundles = [
        bundle_with_entries(p.person_id, "qiaotou", seed=f"ingest{k}", n_entries=50,
                            when=start + timedelta(days=k % 390, minutes=k))
        for k, p in ((k, persons[k % len(persons)]) for k in range(args.bundles + 3))
    ]  # fmt: skip
    if any(len(b["entry"]) != 50 for b in bundles):
        sys.exit("bundle_with_entries did not give 50 entries")
    token = env.doctors["qiaotou"]
    ingest: list[float] = []
    validate: list[float] = []
    inside: list[float] = []
    authorizer: list[float] = []
    problems: list[str] = []
    for k, b in enumerate(bundles):
        body = copy.deepcopy(b)
        t0 = time.perf_counter()
        Bundle.model_validate(body)
        v = time.perf_counter() - t0
        t1 = time.perf_counter()
        status, out, dt = env.api.call("POST", "/records/documents", token, b)
        t2 = time.perf_counter()
        if status != 201:
            problems.append(f"{status} {str(out)[:200]}")
        if k >= 3:  # warm-ups: the first validation builds the models
            validate.append(v)
            ingest.append(dt)
            inside.append(env.invocations.within(env.fn("RecordsFunction"), t1, t2))
            authorizer.append(env.invocations.within(env.fn("AuthorizerFunction"), t1, t2))
    per_ingest, per_validate = statistics.mean(ingest), statistics.mean(validate)
    ratio = round(per_ingest / per_validate, 2)
    print(f"ingest: {len(ingest)} bundles of 50 entries, one at a time: "
          f"{len(ingest) / sum(ingest):.1f} bundles/s; mean {ms(per_ingest)} ms (median "
          f"{median_ms(ingest)}) per POST vs {ms(per_validate)} ms (median {median_ms(validate)})"
          f" for Bundle.model_validate alone: ratio {ratio}\n"
          f"  inside a POST: records function {ms(statistics.mean(inside))} ms, authorizer "
          f"{ms(statistics.mean(authorizer))} ms, the rest (gateway, HTTP) "
          f"{ms(per_ingest - statistics.mean(inside) - statistics.mean(authorizer))} ms"
          f"{lines(problems)}")  # fmt: skip
    return {"ingest_bundles_per_s": round(len(ingest) / sum(ingest), 2), "ingest_ratio": ratio,
            "ingest_ms": ms(per_ingest), "validate_ms": ms(per_validate),
            "ingest_function_ms": ms(statistics.mean(inside)),
            "ingest_authorizer_ms": ms(statistics.mean(authorizer)),
            "ingest_bundles": len(ingest), "ingest_failures": len(problems)}  # fmt: skip


# ------------------------------------------------------------------------------------ main
def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    parser.add_argument("--documents", type=int, default=500, help="the person's documents")
    parser.add_argument("--others", type=int, default=200_000, help="other documents")
    parser.add_argument("--reads", type=int, default=100, help="timeline reads per size")
    parser.add_argument("--round", type=int, default=5, help="reads per interleaved round")
    parser.add_argument("--bundles", type=int, default=60, help="50-entry bundles ingested")
    parser.add_argument("--writers", type=int, default=2, help="BatchWriteItem threads")
    parser.add_argument("--log-level", default="WARNING", help="the functions' LogLevel")
    parser.add_argument("--quick", action="store_true", help="a small run")
    args = parser.parse_args()
    if args.quick:
        args.documents, args.others, args.reads, args.bundles = 100, 20_000, 40, 20
    return args


def main() -> None:
    args = parse_args()
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "bench")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "bench")
    params = {**load_county_params("demo"), "LogLevel": args.log_level}
    started = time.perf_counter()
    with LocalStack(params) as stack:
        env = setup(stack, params)
        env.invocations.install()
        ks = [k for k in range(40) if adult(k)][:4]
        persons = [register(env, k) for k in ks]
        person = persons[0]
        consent(env, person)
        doc_ids, submit_s = submit_history(env, person, args.documents)
        print(f"stack up and seeded in {time.perf_counter() - started:.1f} s: "
              f"{len(doc_ids)} documents of one person from {len(IN_COUNTY)} institutions "
              f"submitted through the API in {submit_s:.1f} s "
              f"({ms(submit_s / max(1, len(doc_ids)))} ms each)")  # fmt: skip
        result: dict[str, Any] = {"bench": "records"}
        result |= measure_ingest(env, persons[1:], args)
        result |= measure_timeline(env, person, doc_ids, args)
        result["history_submit_ms"] = ms(submit_s / max(1, len(doc_ids)))
        result["bench_s"] = round(time.perf_counter() - started)
        keys = ("timeline_p50_ms", "timeline_p99_ms", "flatness_ratio", "ingest_bundles_per_s",
                "ingest_ratio", "timeline_correct")  # fmt: skip
        print(json.dumps({"bench": "records", **{k: result[k] for k in keys}, **result},
                         ensure_ascii=False), flush=True)  # fmt: skip
    sys.stdout.flush()
    os._exit(0)  # a stack holding ~400k items tears down slowly; nothing is left to flush


if __name__ == "__main__":
    main()
