"""Two-way referral (issue 4): throughput, the cost of one transition, statistics at scale.

Run: ./scripts/bench referral [--referrals 80] [--clients 4] [--samples 30] [--n-stats 50000]
     ./scripts/bench referral --quick          (a small run: a few referrals, 2,000 for stats)
Everything runs in the embedded local stack (the real template deployed into moto), in this
process, over HTTP through the local gateway where a client would.

- referrals_per_s: --referrals upward referrals, apply -> accept -> arrive over HTTP by
  --clients concurrent clients (after a warm-up), per second of wall time. Each must end
  ARRIVED with its wait token spent and its Step Functions execution (named after it)
  SUCCEEDED; failures are counted and listed. referrals_per_s_settled also waits for the
  last execution to finish.
- transition_cost_ratio: the median HTTP time of accept and arrive (--samples sequential
  referrals, each transition made while the workflow holds a registered wait token, so it
  spends one) / the median of the baseline measured in the same run, interleaved: one raw
  PutItem of the same referral item into a scratch table of the referrals table's schema plus
  one SendTaskSuccess on a real waiting task token (a scratch state machine with an SQS
  waitForTaskToken task), both with boto3 against the same emulator. The breakdown shows
  the referrals handler and the stream relay, which the emulator runs inside the
  transaction's request (on AWS the stream is asynchronous): transition_cost_ratio_excl_stream.
- stats_ms_5k, stats_ms_50k, stats_growth_ratio: GET /referrals/stats over one calendar
  year, consortium-wide (consortium admin; median of --stats-calls after a warm-up), with
  n/10 and then n synthetic referrals; the per-institution variant as an extra. Target:
  growth <= 10 (linear or better). The referrals are made with the domain's own apply and
  transition (a deterministic mix of routes, urgencies, outcomes and decision delays),
  written as the store's items (DynamoReferralStore.item) with BatchWriteItem, and their
  rollups as the store lays them out (rollup_delta summed per key, then spread over the
  store's levels by its own rollup_items: day and month rollups and the daily chart items,
  each put once per load). A year's statistics read its 12 months' rollups and its chart
  items (stats_items_read); stats_rollups counts the day rollups they stand for.
  The referrals table's stream is detached while they load: its consumer would start a
  workflow and publish an event for every historical referral (moto keeps a stream attached
  even after UpdateTable disables it). The bench's own garbage is kept out of the timings:
  the collector is paused while loading and the loaded objects frozen afterwards. The API's
  answers are checked against figures computed here from the generated referrals
  (stats_correct).
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import random
import statistics
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import requests

from yilian.adapters.referral_store import DynamoReferralStore, rollup_items
from yilian.domain.clock import CHINA_TZ
from yilian.domain.directory import Institution, InstitutionType
from yilian.domain.principal import Principal, Role
from yilian.domain.referral import (
    COUNTERS,
    DEFAULT_LIMITS,
    Action,
    Application,
    Change,
    Referral,
    RejectReason,
    RollupKey,
    Urgency,
    apply,
    new_reference,
    rollup_delta,
    transition,
)
from yilian.services.directory import TIER_OF_TYPE
from yilian_local.demo_county import GIVEN, INSTITUTIONS, SURNAMES, residents
from yilian_local.issuer import mint
from yilian_local.runner import REGISTRY
from yilian_local.stack import ACCOUNT_ID, LocalStack, load_county_params

LIMITS = DEFAULT_LIMITS
REASONS = {False: "病情需要，申请转诊", True: "病情稳定，转回基层康复"}
COUNTY = "county-hospital"
OUT_OF_COUNTY = "city-first"
STATS_INSTITUTION = "qiaotou"
DIAGNOSES = [("I20.9", "心绞痛"), ("I63.9", "脑梗死"), ("I10", "原发性高血压"),
             ("E11.9", "2型糖尿病"), ("J18.9", "肺炎"), ("K35.8", "急性阑尾炎"),
             ("S72.0", "股骨颈骨折"), ("O80", "单胎顺产"), ("J44.9", "慢性阻塞性肺病"),
             ("N18.9", "慢性肾脏病")]  # fmt: skip
SUMMARY = ("患者{age}岁，反复胸闷气短{days}天，活动后加重，休息后可缓解。既往高血压病史十余年，"
           "规律服用硝苯地平缓释片。查体：血压{bp}/90mmHg，心率88次/分，双肺呼吸音清，未闻及"
           "干湿啰音。心电图示ST段压低。本院条件有限，建议上级医院进一步诊治。")  # fmt: skip


def ms(seconds: float) -> float:
    return round(seconds * 1000, 2)


def median_ms(samples: list[float]) -> float | None:
    return ms(statistics.median(samples)) if samples else None


def lines(problems: list[str], limit: int = 10) -> str:
    return "".join(f"\n    {p}" for p in problems[:limit])


# ---------------------------------------------------------------------------------- HTTP
class Api:
    """One keep-alive session per client thread; every call timed."""

    def __init__(self, base: str) -> None:
        self.base = base
        self._local = threading.local()

    def call(
        self, method: str, path: str, token: str, body: Any = None, headers: dict | None = None
    ) -> tuple[int, Any, float]:
        session = getattr(self._local, "session", None)
        if session is None:
            session = self._local.session = requests.Session()
        hdrs = {"Authorization": f"Bearer {token}", **(headers or {})}
        t0 = time.perf_counter()
        resp = session.request(method, self.base + path, json=body, headers=hdrs, timeout=300)
        elapsed = time.perf_counter() - t0
        try:
            data = resp.json()
        except ValueError:
            data = resp.text
        return resp.status_code, data, elapsed


class Invocations:
    """Every function invocation in this process (name, start, end), for the breakdown."""

    def __init__(self) -> None:
        self.rows: list[tuple[str, float, float]] = []
        self._lock = threading.Lock()

    def install(self) -> None:
        original = REGISTRY.invoke

        def invoke(fn: Any, event: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return original(fn, event)
            finally:
                with self._lock:
                    self.rows.append((fn.function_name, t0, time.perf_counter()))

        REGISTRY.invoke = invoke  # type: ignore[method-assign]

    def within(self, name: str, t0: float, t1: float) -> float:
        """Seconds `name` ran inside [t0, t1]."""
        with self._lock:
            rows = [r for r in self.rows if r[0] == name and r[2] > t0 and r[1] < t1]
        return sum(min(b, t1) - max(a, t0) for _, a, b in rows)


# ------------------------------------------------------------------------------ the county
def directory(consortium: str) -> dict[str, Institution]:
    out = {}
    for row in INSTITUTIONS:
        kind = InstitutionType(row["type"])
        out[row["institution_id"]] = Institution(
            row["institution_id"], consortium, row["name"], TIER_OF_TYPE[kind], kind,
            row.get("parent_id"),
        )  # fmt: skip
    return out


def routes(insts: dict[str, Institution]) -> list[tuple[str, str, str, int]]:
    """(direction, source, target, weight): mostly along the hierarchy, some past it."""
    out = []
    for v in (i for i in insts.values() if i.tier == "village"):
        parent = v.parent_id or COUNTY
        out += [
            ("up", v.institution_id, parent, 12),
            ("up", v.institution_id, COUNTY, 3),
            ("down", parent, v.institution_id, 3),
            ("down", COUNTY, v.institution_id, 1),
        ]
    for t in (i for i in insts.values() if i.tier == "township"):
        out += [("up", t.institution_id, COUNTY, 14), ("up", t.institution_id, OUT_OF_COUNTY, 1),
                ("down", COUNTY, t.institution_id, 4)]  # fmt: skip
    out.append(("up", COUNTY, OUT_OF_COUNTY, 8))
    return out


def doctor(consortium: str, institution_id: str) -> Principal:
    return Principal(f"bench-doc-{institution_id}", Role.DOCTOR, consortium, institution_id,
                     name=f"{institution_id}医生")  # fmt: skip


@dataclass
class Env:
    """The running stack as the phases use it."""

    stack: LocalStack
    api: Api
    admin: str
    tokens: dict[str, str]
    persons: list[str]
    pairs: list[tuple[str, str]]  # (source, target) of the HTTP referrals, all upward
    referrals_table: str
    stats_table: str
    state_machine: str
    db: Any
    sfn: Any
    store: DynamoReferralStore


def setup(stack: LocalStack, params: dict[str, str]) -> Env:
    """The demo directory (POST /institutions), eight residents (POST /persons), tokens."""
    consortium = params["ConsortiumId"]
    api = Api(stack.api_url)
    kms, key_arn = stack.client("kms"), stack.outputs["TokenSigningKeyArn"]

    def token(who: Principal) -> str:
        return mint(kms, key_arn, params, who, 3600)

    admin = token(
        Principal("bench-admin", Role.CONSORTIUM_ADMIN, consortium, COUNTY, name="管理员")
    )
    for inst in INSTITUTIONS:
        status, out, _ = api.call("POST", "/institutions", admin, inst)
        if status not in (201, 409):
            sys.exit(f"POST /institutions: {status} {out}")
    tokens = {i["institution_id"]: token(doctor(consortium, i["institution_id"]))
              for i in INSTITUTIONS}  # fmt: skip
    persons = []
    for p in [p for p in residents() if p.duplicate_of is None][:8]:
        status, out, _ = api.call("POST", "/persons", tokens[p.registered_at], p.registration())
        if status not in (200, 201):
            sys.exit(f"POST /persons: {status} {out}")
        persons.append(out["person"]["person_id"])
    insts = directory(consortium)
    villages = [(i.institution_id, i.parent_id or COUNTY) for i in insts.values()
                if i.tier == "village"]  # fmt: skip
    pairs = villages + [(i.institution_id, COUNTY) for i in insts.values() if i.tier == "township"]
    pairs += [(v, COUNTY) for v, _ in villages] + [(COUNTY, OUT_OF_COUNTY)]
    db = stack.client("dynamodb")
    referrals_table = stack.physical_id("ReferralsTable")
    stats_table = stack.physical_id("ReferralStatsTable")
    return Env(stack, api, admin, tokens, persons, pairs, referrals_table, stats_table,
               stack.outputs["ReferralStateMachineArn"], db, stack.client("stepfunctions"),
               DynamoReferralStore(db, referrals_table, stats_table))  # fmt: skip


# -------------------------------------------------------------------- throughput, HTTP
@dataclass
class Client:
    env: Env
    failures: list[str] = field(default_factory=list)
    times: dict[str, list[float]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def fail(self, why: str) -> None:
        with self.lock:
            self.failures.append(why)

    def apply(self, k: int, source: str, target: str) -> str | None:
        diag = DIAGNOSES[k % len(DIAGNOSES)]
        persons = self.env.persons
        body = {
            "patient_id": persons[k % len(persons)], "direction": "up", "urgency": "routine",
            "target_institution_id": target, "target_department": "心血管内科",
            "reason": "胸痛待查，需上级医院评估", "diagnosis": {"code": diag[0], "text": diag[1]},
            "clinical_summary": SUMMARY.format(age=50 + k % 30, days=1 + k % 9, bp=140 + k % 40),
        }  # fmt: skip
        key = {"Idempotency-Key": uuid.uuid4().hex}
        status, out, dt = self.env.api.call(
            "POST", "/referrals", self.env.tokens[source], body, key
        )
        if status != 201:
            self.fail(f"apply {source}->{target}: {status} {str(out)[:200]}")
            return None
        with self.lock:
            self.times.setdefault("apply", []).append(dt)
        return out["referral_id"]

    def act(self, rid: str, action: str, target: str, note: str, expect: str) -> float | None:
        status, out, dt = self.env.api.call(
            "POST", f"/referrals/{rid}/{action}", self.env.tokens[target], {"note": note}
        )
        if status != 200 or out.get("status") != expect:
            self.fail(f"{action} {rid}: {status} {str(out)[:200]}")
            return None
        with self.lock:
            self.times.setdefault(action, []).append(dt)
        return dt

    def referral(self, k: int) -> str | None:
        source, target = self.env.pairs[k % len(self.env.pairs)]
        rid = self.apply(k, source, target)
        if rid is not None and self.act(rid, "accept", target, "同意接收", "ACCEPTED"):
            self.act(rid, "arrive", target, "患者已到院", "ARRIVED")
        return rid


def execution_arn(state_machine_arn: str, name: str) -> str:
    return state_machine_arn.replace(":stateMachine:", ":execution:") + f":{name}"


def settle(env: Env, rids: list[str], timeout: float = 120) -> dict[str, str]:
    """Wait for every execution to finish: {referral_id: final status}."""
    pending, done = set(rids), {}
    deadline = time.monotonic() + timeout
    while pending and time.monotonic() < deadline:
        for rid in sorted(pending):
            try:
                arn = execution_arn(env.state_machine, rid)
                status = env.sfn.describe_execution(executionArn=arn)["status"]
            except env.sfn.exceptions.ExecutionDoesNotExist:
                continue
            if status != "RUNNING":
                done[rid] = status
                pending.discard(rid)
        if pending:
            time.sleep(0.05)
    done.update(dict.fromkeys(pending, "RUNNING (timed out)"))
    return done


def verify(env: Env, executions: dict[str, str]) -> tuple[int, list[str]]:
    """(referrals that ended well, problems): ARRIVED, token spent, execution SUCCEEDED."""
    good, problems = 0, []
    for rid, status in executions.items():
        found = env.store.get(rid)
        if found is None:
            problems.append(f"{rid}: not stored")
            continue
        referral, token = found
        mine = []
        if str(referral.status) != "ARRIVED":
            mine.append(f"{rid}: {referral.status}, not ARRIVED")
        if token:
            mine.append(f"{rid}: a wait token is still stored")
        if status != "SUCCEEDED":
            mine.append(f"{rid}: execution {status}")
        good += not mine
        problems += mine
    return good, problems


def measure_throughput(env: Env, n: int, clients: int, warmup: int) -> dict[str, Any]:
    warm = Client(env)
    settle(env, [r for r in (warm.referral(k) for k in range(warmup)) if r])
    client = Client(env)
    t0 = time.perf_counter()
    with ThreadPoolExecutor(max_workers=clients) as pool:
        rids = list(pool.map(client.referral, range(warmup, warmup + n)))
    wall = time.perf_counter() - t0
    executions = settle(env, [r for r in rids if r])
    settled = time.perf_counter() - t0
    good, unwell = verify(env, executions)
    problems = warm.failures + client.failures + unwell
    load_ms = {a: median_ms(v) for a, v in client.times.items()}
    print(
        f"throughput: {n} referrals (apply -> accept -> arrive) by {clients} clients in "
        f"{wall:.1f} s = {n / wall:.2f} referrals/s; every execution finished after "
        f"{settled:.1f} s ({n / settled:.2f}/s); median ms per call under load {load_ms}"
    )
    print(f"  checked: {good}/{n} ARRIVED, token spent, execution SUCCEEDED; "
          f"{len(problems)} problem(s){lines(problems)}")  # fmt: skip
    return {"referrals_per_s": round(n / wall, 2), "referrals": n, "clients": clients,
            "failures": len(problems), "referrals_per_s_settled": round(n / settled, 2),
            "load_median_ms": load_ms}  # fmt: skip


# ------------------------------------------------------------ one transition vs baseline
class Baseline:
    """A raw PutItem into a scratch copy of the referrals table + one SendTaskSuccess on a
    real waiting task token (scratch state machine: SQS sendMessage.waitForTaskToken)."""

    def __init__(self, env: Env, n: int) -> None:
        stack = env.stack
        self.db, self.sfn, sqs = env.db, env.sfn, stack.client("sqs")
        desc = self.db.describe_table(TableName=env.referrals_table)["Table"]
        self.table = env.referrals_table + "-bench-scratch"
        gsis = [{k: g[k] for k in ("IndexName", "KeySchema", "Projection")}
                for g in desc.get("GlobalSecondaryIndexes", [])]  # fmt: skip
        self.db.create_table(
            TableName=self.table, KeySchema=desc["KeySchema"], BillingMode="PAY_PER_REQUEST",
            AttributeDefinitions=desc["AttributeDefinitions"], GlobalSecondaryIndexes=gsis,
        )  # fmt: skip
        partition = env.state_machine.split(":")[1]
        queue = sqs.create_queue(QueueName="yilian-bench-callbacks")["QueueUrl"]
        task = {
            "Type": "Task",
            "End": True,
            "Resource": f"arn:{partition}:states:::sqs:sendMessage.waitForTaskToken",
            "Parameters": {"QueueUrl": queue, "MessageBody": {"token.$": "$$.Task.Token"}},
        }
        arn = self.sfn.create_state_machine(
            name="yilian-bench-callback",
            definition=json.dumps({"StartAt": "Wait", "States": {"Wait": task}}),
            roleArn=f"arn:{partition}:iam::{ACCOUNT_ID}:role/yilian-bench",
        )["stateMachineArn"]
        self.executions = [
            self.sfn.start_execution(stateMachineArn=arn, name=f"bench-{i}")["executionArn"]
            for i in range(n)
        ]
        self.tokens: list[str] = []
        deadline = time.monotonic() + 60
        while len(self.tokens) < n and time.monotonic() < deadline:
            out = sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10, WaitTimeSeconds=1)
            for m in out.get("Messages", []):
                self.tokens.append(json.loads(m["Body"])["token"])
                sqs.delete_message(QueueUrl=queue, ReceiptHandle=m["ReceiptHandle"])
        self.put_s: list[float] = []
        self.callback_s: list[float] = []
        self.total_s: list[float] = []

    def sample(self, item: dict[str, Any]) -> None:
        token = self.tokens.pop()
        item = {**item, "pk": {"S": f"REF#bench-{uuid.uuid4().hex}"}}
        t0 = time.perf_counter()
        self.db.put_item(TableName=self.table, Item=item)
        t1 = time.perf_counter()
        self.sfn.send_task_success(taskToken=token, output=json.dumps({"status": "ARRIVED"}))
        t2 = time.perf_counter()
        self.put_s.append(t1 - t0)
        self.callback_s.append(t2 - t1)
        self.total_s.append(t2 - t0)

    def succeeded(self, timeout: float = 10) -> int:
        """How many scratch executions SUCCEEDED once none is running (or after timeout)."""
        deadline = time.monotonic() + timeout
        while True:
            states = [
                self.sfn.describe_execution(executionArn=a)["status"] for a in self.executions
            ]
            if "RUNNING" not in states or time.monotonic() > deadline:
                return states.count("SUCCEEDED")
            time.sleep(0.05)


def wait_for_stage(env: Env, rid: str, stage: str, timeout: float = 20) -> bool:
    """True once the workflow registered its wait token for `stage` on the referral."""
    deadline = time.monotonic() + timeout
    key = DynamoReferralStore.key(rid)
    while time.monotonic() < deadline:
        out = env.db.get_item(TableName=env.referrals_table, Key=key, ConsistentRead=True)
        item = out.get("Item", {})
        if "wait_token" in item and item.get("wait_stage", {}).get("S") == stage:
            return True
        time.sleep(0.01)
    return False


STEPS = (
    ("accept", "review", "ACCEPTED", "同意接收"),
    ("arrive", "arrival", "ARRIVED", "患者已到院"),
)


def measure_transitions(env: Env, samples: int, invocations: Invocations) -> dict[str, Any]:
    baseline = Baseline(env, samples)
    names = {
        k: env.stack.physical_id(k)
        for k in (
            "AuthorizerFunction",
            "ReferralsFunction",
            "ReferralEventsFunction",
            "NotifierFunction",
        )
    }
    times: dict[str, list[float]] = {"accept": [], "arrive": []}
    parts: dict[str, list[float]] = {k: [] for k in names}
    excl_stream: list[float] = []
    client, failures = Client(env), []
    for k in range(samples):
        source, target = env.pairs[k % len(env.pairs)]
        rid = client.apply(1000 + k, source, target)
        if rid is None:
            continue
        for action, stage, expect, note in STEPS:
            if not wait_for_stage(env, rid, stage):
                failures.append(f"{rid}: no {stage} wait token registered")
                break
            t0 = time.perf_counter()
            dt = client.act(rid, action, target, note, expect)
            t1 = time.perf_counter()
            if dt is None:
                break
            times[action].append(dt)
            for key, name in names.items():
                parts[key].append(invocations.within(name, t0, t1))
            excl_stream.append(dt - invocations.within(names["ReferralEventsFunction"], t0, t1))
        status = settle(env, [rid], timeout=30)[rid]
        if status != "SUCCEEDED":
            failures.append(f"{rid}: execution {status}")
        item = env.db.get_item(TableName=env.referrals_table, Key=DynamoReferralStore.key(rid))
        baseline.sample(item["Item"])
    failures += client.failures
    both = times["accept"] + times["arrive"]
    base = statistics.median(baseline.total_s)
    ratio = statistics.median(both) / base
    excl_ratio = statistics.median(excl_stream) / base
    breakdown = {k: median_ms(v) for k, v in parts.items()}
    print(
        f"transition: accept {median_ms(times['accept'])} ms, arrive "
        f"{median_ms(times['arrive'])} ms (HTTP, median of {len(times['accept'])}); baseline "
        f"PutItem {median_ms(baseline.put_s)} ms + SendTaskSuccess "
        f"{median_ms(baseline.callback_s)} ms = {ms(base)} ms (median of "
        f"{len(baseline.total_s)}; {baseline.succeeded()} scratch executions SUCCEEDED)"
    )
    print(f"  transition_cost_ratio {ratio:.2f}; function time inside a transition (median ms): "
          f"{breakdown}; less the stream relay the emulator runs in-request: "
          f"{median_ms(excl_stream)} ms, ratio {excl_ratio:.2f}; "
          f"{len(failures)} problem(s){lines(failures)}")  # fmt: skip
    return {
        "transition_cost_ratio": round(ratio, 2),
        "accept_ms": median_ms(times["accept"]), "arrive_ms": median_ms(times["arrive"]),
        "transition_ms": median_ms(both), "baseline_ms": ms(base),
        "baseline_put_ms": median_ms(baseline.put_s),
        "baseline_callback_ms": median_ms(baseline.callback_s),
        "transition_breakdown_ms": breakdown,
        "transition_cost_ratio_excl_stream": round(excl_ratio, 2),
        "transition_failures": len(failures),
    }  # fmt: skip


# --------------------------------------------------------------- synthetic history (domain)
@dataclass
class Expected:
    """What one generated referral should count for, kept by the generator itself."""

    day: str
    source: str
    target: str
    direction: str
    in_county: bool
    final: str = ""  # the referral's final status
    decision: str | None = None  # accepted | rejected | acknowledged
    decision_minutes: int | None = None
    escalated: bool = False


UP_OUTCOMES = [("arrived", 55), ("no_show", 7), ("rejected", 12), ("cancelled", 6),
               ("expired", 5), ("centre_accepted", 5), ("amended", 6), ("info_expired", 2),
               ("centre_rejected", 2)]  # fmt: skip
DOWN_OUTCOMES = [("acknowledged", 80), ("rejected", 7), ("cancelled", 5), ("expired", 3),
                 ("centre_acknowledged", 3), ("amended", 2)]  # fmt: skip
URGENCIES = [(Urgency.ROUTINE, 70), (Urgency.URGENT, 22), (Urgency.EMERGENCY, 8)]


def pick(rng: random.Random, weighted: list[tuple[Any, int]]) -> Any:
    return rng.choices([v for v, _ in weighted], [w for _, w in weighted])[0]


def log_uniform(rng: random.Random, low: float, high: float) -> timedelta:
    return timedelta(seconds=int(math.exp(rng.uniform(math.log(low), math.log(high)))))


class Life:
    """One referral's life after its application, transition by transition."""

    def __init__(self, history: History, r: Referral, expect: Expected, outcome: str) -> None:
        self.h, self.rng, self.r, self.expect, self.outcome = (
            history,
            history.rng,
            r,
            expect,
            outcome,
        )
        self.t_app = datetime.fromisoformat(r.created_at)
        self.urgency = r.urgency
        self.referrer = doctor(r.consortium_id, r.source.institution_id)
        self.receiver = doctor(r.consortium_id, r.target.institution_id)
        self.positive = "acknowledged" if str(r.direction) == "down" else "accepted"
        self.review = timedelta(seconds=LIMITS.review[self.urgency])

    def step(self, action: Action, who: Principal | None, at: datetime, **change: Any) -> None:
        before = self.r
        self.r = transition(before, action, who, Change(**change), now=at, limits=LIMITS)
        History.add(self.h.step_sums, rollup_delta(before, self.r))

    def run(self) -> Referral:
        name = self.outcome
        delay = log_uniform(self.rng, 60, self.review.total_seconds() - 60)
        if name in ("arrived", "no_show", "acknowledged"):
            self.decide(self.positive, self.receiver, self.t_app + delay)
        elif name == "rejected":
            self.decide("rejected", self.receiver, self.t_app + delay)
        elif name == "cancelled":
            self.expect.final = "CANCELLED"
            self.step(Action.CANCEL, self.referrer, self.t_app + delay, reason="患者要求撤销转诊")
        elif name.startswith("centre_") or name == "expired":
            self.escalate()
        else:
            self.request_info(self.t_app + delay)
        return self.r

    def decide(self, outcome: str, who: Principal, at: datetime) -> None:
        self.expect.decision = outcome
        self.expect.decision_minutes = int((at - self.t_app).total_seconds()) // 60
        if outcome == "acknowledged":
            self.expect.final = "ACKNOWLEDGED"
            self.step(Action.ACKNOWLEDGE, who, at, reason="已接收，安排随访")
        elif outcome == "rejected":
            self.expect.final = "REJECTED"
            code = str(self.rng.choice(list(RejectReason)))
            self.step(Action.REJECT, who, at, reason_code=code, reason="本院暂无床位")
        else:
            self.accept(who, at)

    def accept(self, who: Principal, at: datetime) -> None:
        proposed = None
        if self.urgency is Urgency.ROUTINE and self.rng.random() < 0.5:
            proposed = at + timedelta(hours=self.rng.randrange(2, 48))
        self.step(Action.ACCEPT, who, at, reason="同意接收", department="心血管内科",
                  proposed_time=proposed.isoformat() if proposed else None)  # fmt: skip
        arrival_from = max(at, proposed or at)
        limit = LIMITS.arrival[self.urgency]
        if self.outcome == "no_show":
            self.expect.final = "NO_SHOW"
            self.step(Action.NO_SHOW, None, arrival_from + timedelta(seconds=limit))
        else:
            self.expect.final = "ARRIVED"
            at = arrival_from + log_uniform(self.rng, 600, limit - 60)
            self.step(Action.ARRIVE, self.receiver, at, reason="患者已到院")

    def escalate(self) -> None:
        self.expect.escalated = True
        escalated_at = self.t_app + self.review
        self.step(Action.ESCALATE, None, escalated_at)
        limit = LIMITS.escalation[self.urgency]
        if self.outcome == "expired":
            self.expect.final = "EXPIRED"
            self.step(Action.EXPIRE, None, escalated_at + timedelta(seconds=limit))
            return
        at = escalated_at + log_uniform(self.rng, 60, limit - 60)
        outcome = "rejected" if self.outcome == "centre_rejected" else self.positive
        self.decide(outcome, self.h.centre, at)

    def request_info(self, asked: datetime) -> None:
        self.step(Action.REQUEST_INFO, self.receiver, asked, reason="请补充近期检查结果")
        if self.outcome == "info_expired":
            self.expect.final = "EXPIRED"
            self.step(Action.EXPIRE, None, asked + timedelta(seconds=LIMITS.amendment))
            return
        amended = asked + log_uniform(self.rng, 600, LIMITS.amendment - 60)
        self.step(
            Action.AMEND,
            self.referrer,
            amended,
            reason="已补充检查结果",
            amendment={"clinical_summary": "补充：肌钙蛋白阴性，心脏彩超未见异常。"},
        )
        at = amended + log_uniform(self.rng, 60, self.review.total_seconds() - 60)
        self.decide(self.positive, self.receiver, at)


