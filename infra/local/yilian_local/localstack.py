"""Deploy template.yaml to a running LocalStack (for people who run LocalStack in Docker).

Same translation as the embedded stack (``template.prepare`` + ``template.translate``), none of
the moto-only post-processing: LocalStack runs CloudFormation, Lambda and API Gateway itself.
Functions and layers are zipped (the deps layer installed for Lambda's python3.12 on x86_64,
as ``sam build`` does), uploaded to a deployment bucket, and the stack created or updated.
The endpoint follows localstack-client's conventions: ``--endpoint``, else
``LOCALSTACK_ENDPOINT``, else ``AWS_ENDPOINT_URL``/``LOCALSTACK_HOST`` (default
http://localhost:4566).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import boto3
import requests
from botocore.config import Config
from botocore.exceptions import ClientError, WaiterError
from localstack_client.config import get_service_endpoint

from yilian_local.params import REPO_ROOT
from yilian_local.template import load_template, prepare, translate

FAKE_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}

MAX_TEMPLATE_BODY = 51_200  # CloudFormation's TemplateBody limit; larger goes through S3
# Lambda's python3.12 runs on Amazon Linux 2023 (glibc 2.34): manylinux_2_28 wheels run there
# (numpy and pillow ship only those for 3.12), manylinux2014 ones too.
PIP_PLATFORM = ["--platform", "manylinux2014_x86_64", "--platform", "manylinux_2_28_x86_64",
                "--only-binary=:all:"]  # fmt: skip
PIP_PYTHON = ["--python-version", "3.12", "--implementation", "cp"]
Pip = Callable[[Sequence[str]], None]


class TargetUnreachable(RuntimeError):
    """No LocalStack answers at the endpoint (the message says what to do)."""


class DeployError(RuntimeError):
    """LocalStack's CloudFormation refused or rolled back the stack."""


def resolve_endpoint(explicit: str | None = None) -> str:
    endpoint = explicit or os.environ.get("LOCALSTACK_ENDPOINT") or get_service_endpoint("s3")
    return (endpoint or "http://localhost:4566").rstrip("/")


def check_reachable(endpoint: str, timeout: float = 3.0) -> None:
    url = f"{endpoint}/_localstack/health"
    try:
        response = requests.get(url, timeout=timeout)
    except requests.RequestException as error:
        reason = type(error).__name__
        raise TargetUnreachable(
            f"LocalStack is not answering at {endpoint} ({reason} on GET /_localstack/health). "
            "Start it (e.g. `docker run -p 4566:4566 localstack/localstack`) or pass --endpoint."
        ) from None
    if response.status_code != 200:
        raise TargetUnreachable(
            f"{endpoint} answered GET /_localstack/health with HTTP {response.status_code}: "
            "is it LocalStack? Pass --endpoint with LocalStack's edge URL."
        )


def deploy(
    params: dict[str, str],
    endpoint_url: str | None = None,
    *,
    root: Path | None = None,
    region: str = "cn-northwest-1",
    stack_name: str | None = None,
    build_dir: Path | None = None,
    pip: Pip | None = None,
) -> dict[str, str]:
    """Package, upload and deploy; return the stack outputs. Raises TargetUnreachable first."""
    endpoint = resolve_endpoint(endpoint_url)
    check_reachable(endpoint)
    root = root or REPO_ROOT
    stack_name = stack_name or f"yilian-{params.get('CountyCode', 'local')}"
    bucket = f"{stack_name}-deploy"
    template = load_template(root / "template.yaml")
    zips = package(template, root, build_dir or root / ".local" / "build", pip)
    client = _client_factory(endpoint, region)
    keys = _upload(client("s3"), bucket, region, zips)
    expanded = translate(prepare(template, root, bucket, keys).template, params, region)
    return _create_or_update(client, stack_name, bucket, expanded, params)


def package(
    template: dict[str, Any], root: Path, build_dir: Path, pip: Pip | None = None
) -> dict[str, Path]:
    """Zip every function and layer; layers built with ``BuildMethod: python*`` get their
    requirements installed for Lambda first. Returns logical id -> zip path."""
    artefacts = prepare(template, root, "unused").artefacts
    build_dir.mkdir(parents=True, exist_ok=True)
    zips = {}
    for logical_id, source in artefacts.items():
        resource = template["Resources"][logical_id]
        build_method = resource.get("Metadata", {}).get("BuildMethod", "")
        if build_method.startswith("python") and (source / "requirements.txt").is_file():
            source = _install_requirements(source, build_dir / logical_id, pip or _run_pip)
        zips[logical_id] = _zip(source, build_dir / f"{logical_id}.zip")
    return zips


