"""Remote consultation (issue 8): throughput through the whole workflow over HTTP, and the
accounting query over 20,000 consultations and its growth from 2,000.

Run: ./scripts/bench consultation [--consultations 40] [--clients 4] [--small 2000]
                                   [--big 20000] [--calls 15]
     ./scripts/bench consultation --quick   (12 consultations; accounting over 2,000 / 200)
Everything runs in the embedded local stack (the real template deployed into moto, demo
county parameters), in this process. Setup goes through the API: the consortium admin
creates the demo county's institutions (POST /institutions) and its doctors (POST /doctors:
the county hospital's experts, the consultation centre 蒋慧 and the township requesters);
township doctors register eight residents (POST /persons). Tokens are minted with the
stack's signing key for the same doctor ids (the subjects the login would give).

- consultations_per_s: --consultations multidisciplinary written consultations by --clients
  concurrent clients, after --warmup, per second of wall time. Each goes over HTTP as the web
  client sends it, every action naming the version it saw: POST /consultations (a township
  doctor), accept with 3 experts (the centre; the lead first), respond accept (each expert),
  opinion (each expert), sign (the lead) = 9 steps; the HTTP p50 per step is printed. The
  Step Functions execution of each runs meanwhile (the local runner). Afterwards every
  consultation must be REPORTED with its execution RUNNING and parked at the
  acknowledgement wait (its token stored: the workflow kept up with every step; waited for up
  to 30 s: consultations_per_s_settled); then each requester acknowledges and every
  execution must end SUCCEEDED (counted: executions_succeeded / executions_running).
- accounting_ms_20k, accounting_growth_ratio: GET /consultations/accounting?from=2026-01&
  to=2026-12 as the centre, median of --calls after 3 warm-ups, once --small and again once
  --big signed consultations are in the table; ratio = ms(big) / ms(small). The
  consultations are generated here (a fixed seed): created over the 12 months of 2026
  (China time), routine / urgent / MDT (1, 1 and 3 experts of one consulting institution),
  20 experts in 12 departments of the county hospital and the city hospital, requested by
  the township centres, village clinics and (to the city hospital) the county hospital,
  minutes to report log-normal per kind. The first --transactions are written through the
  product's own path: the REPORTED Consultation with its invitations, opinions and report,
  and ConsultationService._rollups(after) given to DynamoConsultationStore.save, whose
  transaction (consultation item, invitation pointers, the rollup ADDs) is captured and sent
  to the emulator as is, except that the consultation Put loses its version condition (the
  item was never created step by step). That costs ~15 ms a consultation in the emulator
  (20,000 would take 5 minutes), so the rest are written as the same items (BatchWriteItem)
  and the same rollup ADDs summed per rollup item (ADD is commutative: the items end
  identical; the store's own _rollup expression, at most 40 counters per UpdateItem because
  moto parses an update expression recursively). The answer is checked against figures
  computed here from the generated consultations (per expert n, by kind, fee and the median
  minutes interpolated in its bucket, as yilian.domain.consultation.bucket_median does; per
  department n; per institution n and fee split; total n and fees): accounting_correct. The
  rollup items stay months x (experts + institution sides), and an expert's item holds at most
  one m_<bucket> counter per report-time bucket (REPORT_BUCKETS), so neither grows with the
  number of consultations (rollup_attrs_*). For scale, the store's rollup query alone (boto3
  from the bench) is timed interleaved with the calls. The loaded objects are kept out of the
  timings: the collector is paused while loading and the loaded objects frozen afterwards.
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
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

import referral
from booking import item_sizes_checked_once, pct_ms
from referral import Invocations, batch_write, execution_arn, lines, median_ms, ms

from yilian.adapters.consultation_store import DynamoConsultationStore
from yilian.domain.clock import CHINA_TZ
from yilian.domain.consultation import (
    Consultation,
    Invitation,
    InviteState,
    Kind,
    Mode,
    Party,
    Status,
    Tariff,
    bucket_median,
    iso,
    report_bucket,
)
from yilian.domain.principal import Principal, Role
from yilian.services.consultations import ConsultationService
from yilian_local.demo_county import DEMO_PASSWORD, DOCTORS, INSTITUTIONS, residents
from yilian_local.issuer import mint
from yilian_local.stack import LocalStack, load_county_params

CENTRE = "county-hospital"
YEAR = 2026
REQUESTERS = ("wangfang", "zhanghong", "yangmei")  # township doctors
STEPS = ("request", "accept", "respond", "opinion", "sign")
ADDS_PER_UPDATE = 40  # moto parses an update expression recursively: keep them short


# ------------------------------------------------------------------------------ the county
@dataclass
class Env:
    stack: LocalStack
    params: dict[str, str]
    api: referral.Api
    db: Any
    table: str
    invocations: Invocations
    tokens: dict[str, str] = field(default_factory=dict)  # username -> token
    persons: list[str] = field(default_factory=list)
    experts: list[tuple[str, str]] = field(default_factory=list)  # (username, department)
    _kms: Any = None

    @property
    def consortium(self) -> str:
        return self.params["ConsortiumId"]

    def token(self, who: Principal) -> str:
        if self._kms is None:
            self._kms = self.stack.client("kms")
        return mint(self._kms, self.stack.outputs["TokenSigningKeyArn"], self.params, who, 7200)

    def ok(self, method: str, path: str, token: str, body: Any = None) -> Any:
        status, out, _ = self.api.call(method, path, token, body)
        if status not in (200, 201):
            sys.exit(f"{method} {path}: {status} {str(out)[:300]}")
        return out


ROLE = {"doctor": Role.DOCTOR, "referral_centre": Role.REFERRAL_CENTRE,
        "consortium_admin": Role.CONSORTIUM_ADMIN}  # fmt: skip


def setup(stack: LocalStack, params: dict[str, str]) -> Env:
    env = Env(stack, params, referral.Api(stack.api_url), stack.client("dynamodb"),
              stack.physical_id("ConsultationsTable"), Invocations())  # fmt: skip
    admin = env.token(Principal("bench-admin", Role.CONSORTIUM_ADMIN, env.consortium, CENTRE,
                                name="管理员"))  # fmt: skip
    for inst in INSTITUTIONS:
        status, out, _ = env.api.call("POST", "/institutions", admin, inst)
        if status not in (201, 409):
            sys.exit(f"POST /institutions: {status} {out}")
    wanted = {"zhuanzhen", *REQUESTERS}
    for username, name, inst, dept, title, role in DOCTORS:
        expert = inst == CENTRE and role == "doctor"
        if not expert and username not in wanted:
            continue
        body = {"doctor_id": f"doc-{username}", "institution_id": inst, "name": name,
                "department": dept, "title": title, "role": role, "username": username,
                "password": DEMO_PASSWORD}  # fmt: skip
        status, out, _ = env.api.call("POST", "/doctors", admin, body)
        if status not in (201, 409):
            sys.exit(f"POST /doctors: {status} {out}")
        env.tokens[username] = env.token(Principal(f"doc-{username}", ROLE[role],
                                                    env.consortium, inst, name=name))  # fmt: skip
        if expert:
            env.experts.append((username, dept))
    registrar = {i["institution_id"]: env.token(Principal(f"bench-reg-{i['institution_id']}",
                 Role.DOCTOR, env.consortium, i["institution_id"], name="登记员"))
                 for i in INSTITUTIONS}  # fmt: skip
    for p in [p for p in residents() if p.duplicate_of is None][:8]:
        out = env.ok("POST", "/persons", registrar[p.registered_at], p.registration())
        env.persons.append(out["person"]["person_id"])
    return env


# -------------------------------------------------------------------- throughput over HTTP
@dataclass
class Client:
    env: Env
    failures: list[str] = field(default_factory=list)
    times: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    done: list[tuple[str, str]] = field(default_factory=list)  # (consultation id, requester)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def step(self, name: str, path: str, who: str, body: dict, expect: str) -> dict | None:
        status, out, dt = self.env.api.call("POST", path, self.env.tokens[who], body)
        ok = status in (200, 201) and isinstance(out, dict) and out.get("status") == expect
        with self.lock:
            if not ok:
                self.failures.append(f"{name} {path} as {who}: {status} {str(out)[:200]}")
            else:
                self.times[name].append(dt)
        return out if ok else None

    def consultation(self, k: int) -> str | None:
        env = self.env
        requester = REQUESTERS[k % len(REQUESTERS)]
        experts = [env.experts[(k + j) % len(env.experts)] for j in range(3)]
        body = {"person_id": env.persons[k % len(env.persons)], "centre_institution_id": CENTRE,
                "kind": "mdt", "mode": "written",
                "specialty": ",".join(d for _, d in experts),
                "question": "胸痛待查，请多学科会诊明确诊断及下一步治疗",
                "summary": f"{50 + k % 30}岁，反复胸闷胸痛{1 + k % 9}天，心电图ST段压低，"
                           "既往高血压、糖尿病病史。"}  # fmt: skip
        c = self.step("request", "/consultations", requester, body, "REQUESTED")
        if c is None:
            return None
        cid = c["consultation_id"]
        base = f"/consultations/{cid}"
        invite = [{"doctor_id": f"doc-{u}", "lead": j == 0} for j, (u, _) in enumerate(experts)]
        c = self.step("accept", f"{base}/accept", "zhuanzhen",
                      {"version": c["version"], "experts": invite}, "ASSIGNING")  # fmt: skip
        for j, (u, _) in enumerate(experts):
            if c is None:
                return None
            expect = "IN_PROGRESS" if j == len(experts) - 1 else "ASSIGNING"
            c = self.step("respond", f"{base}/respond", u,
                          {"version": c["version"], "answer": "accept"}, expect)  # fmt: skip
        for u, dept in experts:
            if c is None:
                return None
            c = self.step("opinion", f"{base}/opinion", u,
                          {"version": c["version"], "findings": f"{dept}：考虑稳定型心绞痛",
                           "recommendations": "冠脉CTA，随访"}, "IN_PROGRESS")  # fmt: skip
        if c is None:
            return None
        c = self.step("sign", f"{base}/sign", experts[0][0],
                      {"version": c["version"], "findings": "多学科意见：稳定型心绞痛",
                       "recommendations": "冠脉CTA，必要时转诊上级医院"}, "REPORTED")  # fmt: skip
        if c is None:
            return None
        with self.lock:
            self.done.append((cid, requester))
        return cid


def parked(env: Env, ids: list[str], stage: str, timeout: float) -> tuple[list[str], float]:
    """Waits until every consultation's item holds a wait token for `stage` (the workflow
    caught up): (those that did not, seconds waited)."""
    t0 = time.monotonic()
    pending = set(ids)
    while pending and time.monotonic() - t0 < timeout:
        for cid in sorted(pending):
            item = env.db.get_item(TableName=env.table, Key=DynamoConsultationStore.key(cid),
                                   ConsistentRead=True).get("Item", {})  # fmt: skip
            if item.get("wait_stage", {}).get("S") == stage and "wait_token" in item:
                pending.discard(cid)
        if pending:
            time.sleep(0.1)
    return sorted(pending), time.monotonic() - t0


def executions(env: Env, ids: list[str]) -> Counter[str]:
    sfn = env.stack.client("stepfunctions")
    arn = env.stack.outputs["ConsultationStateMachineArn"]
    out: Counter[str] = Counter()
    for cid in ids:
        try:
            out[sfn.describe_execution(executionArn=execution_arn(arn, cid))["status"]] += 1
        except sfn.exceptions.ExecutionDoesNotExist:
            out["MISSING"] += 1
    return out


def settle(env: Env, ids: list[str], timeout: float = 30) -> Counter[str]:
    deadline = time.monotonic() + timeout
    while True:
        counts = executions(env, ids)
        if counts["RUNNING"] == 0 or time.monotonic() > deadline:
            return counts
        time.sleep(0.2)


def measure_throughput(env: Env, args: argparse.Namespace) -> dict[str, Any]:
    warm = Client(env)
    for k in range(args.warmup):
        warm.consultation(k)
    client = Client(env)
    fn = str(env.stack.physical_id("ConsultationsFunction"))
    wf = str(env.stack.physical_id("ConsultationWorkflowFunction"))
    t0 = time.perf_counter()
    with ThreadPoolExecutor(max_workers=args.clients) as pool:
        list(pool.map(client.consultation, range(args.warmup, args.warmup + args.consultations)))
    t1 = time.perf_counter()
    wall = t1 - t0
    ids = [cid for cid, _ in client.done]
    stuck, waited = parked(env, ids, "acknowledgement", 30)
    settled = wall + waited
    before_ack = executions(env, ids)
    api_s = env.invocations.within(fn, t0, t1)
    wf_s = env.invocations.within(wf, t0, t1)
    # every requester acknowledges: each execution must then finish
    ack = Client(env)
    for cid, requester in client.done:
        c = env.ok("GET", f"/consultations/{cid}", env.tokens[requester])
        ack.step("acknowledge", f"/consultations/{cid}/acknowledge", requester,
                 {"version": c["version"]}, "COMPLETED")  # fmt: skip
    after_ack = settle(env, ids)
    problems = warm.failures + client.failures + ack.failures
    problems += [f"{cid}: the workflow is not parked at the acknowledgement wait" for cid in stuck]
    if before_ack["RUNNING"] != len(ids):
        problems.append(f"executions before acknowledgement: {dict(before_ack)}")
    if after_ack["SUCCEEDED"] != len(ids):
        problems.append(f"executions after acknowledgement: {dict(after_ack)}")
    n = len(ids)
    per_step = {s: median_ms(client.times[s]) for s in STEPS}
    p99 = {s: pct_ms(client.times[s], 99) for s in STEPS}
    steps = 1 + 1 + 3 + 3 + 1  # request, accept, 3 responds, 3 opinions, sign
    rate = round(n / wall, 2)
    print(f"throughput: {n}/{args.consultations} MDT written consultations (request -> accept "
          f"with 3 experts -> 3 x respond -> 3 x opinion -> sign: {steps:g} HTTP steps each) by "
          f"{args.clients} clients in {wall:.1f} s = {rate} consultations/s "
          f"({n * steps / wall:.1f} steps/s); every workflow parked at its acknowledgement wait "
          f"{waited:.1f} s later ({n / settled:.2f}/s settled)\n"
          f"  HTTP p50 ms per step under load {per_step}; p99 {p99}\n"
          f"  inside the run: ConsultationsFunction {api_s:.1f} s, ConsultationWorkflowFunction "
          f"{wf_s:.1f} s of {wall:.1f} s wall ({args.clients} clients)\n"
          f"  executions: {dict(before_ack)} after the sign (waiting for the acknowledgement), "
          f"{dict(after_ack)} after each requester acknowledged; acknowledge p50 "
          f"{median_ms(ack.times['acknowledge'])} ms\n"
          f"  {len(problems)} problem(s){lines(problems)}")  # fmt: skip
    return {"consultations_per_s": rate, "consultations": n, "clients": args.clients,
            "steps_per_consultation": steps, "steps_per_s": round(n * steps / wall, 1),
            "consultations_per_s_settled": round(n / settled, 2),
            "step_p50_ms": per_step, "step_p99_ms": p99,
            "acknowledge_p50_ms": median_ms(ack.times["acknowledge"]),
            "executions_running_after_sign": before_ack["RUNNING"],
            "executions_succeeded": after_ack["SUCCEEDED"],
            "executions_running": after_ack["RUNNING"],
            "workflow_failures": len(problems)}  # fmt: skip


# ------------------------------------------------------------------------------ accounting
# (username, name, institution, department, title): 20 experts, 12 departments, 2 institutions
EXPERTS = [
    ("chenming", "陈明", "county-hospital", "心血管内科", "主任医师"),
    ("liqiang", "李强", "county-hospital", "心血管内科", "主治医师"),
    ("liuyan", "刘艳", "county-hospital", "神经内科", "副主任医师"),
    ("wangjing", "王静", "county-hospital", "神经内科", "主治医师"),
    ("zhaolei", "赵磊", "county-hospital", "骨科", "主治医师"),
    ("sunli", "孙丽", "county-hospital", "妇产科", "副主任医师"),
    ("wujun", "吴军", "county-hospital", "普外科", "主治医师"),
    ("zhengjie", "郑洁", "county-hospital", "儿科", "主治医师"),
    ("huangtao", "黄涛", "county-hospital", "放射科", "副主任医师"),
    ("xuhai", "徐海", "county-hospital", "呼吸内科", "副主任医师"),
    ("heping", "何平", "county-hospital", "内分泌科", "主治医师"),
    ("guoying", "郭英", "city-first", "心血管内科", "主任医师"),
    ("linbo", "林波", "city-first", "心血管内科", "副主任医师"),
    ("songwen", "宋文", "city-first", "神经内科", "主任医师"),
    ("tangyu", "唐玉", "city-first", "肿瘤科", "主任医师"),
    ("hanfei", "韩飞", "city-first", "肿瘤科", "主治医师"),
    ("fengxia", "冯霞", "city-first", "放射科", "主任医师"),
    ("dengchao", "邓超", "city-first", "呼吸内科", "副主任医师"),
    ("caoning", "曹宁", "city-first", "肾内科", "主任医师"),
    ("pengyan", "彭燕", "city-first", "病理科", "副主任医师"),
]
KINDS = ((Kind.ROUTINE, 55), (Kind.URGENT, 20), (Kind.MDT, 25))
# log-normal minutes from request to report: (median minutes, sigma) per kind
TO_REPORT = {Kind.URGENT: (90, 0.6), Kind.ROUTINE: (1200, 0.8), Kind.MDT: (2400, 0.7)}


def weighted(rng: random.Random, pairs: tuple[tuple[Any, int], ...]) -> Any:
    return rng.choices([p for p, _ in pairs], [w for _, w in pairs])[0]


class Generator:
    """Signed consultations of one year, deterministic; the expected accounting alongside."""

    def __init__(self, consortium: str, seed: int = 8) -> None:
        self.consortium = consortium
        self.rng = random.Random(seed)
        self.experts = {i: [Party(f"doc-{u}", n, i, d, t) for u, n, inst, d, t in EXPERTS
                            if inst == i] for i in ("county-hospital", "city-first")}  # fmt: skip
        lower = [i["institution_id"] for i in INSTITUTIONS
                 if i["institution_id"] not in ("county-hospital", "city-first")]  # fmt: skip
        # (requesting institution, consulting institution, weight)
        self.routes = tuple(((r, CENTRE), 3 if "-" not in r else 1) for r in lower) + (
            (("county-hospital", "city-first"), 4),
            (("qiaotou", "city-first"), 1),
        )
        self.start = datetime(YEAR, 1, 1, tzinfo=CHINA_TZ)
        self.seconds = int((datetime(YEAR + 1, 1, 1, tzinfo=CHINA_TZ) - self.start).total_seconds())
        self.made = 0

    def one(self) -> Consultation:
        rng, k = self.rng, self.made
        self.made += 1
        kind = weighted(rng, KINDS)
        requesting, consulting = weighted(rng, self.routes)
        pool = self.experts[consulting]
        experts = rng.sample(pool, 3 if kind is Kind.MDT else 1)
        created = self.start + timedelta(seconds=rng.randrange(self.seconds - 14 * 86400))
        median, sigma = TO_REPORT[kind]
        minutes = max(5.0, rng.lognormvariate(math.log(median), sigma))
        reported = created + timedelta(minutes=minutes, seconds=rng.randrange(60))
        accepted = created + timedelta(minutes=min(minutes / 4, 240))
        requester = Party(f"bench-req-{requesting}", f"{requesting}医生", requesting, "全科",
                          "主治医师")  # fmt: skip
        invitations = tuple(
            Invitation(e, InviteState.ACCEPTED, iso(accepted), iso(accepted + timedelta(days=1)),
                       lead=j == 0, responded_at=iso(accepted + timedelta(minutes=10)),
                       opinion={"findings": f"{e.department}意见", "recommendations": "随访",
                                "filed_at": iso(reported - timedelta(minutes=2))})
            for j, e in enumerate(experts)
        )  # fmt: skip
        lead = experts[0]
        report = {"findings": "会诊意见", "recommendations": "随访，必要时转诊",
                  "signed_by": lead.subject, "signed_by_name": lead.name,
                  "signed_title": lead.title, "institution_id": lead.institution_id,
                  "signed_at": iso(reported), "opinions": []}  # fmt: skip
        history = tuple(
            {"at": iso(at), "action": a, "from": f, "to": t, "by": "bench", "by_name": ""}
            for at, a, f, t in (
                (created, "request", "", "REQUESTED"),
                (accepted, "accept", "REQUESTED", "ASSIGNING"),
                (accepted + timedelta(minutes=10), "respond", "ASSIGNING", "IN_PROGRESS"),
                (reported, "sign", "IN_PROGRESS", "REPORTED"),
            )
        )
        return Consultation(
            consultation_id=f"HZ{created:%Y%m%d}B{k:07d}", consortium_id=self.consortium,
            person_id=f"bench-person-{k % 5000:05d}", requester=requester,
            centre_institution_id=consulting, kind=kind, mode=Mode.WRITTEN,
            specialty=",".join(e.department for e in experts), question="会诊目的",
            summary="病情摘要", attachments={"documents": [], "studies": []}, preferred_times=(),
            status=Status.REPORTED, created_at=iso(created), updated_at=iso(reported),
            version=len(history), due_at=iso(reported + timedelta(days=7)),
            required_accepts=len(experts), invitations=invitations, report=report,
            reported_at=iso(reported), history=history,
        )  # fmt: skip


class Expected:
    """The accounting of the generated consultations, computed here."""

    def __init__(self, tariff: Tariff) -> None:
        self.tariff = tariff
        self.experts: dict[str, dict[str, Any]] = {}
        self.institutions: dict[str, Counter[str]] = defaultdict(Counter)
        self.departments: Counter[tuple[str, str]] = Counter()
        self.n = 0
        self.fee_fen = 0

    def add(self, c: Consultation) -> None:
        minutes = int((datetime.fromisoformat(c.reported_at)
                       - datetime.fromisoformat(c.created_at)).total_seconds() // 60)  # fmt: skip
        consulting: Counter[str] = Counter()
        for inv in c.invitations:
            e = inv.expert
            fee = self.tariff.fee(str(c.kind), e.title) * 100
            row = self.experts.setdefault(e.subject, {"n": 0, "by_kind": Counter(),
                                                      "fee_fen": 0, "minutes": []})  # fmt: skip
            row["n"] += 1
            row["by_kind"][str(c.kind)] += 1
            row["fee_fen"] += fee
            row["minutes"].append(minutes)
            self.departments[(e.institution_id, e.department)] += 1
            share = round(fee * self.tariff.consulting_share)
            consulting[e.institution_id] += share
            self.institutions[c.requester.institution_id]["retained"] += fee - share
            self.n += 1
            self.fee_fen += fee
        for inst, fen in consulting.items():
            self.institutions[inst]["received"] += fen
            self.institutions[inst]["consulting_n"] += 1
        self.institutions[c.requester.institution_id]["requesting_n"] += 1

    def differences(self, answer: dict[str, Any]) -> list[str]:
        out: list[str] = []
        got = {e["doctor_id"]: e for e in answer.get("experts", [])}
        if set(got) != set(self.experts):
            out.append(f"experts {sorted(set(got) ^ set(self.experts))} differ")
        for doctor, want in self.experts.items():
            e = got.get(doctor)
            if e is None:
                continue
            hist = Counter(report_bucket(m) for m in want["minutes"])
            median = bucket_median(hist)
            pairs = (("n", e["n"], want["n"]), ("by_kind", e["by_kind"], dict(want["by_kind"])),
                     ("fee_yuan", e["fee_yuan"], want["fee_fen"] / 100),
                     ("median", e["median_minutes_to_report"], median))  # fmt: skip
            out += [f"{doctor} {k}: {g} != {w}" for k, g, w in pairs if g != w]
        depts = {(d["institution_id"], d["department"]): d["n"] for d in answer["departments"]}
        if depts != dict(self.departments):
            out.append(f"departments differ: {depts} != {dict(self.departments)}")
        insts = {i["institution_id"]: i for i in answer.get("institutions", [])}
        for inst, want in self.institutions.items():
            i = insts.get(inst, {})
            pairs = (
                ("consulting_n", i.get("consulting_n"), want["consulting_n"]),
                ("requesting_n", i.get("requesting_n"), want["requesting_n"]),
                ("fee_received_yuan", i.get("fee_received_yuan"), want["received"] / 100),
                ("fee_retained_yuan", i.get("fee_retained_yuan"), want["retained"] / 100),
            )
            out += [f"{inst} {k}: {g} != {w}" for k, g, w in pairs if g != w]  # fmt: skip
        n = sum(e["n"] for e in answer.get("experts", []))
        fee = round(sum(e["fee_yuan"] for e in answer.get("experts", [])) * 100)
        if (n, fee) != (self.n, self.fee_fen):
            out.append(f"totals n={n} fee_fen={fee}, generated n={self.n} fee_fen={self.fee_fen}")
        received = sum(i["fee_received_fen"] + i["fee_retained_fen"] for i in insts.values())
        if received != self.fee_fen:
            out.append(f"institution split sums to {received} fen, fees are {self.fee_fen}")
        return out


class Recorder:
    """A stand-in DynamoDB client: keeps the transaction the store would send."""

    class exceptions:  # noqa: N801 - boto3's spelling
        TransactionCanceledException = RuntimeError

    def __init__(self) -> None:
        self.writes: list[dict[str, Any]] = []

    def transact_write_items(self, TransactItems: list[dict]) -> None:  # noqa: N803
        self.writes = TransactItems


def sign_transaction(service: ConsultationService, c: Consultation) -> list[dict[str, Any]]:
    """What DynamoConsultationStore.save writes when `c` is signed, rollups included; the
    consultation's Put without its version condition."""
    recorder = Recorder()
    before = replace(c, status=Status.IN_PROGRESS, version=c.version - 1)
    DynamoConsultationStore(recorder, "TABLE").save(before, c, service._rollups(c))
    put = recorder.writes[0]["Put"]
    put.pop("ConditionExpression")
    put.pop("ExpressionAttributeValues")
    return recorder.writes