class History:
    """Referrals made with the domain's apply/transition over one year, with the rollups
    (rollup_delta(None, final) summed per key) and the expected figures kept apart; the
    per-transition deltas are summed too, to check they add up to the same rollups."""

    def __init__(self, consortium: str, year: int, seed: int) -> None:
        self.consortium = consortium
        self.insts = directory(consortium)
        self.routes = routes(self.insts)
        self.rng = random.Random(seed)
        self.start = datetime(year, 1, 1, tzinfo=CHINA_TZ)
        self.seconds = int((datetime(year + 1, 1, 1, tzinfo=CHINA_TZ) - self.start).total_seconds())
        self.ids: set[str] = set()
        self.expected: list[Expected] = []
        self.rollups: dict[RollupKey, dict[str, int]] = {}
        self.step_sums: dict[RollupKey, dict[str, int]] = {}
        self.centre = Principal("bench-centre", Role.REFERRAL_CENTRE, consortium, COUNTY,
                                name="转诊中心")  # fmt: skip

    @staticmethod
    def add(into: dict[RollupKey, dict[str, int]], delta: dict) -> None:
        for key, counters in delta.items():
            bucket = into.setdefault(key, {})
            for name, n in counters.items():
                bucket[name] = bucket.get(name, 0) + n

    def make(self, n: int) -> tuple[list[Referral], set[RollupKey]]:
        """n more referrals: their final states and the rollup keys they touched."""
        out, touched = [], set()
        for _ in range(n):
            referral = self._one(len(self.expected))
            out.append(referral)
            delta = rollup_delta(None, referral)
            self.add(self.rollups, delta)
            touched |= delta.keys()
        return out, touched

    def identity_holds(self) -> bool:
        steps = {k: {n: v for n, v in c.items() if v} for k, c in self.step_sums.items()}
        return self.rollups == {k: c for k, c in steps.items() if c}

    def _one(self, k: int) -> Referral:
        rng = self.rng
        direction, src, tgt, _ = rng.choices(self.routes, [r[3] for r in self.routes])[0]
        urgency = pick(rng, URGENCIES)
        t_app = self.start + timedelta(seconds=rng.randrange(self.seconds))
        down = direction == "down"
        diag = DIAGNOSES[rng.randrange(len(DIAGNOSES))]
        follow_up = [
            {"item": "复查血压血糖", "due_date": f"{(t_app + timedelta(days=14)).date()}"},
            {"item": "门诊随访", "due_date": f"{(t_app + timedelta(days=30)).date()}"},
        ]
        application = Application(
            patient_id=f"bench{k:015d}", direction=direction, urgency=str(urgency),
            target_institution_id=tgt, reason=REASONS[down],
            diagnosis={"code": diag[0], "text": diag[1]},
            clinical_summary=SUMMARY.format(age=30 + k % 60, days=1 + k % 20, bp=120 + k % 60),
            target_department="全科" if down else "心血管内科",
            discharge_summary="住院治疗后病情稳定，准予出院，继续口服药物治疗。" if down else "",
            follow_up_plan=follow_up if down else [],
        )  # fmt: skip
        rid = new_reference(t_app, rng)
        while rid in self.ids:
            rid = new_reference(t_app, rng)
        self.ids.add(rid)
        patient = {"person_id": application.patient_id,
                   "name": rng.choice(SURNAMES) + rng.choice(GIVEN) + rng.choice(GIVEN),
                   "sex": rng.choice(["male", "female"]), "birth_date": "1958-03-14"}  # fmt: skip
        r = apply(application, doctor(self.consortium, src), referral_id=rid, patient=patient,
                  source=self.insts[src], target=self.insts[tgt], target_doctor=None, now=t_app,
                  limits=LIMITS)  # fmt: skip
        self.add(self.step_sums, rollup_delta(None, r))
        expect = Expected(f"{t_app.date()}", src, tgt, direction, self.insts[tgt].in_county)
        self.expected.append(expect)
        return Life(self, r, expect, pick(rng, DOWN_OUTCOMES if down else UP_OUTCOMES)).run()

    def rollup_items(self, touched: set[RollupKey]) -> list[dict[str, Any]]:
        """The stats items the keys in `touched` fall on (day, month, chart), each as
        DynamoReferralStore._rollup_updates leaves it after all the ADDs so far."""
        from boto3.dynamodb.types import TypeSerializer

        ser = TypeSerializer()
        mine = {k: self.rollups[k] for k in touched}
        keys = {(r.pk, r.sk) for r in rollup_items(self.consortium, mine)}
        items = []
        for row in rollup_items(self.consortium, self.rollups):
            if (row.pk, row.sk) in keys:
                item = {"pk": {"S": row.pk}, "sk": {"S": row.sk}}
                item |= {name: ser.serialize(v) for name, v in row.attrs.items()}
                item |= {name: {"N": str(n)} for name, n in row.counters.items()}
                items.append(item)
        return items


