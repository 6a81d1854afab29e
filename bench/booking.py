"""Appointment booking (issue 5): throughput, the cost of one booking, slot search over a year
of schedules, and the concurrency test.

Run: ./scripts/bench booking [--bookings 400] [--clients 8] [--samples 50] [--runs 50,200,1000]
     ./scripts/bench booking --quick      (a small run: fewer bookings, runs 50 and 200, a month)
Everything runs in the embedded local stack (the real template deployed into moto, which
serialises DynamoDB writes), in this process, over HTTP through the local gateway where a
client would. Setup goes through the API too: the consortium admin creates county-tier
institutions (POST /institutions) and their doctors (POST /doctors); an institution admin
publishes sessions (POST /schedules). Residents are resident tokens minted with the stack's
signing key, each for a different person id. Times are Asia/Shanghai; slots are published
from tomorrow, inside the 14-day booking window.

- bookings_per_s: --bookings confirmed bookings (POST /appointments, 201) by --clients
  concurrent clients, each booking by a different resident, spread round-robin over the free
  public places of 7 days x 8 doctors x 4 hourly slots, after --warmup bookings; per second
  of wall time. Afterwards every slot used is checked: its counter (clinician GET /slots)
  equals its BOOKED rows (the day list GET /appointments?date=&institution_id=) and the 201s
  the bench received there.
- booking_cost_ratio: the median HTTP time of one booking (--samples sequential bookings) /
  the median of one raw TransactWriteItems of the same shape sent with boto3 to the same
  emulator against the bookings table, interleaved one for one in the same run: an Update of
  a slot item (a scratch slot, same attributes) with the booking's capacity/open/window/quota
  condition, a conditional Put of an appointment item (a copy of the one just booked, its keys
  moved out of the product's indexes), a conditional Put of a lock item and a conditional
  Update of a standing item. The breakdown shows the authorizer and booking function time
  inside a booking and the DynamoDB actions one booking makes.
- search_p50_ms / search_p99_ms: GET /slots?institution_id=&date= with one year of schedules
  for 100 doctors (5 county-tier institutions x 20 doctors, 250 working days from tomorrow,
  2 sessions a day of 4 hourly slots: 200,000 slot items and 50,000 sessions) in the
  bookings table, written directly as the store's own items (DynamoBookingStore.put_session
  into a recorder, then BatchWriteItem; while loading, the collector is paused, the loader's
  client skips parameter validation and moto checks an item's size once rather than on
  every attribute); --searches random searches (random institution and working day, a
  quarter filtered by department and a sixth by doctor), alternately as a resident and as a
  clinician, after 5 warm-up searches, each answer checked against the generated schedule
  (search_correct). A search reads one day's partition (200 items) whatever its filters;
  search_raw_query_ms is one raw boto3 Query of such a partition, interleaved, for scale.
- The concurrency test: for each N in --runs, N concurrent booking requests (different
  residents, a pool of --pool threads) for one slot of capacity C=--capacity (its department's
  reserved share set to 0, so all C places are public): prints
  "N=... confirmed=... capacity=... counter=... rows=..."; then 8 of a full slot's holders
  cancel while 100 new residents race for it, and a second wave takes what is left: exactly
  the cancelled places are taken again. One resident sends 20 concurrent identical requests
  with one Idempotency-Key, another 20 without a key: one appointment each.
  overbooked = sum over runs of max(0, confirmed - C) + every slot whose counter != rows
  (the throughput slots included); duplicates = residents holding two BOOKED appointments
  for the same doctor and day + the extra appointments of the same-resident runs. Both must
  be 0.
"""

from __future__ import annotations

import argparse
import gc
import itertools
import json
import math
import os
import random
import statistics
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

# referral: the referral bench (this directory comes first on sys.path), for its HTTP
# client, invocation timer, batch writer and formatting.
import referral
import requests
from referral import Invocations, batch_write, lines, median_ms, ms

from yilian.adapters.booking_store import DynamoBookingStore
from yilian.domain.booking import BookingPolicy, SessionSpec, new_session, slots_of
from yilian.domain.clock import CHINA_TZ
from yilian.domain.principal import Principal, Role
from yilian_local.demo_county import GIVEN, SURNAMES
from yilian_local.issuer import mint
from yilian_local.stack import LocalStack, load_county_params

COUNTY = "bench-county"  # throughput, cost and concurrency
DEPARTMENTS = ("心血管内科", "呼吸内科", "普外科", "儿科", "中医科")
RACE_DEPARTMENT = "并发测试科"
SEARCH_TYPES = ("general_hospital", "tcm_hospital", "maternal_child")
SESSIONS = (("am", "08:00", "12:00"), ("pm", "14:00", "18:00"))  # 4 hourly slots each
BOOKED = "BOOKED"


def pct_ms(samples: list[float], q: float) -> float | None:
    """The nearest-rank percentile q (0-100) of samples, in ms."""
    if not samples:
        return None
    ordered = sorted(samples)
    return ms(ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)])


def today() -> date:
    return datetime.now(CHINA_TZ).date()


# ---------------------------------------------------------------------------------- HTTP
class Api(referral.Api):
    """referral.Api (a keep-alive session per thread, every call timed) that can insist."""

    def ok(self, method: str, path: str, token: str, body: Any = None) -> Any:
        """The answer of a setup or check call, which must succeed."""
        status, out, _ = self.call(method, path, token, body)
        if status not in (200, 201):
            sys.exit(f"{method} {path}: {status} {str(out)[:300]}")
        return out