def pip_command(requirements: Path, target: Path) -> list[str]:
    return [
        sys.executable, "-m", "pip", "install", "--quiet", "-r", str(requirements),
        *PIP_PLATFORM, *PIP_PYTHON, "--target", str(target),
    ]  # fmt: skip


def _install_requirements(layer_dir: Path, out: Path, pip: Pip) -> Path:
    requirements = layer_dir / "requirements.txt"
    digest = hashlib.sha256(requirements.read_bytes()).hexdigest()
    stamp = out / ".requirements.sha256"
    if not stamp.is_file() or stamp.read_text() != digest:  # rebuilt only when pins change
        out.mkdir(parents=True, exist_ok=True)
        pip(pip_command(requirements, out / "python"))
        stamp.write_text(digest)
    return out


def _run_pip(command: Sequence[str]) -> None:
    subprocess.run(command, check=True)


def _zip(source: Path, target: Path) -> Path:
    with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(source.rglob("*")):
            relative = path.relative_to(source)
            if path.is_file() and "__pycache__" not in relative.parts and path.name[0] != ".":
                archive.write(path, relative.as_posix())
    return target


def _client_factory(endpoint: str, region: str) -> Callable[[str], Any]:
    def client(service: str) -> Any:
        return boto3.client(
            service,
            endpoint_url=endpoint,
            region_name=region,
            aws_access_key_id=FAKE_CREDENTIALS["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=FAKE_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
            config=Config(s3={"addressing_style": "path"}),
        )

    return client


def _upload(s3: Any, bucket: str, region: str, zips: dict[str, Path]) -> dict[str, str]:
    try:
        location = {} if region == "us-east-1" else {"LocationConstraint": region}
        s3.create_bucket(Bucket=bucket, CreateBucketConfiguration=location)
    except ClientError as error:
        if error.response["Error"]["Code"] not in (
            "BucketAlreadyOwnedByYou",
            "BucketAlreadyExists",
        ):
            raise
    keys = {}
    for logical_id, path in zips.items():
        digest = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
        keys[logical_id] = f"{logical_id}-{digest}.zip"  # a new key per content: code updates
        s3.upload_file(str(path), bucket, keys[logical_id])
    return keys


def _create_or_update(
    client: Callable[[str], Any],
    stack_name: str,
    bucket: str,
    template: dict[str, Any],
    params: dict[str, str],
) -> dict[str, str]:
    cloudformation = client("cloudformation")
    body = json.dumps(template)
    source: dict[str, str] = {"TemplateBody": body}
    if len(body) > MAX_TEMPLATE_BODY:
        client("s3").put_object(Bucket=bucket, Key="template.json", Body=body.encode())
        source = {"TemplateURL": f"{cloudformation.meta.endpoint_url}/{bucket}/template.json"}
    declared = template.get("Parameters", {})
    arguments = {
        "StackName": stack_name,
        "Parameters": [
            {"ParameterKey": k, "ParameterValue": v} for k, v in params.items() if k in declared
        ],
        "Capabilities": ["CAPABILITY_IAM", "CAPABILITY_NAMED_IAM", "CAPABILITY_AUTO_EXPAND"],
        **source,
    }
    try:
        cloudformation.describe_stacks(StackName=stack_name)
        exists = True
    except ClientError:
        exists = False
    try:
        if exists:
            cloudformation.update_stack(**arguments)
        else:
            cloudformation.create_stack(**arguments)
        waiter = "stack_update_complete" if exists else "stack_create_complete"
        cloudformation.get_waiter(waiter).wait(
            StackName=stack_name, WaiterConfig={"Delay": 2, "MaxAttempts": 300}
        )
    except ClientError as error:
        if "No updates are to be performed" not in str(error):
            raise DeployError(str(error)) from None
    except WaiterError:
        raise DeployError(_failure_events(cloudformation, stack_name)) from None
    stack = cloudformation.describe_stacks(StackName=stack_name)["Stacks"][0]
    return {o["OutputKey"]: o["OutputValue"] for o in stack.get("Outputs", [])}


def _failure_events(cloudformation: Any, stack_name: str) -> str:
    events = cloudformation.describe_stack_events(StackName=stack_name)["StackEvents"]
    failed = [e for e in events if e["ResourceStatus"].endswith("_FAILED")]
    lines = [
        f"{e['LogicalResourceId']} ({e['ResourceType']}): {e.get('ResourceStatusReason', '')}"
        for e in reversed(failed)
    ]
    return f"stack {stack_name} failed:\n  " + "\n  ".join(lines or ["no failed resource reported"])
