"""Run a template function's real handler in this process, the way Lambda would.

moto cannot run Lambda code without Docker; every invocation it makes (Invoke API, S3
notifications, SQS and stream mappings, Step Functions tasks) goes through
``LambdaFunction._invoke_lambda``. ``patches`` points that method at ``invoke`` below for
the functions registered here (those of our stacks); any other function keeps moto's own path.

Each function gets one "container": its module is loaded once by file path under a unique
module name (a cold start per function; module-level and ``functools.cache`` wiring stay warm
per function, as on Lambda) and its environment is a dict of its own, applied per invocation
through the ``os.environ`` overlay, so concurrent and nested invocations never see each
other's variables. A configuration change (new environment) replaces the container, as Lambda
does.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import re
import sys
import threading
import time
import traceback
import uuid
from collections import ChainMap
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import ModuleType
from typing import Any

from yilian_local.environ import UNSET, invocation_environ
from yilian_local.template import FunctionCode

log = logging.getLogger("yilian_local.lambda")
FAKE_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
}
# Variables of the developer's shell that would send the SDK elsewhere than the emulator.
_MASKED = ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE")


@dataclass
class LambdaContext:
    """The attributes of the Python runtime's context object (awslambdaric's LambdaContext)."""

    function_name: str
    function_version: str
    invoked_function_arn: str
    memory_limit_in_mb: str  # the runtime reads it from the environment: a string
    aws_request_id: str
    log_group_name: str
    log_stream_name: str
    deadline: float = field(repr=False)
    identity: Any = None
    client_context: Any = None

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self.deadline - time.monotonic()) * 1000))


@dataclass
class _Container:
    module: ModuleType
    handler: Any
    env: dict[str, object]
    config: dict[str, str]


class FunctionRegistry:
    """Which deployed function (by name) is which code on disk; one container each."""

    def __init__(self) -> None:
        self._code: dict[str, FunctionCode] = {}
        self._endpoints: dict[str, str] = {}
        self._containers: dict[str, _Container] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()

    def register(self, function_name: str, code: FunctionCode, endpoint_url: str) -> None:
        with self._guard:
            self._code[function_name] = code
            self._endpoints[function_name] = endpoint_url
            self._locks.setdefault(function_name, threading.Lock())
            self._containers.pop(function_name, None)

    def unregister(self, function_name: str) -> None:
        with self._guard:
            self._code.pop(function_name, None)
            self._containers.pop(function_name, None)

    def knows(self, function_name: str) -> bool:
        return function_name in self._code

    def invoke(self, fn: Any, event: Any) -> tuple[str, bool, str]:
        """Run ``event`` through moto LambdaFunction ``fn``: (payload, errored, logs)."""
        started = time.monotonic()
        timeout = float(fn.timeout or 3)
        request_id = str(uuid.uuid4())
        stream = f"{datetime.now(UTC):%Y/%m/%d}/[{fn.version}]{uuid.uuid4().hex}"
        context = LambdaContext(
            function_name=fn.function_name,
            function_version=fn.version,
            invoked_function_arn=fn.function_arn,
            memory_limit_in_mb=str(fn.memory_size),
            aws_request_id=request_id,
            log_group_name=fn.logs_group_name,
            log_stream_name=stream,
            deadline=started + timeout,
        )
        try:
            container = self._container(fn, stream)
        except Exception as error:  # noqa: BLE001 - Lambda reports a broken module this way
            log.error("%s [ERROR] Runtime.ImportModuleError: %s", fn.function_name, error)
            payload = _error_payload(error, "Runtime.ImportModuleError")
            payload["errorMessage"] = f"Unable to import module '{fn.handler}': {error}"
            return json.dumps(payload), True, ""
        trace = f"Root=1-{int(time.time()):08x}-{uuid.uuid4().hex[:24]}"
        try:
            with invocation_environ(ChainMap({"_X_AMZN_TRACE_ID": trace}, container.env)):
                result = container.handler(_as_event(event), context)
        except Exception as error:  # noqa: BLE001 - any handler error is the function's result
            payload, errored = json.dumps(_error_payload(error)), True
            log.error("%s [ERROR] %s", fn.function_name, "".join(traceback.format_exception(error)))
        else:
            payload, errored = _marshal(result)
        elapsed = time.monotonic() - started
        if elapsed > timeout:
            stamp = f"{datetime.now(UTC):%Y-%m-%dT%H:%M:%S.%fZ}"
            message = f"{stamp} {request_id} Task timed out after {timeout:.2f} seconds"
            payload, errored = json.dumps({"errorMessage": message}), True
        logs = (
            f"START RequestId: {request_id} Version: {fn.version}\n"
            f"END RequestId: {request_id}\n"
            f"REPORT RequestId: {request_id}\tDuration: {elapsed * 1000:.2f} ms\t"
            f"Memory Size: {fn.memory_size} MB"
        )
        return payload, errored, logs

    def _container(self, fn: Any, stream: str) -> _Container:
        name = fn.function_name
        config = {str(k): str(v) for k, v in (fn.environment_vars or {}).items()}
        container = self._containers.get(name)
        if container is not None and container.config == config:
            return container
        with self._locks[name]:  # one cold start at a time per function
            container = self._containers.get(name)
            if container is None or container.config != config:
                container = self._cold_start(fn, config, stream)
                self._containers[name] = container
        return container

    def _cold_start(self, fn: Any, config: dict[str, str], stream: str) -> _Container:
        code = self._code[fn.function_name]
        env: dict[str, object] = dict.fromkeys(_MASKED, UNSET)
        env.update({"AWS_SAM_LOCAL": "true", "LAMBDA_TASK_ROOT": str(code.code_dir)})
        env.update(config)
        env.update(FAKE_CREDENTIALS)
        env.update(
            {
                "AWS_ENDPOINT_URL": self._endpoints[fn.function_name],
                "AWS_REGION": fn.region,
                "AWS_DEFAULT_REGION": fn.region,
                "AWS_EXECUTION_ENV": f"AWS_Lambda_{fn.run_time}",
                "AWS_LAMBDA_FUNCTION_NAME": fn.function_name,
                "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(fn.memory_size),
                "AWS_LAMBDA_FUNCTION_VERSION": fn.version,
                "AWS_LAMBDA_LOG_GROUP_NAME": fn.logs_group_name,
                "AWS_LAMBDA_LOG_STREAM_NAME": stream,
                "AWS_LAMBDA_INITIALIZATION_TYPE": "on-demand",
                "_HANDLER": code.handler,
            }
        )
        module_name = "_yilian_fn_" + re.sub(r"\W", "_", fn.function_name)
        spec = importlib.util.spec_from_file_location(module_name, code.module_file)
        if spec is None or spec.loader is None or not code.module_file.is_file():
            raise FileNotFoundError(f"handler module not found: {code.module_file}")
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module
        with invocation_environ(env):  # module-level code sees the function's environment
            spec.loader.exec_module(module)
        return _Container(module, getattr(module, code.function_attr), env, config)


def _as_event(event: Any) -> Any:
    if isinstance(event, bytes | str):
        try:
            return json.loads(event or "{}")
        except ValueError:
            return event
    return event


def _marshal(result: Any) -> tuple[str, bool]:
    try:
        return json.dumps(result), False
    except (TypeError, ValueError) as error:
        payload = _error_payload(error, "Runtime.MarshalError")
        payload["errorMessage"] = f"Unable to marshal response: {error}"
        return json.dumps(payload), True


def _error_payload(error: BaseException, error_type: str = "") -> dict[str, Any]:
    return {
        "errorMessage": str(error),
        "errorType": error_type or type(error).__name__,
        "requestId": "",
        "stackTrace": traceback.format_tb(error.__traceback__),
    }


REGISTRY = FunctionRegistry()