# ------------------------------------------------------------------- statistics, checked
FINAL_COUNTER = {"ARRIVED": "arrived", "NO_SHOW": "no_show", "CANCELLED": "cancelled",
                 "EXPIRED": "expired"}  # fmt: skip


def summary_of(rows: list[Expected]) -> dict[str, Any]:
    """The figures /referrals/stats should report for these referrals, computed here."""
    count = dict.fromkeys(COUNTERS, 0)
    minutes = []
    for e in rows:
        count["applied"] += 1
        count[e.direction] += 1
        count["in_county" if e.in_county else "out_of_county"] += 1
        count["escalated"] += e.escalated
        if e.decision:
            count[e.decision] += 1
            count["decided"] += 1
            minutes.append(e.decision_minutes)
        if e.final in FINAL_COUNTER:
            count[FINAL_COUNTER[e.final]] += 1
    positive = count["accepted"] + count["acknowledged"]
    decided = positive + count["rejected"]
    total = count["in_county"] + count["out_of_county"]
    return {
        **count,
        "acceptance_rate": positive / decided if decided else None,
        "out_of_county_share": count["out_of_county"] / total if total else None,
        "median_decision_minutes": float(statistics.median(minutes)) if minutes else None,
    }


def differences(got: dict[str, Any], want: dict[str, Any], where: str) -> list[str]:
    out = []
    for name, value in want.items():
        mine = got.get(name)
        if value is None or mine is None:
            same = value is None and mine is None
        else:  # rates come back rounded to 4 places
            same = abs(float(mine) - float(value)) <= (5e-5 if isinstance(value, float) else 0)
        if not same:
            out.append(f"{where}.{name}: api {mine} != expected {value}")
    return out


