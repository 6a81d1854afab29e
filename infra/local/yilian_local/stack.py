"""The embedded local stack: template.yaml deployed into moto, in this process, behind HTTP.

    stack = LocalStack(load_county_params("demo"), gateway_port=8080, web_root=Path("web/dist"))
    with stack:
        stack.api_url            # http://127.0.0.1:8080/api
        stack.client("dynamodb") # bound to the emulator

``start()`` runs moto's server in a thread, applies the patches (``patches``), expands and
deploys the real template through moto's CloudFormation, registers each function's code with
the in-process runner, applies the properties moto drops (``configure``) and starts the
gateway. moto's backends are process-wide: several stacks in one process share one emulator
(different stack names keep their resources apart).
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError
from moto.awslambda.utils import get_backend as lambda_backend

from yilian_local import configure, environ, patches
from yilian_local.emulator import LOCAL_ACCOUNT_ID, AccountEmulator
from yilian_local.gateway import Gateway, RestApi
from yilian_local.params import REPO_ROOT, load_county_params
from yilian_local.runner import FAKE_CREDENTIALS, REGISTRY
from yilian_local.scheduler import Scheduler
from yilian_local.template import (
    for_moto,
    load_template,
    partition_of,
    prepare,
    translate,
)

DEFAULT_REGION = "cn-northwest-1"
ACCOUNT_ID = LOCAL_ACCOUNT_ID  # the emulator's own account (see emulator.py)
CODE_BUCKET = "yilian-local-code"  # never read: functions run from the working tree
_CAPABILITIES = ["CAPABILITY_IAM", "CAPABILITY_NAMED_IAM", "CAPABILITY_AUTO_EXPAND"]


__all__ = ["DeployError", "LocalStack", "REPO_ROOT", "load_county_params"]


class DeployError(RuntimeError):
    """The stack did not reach CREATE_COMPLETE; the message names the resource and reason."""


class LocalStack:
    def __init__(
        self,
        params: dict[str, str],
        moto_port: int = 0,
        gateway_port: int = 0,
        web_root: Path | None = None,
        *,
        template_path: Path | None = None,
        root: Path | None = None,
        stack_name: str | None = None,
        region: str = DEFAULT_REGION,
        host: str = "127.0.0.1",
    ) -> None:
        self.params = dict(params)
        self.root = root or REPO_ROOT
        self.template_path = template_path or self.root / "template.yaml"
        self.stack_name = stack_name or f"yilian-{params.get('CountyCode', 'local')}"
        self.region, self.host = region, host
        self.web_root = web_root
        self._moto_port, self._gateway_port = moto_port, gateway_port
        self._moto: AccountEmulator | None = None
        self._gateway: Gateway | None = None
        self.scheduler: Scheduler | None = None
        self._physical: dict[str, str] = {}
        self._functions: list[str] = []
        self.outputs: dict[str, str] = {}
        self.expanded_template: dict[str, Any] = {}
        self.deployed_template: dict[str, Any] = {}
        self.endpoint_url = ""
        self.api_url = ""
        self.gateway_url = ""

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> LocalStack:
        environ.install()
        patches.apply()
        logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one line per moto call
        self._moto = AccountEmulator(self.host, self._moto_port, ACCOUNT_ID)
        self._moto.start()
        self.endpoint_url = self._moto.endpoint_url
        try:
            self._deploy()
            self._start_gateway()
            self.scheduler = Scheduler(
                self.client("events"), self.client("lambda"), self.region, ACCOUNT_ID
            )
            self.scheduler.start()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        if self.scheduler is not None:
            self.scheduler.stop()
            self.scheduler = None
        if self._gateway is not None:
            self._gateway.stop()
            self._gateway = None
        for name in self._functions:
            REGISTRY.unregister(name)
        self._functions = []
        if self._moto is not None:
            self._delete_stack()
            self._moto.stop()
            self._moto = None

    def _delete_stack(self) -> None:
        """Leave no stack behind in an account another emulator may still be serving.

        Buckets are emptied first (CloudFormation does not delete a bucket with objects): the
        embedded stack's data lives as long as the stack object, like a process's memory.
        """
        try:
            s3 = self.client("s3")
            for logical_id, resource in self.deployed_template.get("Resources", {}).items():
                if resource["Type"] == "AWS::S3::Bucket" and logical_id in self._physical:
                    _empty_bucket(s3, self._physical[logical_id])
            self.client("cloudformation").delete_stack(StackName=self.stack_name)
        except (ClientError, BotoCoreError) as error:
            logging.getLogger(__name__).warning("deleting %s: %s", self.stack_name, error)

    def __enter__(self) -> LocalStack:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ access

    def client(self, service: str, **kwargs: Any) -> Any:
        """A boto3 client bound to the emulator (fake credentials, the stack's region)."""
        config = Config(s3={"addressing_style": "path"}, retries={"max_attempts": 2})
        if "config" in kwargs:
            config = config.merge(kwargs.pop("config"))
        return boto3.client(
            service,
            endpoint_url=self.endpoint_url,
            region_name=self.region,
            aws_access_key_id=FAKE_CREDENTIALS["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=FAKE_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
            config=config,
            **kwargs,
        )

    def physical_id(self, logical_id: str) -> str:
        """Physical id of a template resource: table/bucket/function name, KMS key id."""
        try:
            return self._physical[logical_id]
        except KeyError:
            raise KeyError(f"{logical_id} is not a resource of stack {self.stack_name}") from None

    def invoke(self, function_name: str, event: dict[str, Any]) -> tuple[str, bool]:
        """Invoke a deployed function through moto's Lambda model (so through the hook)."""
        function = lambda_backend(ACCOUNT_ID, self.region).get_function(function_name)
        response_headers: dict[str, str] = {}
        payload = function.invoke(json.dumps(event), {}, response_headers)
        text = payload.decode("utf-8") if isinstance(payload, bytes) else payload
        return text, "x-amz-function-error" in response_headers

    # ------------------------------------------------------------------ deploy

    def _deploy(self) -> None:
        prepared = prepare(load_template(self.template_path), self.root, CODE_BUCKET)
        self.expanded_template = translate(prepared.template, self.params, self.region)
        self.deployed_template = for_moto(self.expanded_template, self.stack_name)
        declared = self.deployed_template.get("Parameters", {})
        cloudformation = self.client("cloudformation")
        patches.RESOURCE_FAILURES.pop(self.stack_name, None)
        try:
            cloudformation.create_stack(
                StackName=self.stack_name,
                TemplateBody=json.dumps(self.deployed_template),
                Parameters=[
                    {"ParameterKey": k, "ParameterValue": v}
                    for k, v in self.params.items()
                    if k in declared
                ],
                Capabilities=_CAPABILITIES,
            )
        except (ClientError, BotoCoreError) as error:
            raise DeployError(self._failure(str(error))) from None
        stack = self._wait(cloudformation)
        if stack["StackStatus"] != "CREATE_COMPLETE":
            raise DeployError(self._failure(stack.get("StackStatusReason", stack["StackStatus"])))
        self.outputs = {o["OutputKey"]: o["OutputValue"] for o in stack.get("Outputs", [])}
        paginator = cloudformation.get_paginator("list_stack_resources")
        for page in paginator.paginate(StackName=self.stack_name):
            for resource in page["StackResourceSummaries"]:
                self._physical[resource["LogicalResourceId"]] = resource["PhysicalResourceId"]
        for logical_id, code in prepared.functions.items():
            REGISTRY.register(self._physical[logical_id], code, self.endpoint_url)
            self._functions.append(self._physical[logical_id])
        configure.apply_dropped_properties(
            self.deployed_template, self.stack_name, ACCOUNT_ID, self.region, self.client
        )

    def _wait(self, cloudformation: Any, timeout: float = 120) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            stack = cloudformation.describe_stacks(StackName=self.stack_name)["Stacks"][0]
            if not stack["StackStatus"].endswith("_IN_PROGRESS") or time.monotonic() > deadline:
                return stack
            time.sleep(0.2)

    def _failure(self, reason: str) -> str:
        failed = patches.RESOURCE_FAILURES.get(self.stack_name)
        if failed:
            logical_id, kind, why = failed
            return f"stack {self.stack_name}: resource {logical_id} ({kind}) failed: {why}"
        return f"stack {self.stack_name} failed to deploy: {reason}"

    # ------------------------------------------------------------------ gateway

    def _start_gateway(self) -> None:
        arn_prefix = f"arn:{partition_of(self.region)}:execute-api:{self.region}:{ACCOUNT_ID}"
        functions = {
            logical_id: self._physical[logical_id]
            for logical_id, resource in self.expanded_template["Resources"].items()
            if resource["Type"] == "AWS::Lambda::Function"
        }
        apis = [
            RestApi(
                resource["Properties"]["Body"],
                _stage_of(self.expanded_template, logical_id),
                self._physical[logical_id],
                arn_prefix,
                functions,
                self.invoke,
            )
            for logical_id, resource in self.expanded_template["Resources"].items()
            if resource["Type"] == "AWS::ApiGateway::RestApi" and "Body" in resource["Properties"]
        ]
        self._gateway = Gateway(apis, self.web_root)
        port = self._gateway.start(self.host, self._gateway_port)
        self.gateway_url = f"http://{self.host}:{port}"
        self.api_url = f"{self.gateway_url}/{apis[0].stage}" if apis else ""


def _empty_bucket(s3: Any, bucket: str) -> None:
    for page in s3.get_paginator("list_object_versions").paginate(Bucket=bucket):
        versions = page.get("Versions", []) + page.get("DeleteMarkers", [])
        objects = [{"Key": v["Key"], "VersionId": v["VersionId"]} for v in versions]
        if objects:
            s3.delete_objects(Bucket=bucket, Delete={"Objects": objects, "Quiet": True})


def _stage_of(template: dict[str, Any], api_logical_id: str) -> str:
    for resource in template["Resources"].values():
        props = resource.get("Properties", {})
        if resource["Type"] == "AWS::ApiGateway::Stage" and props.get("RestApiId") == {
            "Ref": api_logical_id
        }:
            return str(props["StageName"])
    return "api"
