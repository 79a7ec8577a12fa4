"""DICOMweb of one deployment: the Lambda function behind an API Gateway REST API.

The API has one greedy ``/{proxy+}`` resource with a buffered Lambda proxy integration and
IAM (SigV4) authorization, and its stage is ``dicomweb``, the stage the local adapter uses.
Bodies larger than a Lambda payload go through S3 (docs/large-objects.md), so the function
may read and write instances and transfer objects and presign URLs of transfer objects.
Presigned URLs carry the function role's permissions, which is why the role gets only the
object prefixes it needs.

The function has no pixel layer, so that its cold start does not import numpy and the pixel
data codecs. It forwards requests that decode or encode pixel data to the DICOMweb pixel
function (``cirrus_infra.pixels``), which it names in ``CIRRUS_PIXEL_FUNCTION`` and may invoke.

CORS is the handler's (``cirrus.dicomweb.app.cors_config``): with no origins configured, the
default, every method needs SigV4 and browsers of other origins are refused. Each origin
added with ``add_cors_origins`` or the ``cors-origins`` context value goes to the function's
``CIRRUS_CORS_ORIGINS``, and OPTIONS then reaches the function without authorization,
because browsers send preflight requests without credentials.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, Final

from aws_cdk import Acknowledgment, Duration, RemovalPolicy, Stack, Validations
from aws_cdk import aws_apigateway as apigateway
from aws_cdk import aws_iam as iam
from constructs import Construct

from cirrus.access import AccessPolicy
from cirrus.config import ENV, ResourceNames
from cirrus.storage.transfers import TRANSFER_PREFIX
from cirrus_infra.lambdas import (
    WILDCARD_RESOURCE_REASON,
    FunctionSettings,
    acknowledge_runtime,
    acknowledge_wildcards,
    create_function,
    data_key_statement,
    encrypted_log_group,
    function_role,
    logical_id,
    settings_environment,
)
from cirrus_infra.layers import Layers
from cirrus_infra.network import Network
from cirrus_infra.pixels import DicomwebPixelFunction
from cirrus_infra.storage import (
    AUDIT_WRITE_ACTIONS,
    GLOBAL_SECONDARY_INDEXES,
    INGEST_PREFIX,
    Storage,
)

STAGE: Final = "dicomweb"
SERVICE: Final = "cirrus-dicomweb"
# Context key of the origins allowed to call DICOMweb from a browser, comma-separated:
# `cdk synth -c cors-origins=https://viewer.example.org`.
CORS_CONTEXT_KEY: Final = "cors-origins"
# The principals that may use DICOMweb, as a cirrus.access document, for example
# `-c 'access={"principals": {"arn:aws:iam::111122223333:role/ct": {"north": ["store"]}}}'`.
ACCESS_CONTEXT_KEY: Final = "access"
# The integration timeout of a REST API is 29 s unless a quota increase is granted, so the
# function stops a little later, when API Gateway has returned 504 already.
FUNCTION_TIMEOUT: Final = Duration.seconds(30)
# An upload is read whole and split in memory, about three times its size (uploads of at most
# 512 MiB), and a staged retrieve is held about three times as well.
FUNCTION_MEMORY_MB: Final = 3008
# Concurrent executions reserved for the function. Viewers open a study with one metadata
# request and then many frame requests in parallel, so this is sized for a few viewers at once
# plus STOW-RS. It also caps what the API can cost and load onto DynamoDB.
# The pixel function reserves as many, because each request forwarded to it keeps one
# execution of this function waiting while it runs, so it is never the one throttled.
# NOTE: reserved concurrency counts against the account's limit, which must keep 100
# unreserved. The three functions reserve 104, so an account at the default limit of 1,000
# fits them but a new account at 10 does not until the limit is raised.
CONCURRENCY: Final = 50
# Stage throttling, in requests per second and requests at once. At an estimated 0.5 s per
# request, CONCURRENCY executions serve about 100 requests per second. API Gateway then
# rejects the excess with 429, which clients retry, before Lambda throttles, because API
# Gateway reports a throttled proxy invocation as 500. The burst lets a viewer's first frame
# requests through together.
THROTTLE_RATE: Final = 100
THROTTLE_BURST: Final = 200
# Access log entries, one JSON object per request. Paths and query strings carry patient
# data, so only the resource template is logged, not the path. The principal is the IAM role
# or user that signed the request, which an audit of access needs.
ACCESS_LOG_FIELDS: Final = {
    "requestId": "$context.requestId",
    "extendedRequestId": "$context.extendedRequestId",
    "requestTimeEpoch": "$context.requestTimeEpoch",
    "httpMethod": "$context.httpMethod",
    "resourcePath": "$context.resourcePath",
    "protocol": "$context.protocol",
    "status": "$context.status",
    "responseLength": "$context.responseLength",
    "responseLatency": "$context.responseLatency",
    "integrationStatus": "$context.integration.status",
    "integrationLatency": "$context.integration.latency",
    "errorMessage": "$context.error.message",
    "sourceIp": "$context.identity.sourceIp",
    "principal": "$context.identity.userArn",
    "xrayTraceId": "$context.xrayTraceId",
}
TABLE_ACTIONS: Final = (
    "dynamodb:GetItem",
    "dynamodb:Query",
    # Also what a TransactWriteItems request needs for each item it writes.
    "dynamodb:PutItem",
    "dynamodb:UpdateItem",
    "dynamodb:DeleteItem",
)


class DicomwebApi(Construct):
    """The DICOMweb function with its role and log group, the REST API and the pixel function."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        names: ResourceNames,
        storage: Storage,
        network: Network,
        layers: Layers,
    ) -> None:
        super().__init__(scope, construct_id)
        environment = settings_environment(names, storage)
        # API Gateway's limit of 29 s bounds a forwarded request too, so the timeout is the same.
        self.pixels = DicomwebPixelFunction(
            self,
            "Pixel",
            storage=storage,
            network=network,
            layers=layers,
            service=SERVICE,
            timeout=FUNCTION_TIMEOUT,
            reserved_concurrency=CONCURRENCY,
            environment=environment,
        )
        self.log_group = encrypted_log_group(self, "FunctionLogs", storage.key)
        self.role, self.policy = function_role(
            self,
            "FunctionRole",
            description="Cirrus DICOMweb function",
            log_group=self.log_group,
            statements=self._statements(storage),
        )
        self.pixels.grant_invoke_to(self.policy)
        settings = FunctionSettings(
            package="dicomweb",
            service=SERVICE,
            memory_mb=FUNCTION_MEMORY_MB,
            timeout=FUNCTION_TIMEOUT,
            reserved_concurrency=CONCURRENCY,
            environment={
                **environment,
                ENV["pixel_function"]: self.pixels.function.function_name,
            },
        )
        self.function = create_function(
            self,
            "Function",
            settings=settings,
            layers=layers,
            network=network,
            role=self.role,
            log_group=self.log_group,
        )
        self.integration = apigateway.LambdaIntegration(self.function, proxy=True)
        self.api = self._api(storage)
        self.cors_origins: list[str] = []
        self._preflight: apigateway.Method | None = None
        self._acknowledge(storage)
        context = self.node.try_get_context(CORS_CONTEXT_KEY)
        if context:
            self.add_cors_origins([origin.strip() for origin in str(context).split(",")])

    def set_access(self, principals: dict[str, Any]) -> None:
        """Give both functions the access document of ``principals`` (see cirrus.access).

        Values may contain tokens, such as the ARNs of the viewer groups' roles, which
        CloudFormation resolves at deployment. NOTE: Lambda limits a function's environment to
        4 KB, which about twenty principals of two sites each fill.
        """
        document = Stack.of(self).to_json_string({"principals": principals})
        for function in (self.function, self.pixels.function):
            function.add_environment(ENV["access_document"], document)

    def add_cors_origins(self, origins: Sequence[str]) -> None:
        """Let browser pages of ``origins`` (scheme and host) call DICOMweb.

        The handler responds to the preflight requests and adds the CORS headers to every
        response, including its errors. NOTE: responses that API Gateway makes itself, such as
        403 for an unsigned request and 429, carry no CORS headers, so a page cannot read them.
        """
        added = [origin for origin in origins if origin]
        if not added:
            return
        self.cors_origins += added
        # The pixel function adds the CORS headers to the responses that this function passes
        # on, so it needs the origins too.
        for function in (self.function, self.pixels.function):
            function.add_environment(ENV["cors_origins"], ",".join(self.cors_origins))
        if self._preflight is None:
            # On {proxy+} under the root, CDK adds the method to the root resource as well.
            proxy = self.api.root.get_resource("{proxy+}")
            assert isinstance(proxy, apigateway.ProxyResource)
            self._preflight = proxy.add_method(
                "OPTIONS", self.integration, authorization_type=apigateway.AuthorizationType.NONE
            )
            for method in (self._preflight, self.api.root.node.find_child("OPTIONS")):
                Validations.of(method).acknowledge(
                    Acknowledgment(
                        id="AwsSolutions-APIG4",
                        reason="Browsers send CORS preflight requests without credentials, "
                        "and the function answers them without reading data.",
                    )
                )

    def _statements(self, storage: Storage) -> list[iam.PolicyStatement]:
        bucket = storage.bucket.bucket_arn
        table = storage.table.table_arn
        indexes = [f"{table}/index/{name}" for name, _, _ in GLOBAL_SECONDARY_INDEXES]
        return [
            # DELETE removes instances and metadata bundles, after an audit record. STOW-RS
            # tags each instance in its PUT, which S3 allows only with s3:PutObjectTagging.
            iam.PolicyStatement(
                actions=["s3:GetObject", "s3:PutObject", "s3:PutObjectTagging", "s3:DeleteObject"],
                resources=[f"{bucket}/{INGEST_PREFIX}*"],
            ),
            # Audit records, in a table where nothing may change or delete them.
            iam.PolicyStatement(
                actions=list(AUDIT_WRITE_ACTIONS), resources=[storage.audit_table.table_arn]
            ),
            iam.PolicyStatement(
                actions=[
                    "s3:GetObject",
                    "s3:PutObject",
                    "s3:DeleteObject",
                    "s3:AbortMultipartUpload",
                ],
                resources=[f"{bucket}/{TRANSFER_PREFIX}*"],
            ),
            # DELETE lists the objects of a study. S3 also returns 404 rather than 403 for a
            # GET of a missing key only to a role that may list the bucket.
            iam.PolicyStatement(actions=["s3:ListBucket"], resources=[bucket]),
            iam.PolicyStatement(actions=list(TABLE_ACTIONS), resources=[table]),
            # QIDO-RS searches through every global secondary index.
            iam.PolicyStatement(actions=["dynamodb:Query"], resources=indexes),
            data_key_statement(self, storage.key, ["s3", "dynamodb"]),
        ]  # fmt: skip

    def _api(self, storage: Storage) -> apigateway.RestApi:
        access_logs = encrypted_log_group(self, "AccessLogs", storage.key)
        api = apigateway.RestApi(
            self,
            "Api",
            rest_api_name=f"{Stack.of(self).stack_name}-dicomweb",
            description="Cirrus DICOMweb: QIDO-RS, WADO-RS and STOW-RS",
            endpoint_types=[apigateway.EndpointType.REGIONAL],
            # Every body passes base64-encoded, as the handler and the local adapter expect:
            # DICOMweb sends multipart/related with a type parameter, application/dicom and
            # images, so no shorter list of media types would cover them.
            binary_media_types=["*/*"],
            default_integration=self.integration,
            default_method_options=apigateway.MethodOptions(
                authorization_type=apigateway.AuthorizationType.IAM
            ),
            cloud_watch_role=True,
            cloud_watch_role_removal_policy=RemovalPolicy.RETAIN,
            # These settings apply to every method of the stage.
            deploy_options=apigateway.StageOptions(
                stage_name=STAGE,
                access_log_destination=apigateway.LogGroupLogDestination(access_logs),
                access_log_format=apigateway.AccessLogFormat.custom(json.dumps(ACCESS_LOG_FIELDS)),
                logging_level=apigateway.MethodLoggingLevel.ERROR,
                data_trace_enabled=False,
                metrics_enabled=True,
                tracing_enabled=True,
                caching_enabled=False,
                throttling_rate_limit=THROTTLE_RATE,
                throttling_burst_limit=THROTTLE_BURST,
            ),
        )
        # ANY on {proxy+} and on the root resource, both with the API's default integration.
        api.root.add_proxy(any_method=True)
        return api

    def _acknowledge(self, storage: Storage) -> None:
        bucket = logical_id(storage.bucket)
        findings = {
            f"Resource::<{bucket}.Arn>/{INGEST_PREFIX}*": "Instance keys are made from the "
            "UIDs of each stored instance.",
            f"Resource::<{bucket}.Arn>/{TRANSFER_PREFIX}*": "Transfer keys are random per request.",
            "Resource::*": WILDCARD_RESOURCE_REASON,
        }
        acknowledge_wildcards(self.policy, findings)
        acknowledge_runtime(self.function)
        Validations.of(self.function).acknowledge(
            Acknowledgment(
                id="HIPAA.Security-LambdaDLQ",
                reason="API Gateway invokes the function synchronously and returns its errors "
                "to the client, so a dead-letter queue, which receives only failed "
                "asynchronous invocations, would stay empty.",
            )
        )
        reasons = {
            "AwsSolutions-APIG2": "The proxy passes every request to the function, which "
            "validates paths, headers and bodies against PS3.18 and answers 4xx itself.",
            "AwsSolutions-APIG3": "TODO: associate a WAFv2 web ACL once the deployment has one.",
            "AwsSolutions-COG4": "Callers authenticate with SigV4 (IAM authorization), not "
            "with a Cognito user pool.",
            "AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/"
            "AmazonAPIGatewayPushToCloudWatchLogs]": "The CloudWatch role of API Gateway uses "
            "the AWS managed policy AmazonAPIGatewayPushToCloudWatchLogs, which CDK attaches.",
            "HIPAA.Security-APIGWCacheEnabledAndEncrypted": "Responses depend on the Accept "
            "header and on the index, which STOW-RS and DELETE change, so a stage cache keyed "
            "on the path would serve stale or wrong representations. Metadata is cached in S3 "
            "as versioned bundles instead (cirrus.dicomweb.bundles).",
            "HIPAA.Security-APIGWSSLEnabled": "A stage's client certificate authenticates API "
            "Gateway to HTTP backends. The only integration is the Lambda proxy, which API "
            "Gateway invokes with IAM, so no backend would check the certificate.",
        }
        for rule, reason in reasons.items():
            Validations.of(self.api).acknowledge(Acknowledgment(id=rule, reason=reason))


def read_access_context(value: object) -> dict[str, Any]:
    """Return the principals of the ``access`` context value, checked as the function checks them.

    The value is a cirrus.access document, as an object or as JSON text. Raises
    ``AccessConfigError`` (a ``ValueError``) for an invalid one.
    """
    if value is None:
        return {}
    text = value if isinstance(value, str) else json.dumps(value)
    AccessPolicy.from_json(text, source=f"context value {ACCESS_CONTEXT_KEY}")
    principals: dict[str, Any] = json.loads(text)["principals"]
    return principals
