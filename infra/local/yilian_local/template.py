"""From template.yaml to the CloudFormation that gets deployed, without any AWS call.

Three steps, kept apart because the LocalStack target uses the first two and only the
embedded emulator needs the third:

1. ``prepare``: local ``CodeUri``/``ContentUri`` become ``s3://`` URIs (and we remember which
   directory and handler each function is), ``DefinitionUri`` becomes an inline ``Definition``.
2. ``translate``: aws-sam-translator expands the SAM resources offline, with the managed policy
   map bundled in the package (no IAM call). SAM bakes parameter values into names and
   logical ids, so the same values must be used here and at deploy time.
3. ``for_moto``: work around what moto's CloudFormation does not understand (see
   /work/shared/LOCAL_STACK_FACTS.md). The production template is never changed.
"""

from __future__ import annotations

import copy
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
from samtranslator.internal.managed_policies import get_bundled_managed_policy_map
from samtranslator.parser.parser import Parser
from samtranslator.translator.translator import Translator
from samtranslator.yaml_helper import yaml_parse

from yilian_local.environ import invocation_environ

SERVERLESS_FUNCTION = "AWS::Serverless::Function"
_CODE_PROPERTY = {SERVERLESS_FUNCTION: "CodeUri", "AWS::Serverless::LayerVersion": "ContentUri"}
_API_ARTEFACTS = ("AWS::ApiGateway::Deployment", "AWS::ApiGateway::Stage")


@dataclass(frozen=True)
class FunctionCode:
    """Where a template function's code lives on disk and which callable is its handler."""

    logical_id: str
    code_dir: Path
    handler: str  # "app.lambda_handler": module path relative to code_dir, then the callable

    @property
    def module_file(self) -> Path:
        module, _, _ = self.handler.rpartition(".")
        return self.code_dir.joinpath(*module.split(".")).with_suffix(".py")

    @property
    def function_attr(self) -> str:
        return self.handler.rpartition(".")[2]


@dataclass
class Prepared:
    template: dict[str, Any]
    functions: dict[str, FunctionCode]  # logical id -> code
    artefacts: dict[str, Path]  # logical id -> local dir to zip (functions and layers)


def load_template(path: Path) -> dict[str, Any]:
    """Parse a SAM template, short-form intrinsics (!Ref, !Sub...) included."""
    return yaml_parse(path.read_text(encoding="utf-8"))


def partition_of(region: str) -> str:
    if region.startswith("cn-"):
        return "aws-cn"
    if region.startswith("us-gov-"):
        return "aws-us-gov"
    return "aws"


def prepare(
    template: dict[str, Any], root: Path, code_bucket: str, keys: dict[str, str] | None = None
) -> Prepared:
    """Return a copy of ``template`` whose local code locations are ``s3://`` URIs.

    ``keys`` (logical id -> object key) names the uploaded zips; by default ``<id>.zip``.
    """
    keys = keys or {}
    template = copy.deepcopy(template)
    globals_fn = template.get("Globals", {}).get("Function", {})
    functions: dict[str, FunctionCode] = {}
    artefacts: dict[str, Path] = {}
    for logical_id, resource in template.get("Resources", {}).items():
        props = resource.setdefault("Properties", {})
        kind = resource.get("Type")
        if kind in _CODE_PROPERTY:
            prop = _CODE_PROPERTY[kind]
            default = globals_fn.get(prop) if kind == SERVERLESS_FUNCTION else None
            location = props.get(prop, default)
            if isinstance(location, str) and not location.startswith("s3://"):
                artefacts[logical_id] = (root / location).resolve()
                props[prop] = f"s3://{code_bucket}/{keys.get(logical_id, logical_id + '.zip')}"
            if kind == SERVERLESS_FUNCTION and logical_id in artefacts:
                handler = props.get("Handler", globals_fn.get("Handler", "app.lambda_handler"))
                functions[logical_id] = FunctionCode(logical_id, artefacts[logical_id], handler)
        definition_uri = props.get("DefinitionUri")
        if kind == "AWS::Serverless::StateMachine" and isinstance(definition_uri, str):
            props["Definition"] = json.loads((root / definition_uri).read_text(encoding="utf-8"))
            del props["DefinitionUri"]
    return Prepared(template, functions, artefacts)