def code_of(status: int, out: Any) -> str:
    """'201' or '409 SLOT_FULL': a response as counted in the summaries."""
    if isinstance(out, dict) and isinstance(out.get("error"), dict):
        return f"{status} {out['error'].get('code')}"
    return str(status)


class DynamoActions:
    """Counts the emulator's DynamoDB actions (one booking in flight: the booking's own)."""

    NAMES = ("get_item", "query", "put_item", "update_item", "delete_item", "batch_write_item",
             "batch_get_item", "transact_write_items", "transact_get_items", "scan")  # fmt: skip

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self._lock = threading.Lock()

    def install(self) -> None:
        from moto.dynamodb.responses import DynamoHandler

        for name in self.NAMES:
            setattr(DynamoHandler, name, self._counted(name, getattr(DynamoHandler, name)))

    def _counted(self, name: str, action: Callable) -> Callable:
        def counted(handler: Any, *args: Any, **kwargs: Any) -> Any:
            with self._lock:
                self.counts[name] += 1
            return action(handler, *args, **kwargs)

        return counted

    def snapshot(self) -> Counter[str]:
        with self._lock:
            return Counter(self.counts)


# ------------------------------------------------------------------------------ the county
@dataclass
class Env:
    stack: LocalStack
    params: dict[str, str]
    api: Api
    admin: str  # consortium admin
    manager: str  # COUNTY's institution admin
    clinician: str  # a doctor of COUNTY
    db: Any
    table: str
    invocations: Invocations
    actions: DynamoActions
    _kms: Any = None
    _minted: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def consortium(self) -> str:
        return self.params["ConsortiumId"]

    def token(self, who: Principal) -> str:
        if self._kms is None:
            self._kms = self.stack.client("kms")
        return mint(self._kms, self.stack.outputs["TokenSigningKeyArn"], self.params, who, 7200)

    def residents(self, n: int, tag: str) -> list[str]:
        """Tokens of n residents never seen before (distinct person ids)."""
        with self._lock:
            first, self._minted = self._minted, self._minted + n
        return [
            self.token(Principal(f"bench-res-{k}", Role.RESIDENT, self.consortium,
                                 person_id=f"bench-{tag}-{k:06d}", name=f"居民{k}"))
            for k in range(first, first + n)
        ]  # fmt: skip

    def staff(self, subject: str, role: Role, institution: str, name: str) -> str:
        return self.token(Principal(subject, role, self.consortium, institution, name=name))


def create_institution(env: Env, institution_id: str, name: str, kind: str) -> None:
    body = {"institution_id": institution_id, "name": name, "type": kind}
    status, out, _ = env.api.call("POST", "/institutions", env.admin, body)
    if status not in (201, 409):
        sys.exit(f"POST /institutions: {status} {out}")


def create_doctor(env: Env, institution: str, doctor_id: str, name: str, dept: str) -> None:
    body = {"institution_id": institution, "doctor_id": doctor_id, "name": name,
            "department": dept, "title": "主治医师"}  # fmt: skip
    env.api.ok("POST", "/doctors", env.admin, body)


def setup(stack: LocalStack, params: dict[str, str]) -> Env:
    """COUNTY (a county-tier general hospital), its admin, 8 doctors and a race doctor."""
    consortium = params["ConsortiumId"]
    api = Api(stack.api_url)
    env = Env(stack, params, api, "", "", "", stack.client("dynamodb"),
              stack.physical_id("BookingsTable"), Invocations(), DynamoActions())  # fmt: skip
    env.admin = env.token(
        Principal("bench-admin", Role.CONSORTIUM_ADMIN, consortium, COUNTY, name="管理员")
    )
    create_institution(env, COUNTY, "基准县人民医院", "general_hospital")
    env.manager = env.staff("bench-manager", Role.INSTITUTION_ADMIN, COUNTY, "院办")
    env.clinician = env.staff("bench-clinician", Role.DOCTOR, COUNTY, "门诊医生")
    for j in range(8):
        create_doctor(env, COUNTY, f"{COUNTY}-d{j}", f"医生{j}", DEPARTMENTS[j % 5])
    for j in range(8):
        create_doctor(env, COUNTY, f"{COUNTY}-race{j}", f"并发{j}", RACE_DEPARTMENT)
    return env


def publish(env: Env, day: date, doctor: str, dept: str, start: str, end: str,
            capacity: int) -> list[dict]:  # fmt: skip
    """POST /schedules as COUNTY's admin: the session's slots as published (admin view)."""
    body = {"department": dept, "date": day.isoformat(), "period": "am" if start < "12" else "pm",
            "start": start, "end": end, "slot_minutes": 60, "capacity": capacity,
            "visit_type": "specialist", "fee_cents": 1200, "doctor_id": doctor}  # fmt: skip
    return env.api.ok("POST", "/schedules", env.manager, body)["slots"]


def book(env: Env, token: str, slot_id: str, key: str | None = None) -> tuple[int, Any, float]:
    headers = {"Idempotency-Key": key} if key else None
    return env.api.call("POST", "/appointments", token, {"slot_id": slot_id}, headers)


# ------------------------------------------------------------------------ slot checking
def slot_counters(env: Env, day: str) -> dict[str, dict]:
    """COUNTY's slots on a day as a clinician sees them (booked, capacity, reserved)."""
    out = env.api.ok("GET", f"/slots?institution_id={COUNTY}&date={day}", env.clinician)
    return {s["slot_id"]: s for s in out["items"]}


