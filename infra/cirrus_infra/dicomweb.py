"""DICOMweb of one deployment: the Lambda function behind an API Gateway REST API.

The API has one greedy ``/{proxy+}`` resource with a buffered Lambda proxy integration and
IAM (SigV4) authorization, and its stage is ``dicomweb``, the stage the local adapter uses.
Bodies larger than a Lambda payload go through S3 (docs/large-objects.md), so the function
may read and write instances and transfer objects and presign URLs of transfer objects.
Presigned URLs carry the function role's permissions, which is why the role gets only the
object prefixes it needs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

from aws_cdk import Acknowledgment, Duration, RemovalPolicy, Stack, Validations
from aws_cdk import aws_apigateway as apigateway
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from constructs import Construct

from cirrus.audit import AUDIT_PREFIX
from cirrus.config import ENV, ResourceNames
from cirrus.storage.transfers import TRANSFER_PREFIX
from cirrus_infra.storage import INGEST_PREFIX, Storage

REPO: Final = Path(__file__).resolve().parents[2]
STAGE: Final = "dicomweb"
# The integration timeout of a REST API is 29 s unless a quota increase is granted, so the
# function stops a little later, when API Gateway has returned 504 already.
FUNCTION_TIMEOUT: Final = Duration.seconds(30)
# An upload is read whole and split in memory, about three times its size (uploads of at most
# 512 MiB), and a staged retrieve is held about three times as well.
FUNCTION_MEMORY_MB: Final = 3008
_ASSET_EXCLUDES: Final = ["**/__pycache__", "**/*.pyc"]


def _logical(construct: Construct) -> str:
    """Return the logical id of the CloudFormation resource of an L2 construct."""
    child = construct.node.default_child
    assert child is not None
    return str(Stack.of(construct).get_logical_id(child))  # type: ignore[arg-type]


class DicomwebApi(Construct):
    """The DICOMweb function, its role and log group, and the REST API in front of it."""

    def __init__(
        self, scope: Construct, construct_id: str, *, names: ResourceNames, storage: Storage
    ) -> None:
        super().__init__(scope, construct_id)
        self.log_group = logs.LogGroup(
            self,
            "FunctionLogs",
            retention=logs.RetentionDays.THREE_MONTHS,
            removal_policy=RemovalPolicy.RETAIN,
        )
        self.role = self._role(storage)
        self.function = self._function(names, storage)
        self.api = self._api()

    def _role(self, storage: Storage) -> iam.Role:
        role = iam.Role(
            self,
            "FunctionRole",
            assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"),
            description="Cirrus DICOMweb function",
        )
        bucket = storage.bucket.bucket_arn
        statements = [
            iam.PolicyStatement(
                actions=["logs:CreateLogStream", "logs:PutLogEvents"],
                resources=[f"{self.log_group.log_group_arn}"],
            ),
            # DELETE removes instances and metadata bundles, after an audit record.
            iam.PolicyStatement(
                actions=["s3:GetObject", "s3:PutObject", "s3:DeleteObject"],
                resources=[f"{bucket}/{INGEST_PREFIX}*"],
            ),
            iam.PolicyStatement(actions=["s3:PutObject"], resources=[f"{bucket}/{AUDIT_PREFIX}*"]),
            iam.PolicyStatement(
                actions=[
                    "s3:GetObject",
                    "s3:PutObject",
                    "s3:DeleteObject",
                    "s3:AbortMultipartUpload",
                ],
                resources=[f"{bucket}/{TRANSFER_PREFIX}*"],
            ),
            iam.PolicyStatement(actions=["s3:ListBucket"], resources=[bucket]),
        ]  # fmt: skip
        for statement in statements:
            role.add_to_policy(statement)
        storage.key.grant_encrypt_decrypt(role)
        storage.table.grant_read_write_data(role)
        reasons = {
            f"Resource::<{_logical(storage.bucket)}.Arn>/{INGEST_PREFIX}*": "Instance keys are "
            "made from the UIDs of each stored instance.",
            f"Resource::<{_logical(storage.bucket)}.Arn>/{TRANSFER_PREFIX}*": "Transfer keys "
            "are random per request.",
            f"Resource::<{_logical(storage.bucket)}.Arn>/{AUDIT_PREFIX}*": "Audit keys are made "
            "from the time and a random id of each record.",
            f"Resource::<{_logical(storage.table)}.Arn>/index/*": "Queries use every global "
            "secondary index of the index table.",
            "Action::kms:GenerateDataKey*": "grant_encrypt_decrypt of CDK: SSE-KMS needs the "
            "data key actions.",
            "Action::kms:ReEncrypt*": "grant_encrypt_decrypt of CDK: SSE-KMS needs the data key "
            "actions.",
            "Resource::*": "X-Ray accepts trace segments only on resource *.",
        }
        for finding, reason in reasons.items():
            Validations.of(role).acknowledge(
                Acknowledgment(id=f"AwsSolutions-IAM5[{finding}]", reason=reason)
            )
        return role

    def _function(self, names: ResourceNames, storage: Storage) -> lambda_.Function:
        shared_layer = lambda_.LayerVersion(
            self,
            "SharedLayer",
            code=lambda_.Code.from_asset(str(REPO / "layers" / "shared"), exclude=_ASSET_EXCLUDES),
            compatible_runtimes=[lambda_.Runtime.PYTHON_3_14],
            description="Cirrus domain package",
        )
        # TODO: a layer with the packages of layers/deps/requirements.txt, built for ARM64.
        environment = {
            ENV["deployment"]: names.deployment,
            ENV["bucket"]: storage.bucket.bucket_name,
            ENV["table"]: storage.table.table_name,
            ENV["ingest_queue"]: storage.ingest_queue.queue_name,
            ENV["dead_letter_queue"]: storage.dead_letter_queue.queue_name,
            ENV["kms_key_id"]: storage.key.key_arn,
            "POWERTOOLS_SERVICE_NAME": "cirrus-dicomweb",
        }
        return lambda_.Function(
            self,
            "Function",
            runtime=lambda_.Runtime.PYTHON_3_14,
            architecture=lambda_.Architecture.ARM_64,
            handler="dicomweb.handler.lambda_handler",
            code=lambda_.Code.from_asset(str(REPO / "functions"), exclude=_ASSET_EXCLUDES),
            layers=[shared_layer],
            memory_size=FUNCTION_MEMORY_MB,
            timeout=FUNCTION_TIMEOUT,
            role=self.role,
            log_group=self.log_group,
            environment=environment,
            tracing=lambda_.Tracing.ACTIVE,
        )

    def _api(self) -> apigateway.RestApi:
        access_logs = logs.LogGroup(
            self,
            "AccessLogs",
            retention=logs.RetentionDays.THREE_MONTHS,
            removal_policy=RemovalPolicy.RETAIN,
        )
        api = apigateway.RestApi(
            self,
            "Api",
            rest_api_name=f"{Stack.of(self).stack_name}-dicomweb",
            description="Cirrus DICOMweb: QIDO-RS, WADO-RS and STOW-RS",
            endpoint_types=[apigateway.EndpointType.REGIONAL],
            # Every body passes base64-encoded, as the handler and the local adapter expect.
            binary_media_types=["*/*"],
            default_integration=apigateway.LambdaIntegration(self.function, proxy=True),
            default_method_options=apigateway.MethodOptions(
                authorization_type=apigateway.AuthorizationType.IAM
            ),
            cloud_watch_role=True,
            cloud_watch_role_removal_policy=RemovalPolicy.RETAIN,
            deploy_options=apigateway.StageOptions(
                stage_name=STAGE,
                access_log_destination=apigateway.LogGroupLogDestination(access_logs),
                access_log_format=apigateway.AccessLogFormat.json_with_standard_fields(
                    caller=False, http_method=True, ip=True, protocol=True,
                    request_time=True, resource_path=True, response_length=True,
                    status=True, user=False,
                ),
                logging_level=apigateway.MethodLoggingLevel.ERROR,
                data_trace_enabled=False,
                tracing_enabled=True,
            ),
        )  # fmt: skip
        # ANY on {proxy+} and on the root resource, both with the API's default integration.
        api.root.add_proxy(any_method=True)
        self._acknowledge_api_findings(api)
        return api

    def _acknowledge_api_findings(self, api: apigateway.RestApi) -> None:
        reasons = {
            "AwsSolutions-APIG2": "The proxy passes every request to the function, which "
            "validates paths, headers and bodies against PS3.18 and answers 4xx itself.",
            "AwsSolutions-APIG3": "TODO: associate a WAFv2 web ACL once the deployment has one.",
            "AwsSolutions-COG4": "Callers authenticate with SigV4 (IAM authorization), not "
            "with a Cognito user pool.",
            "AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/"
            "AmazonAPIGatewayPushToCloudWatchLogs]": "The CloudWatch role of API Gateway uses "
            "the AWS managed policy AmazonAPIGatewayPushToCloudWatchLogs, which CDK attaches.",
        }
        for rule, reason in reasons.items():
            Validations.of(api).acknowledge(Acknowledgment(id=rule, reason=reason))
