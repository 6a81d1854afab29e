"""Seed the demo county into a running stack, through the public API like any client.

Only the first consortium admin's token is minted directly (the local issuer): every
institution, doctor and resident after that goes through the API, its validation and its
patient matching. Re-seeding a stack that has the data already is harmless (409s are
expected and skipped; registrations match the existing persons).
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from datetime import date, timedelta
from typing import Any

import requests

from yilian.domain.principal import Principal, Role
from yilian_local.demo_county import (
    CONSULTATIONS,
    DEMO_PASSWORD,
    DOCTORS,
    GUARDIANS,
    INSTITUTIONS,
    QUOTAS,
    RECORD_CONSENTS,
    RECORDS,
    REFERRALS,
    SCHEDULE_WEEKS,
    SCHEDULES,
    consultation_times,
    record_institutions,
    referral_times,
    residents,
)
from yilian_local.issuer import mint

DEMO_DOCTOR = "lijianguo"  # a village doctor: the platform's most common user


class SeedError(RuntimeError):
    pass


def _call(method: str, url: str, token: str | None, body: Any = None) -> requests.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    resp = requests.request(method, url, json=body, headers=headers, timeout=30)
    if resp.status_code >= 400 and resp.status_code != 409:
        raise SeedError(f"{method} {url} -> {resp.status_code}: {resp.text[:300]}")
    return resp


def seed_demo(stack: Any) -> dict[str, Any]:
    api, params = stack.api_url, stack.params
    consortium = params["ConsortiumId"]
    kms, key_arn = stack.client("kms"), stack.outputs["TokenSigningKeyArn"]
    bootstrap = mint(
        kms, key_arn, params,
        Principal("bootstrap", Role.CONSORTIUM_ADMIN, consortium, "county-hospital", name="初始化"),
        ttl=900,
    )  # fmt: skip
    for inst in INSTITUTIONS:
        _call("POST", f"{api}/institutions", bootstrap, inst)
    for username, name, inst, dept, title, role in DOCTORS:
        body = {"doctor_id": f"doc-{username}", "institution_id": inst, "name": name,
                "department": dept, "title": title, "role": role, "username": username,
                "password": DEMO_PASSWORD}  # fmt: skip
        _call("POST", f"{api}/doctors", bootstrap, body)

    def login(username: str) -> str:
        body = {"username": username, "password": DEMO_PASSWORD}
        return _call("POST", f"{api}/auth/login", None, body).json()["access_token"]

    registrar_of: dict[str, str] = {}  # institution -> the doctor who registers there
    for username, _, inst, _, _, role in DOCTORS:
        if role == "doctor":
            registrar_of.setdefault(inst, username)
    tokens = {u: login(u) for u in {*registrar_of.values(), "admin"}}
    people = residents()

    def register(p: Any) -> dict:
        token = tokens[registrar_of[p.registered_at]]
        return _call("POST", f"{api}/persons", token, p.registration()).json()

    originals = [p for p in people if p.duplicate_of is None]
    duplicates = [p for p in people if p.duplicate_of is not None]
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(register, originals))
    dup_results = [register(p) for p in duplicates]  # after their originals exist
    first_person = results[0]["person"]["person_id"]
    resident_token = mint(
        kms, key_arn, params,
        Principal(f"resident-{first_person}", Role.RESIDENT, consortium, person_id=first_person,
                  name=people[0].name),
    )  # fmt: skip
    person_ids = [r["person"]["person_id"] for r in results]
    schedule_lines = seed_schedules(api, login)
    referral_lines = seed_referrals(api, login, person_ids)
    resident_of = {i: resident_token if i == 0 else _resident(stack, person_ids[i], people[i])
                   for i, _, _ in RECORD_CONSENTS}  # fmt: skip
    record_lines = seed_records(api, login, person_ids, people, resident_of)
    imaging_lines = seed_imaging(api, login, people)
    consultation_lines = seed_consultations(api, login, person_ids, people)
    outcomes: dict[str, int] = {}
    for r in results + dup_results:
        outcome = r.get("match", {}).get("outcome", "unknown")
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
    return {
        "doctor_token": tokens[DEMO_DOCTOR],
        "admin_token": tokens["admin"],
        "resident_token": resident_token,
        "lines": [
            f"demo county: {len(INSTITUTIONS)} institutions, {len(DOCTORS)} staff accounts, "
            f"{len(originals)} residents + {len(duplicates)} near-duplicate registrations "
            f"({', '.join(f'{k}: {v}' for k, v in sorted(outcomes.items()))})",
            f"sign in (web client): any staff username, e.g. {DEMO_DOCTOR} (village doctor) or "
            f"admin (consortium admin), password {DEMO_PASSWORD}",
            f"demo resident: {people[0].name} (person {first_person})",
            *schedule_lines,
            *referral_lines,
            *record_lines,
            *imaging_lines,
            *consultation_lines,
        ],
    }


def seed_schedules(api: str, login: Any) -> list[str]:
    """Department quotas, weekly templates and two weeks of sessions published from them."""
    from yilian.domain.clock import now

    admins = {admin for admin, _ in SCHEDULES} | {admin for admin, _ in QUOTAS}
    tokens = {u: login(u) for u in sorted(admins)}
    for admin, quota in QUOTAS:
        _call("PUT", f"{api}/schedules/quotas", tokens[admin], quota)
    for admin, template in SCHEDULES:
        _call("POST", f"{api}/schedules/templates", tokens[admin], template)
    created = 0
    for admin in sorted({admin for admin, _ in SCHEDULES}):
        body = {"from": now().date().isoformat(), "weeks": SCHEDULE_WEEKS}
        created += _call("POST", f"{api}/schedules/templates/publish", tokens[admin], body).json()[
            "created"
        ]
    return [
        f"demo schedules: {len(SCHEDULES)} weekly templates, {created} sessions published "
        f"for {SCHEDULE_WEEKS} weeks (reserved places for referrals at the county hospital)"
    ]


def seed_referrals(api: str, login: Any, person_ids: list[str]) -> list[str]:
    """The demo county's referrals (demo_county.REFERRALS), made through the API by the
    doctors who would make them; the workflow runs for each."""
    users = {r["by"] for r in REFERRALS} | {a[0] for r in REFERRALS for a in r["then"]}
    tokens = {u: login(u) for u in sorted(users)}
    times = referral_times()
    for r in REFERRALS:
        body = {"patient_id": person_ids[r["patient"]], **_fill(r["body"], times)}
        referral_id = _call("POST", f"{api}/referrals", tokens[r["by"]], body).json()["referral_id"]
        for by, action, action_body in r["then"]:
            path = f"{api}/referrals/{referral_id}/{action}"
            _call("POST", path, tokens[by], _fill(action_body, times))
    return [f"demo referrals: {len(REFERRALS)} ({', '.join(r['shows'] for r in REFERRALS)})"]


def _fill(body: dict[str, Any], times: dict[str, str]) -> dict[str, Any]:
    """Relative times in the demo data ("{tomorrow_9am}") made absolute."""
    text = json.dumps(body, ensure_ascii=False)
    for name, value in times.items():
        text = text.replace("{" + name + "}", value)
    return dict(json.loads(text))


def _resident(stack: Any, person_id: str, person: Any) -> str:
    params = stack.params
    return mint(
        stack.client("kms"), stack.outputs["TokenSigningKeyArn"], params,
        Principal(f"resident-{person_id}", Role.RESIDENT, params["ConsortiumId"],
                  person_id=person_id, name=person.name),
    )  # fmt: skip


def seed_records(api: str, login: Any, person_ids: list[str], people: list[Any],
                 resident_of: dict[int, str]) -> list[str]:  # fmt: skip
    """The demo residents' health records (demo_county.RECORDS): multi-year histories whose
    documents are submitted by doctors of the institutions that wrote them, a consent the
    demo resident gave, and a child's guardian. Re-seeding resubmits the same documents
    (200 unchanged) and adds one more consent."""
    from yilian.domain.clock import now
    from yilian_local.sample_records import history_for

    doctor_of: dict[str, str] = {}
    for username, _, inst, _, _, role in DOCTORS:
        if role == "doctor":
            doctor_of.setdefault(inst, username)
    today = now().date()
    work: list[tuple[str, dict]] = []  # (institution, bundle)
    for r in RECORDS:
        p = people[r["patient"]]
        bundles = history_for(person_ids[r["patient"]], record_institutions(p.registered_at),
                              seed="demo", n_documents=r["documents"], today=today,
                              birth_date=date.fromisoformat(p.birth_date))  # fmt: skip
        work += [(str(b["identifier"]["system"]).rsplit("/", 1)[-1], b) for b in bundles]
    clinics = {people[c].registered_at for c, _ in GUARDIANS}
    tokens = {u: login(u) for u in sorted({doctor_of[i] for i in {w[0] for w in work} | clinics})}
    # One at a time: the embedded stack runs concurrent requests in threads of one process,
    # where Powertools keeps the current event in a class attribute shared by them all.
    for inst, bundle in work:
        _call("POST", f"{api}/records/documents", tokens[doctor_of[inst]], bundle)
    for patient, inst, days in RECORD_CONSENTS:
        until = (now() + timedelta(days=days)).isoformat(timespec="seconds")
        body = {"institution_id": inst, "valid_until": until, "note": "家庭医生签约"}
        _call("POST", f"{api}/me/consents", resident_of[patient], body)
    for child, guardian in GUARDIANS:
        body = {"person_id": person_ids[child], "proxy_person_id": person_ids[guardian],
                "relation": "child"}  # fmt: skip
        _call(
            "POST", f"{api}/records/proxies", tokens[doctor_of[people[child].registered_at]], body
        )
    shown = ", ".join(f"{people[r['patient']].name} {r['documents']}" for r in RECORDS)
    consents = ", ".join(f"{people[p].name} -> {inst}" for p, inst, _ in RECORD_CONSENTS)
    guardians = ", ".join(f"{people[g].name} for {people[c].name}" for c, g in GUARDIANS)
    return [
        f"demo health records: {len(work)} documents ({shown}) from their village clinics, "
        f"township centres and the county hospital; consent: {consents}; guardian: {guardians}"
    ]


def seed_imaging(api: str, login: Any, people: list[Any], timeout: float = 60) -> list[str]:
    """Demo imaging studies (sample_imaging.DEMO_STUDIES): each uploaded as a doctor of the
    institution that made it (POST /imaging/uploads, then the presigned POST per file, as
    the web client does), indexed by the ingest function and linked to its resident through
    the master index (one matches nobody and waits in the reconciliation queue); the county
    radiologist files a final report on the CT. A re-seed finds the studies and skips them."""
    import time

    from yilian.domain.clock import now
    from yilian_local.sample_imaging import DEMO_STUDIES, RADIOLOGIST, demo_files, study_uid

    tokens = {u: login(u) for u in sorted({s.uploader for s in DEMO_STUDIES} | {RADIOLOGIST})}
    study_date = (now() - timedelta(days=3)).strftime("%Y%m%d")
    batches: dict[str, tuple[str, int]] = {}  # key -> (batch id, files)
    for study in DEMO_STUDIES:
        token, uid = tokens[study.uploader], study_uid(study)
        headers = {"Authorization": f"Bearer {token}"}
        if requests.get(f"{api}/imaging/studies/{uid}", headers=headers, timeout=30).ok:
            continue  # seeded before
        files = demo_files(study, people, study_date)
        names = [
            {"name": f"{study.key.upper()}{n + 1:05d}", "size": len(d)} for n, d in enumerate(files)
        ]
        batch = _call("POST", f"{api}/imaging/uploads", token, {"files": names}).json()
        for f, data in zip(batch["files"], files, strict=True):
            post, part = f["post"], {"file": (f["name"], data, "application/dicom")}
            resp = requests.post(post["url"], data=post["fields"], files=part, timeout=60)
            if resp.status_code >= 300:
                raise SeedError(f"upload {f['key']} -> {resp.status_code}: {resp.text[:200]}")
        batches[study.key] = (batch["batch_id"], len(files))
    deadline = time.monotonic() + timeout
    for study in DEMO_STUDIES:
        if study.key not in batches:
            continue
        batch_id, n = batches[study.key]
        while True:
            status = _call("GET", f"{api}/imaging/uploads/{batch_id}", tokens[study.uploader])
            counts = status.json()["counts"]
            if counts.get("indexed", 0) + counts.get("duplicate", 0) >= n:
                break
            if counts.get("rejected") or time.monotonic() > deadline:
                raise SeedError(f"demo imaging {study.key}: {counts} of {n} files")
            time.sleep(0.2)
    shown = []
    for study in DEMO_STUDIES:
        uid = study_uid(study)
        view = _call("GET", f"{api}/imaging/studies/{uid}", tokens[study.uploader]).json()
        if study.report and not view.get("report"):
            body = {**study.report, "status": "final"}
            _call("POST", f"{api}/imaging/studies/{uid}/report", tokens[RADIOLOGIST], body)
        name = people[study.resident].name if study.resident is not None else "?"
        shown.append(f"{study.description} {name} ({view.get('link_status')})")
    return [
        f"demo imaging: {len(DEMO_STUDIES)} studies ({'; '.join(shown)}), "
        f"{len(batches)} uploaded now; final report on the CT by 黄涛 (huangtao, 放射科)"
    ]


def seed_consultations(api: str, login: Any, person_ids: list[str], people: list[Any]) -> list[str]:
    """The demo county's remote consultations (demo_county.CONSULTATIONS), requested and
    moved on through the API by the doctors who would do it, each step naming the version
    the previous answer showed; their workflows run. A re-seed finds the first requester's
    consultations and skips them all."""
    users = {c["by"] for c in CONSULTATIONS} | {a[0] for c in CONSULTATIONS for a in c["then"]}
    tokens = {u: login(u) for u in sorted(users)}
    first = CONSULTATIONS[0]["by"]
    mine = _call("GET", f"{api}/consultations?box=mine", tokens[first]).json()
    if mine.get("requested"):
        return [f"demo consultations: seeded before ({len(mine['requested'])} by {first})"]
    times = consultation_times()
    shown = []
    for c in CONSULTATIONS:
        body = {"person_id": person_ids[c["patient"]], "centre_institution_id": "county-hospital",
                **_fill(c["body"], times)}  # fmt: skip
        out = _call("POST", f"{api}/consultations", tokens[c["by"]], body).json()
        path = f"{api}/consultations/{out['consultation_id']}"
        for by, action, action_body in c["then"]:
            step = {**_fill(action_body, times), "version": out["version"]}
            out = _call("POST", f"{path}/{action}", tokens[by], step).json()
        shown.append(f"{people[c['patient']].name} {out['status']} ({c['shows']})")
    return [
        f"demo consultations: {len(CONSULTATIONS)} at the county hospital's centre "
        f"({'; '.join(shown)}); sign in as zhuanzhen (centre board), chenming or liuyan "
        f"(expert worklist), wangfang (requester)"
    ]
