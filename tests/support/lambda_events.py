"""Lambda as the handler tests run it: a fresh copy of a handler module, the context object,
and the sample events under events/ (API Gateway REST v1 ones with the caller, path, method,
body, query or headers replaced)."""

from __future__ import annotations

import importlib.util
import json
import sys
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
EVENTS = ROOT / "events"
CONSORTIUM = "demo-county"
REGION = "cn-northwest-1"


class Context:
    """What Lambda hands a handler beside the event."""

    function_version = "$LATEST"
    memory_limit_in_mb = 512
    aws_request_id = "req-1"

    def __init__(self, function_name: str) -> None:
        self.function_name = function_name
        self.invoked_function_arn = (
            f"arn:aws-cn:lambda:{REGION}:123456789012:function:{function_name}"
        )

    @staticmethod
    def get_remaining_time_in_millis() -> int:
        return 20_000


def load(path: Path) -> Any:
    """A fresh copy of a handler module, registered as Lambda's runtime would import it."""
    name = f"handler_{uuid.uuid4().hex}"
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def sample(function: str, case: str) -> dict[str, Any]:
    """events/<function>/<case>.json, a new copy each time."""
    return json.loads((EVENTS / function / f"{case}.json").read_text(encoding="utf-8"))


def api_event(
    event: dict[str, Any],
    *,
    who: dict[str, str] | None = None,
    path: str | None = None,
    method: str | None = None,
    body: Any = ...,
    raw_body: str | None = None,
    query: dict[str, str] | None = None,
    headers: dict[str, str] | None = None,
) -> dict[str, Any]:
    """An API Gateway event (changed in place and returned) with what is given replaced: the
    caller as the authorizer's context (`who` over the county's blank principal), the path
    (also as the stage sees it, under /api), the method, the body as JSON or `raw_body` as
    it is, the query string and headers (single and multi-value alike)."""
    if who is not None:
        auth = event["requestContext"]["authorizer"]
        auth.update({"consortium_id": CONSORTIUM, "person_id": "", "name": "", **who})
        auth["principalId"] = auth["sub"]
    if path is not None:
        event["path"] = path
        event["requestContext"]["path"] = f"/api{path}"
    if method is not None:
        event["httpMethod"] = method
    if body is not ...:
        event["body"] = json.dumps(body, ensure_ascii=False)
    if raw_body is not None:
        event["body"] = raw_body
    if query is not None:
        event["queryStringParameters"] = query
        event["multiValueQueryStringParameters"] = {k: [v] for k, v in query.items()}
    for k, v in (headers or {}).items():
        event["headers"][k] = v
        event["multiValueHeaders"][k] = [v]
    return event


def function_environment(
    functions: dict[str, str], refs: dict[str, str]
) -> dict[str, dict[str, str]]:
    """Function (folder under functions/) -> its environment variables as template.yaml sets
    them (Globals + its own) for the logical id `functions` gives it, with Refs resolved to
    the resources made here (`refs`) and the demo county's parameters."""
    from tests.support.template_tables import _sub, county_params, load_template

    template = load_template()
    params = {k: v.get("Default") for k, v in template["Parameters"].items()}
    params = {**params, **county_params(), **refs}

    def resolve(value: Any) -> str:
        if isinstance(value, dict) and set(value) == {"Ref"}:
            return str(params[value["Ref"]] or "")
        if isinstance(value, dict) and set(value) == {"Fn::GetAtt"}:  # e.g. DataKey.Arn
            return str(params[".".join(value["Fn::GetAtt"])])
        return _sub(value, params)  # a plain string, or a Fn::Sub (e.g. a bucket's name)

    common = template["Globals"]["Function"]["Environment"]["Variables"]
    out = {}
    for function, logical_id in functions.items():
        props = template["Resources"][logical_id]["Properties"]
        assert props["CodeUri"] == f"functions/{function}/"
        own = props.get("Environment", {}).get("Variables", {})
        out[function] = {k: resolve(v) for k, v in {**common, **own}.items()}
    return out


def seed_demo_directory(table: str) -> None:
    """The demo county's lead hospital, a township centre and one of its village clinics."""
    from yilian.adapters.directory_store import DirectoryStore
    from yilian.domain.directory import Institution, InstitutionType, Tier

    directory = DirectoryStore(table, region=REGION)
    for inst_id, name, tier, kind, parent in [
        ("county-hospital", "示范县人民医院", Tier.COUNTY, InstitutionType.GENERAL_HOSPITAL, None),
        ("qiaotou", "桥头镇卫生院", Tier.TOWNSHIP, InstitutionType.TOWNSHIP_HEALTH_CENTRE,
         "county-hospital"),
        ("qiaotou-lijia", "桥头镇李家村卫生室", Tier.VILLAGE, InstitutionType.VILLAGE_CLINIC,
         "qiaotou"),
    ]:  # fmt: skip
        directory.add_institution(Institution(inst_id, CONSORTIUM, name, tier, kind, parent))


def register_patient(tables: dict[str, str], body: dict[str, Any], doctor: Any) -> str:
    """Registers `body` in the patient index the way the EMPI function does it, as `doctor`
    (a Principal); returns the new person_id."""
    from yilian.adapters.empi_wiring import build_empi
    from yilian.adapters.keyring import LocalKeyProtector
    from yilian.settings import Settings

    settings = Settings(
        consortium_id=CONSORTIUM, region=REGION, persons_table=tables["PersonsTable"],
        directory_table=tables["DirectoryTable"], platform_table=tables["PlatformTable"],
        audit_table=tables["AuditTable"], import_bucket="unused",
    )  # fmt: skip
    empi = build_empi(settings, protector=LocalKeyProtector(b"k" * 64))
    status, out = empi.service.register(doctor, body)
    assert status == 201, out
    return out["person"]["person_id"]