@dataclass
class Load:
    """Signed consultations written: the first ones one sign transaction each, the rest as
    their items (BatchWriteItem) and their rollup ADDs summed per rollup item."""

    env: Env
    service: ConsultationService
    writers: int
    transactions: int  # how many go through one transaction each
    sent: int = 0
    tx_s: float = 0.0
    batch_s: float = 0.0
    batched: int = 0
    updates: int = 0

    def client(self) -> Any:
        from botocore.config import Config

        return self.env.stack.client("dynamodb", config=Config(parameter_validation=False))

    def __call__(self, consultations: list[Consultation]) -> None:
        k = max(0, min(len(consultations), self.transactions - self.sent))
        self.sent += len(consultations)
        gc.disable()  # the loaded objects are long-lived: collecting them is the bench's cost
        try:
            with item_sizes_checked_once():
                self._transactions(consultations[:k])
                self._batched(consultations[k:])
        finally:
            gc.enable()
            gc.collect()
            gc.freeze()

    def _transactions(self, consultations: list[Consultation]) -> None:
        todo = [sign_transaction(self.service, c) for c in consultations]
        for writes in todo:
            for op in writes:
                next(iter(op.values()))["TableName"] = self.env.table
        local = threading.local()

        def write(writes: list[dict[str, Any]]) -> None:
            if not hasattr(local, "db"):
                local.db = self.client()
            local.db.transact_write_items(TransactItems=writes)

        t0 = time.perf_counter()
        with ThreadPoolExecutor(max_workers=self.writers) as pool:
            list(pool.map(write, todo))
        self.tx_s += time.perf_counter() - t0

    def _batched(self, consultations: list[Consultation]) -> None:
        """The same items and the same final rollups: ADD is commutative, so one UpdateItem
        per rollup item with the consultations' counters summed (the store's own _rollup
        expression) leaves what one ADD per consultation leaves."""
        if not consultations:
            return
        items: list[dict[str, Any]] = []
        sums: dict[tuple[str, str], tuple[dict[str, Any], Counter[str]]] = {}
        for c in consultations:
            for op in sign_transaction(self.service, c):
                if "Put" in op:
                    items.append(op["Put"]["Item"])
            for pk, sk, attrs, counters in self.service._rollups(c):
                row = sums.setdefault((pk, sk), (dict(attrs), Counter()))
                row[1].update(counters)
        store = DynamoConsultationStore(None, self.env.table)
        t0 = time.perf_counter()
        batch_write(self.client, self.env.table, items, self.writers)
        db = self.client()
        for (pk, sk), (attrs, counters) in sums.items():
            names = sorted(counters)
            for at in range(0, len(names), ADDS_PER_UPDATE):
                part = {k: counters[k] for k in names[at : at + ADDS_PER_UPDATE]}
                db.update_item(**store._rollup(pk, sk, attrs, part)["Update"])
                self.updates += 1
        self.batch_s += time.perf_counter() - t0
        self.batched += len(consultations)