def day_rows(env: Env, day: str) -> list[dict]:
    """COUNTY's day list (every appointment of the day, any status)."""
    out = env.api.ok("GET", f"/appointments?institution_id={COUNTY}&date={day}", env.clinician)
    return out["items"]


def duplicates_in(rows: list[dict]) -> int:
    """Extra BOOKED appointments of one person with one doctor on one day."""
    held = Counter((r["person_id"], r["doctor_id"], r["start"][:10]) for r in rows
                   if r["status"] == BOOKED)  # fmt: skip
    return sum(n - 1 for n in held.values() if n > 1)


@dataclass
class Check:
    """One slot after a run: its counter, its rows, the 201s received for it."""

    slot_id: str
    capacity: int
    counter: int
    rows: int
    confirmed: int
    persons: int  # distinct persons among the rows

    @property
    def consistent(self) -> bool:
        return self.counter == self.rows == self.confirmed == self.persons


def check_slots(env: Env, confirmed: Counter[str]) -> tuple[list[Check], int]:
    """Every slot in `confirmed` ({slot_id: 201s received}) read back; the duplicates of
    their days."""
    by_day: dict[str, list[str]] = {}
    for slot_id in confirmed:
        by_day.setdefault(slot_id.split(".")[1], []).append(slot_id)
    checks, dups = [], 0
    for day, slot_ids in sorted(by_day.items()):
        counters, rows = slot_counters(env, day), day_rows(env, day)
        dups += duplicates_in(rows)
        for slot_id in slot_ids:
            mine = [r for r in rows if r["slot_id"] == slot_id and r["status"] == BOOKED]
            slot = counters.get(slot_id, {})
            checks.append(Check(slot_id, int(slot.get("capacity", -1)),
                                int(slot.get("booked", -1)), len(mine), confirmed[slot_id],
                                len({r["person_id"] for r in mine})))  # fmt: skip
    return checks, dups


# -------------------------------------------------------------------- throughput, HTTP
class Places:
    """Free public places of the throughput slots, round-robin over the slots."""

    def __init__(self, slots: list[dict]) -> None:
        free = {s["slot_id"]: int(s["free"]) for s in slots}
        self.order: list[str] = []
        while any(free.values()):
            for slot_id in list(free):
                if free[slot_id]:
                    self.order.append(slot_id)
                    free[slot_id] -= 1
        self._next = 0
        self._lock = threading.Lock()

    def take(self) -> str:
        with self._lock:
            slot_id = self.order[self._next]
            self._next += 1
            return slot_id


@dataclass
class Tally:
    confirmed: Counter[str] = field(default_factory=Counter)  # slot_id -> 201s
    codes: Counter[str] = field(default_factory=Counter)
    times: list[float] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, slot_id: str, status: int, out: Any, dt: float) -> None:
        with self.lock:
            self.codes[code_of(status, out)] += 1
            if status == 201:
                self.confirmed[slot_id] += 1
                self.times.append(dt)
            else:
                self.failures.append(f"{slot_id}: {status} {str(out)[:160]}")


def throughput_slots(env: Env, days: int) -> list[dict]:
    slots = []
    for d in range(1, days + 1):
        for j in range(8):
            dept = DEPARTMENTS[j % 5]
            slots += publish(env, today() + timedelta(days=d), f"{COUNTY}-d{j}", dept,
                             "08:00", "12:00", 20)  # fmt: skip
    return slots


def measure_throughput(env: Env, places: Places, tally: Tally, args: argparse.Namespace
                       ) -> dict[str, Any]:  # fmt: skip
    n, warmup = args.bookings, args.warmup
    tokens = env.residents(warmup + n, "tp")
    warm = Tally()

    def one(k: int, into: Tally) -> None:
        slot_id = places.take()
        status, out, dt = book(env, tokens[k], slot_id, uuid.uuid4().hex)
        into.add(slot_id, status, out, dt)

    with ThreadPoolExecutor(max_workers=args.clients) as pool:
        list(pool.map(lambda k: one(k, warm), range(warmup)))
    run = Tally()
    t0 = time.perf_counter()
    with ThreadPoolExecutor(max_workers=args.clients) as pool:
        list(pool.map(lambda k: one(k, run), range(warmup, warmup + n)))
    wall = time.perf_counter() - t0
    for t in (warm, run):
        tally.confirmed.update(t.confirmed)
        tally.failures += t.failures
    confirmed = sum(run.confirmed.values())
    print(f"throughput: {n} bookings by {args.clients} clients (each a different resident, "
          f"over {len(run.confirmed)} slots) in {wall:.1f} s: {confirmed} confirmed = "
          f"{confirmed / wall:.1f} bookings/s; answers {dict(run.codes)}; median "
          f"{median_ms(run.times)} ms, p99 {pct_ms(run.times, 99)} ms per booking under "
          f"load{lines(run.failures + warm.failures)}")  # fmt: skip
    return {"bookings_per_s": round(confirmed / wall, 2), "bookings": n,
            "bookings_confirmed": confirmed, "clients": args.clients,
            "booking_load_median_ms": median_ms(run.times),
            "booking_load_p99_ms": pct_ms(run.times, 99),
            "booking_failures": len(run.failures) + len(warm.failures)}  # fmt: skip