def translate(template: dict[str, Any], params: dict[str, str], region: str) -> dict[str, Any]:
    """Expand SAM offline, exactly as the deploy will (same parameter values, same region)."""
    partition = partition_of(region)
    session = boto3.session.Session(
        aws_access_key_id="testing", aws_secret_access_key="testing", region_name=region
    )
    translator = Translator(None, Parser(), boto_session=session)
    # The translator reads AWS_DEFAULT_REGION: give it one without touching the process env.
    with invocation_environ({"AWS_DEFAULT_REGION": region, "AWS_REGION": region}):
        return translator.translate(
            copy.deepcopy(template),
            dict(params),
            get_managed_policy_map=lambda: get_bundled_managed_policy_map(partition) or {},
        )


def for_moto(expanded: dict[str, Any], stack_name: str) -> dict[str, Any]:
    """A copy of the expanded template that moto's CloudFormation deploys faithfully."""
    template = copy.deepcopy(expanded)
    resources = template["Resources"]
    dropped = {lid: r for lid, r in resources.items() if r["Type"] in _API_ARTEFACTS}
    for logical_id in dropped:
        del resources[logical_id]
    for logical_id, resource in resources.items():
        _drop_depends_on(resource, dropped)
        props = resource.get("Properties", {})
        kind = resource["Type"]
        if kind == "AWS::StepFunctions::StateMachine":
            _inline_definition(props)
        elif kind == "AWS::ApiGateway::RestApi":
            props.setdefault("Name", f"{stack_name}-{logical_id}")
        elif kind == "AWS::DynamoDB::Table" and "SSESpecification" in props:
            # CloudFormation says SSEEnabled, the API (and moto's Table) says Enabled.
            sse = dict(props["SSESpecification"])
            sse["Enabled"] = sse.pop("SSEEnabled", False)
            props["SSESpecification"] = sse
    stage_names = {lid: r["Properties"].get("StageName", "") for lid, r in dropped.items()}
    return _replace_refs(template, stage_names)


def _drop_depends_on(resource: dict[str, Any], dropped: dict[str, Any]) -> None:
    depends = resource.get("DependsOn")
    if depends is None:
        return
    kept = [d for d in ([depends] if isinstance(depends, str) else depends) if d not in dropped]
    if kept:
        resource["DependsOn"] = kept
    else:
        del resource["DependsOn"]


def _inline_definition(props: dict[str, Any]) -> None:
    """moto wants DefinitionString as one string; substitutions become an Fn::Join of the
    literal pieces and the substituted values. Not Fn::Sub: moto runs it through
    string.Template, which turns the context-object prefix `$$.` (`$$.Task.Token`) into `$.`."""
    definition = props.get("DefinitionString")
    if isinstance(definition, dict) and "Fn::Join" in definition:
        separator, parts = definition["Fn::Join"]
        definition = separator.join(parts)
    substitutions = props.pop("DefinitionSubstitutions", None)
    if substitutions and isinstance(definition, str):
        pieces: list[Any] = []
        for n, piece in enumerate(re.split(r"\$\{(\w+)\}", definition)):
            if n % 2 == 0:
                pieces.append(piece)
            else:
                pieces.append(substitutions.get(piece, "${" + piece + "}"))
        definition = {"Fn::Join": ["", pieces]}
    props["DefinitionString"] = definition


def _replace_refs(node: Any, stage_names: dict[str, str]) -> Any:
    """``Ref`` to a dropped Stage/Deployment resolves to the stage name (or "local")."""
    if isinstance(node, dict):
        if set(node) == {"Ref"} and node["Ref"] in stage_names:
            return stage_names[node["Ref"]] or "local"
        return {k: _replace_refs(v, stage_names) for k, v in node.items()}
    if isinstance(node, list):
        return [_replace_refs(v, stage_names) for v in node]
    return node


def function_logical_ids(node: Any) -> list[str]:
    """Logical ids of the functions an integration/authorizer URI points at (GetAtt X.Arn)."""
    found: list[str] = []
    if isinstance(node, dict):
        get_att = node.get("Fn::GetAtt")
        if isinstance(get_att, list) and len(get_att) == 2 and get_att[1] == "Arn":
            found.append(get_att[0])
        for value in node.values():
            found.extend(function_logical_ids(value))
    elif isinstance(node, list):
        for value in node:
            found.extend(function_logical_ids(value))
    elif isinstance(node, str):
        found.extend(re.findall(r"\$\{([A-Za-z0-9]+)\.Arn\}", node))
    return found
