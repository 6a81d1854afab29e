"""Apply, after CREATE_COMPLETE, the resource properties moto's CloudFormation drops.

moto creates an ``AWS::S3::Bucket`` without its notification, versioning, lifecycle, CORS and
public-access-block configuration (so S3 events never fire) and an ``AWS::DynamoDB::Table``
without its TTL and point-in-time recovery. Here each one is read from the deployed template,
its intrinsics resolved by moto's own resolver against the stack's resources, and applied
through the ordinary APIs (so the same validation as AWS applies).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

from moto.cloudformation import parsing
from moto.cloudformation.models import cloudformation_backends

ClientFactory = Callable[[str], Any]


def apply_dropped_properties(
    template: dict[str, Any], stack_name: str, account_id: str, region: str, client: ClientFactory
) -> None:
    resources_map = _resource_map(stack_name, account_id, region)
    for logical_id, resource in template["Resources"].items():
        kind = resource["Type"]
        if kind not in ("AWS::S3::Bucket", "AWS::DynamoDB::Table"):
            continue
        props = parsing.clean_json(copy.deepcopy(resource.get("Properties", {})), resources_map)
        name = resources_map[logical_id].physical_resource_id
        if kind == "AWS::S3::Bucket":
            _configure_bucket(client("s3"), name, props)
        else:
            _configure_table(client("dynamodb"), name, props)


def _resource_map(stack_name: str, account_id: str, region: str) -> Any:
    backend = cloudformation_backends[account_id][region]
    live = [
        stack
        for stack in backend.stacks.values()
        if stack.name == stack_name and stack.status in ("CREATE_COMPLETE", "UPDATE_COMPLETE")
    ]  # a deleted stack of the same name may still be listed
    if not live:
        raise LookupError(f"stack {stack_name} not found in the emulator")
    return live[-1].resource_map


def _configure_table(dynamodb: Any, name: str, props: dict[str, Any]) -> None:
    ttl = props.get("TimeToLiveSpecification")
    if ttl and ttl.get("Enabled"):
        dynamodb.update_time_to_live(
            TableName=name,
            TimeToLiveSpecification={"Enabled": True, "AttributeName": ttl["AttributeName"]},
        )
    pitr = props.get("PointInTimeRecoverySpecification", {})
    if pitr.get("PointInTimeRecoveryEnabled"):
        dynamodb.update_continuous_backups(
            TableName=name,
            PointInTimeRecoverySpecification={"PointInTimeRecoveryEnabled": True},
        )


def _configure_bucket(s3: Any, name: str, props: dict[str, Any]) -> None:
    if "VersioningConfiguration" in props:
        s3.put_bucket_versioning(
            Bucket=name,
            VersioningConfiguration={"Status": props["VersioningConfiguration"]["Status"]},
        )
    if "PublicAccessBlockConfiguration" in props:
        s3.put_public_access_block(
            Bucket=name, PublicAccessBlockConfiguration=props["PublicAccessBlockConfiguration"]
        )
    if "LifecycleConfiguration" in props:
        rules = [_lifecycle_rule(r) for r in props["LifecycleConfiguration"]["Rules"]]
        s3.put_bucket_lifecycle_configuration(Bucket=name, LifecycleConfiguration={"Rules": rules})
    if "CorsConfiguration" in props:
        rules = [_cors_rule(r) for r in props["CorsConfiguration"]["CorsRules"]]
        s3.put_bucket_cors(Bucket=name, CORSConfiguration={"CORSRules": rules})
    if "NotificationConfiguration" in props:
        s3.put_bucket_notification_configuration(
            Bucket=name,
            NotificationConfiguration=_notification(props["NotificationConfiguration"]),
            SkipDestinationValidation=True,
        )


def _notification(cfn: dict[str, Any]) -> dict[str, Any]:
    """CloudFormation's NotificationConfiguration shape → the S3 API's."""
    api: dict[str, Any] = {}
    for cfn_key, api_key, target_key, arn_key in (
        ("LambdaConfigurations", "LambdaFunctionConfigurations", "Function", "LambdaFunctionArn"),
        ("QueueConfigurations", "QueueConfigurations", "Queue", "QueueArn"),
        ("TopicConfigurations", "TopicConfigurations", "Topic", "TopicArn"),
    ):
        configs = []
        for config in cfn.get(cfn_key, []):
            entry: dict[str, Any] = {arn_key: config[target_key], "Events": [config["Event"]]}
            rules = config.get("Filter", {}).get("S3Key", {}).get("Rules")
            if rules:
                entry["Filter"] = {"Key": {"FilterRules": rules}}
            configs.append(entry)
        if configs:
            api[api_key] = configs
    if cfn.get("EventBridgeConfiguration", {}).get("EventBridgeEnabled"):
        api["EventBridgeConfiguration"] = {}
    return api


def _lifecycle_rule(cfn: dict[str, Any]) -> dict[str, Any]:
    rule: dict[str, Any] = {"Status": cfn["Status"]}
    if "Id" in cfn:
        rule["ID"] = cfn["Id"]
    prefix = cfn.get("Prefix", cfn.get("Filter", {}).get("Prefix", ""))
    rule["Filter"] = {"Prefix": prefix}
    if "ExpirationInDays" in cfn:
        rule["Expiration"] = {"Days": int(cfn["ExpirationInDays"])}
    if "ExpirationDate" in cfn:
        rule["Expiration"] = {"Date": cfn["ExpirationDate"]}
    if "NoncurrentVersionExpirationInDays" in cfn:
        days = int(cfn["NoncurrentVersionExpirationInDays"])
        rule["NoncurrentVersionExpiration"] = {"NoncurrentDays": days}
    if "AbortIncompleteMultipartUpload" in cfn:
        rule["AbortIncompleteMultipartUpload"] = cfn["AbortIncompleteMultipartUpload"]
    transitions = cfn.get("Transitions", [])
    if transitions:
        rule["Transitions"] = [
            {"Days": int(t["TransitionInDays"]), "StorageClass": t["StorageClass"]}
            for t in transitions
        ]
    return rule


def _cors_rule(cfn: dict[str, Any]) -> dict[str, Any]:
    rule = {k: cfn[k] for k in ("AllowedHeaders", "AllowedMethods", "AllowedOrigins") if k in cfn}
    if "ExposedHeaders" in cfn:
        rule["ExposeHeaders"] = cfn["ExposedHeaders"]
    if "Id" in cfn:
        rule["ID"] = cfn["Id"]
    if "MaxAge" in cfn:
        rule["MaxAgeSeconds"] = int(cfn["MaxAge"])
    return rule