def check_stats(answer: dict, rows: list[Expected], institution: str | None) -> list[str]:
    """Totals, every institution's sent/received and the daily counts against `rows`."""
    if institution:
        rows = [e for e in rows if institution in (e.source, e.target)]
    problems = differences(answer["totals"], summary_of(rows), "totals")
    by = {b["institution_id"]: b for b in answer["by_institution"]}
    ids = {institution} if institution else {e.source for e in rows} | {e.target for e in rows}
    if set(by) != ids:
        problems.append(f"by_institution lists {sorted(by)}, expected {sorted(ids)}")
    for i in sorted(ids & set(by)):
        sent = summary_of([e for e in rows if e.source == i])
        received = summary_of([e for e in rows if e.target == i])
        problems += differences(by[i]["sent"], sent, f"{i}.sent")
        problems += differences(by[i]["received"], received, f"{i}.received")
    daily: dict[str, dict[str, int]] = {}
    for e in rows:
        daily.setdefault(e.day, {"up": 0, "down": 0})[e.direction] += 1
    got = {d["day"]: {"up": d["up"], "down": d["down"]} for d in answer["daily"]}
    if got != daily:
        problems.append(f"daily: {len(got)} days from the api, {len(daily)} expected, or counts")
    return problems


@contextmanager
def stream_detached(region: str, table_name: str) -> Iterator[None]:
    """No stream records (so no workflow start, no event) for the items written inside."""
    from moto.dynamodb.models import dynamodb_backends

    table = dynamodb_backends[ACCOUNT_ID][region].get_table(table_name)
    shard, table.stream_shard = table.stream_shard, None
    try:
        yield
    finally:
        table.stream_shard = shard


