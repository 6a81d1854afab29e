"""The LocalStack target without a LocalStack: the refusal path and the packaging path.

LocalStack cannot run here (no Docker); what can be checked is that an unreachable endpoint
gives one clear line and exit code 2, and that packaging and translation produce what a
LocalStack deploy would upload.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from yilian_local import localstack
from yilian_local.params import REPO_ROOT, load_county_params
from yilian_local.template import load_template, prepare, translate

pytestmark = pytest.mark.integration


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]  # closed again when the block ends


def test_an_unreachable_endpoint_exits_2_with_one_clear_line():
    endpoint = f"http://127.0.0.1:{_closed_port()}"
    result = subprocess.run(
        [sys.executable, "-m", "yilian_local", "up", "--target", "localstack",
         "--endpoint", endpoint],
        capture_output=True, text=True, timeout=60, cwd=REPO_ROOT,
    )  # fmt: skip
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "LocalStack is not answering at " + endpoint in lines[0]
    assert "Traceback" not in result.stderr and result.stdout == ""


def test_the_endpoint_follows_localstack_client_conventions(monkeypatch):
    monkeypatch.delenv("LOCALSTACK_ENDPOINT", raising=False)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    monkeypatch.delenv("LOCALSTACK_HOST", raising=False)
    assert localstack.resolve_endpoint() == "http://localhost:4566"
    monkeypatch.setenv("LOCALSTACK_HOST", "ls.internal:4567")
    assert localstack.resolve_endpoint() == "http://ls.internal:4567"
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://aws-endpoint:4566")
    assert localstack.resolve_endpoint() == "http://aws-endpoint:4566"
    monkeypatch.setenv("LOCALSTACK_ENDPOINT", "http://explicit-env:4566/")
    assert localstack.resolve_endpoint() == "http://explicit-env:4566"
    assert localstack.resolve_endpoint("http://flag:1") == "http://flag:1"


def test_functions_and_layers_are_packaged_as_lambda_expects(tmp_path: Path):
    commands: list[list[str]] = []

    def fake_pip(command):
        commands.append(list(command))
        target = Path(command[command.index("--target") + 1])
        (target / "fakedep").mkdir(parents=True)
        (target / "fakedep" / "__init__.py").write_text("")

    template = load_template(REPO_ROOT / "template.yaml")
    zips = localstack.package(template, REPO_ROOT, tmp_path, fake_pip)

    functions = [k for k, r in template["Resources"].items() if r["Type"].endswith("::Function")]
    layers = [k for k, r in template["Resources"].items() if r["Type"].endswith("LayerVersion")]
    assert set(zips) == set(functions) | set(layers)
    with zipfile.ZipFile(zips["AuthorizerFunction"]) as archive:
        assert "app.py" in archive.namelist()  # the handler at the zip root
        assert not any("__pycache__" in name for name in archive.namelist())
    with zipfile.ZipFile(zips["YilianLayer"]) as archive:
        assert "python/yilian/__init__.py" in archive.namelist()  # /opt/python on Lambda
    with zipfile.ZipFile(zips["DepsLayer"]) as archive:
        assert "python/fakedep/__init__.py" in archive.namelist()
    # One build per layer with requirements (deps, imaging); a second package() with the
    # same pins reuses them.
    built = {pip[pip.index("-r") + 1]: pip for pip in commands}
    assert set(built) == {str(REPO_ROOT / "layers" / name / "requirements.txt")
                          for name in ("deps", "imaging")}  # fmt: skip
    for pip in commands:
        for flag in ("--platform", "manylinux2014_x86_64", "manylinux_2_28_x86_64",
                     "--only-binary=:all:", "--python-version", "3.12"):  # fmt: skip
            assert flag in pip
    localstack.package(template, REPO_ROOT, tmp_path, fake_pip)
    assert len(commands) == 2


def test_the_template_is_translated_for_the_deploy_bucket_without_moto_changes():
    params = load_county_params("demo")
    keys = {"AuthFunction": "AuthFunction-abc.zip"}
    prepared = prepare(load_template(REPO_ROOT / "template.yaml"), REPO_ROOT, "deploy-bkt", keys)
    expanded = translate(prepared.template, params, "cn-northwest-1")
    code = expanded["Resources"]["AuthFunction"]["Properties"]["Code"]
    assert code == {"S3Bucket": "deploy-bkt", "S3Key": "AuthFunction-abc.zip"}
    kinds = {r["Type"] for r in expanded["Resources"].values()}
    assert "AWS::ApiGateway::Stage" in kinds  # kept: only moto needs it dropped