def time_accounting(env: Env, store: DynamoConsultationStore, token: str, calls: int
                    ) -> tuple[list[float], list[float], dict[str, Any]]:  # fmt: skip
    path = f"/consultations/accounting?from={YEAR}-01&to={YEAR}-12"
    for _ in range(3):
        env.ok("GET", path, token)
    http, raw, answer = [], [], {}
    for _ in range(calls):
        status, answer, dt = env.api.call("GET", path, token)
        if status != 200:
            sys.exit(f"GET {path}: {status} {str(answer)[:300]}")
        http.append(dt)
        t0 = time.perf_counter()
        store.rollups(env.consortium, f"{YEAR}-01", f"{YEAR}-12")
        raw.append(time.perf_counter() - t0)
    return http, raw, answer


def rollup_shape(store: DynamoConsultationStore, consortium: str) -> tuple[int, float, int]:
    """(rollup items of the year, their mean attributes, the largest item's bytes)."""
    items = store.rollups(consortium, f"{YEAR}-01", f"{YEAR}-12")
    sizes = [len(json.dumps(i, ensure_ascii=False).encode()) for i in items]
    attrs = statistics.mean(len(i) for i in items) if items else 0.0
    return len(items), round(attrs, 1), max(sizes, default=0)


def measure_accounting(env: Env, args: argparse.Namespace) -> dict[str, Any]:
    tariff = Tariff.from_mapping(json.loads(env.params.get("ConsultationTariff") or "{}"))
    service = ConsultationService(None, None, None, None, None, tariff=tariff)  # type: ignore[arg-type]
    store = DynamoConsultationStore(env.db, env.table)
    gen, expected = Generator(env.consortium), Expected(tariff)
    centre = env.tokens["zhuanzhen"]
    out: dict[str, Any] = {}
    rows = {}
    loader = Load(env, service, args.writers, args.transactions)
    for label, n in (("small", args.small), ("big", args.big)):
        made = [gen.one() for _ in range(n - loader.sent)]
        for c in made:
            expected.add(c)
        t0 = time.perf_counter()
        loader(made)
        load_s = time.perf_counter() - t0
        per_tx = ms(loader.tx_s / max(1, loader.sent - loader.batched))
        print(f"accounting: {len(made)} more signed consultations written in {load_s:.1f} s, "
              f"{n} in all: {min(n, args.transactions)} one sign transaction each "
              f"(DynamoConsultationStore.save: {per_tx} ms each), {loader.batched} as their "
              f"items (BatchWriteItem) and summed rollup "
              f"ADDs ({loader.updates} UpdateItems so far)")  # fmt: skip
        http, raw, answer = time_accounting(env, store, centre, args.calls)
        problems = expected.differences(answer)
        items, attrs, biggest = rollup_shape(store, env.consortium)
        rows[label] = (median_ms(http), problems)
        print(f"  GET /consultations/accounting over {YEAR} with {n} consultations: p50 "
              f"{median_ms(http)} ms (min {ms(min(http))}, max {ms(max(http))}; {len(http)} "
              f"calls); the store's rollup query alone {median_ms(raw)} ms; {items} rollup items, "
              f"{attrs} attributes each on average, the largest {biggest} bytes; "
              f"{len(answer.get('experts', []))} experts, {len(answer.get('departments', []))} "
              f"departments, {len(answer.get('institutions', []))} institutions; answer "
              f"{'correct' if not problems else 'WRONG'}{lines(problems)}")  # fmt: skip
        out |= {f"accounting_ms_{label}": median_ms(http),
                f"rollup_query_ms_{label}": median_ms(raw), f"rollup_items_{label}": items,
                f"rollup_attrs_{label}": attrs, f"rollup_max_bytes_{label}": biggest,
                f"load_s_{label}": round(load_s, 1)}  # fmt: skip
    small, big = rows["small"][0], rows["big"][0]
    growth = round(big / small, 3) if small and big else None
    print(f"  growth {args.small} -> {args.big} consultations: {growth}; the rollup items stay "
          f"{out['rollup_items_small']} -> {out['rollup_items_big']} (months x (experts + "
          f"institution sides)) but carry {out['rollup_attrs_small']} -> "
          f"{out['rollup_attrs_big']} attributes on average: one m_<minutes> counter per distinct "
          f"minutes-to-report value, and a read costs per attribute")  # fmt: skip
    return {"accounting_ms_20k": big, "accounting_ms_2k": small, "accounting_growth_ratio": growth,
            "accounting_correct": not rows["small"][1] and not rows["big"][1],
            "accounting_consultations": [args.small, args.big],
            "accounting_expert_rows": expected.n, **out}  # fmt: skip