def batch_write(
    make_client: Callable[[], Any], table: str, items: list[dict], writers: int
) -> None:
    chunks = [items[i : i + 25] for i in range(0, len(items), 25)]
    local = threading.local()

    def write(chunk: list[dict]) -> None:
        db = getattr(local, "db", None)
        if db is None:
            db = local.db = make_client()
        request = {table: [{"PutRequest": {"Item": it}} for it in chunk]}
        while request:
            request = db.batch_write_item(RequestItems=request).get("UnprocessedItems") or {}

    with ThreadPoolExecutor(max_workers=writers) as pool:
        list(pool.map(write, chunks))


def load(env: Env, history: History, n: int, writers: int) -> dict[str, Any]:
    """n more synthetic referrals: generated, then written (items, then their rollups)."""
    gc.disable()  # the loaded objects are long-lived: collecting them is the bench's cost
    try:
        t0 = time.perf_counter()
        made, touched = history.make(n)
        items = [env.store.item(r) for r in made]
        rollups = history.rollup_items(touched)
        t1 = time.perf_counter()
        with stream_detached(env.stack.region, env.referrals_table):
            batch_write(lambda: env.stack.client("dynamodb"), env.referrals_table, items, writers)
        t2 = time.perf_counter()
        batch_write(lambda: env.stack.client("dynamodb"), env.stats_table, rollups, writers)
        t3 = time.perf_counter()
    finally:
        gc.enable()
    gc.collect()
    gc.freeze()
    sizes = [len(json.dumps(i, ensure_ascii=False).encode()) for i in items[:200]]
    return {"generate_s": t1 - t0, "write_items_s": t2 - t1, "write_rollups_s": t3 - t2,
            "rollups_written": len(rollups), "item_bytes": int(statistics.mean(sizes))}  # fmt: skip