# ------------------------------------------------------------- one booking vs baseline
class Baseline:
    """One raw TransactWriteItems shaped as a booking's, on scratch keys of the bookings
    table: slot Update (same condition), appointment Put, lock Put, standing Update."""

    CONDITION = ("#s = :open AND #start > :now AND #opens <= :now AND #b < #cap AND "
                 "(#q < #pcap OR #rel <= :now)")  # fmt: skip

    def __init__(self, env: Env, slot_id: str) -> None:
        self.db, self.table = env.db, env.table
        part = "SLOTS#" + "#".join(slot_id.split(".")[:2])
        item = self.db.get_item(TableName=self.table, Key=self.key(part, slot_id))["Item"]
        self.slot_key = self.key(part.replace(COUNTY, "bench-baseline"), "bench-baseline-slot")
        item |= self.slot_key | {"capacity": {"N": "1000000"}, "public_cap": {"N": "1000000"},
                                 "booked": {"N": "0"}, "booked_public": {"N": "0"}}  # fmt: skip
        self.db.put_item(TableName=self.table, Item=item)
        self.times: list[float] = []

    @staticmethod
    def key(pk: str, sk: str) -> dict[str, Any]:
        return {"pk": {"S": pk}, "sk": {"S": sk}}

    def writes(self, appointment: dict[str, Any], now: str) -> list[dict[str, Any]]:
        n = uuid.uuid4().hex
        appt = dict(appointment) | self.key(f"BENCH#APPT#{n}", "APPT")
        for name in ("gsi1pk", "gsi2pk", "gsi3pk"):  # out of the product's indexes
            appt[name] = {"S": "BENCH#" + appt[name]["S"]}
        table = self.table
        return [
            {"Update": {"TableName": table, "Key": self.slot_key,
                        "UpdateExpression": "ADD #b :d, #q :d",
                        "ConditionExpression": self.CONDITION,
                        "ExpressionAttributeNames": {"#b": "booked", "#q": "booked_public",
                                                     "#s": "status", "#start": "start",
                                                     "#opens": "opens_at", "#cap": "capacity",
                                                     "#rel": "release_at", "#pcap": "public_cap"},
                        "ExpressionAttributeValues": {":d": {"N": "1"}, ":open": {"S": "OPEN"},
                                                      ":now": {"S": now}}}},
            {"Put": {"TableName": table, "Item": appt,
                     "ConditionExpression": "attribute_not_exists(pk)"}},
            {"Put": {"TableName": table,
                     "Item": self.key(f"BENCH#LOCK#{n}", "LOCK") | {"appointment_id": {"S": n}},
                     "ConditionExpression": "attribute_not_exists(pk)"}},
            {"Update": {"TableName": table, "Key": self.key(f"BENCH#RESIDENT#{n}", "STANDING"),
                        "UpdateExpression": "ADD #a :one",
                        "ConditionExpression": "(attribute_not_exists(#a) OR #a < :max) AND "
                                               "(attribute_not_exists(#u) OR #u <= :now)",
                        "ExpressionAttributeNames": {"#a": "active", "#u": "suspended_until"},
                        "ExpressionAttributeValues": {":one": {"N": "1"}, ":max": {"N": "5"},
                                                      ":now": {"S": now}}}},
        ]  # fmt: skip

    def sample(self, appointment: dict[str, Any]) -> None:
        now = datetime.now(CHINA_TZ).isoformat(timespec="seconds")
        writes = self.writes(appointment, now)
        t0 = time.perf_counter()
        self.db.transact_write_items(TransactItems=writes)
        self.times.append(time.perf_counter() - t0)


def measure_cost(env: Env, places: Places, tally: Tally, samples: int) -> dict[str, Any]:
    tokens = env.residents(samples, "cost")
    names = {k: env.stack.physical_id(k) for k in ("AuthorizerFunction", "BookingFunction")}
    baseline: Baseline | None = None
    times: list[float] = []
    parts: dict[str, list[float]] = {k: [] for k in names}
    actions: list[Counter[str]] = []
    for token in tokens:
        slot_id = places.take()
        before = env.actions.snapshot()
        t0 = time.perf_counter()
        status, out, dt = book(env, token, slot_id, uuid.uuid4().hex)
        t1 = time.perf_counter()
        actions.append(env.actions.snapshot() - before)
        tally.add(slot_id, status, out, dt)
        if status != 201:
            continue
        times.append(dt)
        for key, name in names.items():
            parts[key].append(env.invocations.within(name, t0, t1))
        if baseline is None:
            baseline = Baseline(env, slot_id)
        key = Baseline.key(f"APPT#{out['appointment_id']}", "APPT")
        baseline.sample(env.db.get_item(TableName=env.table, Key=key)["Item"])
    if baseline is None or not baseline.times:
        sys.exit(f"cost: no booking succeeded{lines(tally.failures)}")
    ratio = statistics.median(times) / statistics.median(baseline.times)
    typical = {k: statistics.median_low(a[k] for a in actions) for k in DynamoActions.NAMES}
    per_booking = {k: v for k, v in sorted(typical.items()) if v}
    breakdown = {k: median_ms(v) for k, v in parts.items()}
    print(f"cost: one booking {median_ms(times)} ms over HTTP (median of {len(times)}); one raw "
          f"4-item TransactWriteItems {median_ms(baseline.times)} ms (median of "
          f"{len(baseline.times)}, interleaved): booking_cost_ratio {ratio:.2f}\n"
          f"  inside a booking (median ms): {breakdown}; DynamoDB actions per booking "
          f"(median): {per_booking}")  # fmt: skip
    return {"booking_cost_ratio": round(ratio, 2), "booking_ms": median_ms(times),
            "baseline_transaction_ms": median_ms(baseline.times),
            "booking_breakdown_ms": breakdown, "dynamodb_actions_per_booking": per_booking,
            "cost_samples": len(times)}  # fmt: skip