# ------------------------------------------------------------------------------------ main
def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    parser.add_argument("--consultations", type=int, default=40, help="timed consultations")
    parser.add_argument("--clients", type=int, default=4, help="concurrent HTTP clients")
    parser.add_argument("--warmup", type=int, default=3, help="consultations before timing")
    parser.add_argument("--small", type=int, default=2_000, help="consultations, first")
    parser.add_argument("--big", type=int, default=20_000, help="consultations, then")
    parser.add_argument("--calls", type=int, default=11, help="accounting calls per size")
    parser.add_argument(
        "--transactions",
        type=int,
        default=1_000,
        help="consultations loaded one sign transaction each (the rest batched)",
    )
    parser.add_argument("--writers", type=int, default=2, help="loading threads")
    parser.add_argument("--log-level", default="WARNING", help="the functions' LogLevel")
    parser.add_argument("--quick", action="store_true", help="a small run")
    args = parser.parse_args()
    if args.quick:
        args.consultations, args.small, args.big, args.calls = 12, 200, 2_000, 7
        args.transactions = 100
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
        print(
            f"stack up and seeded in {time.perf_counter() - started:.1f} s: "
            f"{len(env.experts)} county hospital experts, {len(env.persons)} residents"
        )
        result: dict[str, Any] = {"bench": "consultation"}
        result |= measure_accounting(env, args)
        result |= measure_throughput(env, args)
        result["bench_s"] = round(time.perf_counter() - started)
        keys = ("consultations_per_s", "accounting_ms_20k", "accounting_growth_ratio")
        print(json.dumps({"bench": "consultation", **{k: result[k] for k in keys}, **result},
                         ensure_ascii=False), flush=True)  # fmt: skip
    sys.stdout.flush()
    os._exit(0)  # a stack holding ~100k items tears down slowly; nothing is left to flush


if __name__ == "__main__":
    main()