def time_stats(env: Env, query: str, calls: int) -> tuple[list[float], dict]:
    samples, answer = [], {}
    for _ in range(calls):
        status, answer, dt = env.api.call("GET", f"/referrals/stats?{query}", env.admin)
        if status != 200:
            sys.exit(f"GET /referrals/stats?{query}: {status} {str(answer)[:300]}")
        samples.append(dt)
    return samples, answer


def count_rollups(env: Env, pk: str) -> int:
    n, kwargs = 0, {
        "TableName": env.stats_table, "KeyConditionExpression": "pk = :pk", "Select": "COUNT",
        "ExpressionAttributeValues": {":pk": {"S": pk}},
    }  # fmt: skip
    while True:
        out = env.db.query(**kwargs)
        n += out["Count"]
        if "LastEvaluatedKey" not in out:
            return n
        kwargs["ExclusiveStartKey"] = out["LastEvaluatedKey"]


def measure_stats(env: Env, consortium: str, args: argparse.Namespace) -> dict[str, Any]:
    """Load n/10, time, load the rest, time; every answer checked."""
    history = History(consortium, args.year, args.seed)
    period = f"from={args.year}-01-01&to={args.year}-12-31"
    per_institution = f"{period}&institution_id={STATS_INSTITUTION}"
    small = args.n_stats // 10
    sizes: list[dict[str, Any]] = []
    for n in (small, args.n_stats - small):
        loaded = load(env, history, n, args.writers)
        # The per-institution call warms the function (it reads the same rollups), then
        # --stats-calls consortium-wide calls are timed.
        inst_s, inst_answer = time_stats(env, per_institution, 2)
        all_s, answer = time_stats(env, period, args.stats_calls)
        problems = check_stats(answer, history.expected, None)
        problems += check_stats(inst_answer, history.expected, STATS_INSTITUTION)
        size = {"n": len(history.expected), "ms": median_ms(all_s), "inst_ms": ms(inst_s[-1]),
                "rollups": count_rollups(env, f"{consortium}#{args.year}"),
                "read": count_rollups(env, f"{consortium}#M#{args.year}")
                + count_rollups(env, f"{consortium}#D#{args.year}"),
                "problems": problems, **loaded}  # fmt: skip
        sizes.append(size)
        print(f"stats at {size['n']} referrals, {size['rollups']} day rollups for the year, "
              f"{size['read']} month rollups and chart items read "
              f"(generated in {loaded['generate_s']:.1f} s; {n} items of ~{loaded['item_bytes']} B"
              f" written in {loaded['write_items_s']:.1f} s, {loaded['rollups_written']} rollups "
              f"in {loaded['write_rollups_s']:.1f} s): consortium {size['ms']} ms (median of "
              f"{args.stats_calls}), {STATS_INSTITUTION} {size['inst_ms']} ms; "
              f"{'OK' if not problems else 'MISMATCH'}{lines(problems)}")  # fmt: skip
    identity = history.identity_holds()
    growth = sizes[1]["ms"] / sizes[0]["ms"]
    print(
        f"  per-transition rollup deltas add up to rollup_delta(None, final): {identity}; "
        f"growth {sizes[0]['n']} -> {sizes[1]['n']} referrals: {growth:.2f}x (target <= 10)"
    )
    return {
        "stats_ms_5k": sizes[0]["ms"], "stats_ms_50k": sizes[1]["ms"],
        "stats_growth_ratio": round(growth, 2),
        "stats_correct": identity and not sizes[0]["problems"] and not sizes[1]["problems"],
        "stats_n": [s["n"] for s in sizes], "stats_rollups": [s["rollups"] for s in sizes],
        "stats_items_read": [s["read"] for s in sizes],
        "stats_institution_ms": [s["inst_ms"] for s in sizes],
        "stats_load_s": [round(s["generate_s"] + s["write_items_s"] + s["write_rollups_s"], 1)
                         for s in sizes],
        "rollup_delta_identity": identity,
    }  # fmt: skip