# ---------------------------------------------------------------------- concurrency
@dataclass
class Race:
    """Results of one burst of concurrent requests."""

    codes: Counter[str] = field(default_factory=Counter)
    made: dict[int, str] = field(default_factory=dict)  # call index -> appointment of a 201

    def add(self, k: int, status: int, out: Any) -> None:
        self.codes[code_of(status, out)] += 1
        if status == 201:
            self.made[k] = out["appointment_id"]

    @property
    def appointments(self) -> list[str]:
        return list(self.made.values())

    @property
    def confirmed(self) -> int:
        return len(self.made)


def burst(env: Env, pool: int, calls: list[Callable[[], tuple[int, Any, float]]]) -> Race:
    """Every call at once (as far as `pool` threads go), released together by a barrier."""
    race, lock = Race(), threading.Lock()
    gate = threading.Barrier(min(pool, len(calls)))

    def run(k: int) -> None:
        if k < gate.parties:
            gate.wait()
        status, out, _ = calls[k]()
        with lock:
            race.add(k, status, out)

    with ThreadPoolExecutor(max_workers=pool) as executor:
        list(executor.map(run, range(len(calls))))
    return race


class Concurrency:
    def __init__(self, env: Env, args: argparse.Namespace) -> None:
        self.env, self.args = env, args
        self.capacity = args.capacity
        self.overbooked = 0
        self.duplicates = 0
        self.problems: list[str] = []
        self.rows: list[dict[str, Any]] = []
        self.day = today() + timedelta(days=9)  # days no other phase books
        self.doctor = 0

    def slot(self, capacity: int) -> str:
        """A new one-hour slot of the race department (no reserved share) on self.day."""
        doctor = f"{COUNTY}-race{self.doctor}"
        self.doctor += 1
        return publish(self.env, self.day, doctor, RACE_DEPARTMENT, "10:00", "11:00",
                       capacity)[0]["slot_id"]  # fmt: skip

    def read(self, slot_id: str) -> tuple[dict, list[dict]]:
        day = slot_id.split(".")[1]
        slot = slot_counters(self.env, day)[slot_id]
        rows = day_rows(self.env, day)
        self.duplicates += duplicates_in(rows)
        return slot, [r for r in rows if r["slot_id"] == slot_id and r["status"] == BOOKED]

    def run(self, n: int) -> dict[str, Any]:
        slot_id = self.slot(self.capacity)
        tokens = self.env.residents(n, f"n{n}")
        race = burst(self.env, self.args.pool, [
            (lambda t=t: book(self.env, t, slot_id)) for t in tokens
        ])  # fmt: skip
        slot, rows = self.read(slot_id)
        counter, capacity = int(slot["booked"]), int(slot["capacity"])
        over = max(0, race.confirmed - capacity) + (counter != len(rows))
        self.overbooked += over
        if race.confirmed != min(n, capacity):
            self.problems.append(f"N={n}: {race.confirmed} confirmed, not {min(n, capacity)}")
        if {r["appointment_id"] for r in rows} != set(race.appointments):
            self.problems.append(f"N={n}: the 201s are not the slot's rows")
        print(
            f"  N={n} confirmed={race.confirmed} capacity={capacity} counter={counter} "
            f"rows={len(rows)} (reserved {slot['reserved']}); answers {dict(race.codes)}"
        )
        return {"n": n, "confirmed": race.confirmed, "capacity": capacity, "counter": counter,
                "rows": len(rows), "slot_id": slot_id,
                "holders": {a: tokens[k] for k, a in race.made.items()}}  # fmt: skip

    def cancel_race(self, full: dict[str, Any], cancels: int = 8, racers: int = 100) -> dict:
        """`cancels` holders of a full slot cancel while `racers` new residents book it;
        a second wave takes what the first left: exactly `cancels` places are taken again."""
        slot_id = full["slot_id"]
        holders = list(full["holders"].items())[:cancels]
        calls = [
            (
                lambda a=a, t=t: self.env.api.call(
                    "POST", f"/appointments/{a}/cancel", t, {"reason": "临时有事"}
                )
            )
            for a, t in holders
        ]
        calls += [(lambda t=t: book(self.env, t, slot_id))
                  for t in self.env.residents(racers, "cancel1")]  # fmt: skip
        first = burst(self.env, self.args.pool, calls)
        second = burst(self.env, self.args.pool, [
            (lambda t=t: book(self.env, t, slot_id))
            for t in self.env.residents(racers // 2, "cancel2")
        ])  # fmt: skip
        cancelled = first.codes["200"]
        retaken = first.confirmed + second.confirmed
        slot, rows = self.read(slot_id)
        counter = int(slot["booked"])
        expect = full["confirmed"] - cancelled + retaken
        self.overbooked += max(0, len(rows) - self.capacity) + (counter != len(rows))
        if retaken != cancelled or cancelled != len(holders) or counter != expect:
            self.problems.append(f"cancel race: {cancelled} cancelled, {retaken} retaken, "
                                 f"counter {counter}, expected {expect}")  # fmt: skip
        print(f"  cancels: {cancelled} holders cancelled while {racers} new residents raced "
              f"for the full slot ({first.confirmed} booked), a second wave of {racers // 2} "
              f"booked {second.confirmed}: retaken={retaken} (cancelled {cancelled}), "
              f"counter={counter} rows={len(rows)}")  # fmt: skip
        return {"cancelled": cancelled, "retaken": retaken, "counter": counter,
                "rows": len(rows)}  # fmt: skip

    def same_resident(self, with_key: bool, copies: int = 20) -> dict[str, Any]:
        """One resident, `copies` concurrent identical requests: one appointment."""
        slot_id = self.slot(50)
        token = self.env.residents(1, "same")[0]
        key = uuid.uuid4().hex if with_key else None
        race = burst(self.env, self.args.pool,
                     [(lambda: book(self.env, token, slot_id, key))] * copies)  # fmt: skip
        replay = book(self.env, token, slot_id, key) if key else None
        mine = [a for a in self.env.api.ok("GET", "/appointments", token)["items"]
                if a["slot_id"] == slot_id and a["status"] == BOOKED]  # fmt: skip
        self.duplicates += max(0, len(mine) - 1)
        ids = set(race.appointments) | ({replay[1].get("appointment_id")} if replay else set())
        what = "one Idempotency-Key" if key else "no key"
        if len(mine) != 1 or ids != {a["appointment_id"] for a in mine}:
            self.problems.append(f"same resident, {what}: {len(mine)} appointment(s), "
                                 f"answers name {sorted(ids)}")  # fmt: skip
        replayed = f"; a later replay: {code_of(replay[0], replay[1])}" if replay else ""
        print(
            f"  one resident, {copies} concurrent identical requests with {what}: "
            f"{len(mine)} appointment(s); answers {dict(race.codes)}{replayed}"
        )
        return {"with_key": with_key, "appointments": len(mine), "answers": dict(race.codes)}


def measure_concurrency(env: Env, args: argparse.Namespace) -> dict[str, Any]:
    env.api.ok(
        "PUT",
        "/schedules/quotas",
        env.manager,
        {"department": RACE_DEPARTMENT, "reserved_share": 0, "release_hours": 48},
    )
    c = Concurrency(env, args)
    print(
        f"concurrency: slots of capacity {c.capacity} ({RACE_DEPARTMENT}, no reserved "
        f"share), {args.pool} threads"
    )
    runs = []
    for n in args.runs:
        runs.append(c.run(n))
    full = next(r for r in runs if r["confirmed"] >= c.capacity)
    cancel = c.cancel_race(full)
    same = [c.same_resident(True), c.same_resident(False)]
    print(
        f"  overbooked={c.overbooked} duplicates={c.duplicates}; "
        f"{len(c.problems)} problem(s){lines(c.problems)}"
    )
    public = [{k: r[k] for k in ("n", "confirmed", "capacity", "counter", "rows")} for r in runs]
    return {"concurrency_runs": public, "cancel_race": cancel, "same_resident": same,
            "concurrency_exact": not c.problems, "concurrency_problems": c.problems,
            "race_overbooked": c.overbooked, "race_duplicates": c.duplicates}  # fmt: skip


# --------------------------------------------------------------- search over one year
class Recorder:
    """A stand-in DynamoDB client: keeps the items put_session would write."""

    def __init__(self) -> None:
        self.items: list[dict[str, Any]] = []

    def transact_write_items(self, TransactItems: list[dict]) -> None:  # noqa: N803
        self.items += [w["Put"]["Item"] for w in TransactItems]


@dataclass
class Year:
    """One year of schedules for the search institutions, generated with the domain."""

    institutions: list[str]
    doctors: dict[str, list[tuple[str, str, str]]]  # inst -> (doctor_id, name, department)
    days: list[date]

    @classmethod
    def working_days(cls, first: date, n: int) -> list[date]:
        out, day = [], first
        while len(out) < n:
            if day.isoweekday() <= 5:
                out.append(day)
            day += timedelta(days=1)
        return out

    def items(self, consortium: str, institution: str) -> Iterator[dict[str, Any]]:
        """The items of one institution's year, as DynamoBookingStore.put_session lays them."""
        policy, now = BookingPolicy(), datetime.now(CHINA_TZ)
        for day in self.days:
            recorder = Recorder()
            store = DynamoBookingStore(recorder, "recorded")
            for j, (doctor_id, name, dept) in enumerate(self.doctors[institution]):
                for period, start, end in SESSIONS:
                    spec = SessionSpec(dept, day.isoformat(), period, start, end, 60, 12,
                                       "specialist" if j % 4 == 0 else "general",
                                       1200 if j % 4 == 0 else 500, doctor_id)  # fmt: skip
                    session = new_session(spec, session_id=f"{institution}.{day}.{j:02d}{period}",
                                          consortium_id=consortium, institution_id=institution,
                                          doctor_name=name, reserved_share=0.2,
                                          release_hours=48, created_by="bench-loader",
                                          now=now)  # fmt: skip
                    store.put_session(session, slots_of(session, policy, reserves=True))
            yield from recorder.items

    def expected(self, institution: str, query: dict[str, str]) -> int:
        """Slots a search should list (none has ended: the year starts tomorrow)."""
        doctors = [d for d in self.doctors[institution]
                   if query.get("department") in (None, d[2])
                   and query.get("doctor_id") in (None, d[0])]  # fmt: skip
        return len(doctors) * 4 * len(SESSIONS)


def search_setup(env: Env, args: argparse.Namespace, rng: random.Random) -> Year:
    """The search institutions and their doctors, through the API."""
    doctors: dict[str, list[tuple[str, str, str]]] = {}
    institutions = [f"bench-s{i + 1}" for i in range(args.institutions)]
    for i, inst in enumerate(institutions):
        create_institution(env, inst, f"基准医院{i + 1}", SEARCH_TYPES[i % len(SEARCH_TYPES)])
        doctors[inst] = []
        for j in range(args.doctors):
            name = rng.choice(SURNAMES) + rng.choice(GIVEN) + rng.choice(GIVEN)
            row = (f"{inst}-d{j:02d}", name, DEPARTMENTS[j % len(DEPARTMENTS)])
            create_doctor(env, inst, *row)
            doctors[inst].append(row)
    return Year(institutions, doctors, Year.working_days(today() + timedelta(days=1), args.days))


@contextmanager
def item_sizes_checked_once() -> Iterator[None]:
    """moto's LimitedSizeDict re-sums the size of every attribute each time one is set (an
    item of n attributes costs n^2 size computations: ~40% of loading a year). While the
    bench loads, an item's size is checked once, whole; the phases measured run moto as is."""
    from moto.dynamodb.exceptions import ItemSizeTooLarge
    from moto.dynamodb.models.dynamo_type import Item, LimitedSizeDict

    setitem, init = LimitedSizeDict.__setitem__, Item.__init__

    def checked(self: Item, *args: Any, **kwargs: Any) -> None:
        init(self, *args, **kwargs)
        if self.size() > 405_000:  # moto's limit
            raise ItemSizeTooLarge

    LimitedSizeDict.__setitem__ = dict.__setitem__  # type: ignore[assignment]
    Item.__init__ = checked  # type: ignore[method-assign]
    try:
        yield
    finally:
        LimitedSizeDict.__setitem__ = setitem  # type: ignore[method-assign]
        Item.__init__ = init  # type: ignore[method-assign]


def load_year(env: Env, year: Year, writers: int) -> dict[str, Any]:
    from botocore.config import Config

    config = Config(parameter_validation=False)  # the items are the store's own
    gc.disable()  # the loaded objects are long-lived: collecting them is the bench's cost
    try:
        t0 = time.perf_counter()
        written = 0
        with item_sizes_checked_once():
            for inst in year.institutions:
                items = list(year.items(env.consortium, inst))
                client = lambda: env.stack.client("dynamodb", config=config)  # noqa: E731
                batch_write(client, env.table, items, writers)
                written += len(items)
        load_s = time.perf_counter() - t0
    finally:
        gc.enable()
    gc.collect()
    gc.freeze()
    sample = list(itertools.islice(year.items(env.consortium, year.institutions[0]), 10))
    size = statistics.mean(len(json.dumps(i, ensure_ascii=False).encode()) for i in sample)
    return {"items": written, "load_s": round(load_s, 1), "item_bytes": int(size)}


def measure_search(env: Env, args: argparse.Namespace) -> dict[str, Any]:
    rng = random.Random(args.seed)
    year = search_setup(env, args, rng)
    loaded = load_year(env, year, args.writers)
    sessions = len(year.institutions) * args.doctors * len(year.days) * len(SESSIONS)
    partition = args.doctors * len(SESSIONS) * 5  # a session and its 4 slots
    print(f"search: {loaded['items']} items loaded ({sessions} sessions, "
          f"{loaded['items'] - sessions} slots of ~{loaded['item_bytes']} B; "
          f"{len(year.institutions)} institutions x {args.doctors} doctors x "
          f"{len(year.days)} working days {year.days[0]}..{year.days[-1]}) in "
          f"{loaded['load_s']} s")  # fmt: skip
    tokens = {"resident": env.residents(1, "search")[0]}
    clinicians = {i: env.staff(f"bench-doc-{i}", Role.DOCTOR, i, "医生") for i in year.institutions}
    times: dict[str, list[float]] = {"resident": [], "clinician": []}
    problems: list[str] = []
    raw: list[float] = []
    for k in range(args.searches + 5):
        inst = rng.choice(year.institutions)
        query = {"institution_id": inst, "date": rng.choice(year.days).isoformat()}
        roll = rng.random()
        if roll < 0.25:
            query["department"] = rng.choice(DEPARTMENTS)
        elif roll < 0.42:
            query["doctor_id"] = rng.choice(year.doctors[inst])[0]
        role = ("resident", "clinician")[k % 2]
        token = tokens["resident"] if role == "resident" else clinicians[inst]
        path = "/slots?" + "&".join(f"{a}={requests.utils.quote(b)}" for a, b in query.items())
        status, out, dt = env.api.call("GET", path, token)
        if k >= 5:  # the first few warm the function
            times[role].append(dt)
        problems += search_problems(status, out, year.expected(inst, query), role, path)
        if k % 5 == 0:
            raw.append(raw_day_query(env, inst, query["date"]))
    both = times["resident"] + times["clinician"]
    per_role = {r: {"p50": pct_ms(t, 50), "p99": pct_ms(t, 99)} for r, t in times.items()}
    print(f"  {len(both)} searches: p50 {pct_ms(both, 50)} ms, p99 {pct_ms(both, 99)} ms, max "
          f"{ms(max(both))} ms; by role {per_role}; answers checked against the schedule: "
          f"{'OK' if not problems else 'MISMATCH'}{lines(problems)}\n"
          f"  for reference, one raw boto3 Query of a day's partition ({partition} items): "
          f"median {median_ms(raw)} ms of {len(raw)}, interleaved")  # fmt: skip
    return {"search_p50_ms": pct_ms(both, 50), "search_p99_ms": pct_ms(both, 99),
            "search_raw_query_ms": median_ms(raw),
            "search_by_role_ms": per_role, "search_correct": not problems,
            "searches": len(both), "search_items_loaded": loaded["items"],
            "search_sessions_loaded": sessions, "search_load_s": loaded["load_s"],
            "search_days": len(year.days)}  # fmt: skip


def raw_day_query(env: Env, institution: str, day: str) -> float:
    """Seconds for one boto3 Query of a day's partition, every page, nothing decoded."""
    kwargs: dict[str, Any] = {
        "TableName": env.table, "KeyConditionExpression": "pk = :pk",
        "ExpressionAttributeValues": {":pk": {"S": f"SLOTS#{institution}#{day}"}},
    }  # fmt: skip
    t0 = time.perf_counter()
    while "LastEvaluatedKey" in (out := env.db.query(**kwargs)):
        kwargs["ExclusiveStartKey"] = out["LastEvaluatedKey"]
    return time.perf_counter() - t0


def search_problems(status: int, out: Any, want: int, role: str, path: str) -> list[str]:
    if status != 200:
        return [f"{path}: {status} {str(out)[:200]}"]
    items = out["items"]
    problems = [] if len(items) == want else [f"{path}: {len(items)} slots, expected {want}"]
    sees = {"reserved" in i for i in items}
    if sees and sees != {role == "clinician"}:
        problems.append(f"{path}: a {role} {'does not see' if role == 'clinician' else 'sees'}"
                        " the reserved places")  # fmt: skip
    return problems


# ------------------------------------------------------------------------------------ main
def verify_throughput(env: Env, tally: Tally) -> dict[str, Any]:
    checks, dups = check_slots(env, tally.confirmed)
    bad = [c for c in checks if not c.consistent]
    over = sum(max(0, c.rows - c.capacity) for c in checks) + sum(
        c.counter != c.rows for c in checks
    )
    print(f"  checked {len(checks)} slots ({sum(c.rows for c in checks)} bookings): counter = "
          f"rows = 201s received in {len(checks) - len(bad)}; duplicates {dups}"
          f"{lines([str(c) for c in bad])}")  # fmt: skip
    return {"throughput_slots_checked": len(checks), "throughput_inconsistent": len(bad),
            "throughput_overbooked": over, "throughput_duplicates": dups}  # fmt: skip


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    parser.add_argument("--bookings", type=int, default=400, help="throughput: bookings")
    parser.add_argument("--clients", type=int, default=8, help="throughput: concurrent clients")
    parser.add_argument("--warmup", type=int, default=16)
    parser.add_argument("--samples", type=int, default=50, help="cost: bookings and baselines")
    parser.add_argument("--runs", default="50,200,1000", help="concurrency: N per run")
    parser.add_argument("--capacity", type=int, default=20, help="concurrency: C")
    parser.add_argument("--pool", type=int, default=32, help="concurrency: threads")
    parser.add_argument("--institutions", type=int, default=5, help="search: institutions")
    parser.add_argument("--doctors", type=int, default=20, help="search: doctors each")
    parser.add_argument("--days", type=int, default=250, help="search: working days")
    parser.add_argument("--searches", type=int, default=200)
    parser.add_argument("--writers", type=int, default=2, help="BatchWriteItem threads")
    parser.add_argument("--seed", type=int, default=5)
    parser.add_argument("--log-level", default="WARNING", help="the functions' LogLevel")
    parser.add_argument("--quick", action="store_true", help="a small run")
    args = parser.parse_args()
    if args.quick:
        args.bookings, args.samples, args.runs, args.days, args.searches = (
            80, 15, "50,200", 20, 60)  # fmt: skip
    args.runs = [int(n) for n in str(args.runs).split(",")]
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
        env.actions.install()
        places = Places(throughput_slots(env, 7))
        print(
            f"stack up and seeded in {time.perf_counter() - started:.1f} s; "
            f"{len(places.order)} public places in the throughput slots"
        )
        result: dict[str, Any] = {"bench": "booking"}
        tally = Tally()
        result |= measure_throughput(env, places, tally, args)
        result |= measure_cost(env, places, tally, args.samples)
        result |= verify_throughput(env, tally)
        result |= measure_concurrency(env, args)
        result |= measure_search(env, args)
        result["overbooked"] = result["race_overbooked"] + result["throughput_overbooked"]
        result["duplicates"] = result["race_duplicates"] + result["throughput_duplicates"]
        result["bench_s"] = round(time.perf_counter() - started)
        keys = ("bookings_per_s", "booking_cost_ratio", "search_p50_ms", "search_p99_ms",
                "overbooked", "duplicates")  # fmt: skip
        print(json.dumps({"bench": "booking", **{k: result[k] for k in keys}, **result},
                         ensure_ascii=False), flush=True)  # fmt: skip
    sys.stdout.flush()
    os._exit(0)  # a stack holding ~250k items tears down slowly; nothing is left to flush


if __name__ == "__main__":
    main()
