"""Regional imaging (issue 7): ingest of a generated CT series in the embedded stack, its cost
per instance against a bare pydicom header read, the series thumbnail, and nothing lost.

Run: ./scripts/bench imaging [--instances 300] [--j2k 20]
     ./scripts/bench imaging --quick      (60 instances, 5 J2K)
Everything runs in the embedded local stack (the real template deployed into moto) in this
process. Setup goes through the API: the consortium admin creates the demo county's
institutions (POST /institutions) and a doctor of 桥头镇卫生院 (qiaotou) registers the patient
(POST /persons, local number P0001 at qiaotou, as the generated series' PatientID). The
doctor asks for an upload batch (POST /imaging/uploads, one key per file) and the bench puts
each file under its key with boto3 (an institution gateway's plain S3 put); the bucket's
ObjectCreated event goes to the ingest queue and the queue's mapping runs
ImagingIngestFunction here, in-process (yilian_local.sqs_mappings).

- instances_per_s: --instances instances of one uncompressed CT series
  (dicom_factory.ct_series: 512x512, 12 bits stored in 16, ~0.5 MB each) per second of wall
  time from the first put to every status final (GET /imaging/uploads/{batch}). One put at a
  time; the emulator's S3, SQS and DynamoDB are inside that time.
- ingest_ms_per_instance: the ingest's own work per instance, emulator excluded: the time
  inside ImagingIngestFunction's invocations (the runner's invoke: Powertools, the batch
  processor, parse, linking, the index transaction, the thumbnail) minus the time its thread
  spent inside botocore calls (BaseClient._make_api_call, so S3 GetObject/PutObject and
  DynamoDB round trips to the emulator and the emulator's work), summed over the series and
  divided by the instances. The function is warmed first with a one-instance study of
  another patient (its cold start is reported apart). instances_per_s_excl_emulator is its
  inverse (target >= 200 per core).
- ingest_cost_ratio: ingest_ms_per_instance / the mean time of a bare
  `pydicom.dcmread(BytesIO(data), stop_before_pixels=True)` of the same files, each file's
  header read timed right after its ingest (interleaved, same run). The breakdown also
  times yilian.imaging.dicom.parse (the ingest's full read with its checks) the same way.
- thumbnail_ms_per_series: yilian.imaging.render.thumbnail (256 px JPEG, the ingest's call)
  of the series' first instance, median of --thumb-runs renders of a fresh read; the number
  of thumbnail calls during the ingest is counted (must equal the number of series: 1).
- lost: files uploaded - (indexed + duplicate + rejected) statuses after the run (must be 0).
- j2k_ingest_ms_per_instance: the same own-work figure for --j2k JPEG 2000 lossless CT
  instances (512x512, one series; its thumbnail decodes one frame) and j2k_thumbnail_ms,
  the render of one of them (a J2K decode).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import threading
import time
from io import BytesIO
from typing import Any

import botocore.client
import pydicom
from referral import Api, ms

from yilian.domain.principal import Principal, Role
from yilian_local.demo_county import INSTITUTIONS
from yilian_local.issuer import mint
from yilian_local.runner import REGISTRY
from yilian_local.sample_imaging import factory
from yilian_local.stack import LocalStack, load_county_params

UPLOADER = "qiaotou"
FINAL = ("indexed", "duplicate", "rejected")


# ------------------------------------------------------------------ what the bench measures
class BotocoreClock:
    """Seconds each thread spends inside botocore API calls (outermost call only)."""

    def __init__(self) -> None:
        self._local = threading.local()

    def install(self) -> None:
        original = botocore.client.BaseClient._make_api_call
        local = self._local

        def timed(client: Any, operation: str, params: Any) -> Any:
            depth = getattr(local, "depth", 0)
            local.depth = depth + 1
            t0 = time.perf_counter()
            try:
                return original(client, operation, params)
            finally:
                local.depth = depth
                if depth == 0:
                    local.spent = getattr(local, "spent", 0.0) + time.perf_counter() - t0
                    local.calls = getattr(local, "calls", 0) + 1

        botocore.client.BaseClient._make_api_call = timed  # type: ignore[method-assign]

    def spent(self) -> tuple[float, int]:
        return getattr(self._local, "spent", 0.0), getattr(self._local, "calls", 0)


class IngestClock:
    """Each ImagingIngestFunction invocation: wall time, botocore time, calls, records."""

    def __init__(self, function_name: str, boto: BotocoreClock, profile: Any = None) -> None:
        self.function_name = function_name
        self.boto = boto
        self.profile = profile  # a cProfile.Profile run around each invocation (--profile)
        self.rows: list[tuple[float, float, int, int]] = []  # (wall, botocore, calls, records)
        self._lock = threading.Lock()

    def install(self) -> None:
        original = REGISTRY.invoke

        def invoke(fn: Any, event: Any) -> Any:
            if fn.function_name != self.function_name:
                return original(fn, event)
            records = (
                len(json.loads(event).get("Records", [])) if isinstance(event, str | bytes) else 1
            )
            b0, c0 = self.boto.spent()
            if self.profile is not None:
                self.profile.enable()  # this thread only
            t0 = time.perf_counter()
            try:
                return original(fn, event)
            finally:
                wall = time.perf_counter() - t0
                if self.profile is not None:
                    self.profile.disable()
                b1, c1 = self.boto.spent()
                with self._lock:
                    self.rows.append((wall, b1 - b0, c1 - c0, records))

        REGISTRY.invoke = invoke  # type: ignore[method-assign]

    def since(self, n: int) -> list[tuple[float, float, int, int]]:
        with self._lock:
            return self.rows[n:]


class ThumbnailCounter:
    """Counts yilian.imaging.render.thumbnail calls (patched before the ingest's cold start,
    which imports it by name)."""

    def __init__(self) -> None:
        self.calls = 0

    def install(self) -> None:
        from yilian.imaging import render

        original = render.thumbnail

        def counted(ds: Any, size: int = 256) -> bytes:
            self.calls += 1
            return original(ds, size=size)

        render.thumbnail = counted  # type: ignore[assignment]


# ------------------------------------------------------------------------------ the stack
class Env:
    def __init__(self, stack: LocalStack, params: dict[str, str]) -> None:
        self.stack, self.params = stack, params
        self.api = Api(stack.api_url)
        self.s3 = stack.client("s3")
        self.bucket = stack.physical_id("ImagingBucket")
        kms, arn = stack.client("kms"), stack.outputs["TokenSigningKeyArn"]

        def token(p: Principal) -> str:
            return mint(kms, arn, params, p, 7200)

        consortium = params["ConsortiumId"]
        self.admin = token(Principal("bench-admin", Role.CONSORTIUM_ADMIN, consortium,
                                     "county-hospital", name="管理员"))  # fmt: skip
        self.doctor = token(Principal("bench-doc", Role.DOCTOR, consortium, UPLOADER,
                                      name="王芳"))  # fmt: skip

    def ok(self, method: str, path: str, token: str, body: Any = None) -> Any:
        status, out, _ = self.api.call(method, path, token, body)
        if status not in (200, 201):
            sys.exit(f"{method} {path}: {status} {str(out)[:300]}")
        return out


def setup(env: Env) -> str:
    for inst in INSTITUTIONS:
        status, out, _ = env.api.call("POST", "/institutions", env.admin, inst)
        if status not in (201, 409):
            sys.exit(f"POST /institutions: {status} {out}")
    local = [{"type": "local", "value": "P0001", "assigner": UPLOADER}]
    person = {"name": "张三", "sex": "male", "birth_date": "1970-01-01", "phone": "13900000001",
              "identifiers": local}  # fmt: skip
    return str(env.ok("POST", "/persons", env.doctor, person)["person"]["person_id"])


def upload(env: Env, files: list[bytes], on_each: Any = None) -> tuple[str, float]:
    """A batch for the files, each put under its key; (batch id, seconds to all final, less
    the time spent in on_each: the interleaved baseline is not the ingest's)."""
    names = [{"name": f"IM{n:05d}", "size": len(data)} for n, data in enumerate(files)]
    batch = env.ok("POST", "/imaging/uploads", env.doctor, {"files": names})
    t0, aside = time.perf_counter(), 0.0
    for n, (f, data) in enumerate(zip(batch["files"], files, strict=True)):
        env.s3.put_object(Bucket=env.bucket, Key=f["key"], Body=data,
                          ContentType="application/dicom")  # fmt: skip
        if on_each is not None:
            t1 = time.perf_counter()
            on_each(n, data)
            aside += time.perf_counter() - t1
    while True:
        counts = batch_counts(env, batch["batch_id"])
        if sum(counts.get(s, 0) for s in FINAL) + counts.get("failed", 0) >= len(files):
            break
        if time.perf_counter() - t0 > 600:
            break
        time.sleep(0.05)
    return batch["batch_id"], time.perf_counter() - t0 - aside


def batch_counts(env: Env, batch_id: str) -> dict[str, int]:
    return dict(env.ok("GET", f"/imaging/uploads/{batch_id}", env.doctor)["counts"])


# ------------------------------------------------------------------------------ figures
def header_read(data: bytes) -> float:
    t0 = time.perf_counter()
    pydicom.dcmread(BytesIO(data), stop_before_pixels=True)
    return time.perf_counter() - t0


def full_parse(data: bytes) -> float:
    from yilian.imaging.dicom import parse

    t0 = time.perf_counter()
    parse(data)
    return time.perf_counter() - t0


def thumbnail_ms(data: bytes, runs: int) -> float:
    from yilian.imaging.render import render_jpeg

    times = []
    for _ in range(runs):
        ds = pydicom.dcmread(BytesIO(data))
        t0 = time.perf_counter()
        render_jpeg(ds, frame=0, max_size=256)  # what render.thumbnail does (uncounted)
        times.append(time.perf_counter() - t0)
    return ms(statistics.median(times))


def own_work(rows: list[tuple[float, float, int, int]]) -> tuple[float, float, int, int]:
    """(wall, botocore, calls, records) summed over invocations."""
    return (sum(r[0] for r in rows), sum(r[1] for r in rows), sum(r[2] for r in rows),
            sum(r[3] for r in rows))  # fmt: skip


def measure_series(env: Env, clock: IngestClock, thumbs: ThumbnailCounter, files: list[bytes],
                   label: str) -> dict[str, Any]:  # fmt: skip
    headers: list[float] = []
    parses: list[float] = []

    def baseline(n: int, data: bytes) -> None:  # right after file n's ingest
        headers.append(header_read(data))
        parses.append(full_parse(data))

    first_row, first_thumbs = len(clock.rows), thumbs.calls
    batch_id, wall = upload(env, files, baseline)
    rows = clock.since(first_row)
    counts = batch_counts(env, batch_id)
    done = sum(counts.get(s, 0) for s in FINAL)
    spent, boto_s, calls, records = own_work(rows)
    own = spent - boto_s
    per_instance = own / max(1, len(files))
    header = statistics.fmean(headers)
    per_invocation = sorted(r[0] - r[1] for r in rows)
    print(
        f"{label}: {len(files)} instances ({sum(map(len, files)) / 1e6:.0f} MB) final in "
        f"{wall:.2f} s (baseline reads excluded): {len(files) / wall:.1f} instances/s end to "
        f"end; statuses {counts}"
    )
    print(f"  ingest function: {len(rows)} invocations, {records} records, {spent:.2f} s inside "
          f"of which {boto_s:.2f} s in {calls} botocore calls ({calls / max(1, records):.1f} "
          f"per instance, {ms(boto_s / max(1, calls))} ms each)")  # fmt: skip
    print(
        f"  own work {ms(per_instance)} ms per instance (median invocation "
        f"{ms(per_invocation[len(per_invocation) // 2])} ms, max {ms(per_invocation[-1])} ms: "
        f"the series' first, with its thumbnail) = "
        f"{1 / per_instance if per_instance else 0:.0f} instances/s per core excl. emulator"
    )
    print(
        f"  bare dcmread(stop_before_pixels) {ms(header)} ms; yilian parse (full read + "
        f"checks) {ms(statistics.fmean(parses))} ms; ratio own/header "
        f"{per_instance / header:.2f}; thumbnails rendered {thumbs.calls - first_thumbs}"
    )
    return {
        "instances": len(files),
        "instances_per_s": round(len(files) / wall, 1),
        "ingest_ms_per_instance": ms(per_instance),
        "instances_per_s_excl_emulator": round(1 / per_instance, 1) if per_instance else None,
        "header_read_ms": ms(header),
        "parse_ms": ms(statistics.fmean(parses)),
        "ingest_cost_ratio": round(per_instance / header, 2),
        "emulator_ms_per_instance": ms(boto_s / max(1, len(files))),
        "botocore_calls_per_instance": round(calls / max(1, len(files)), 2),
        "thumbnail_calls": thumbs.calls - first_thumbs,
        "lost": len(files) - done,
        "statuses": counts,
    }


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--instances", type=int, default=300)
    parser.add_argument("--j2k", type=int, default=20, help="J2K lossless instances (0: none)")
    parser.add_argument("--thumb-runs", type=int, default=9)
    parser.add_argument("--quick", action="store_true", help="60 instances, 5 J2K")
    parser.add_argument(
        "--profile",
        action="store_true",
        help="cProfile the ingest invocations of the series; print the top",
    )
    parser.add_argument("--log-level", default="WARNING", help="the functions' LogLevel")
    args = parser.parse_args()
    if args.quick:
        args.instances, args.j2k, args.thumb_runs = 60, min(args.j2k, 5), 5
    return args


def main() -> None:
    args = parse_args()
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "bench")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "bench")
    f = factory()
    started = time.perf_counter()
    t0 = time.perf_counter()
    files = f.ct_series(args.instances)
    print(f"generated {len(files)} CT instances 512x512 in {time.perf_counter() - t0:.1f} s")
    params = {**load_county_params("demo"), "LogLevel": args.log_level}
    boto = BotocoreClock()
    boto.install()
    thumbs = ThumbnailCounter()
    thumbs.install()
    with LocalStack(params) as stack:
        env = Env(stack, params)
        person_id = setup(env)
        clock = IngestClock(stack.physical_id("ImagingIngestFunction"), boto)
        clock.install()
        print(f"stack up, institutions and patient (person {person_id}) in "
              f"{time.perf_counter() - started:.1f} s")  # fmt: skip
        t0 = time.perf_counter()
        upload(env, f.ct_series(1, rows=64, cols=64, patient_id="W0001", patient_name="预热"))
        cold = clock.rows[0] if clock.rows else (0.0, 0.0, 0, 0)
        print(f"warm-up: ingest function cold start + one instance {ms(cold[0] - cold[1])} ms "
              f"own work ({time.perf_counter() - t0:.2f} s wall)")  # fmt: skip
        result: dict[str, Any] = {"bench": "imaging"}
        if args.profile:
            import cProfile

            clock.profile = cProfile.Profile()
        result |= measure_series(env, clock, thumbs, files, "uncompressed CT")
        if clock.profile is not None:
            import pstats

            pstats.Stats(clock.profile).sort_stats("tottime").print_stats(30)
            pstats.Stats(clock.profile).sort_stats("cumulative").print_stats(40)
            clock.profile = None
        result["thumbnail_ms_per_series"] = thumbnail_ms(files[0], args.thumb_runs)
        result["ingest_cold_start_ms"] = ms(cold[0] - cold[1])
        print(
            f"  thumbnail per series {result['thumbnail_ms_per_series']} ms "
            f"(median of {args.thumb_runs}, 512x512 12-bit -> 256 px JPEG)"
        )
        status, studies, _ = env.api.call("GET", f"/imaging/persons/{person_id}/studies",
                                          env.doctor)  # fmt: skip
        if status == 200:
            linked = [s for s in studies.get("studies", []) if s.get("person_id") == person_id]
            result["linked_studies"] = len(linked)
        if args.j2k:
            t0 = time.perf_counter()
            study_uid, series_uid = f.uid(), f.uid()
            j2k = [f.j2k_instance("ct", index=n, instance_number=n + 1, study_uid=study_uid,
                                  series_uid=series_uid, patient_id="J0001", patient_name="压缩")
                   for n in range(args.j2k)]  # fmt: skip
            print(f"generated {len(j2k)} J2K lossless CT instances in "
                  f"{time.perf_counter() - t0:.1f} s ({sum(map(len, j2k)) / len(j2k) / 1e3:.0f} "
                  f"kB each)")  # fmt: skip
            j = measure_series(env, clock, thumbs, j2k, "J2K lossless CT")
            result["j2k_ingest_ms_per_instance"] = j["ingest_ms_per_instance"]
            result["j2k_ingest_cost_ratio"] = j["ingest_cost_ratio"]
            result["j2k_thumbnail_ms"] = thumbnail_ms(j2k[0], args.thumb_runs)
            result["lost"] += j["lost"]
            print(f"  J2K thumbnail (one frame decoded + rendered) {result['j2k_thumbnail_ms']} ms")
        result["target_instances_per_s_excl_emulator"] = 200
        per_core = result["instances_per_s_excl_emulator"] or 0
        print(f"index rate excl. emulator {per_core}/s per core against the target of 200/s: "
              f"{'met' if per_core >= 200 else 'NOT met'}; lost {result['lost']}")  # fmt: skip
        result["bench_s"] = round(time.perf_counter() - started)
        keys = ("instances_per_s", "ingest_cost_ratio", "thumbnail_ms_per_series", "lost",
                "instances_per_s_excl_emulator", "ingest_ms_per_instance")  # fmt: skip
        print(json.dumps({**{k: result[k] for k in keys}, **result}, ensure_ascii=False),
              flush=True)  # fmt: skip
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