# ------------------------------------------------------------------------------------ main
def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--referrals", type=int, default=80, help="throughput: referrals")
    parser.add_argument("--clients", type=int, default=4, help="throughput: concurrent clients")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--samples", type=int, default=30, help="transition cost: referrals")
    parser.add_argument("--n-stats", type=int, default=50_000, help="statistics: referrals")
    parser.add_argument("--stats-calls", type=int, default=5)
    parser.add_argument("--year", type=int, default=2025, help="statistics: the year")
    parser.add_argument("--writers", type=int, default=3, help="BatchWriteItem threads")
    parser.add_argument("--seed", type=int, default=4)
    parser.add_argument("--log-level", default="WARNING", help="the functions' LogLevel")
    parser.add_argument("--quick", action="store_true", help="a small run")
    args = parser.parse_args()
    if args.quick:
        args.referrals, args.samples, args.n_stats, args.stats_calls = 16, 8, 2_000, 3
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "bench")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "bench")
    params = {**load_county_params("demo"), "LogLevel": args.log_level}
    started = time.perf_counter()
    invocations = Invocations()
    with LocalStack(params) as stack:
        invocations.install()
        env = setup(stack, params)
        print(f"stack up and seeded in {time.perf_counter() - started:.1f} s")
        result: dict[str, Any] = {"bench": "referral"}
        result |= measure_throughput(env, args.referrals, args.clients, args.warmup)
        result |= measure_transitions(env, args.samples, invocations)
        result |= measure_stats(env, params["ConsortiumId"], args)
        result["bench_s"] = round(time.perf_counter() - started)
        keys = ("referrals_per_s", "transition_cost_ratio", "stats_ms_5k", "stats_ms_50k",
                "stats_growth_ratio", "stats_correct")  # fmt: skip
        print(json.dumps({"bench": "referral", **{k: result[k] for k in keys}, **result},
                         ensure_ascii=False), flush=True)  # fmt: skip
    # Tearing down a stack with ~50k items and a frozen heap takes longer than the bench's
    # last phase; the figures are out, nothing else is left to flush.
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
