"""The DICOMweb pixel function: the DICOMweb handler with the pixel layer.

pydicom 3.0.2 imports numpy and every installed pixel data plugin when it is imported, which
adds their import time to each cold start of a function that has them. The DICOMweb function
therefore has no pixel layer, and it forwards each request that needs pixel data decoded or
encoded to this function, which runs the same code and handler with the pixel layer. The
DICOMweb function sends the whole API Gateway event in a synchronous invocation and returns
this function's response.

API Gateway does not invoke this function. It only receives GET and HEAD retrieve requests
(instances, series, studies, frames, rendered images and thumbnails), so its role reads
instance objects and the index, and writes only staged responses, which it presigns, and
audit records. It cannot write or delete instances or index records, or read STOW-RS uploads.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from aws_cdk import Acknowledgment, Duration, Validations
from aws_cdk import aws_iam as iam
from constructs import Construct

from cirrus.dicomweb.delivery import RESPONSES_KIND
from cirrus.lambda_metrics import REQUEST_METRICS_VARIABLE
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
)
from cirrus_infra.layers import Layers
from cirrus_infra.network import Network
from cirrus_infra.storage import AUDIT_WRITE_ACTIONS, INGEST_PREFIX, Storage

# The DICOMweb function's 3,008 MB are sized for about three copies of a staged retrieve.
# Decoding adds the pixel data of the instance being transcoded or rendered: a transcode peaks
# at about 2.5 copies of its uncompressed Pixel Data (bench/transcode_memory.py, recorded in
# docs/benchmarks.md). 4,096 MB leave about 1 GB for that, an instance of about 400 MB
# uncompressed, and give the codecs 2.3 vCPUs instead of 1.7 (Lambda allots one vCPU per
# 1,769 MB). NOTE: an estimate, not measured on Lambda. Larger multi-frame instances may need
# more.
FUNCTION_MEMORY_MB: Final = 4096
TABLE_ACTIONS: Final = ("dynamodb:GetItem", "dynamodb:Query")
# Staged responses only: transfers/sites/{site}/responses/{id} (cirrus.storage.transfers).
RESPONSES_PATTERN: Final = f"{TRANSFER_PREFIX}sites/*/{RESPONSES_KIND}/*"


class DicomwebPixelFunction(Construct):
    """The DICOMweb pixel function, its role and its log group."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        storage: Storage,
        network: Network,
        layers: Layers,
        service: str,
        timeout: Duration,
        reserved_concurrency: int,
        environment: Mapping[str, str],
    ) -> None:
        """Create the function with the DICOMweb function's ``service``, timeout and settings.

        ``environment`` is the DICOMweb function's, without the name of this function.
        """
        super().__init__(scope, construct_id)
        self.log_group = encrypted_log_group(self, "FunctionLogs", storage.key)
        self.role, self.policy = function_role(
            self,
            "FunctionRole",
            description="Cirrus DICOMweb pixel function",
            log_group=self.log_group,
            statements=self._statements(storage),
        )
        settings = FunctionSettings(
            package="dicomweb",
            service=service,
            memory_mb=FUNCTION_MEMORY_MB,
            timeout=timeout,
            reserved_concurrency=reserved_concurrency,
            # The DICOMweb function counts the requests that it forwards here.
            environment={**environment, REQUEST_METRICS_VARIABLE: "false"},
            pixels=True,
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
        self._acknowledge(storage)

    def grant_invoke_to(self, policy: iam.ManagedPolicy) -> None:
        """Let the role of ``policy`` invoke this function, and no other function."""
        policy.add_statements(
            iam.PolicyStatement(
                actions=["lambda:InvokeFunction"], resources=[self.function.function_arn]
            )
        )

    def _statements(self, storage: Storage) -> list[iam.PolicyStatement]:
        bucket = storage.bucket.bucket_arn
        return [
            # Instances, and metadata that is too large for its index record.
            iam.PolicyStatement(actions=["s3:GetObject"], resources=[f"{bucket}/{INGEST_PREFIX}*"]),
            # Audit records (cirrus.audit), as the DICOMweb function writes them, in a table
            # where nothing may change or delete them. It can read an item only by its key.
            iam.PolicyStatement(
                actions=list(AUDIT_WRITE_ACTIONS), resources=[storage.audit_table.table_arn]
            ),
            # Large responses are written in parts, and a failed upload is aborted. Clients
            # read them through URLs presigned with this role.
            iam.PolicyStatement(
                actions=["s3:GetObject", "s3:PutObject", "s3:AbortMultipartUpload"],
                resources=[f"{bucket}/{RESPONSES_PATTERN}"],
            ),
            # S3 returns 404 rather than 403 for a GET of a missing key only to a role that may
            # list the bucket, and an instance deleted during a retrieve must read as missing.
            iam.PolicyStatement(actions=["s3:ListBucket"], resources=[bucket]),
            iam.PolicyStatement(actions=list(TABLE_ACTIONS), resources=[storage.table.table_arn]),
            data_key_statement(self, storage.key, ["s3", "dynamodb"]),
        ]

    def _acknowledge(self, storage: Storage) -> None:
        bucket = logical_id(storage.bucket)
        findings = {
            f"Resource::<{bucket}.Arn>/{INGEST_PREFIX}*": "Instance keys are made from the "
            "UIDs of each stored instance.",
            f"Resource::<{bucket}.Arn>/{RESPONSES_PATTERN}": "Staged response keys are made "
            "from the site and a random id per request.",
            "Resource::*": WILDCARD_RESOURCE_REASON,
        }
        acknowledge_wildcards(self.policy, findings)
        acknowledge_runtime(self.function)
        Validations.of(self.function).acknowledge(
            Acknowledgment(
                id="HIPAA.Security-LambdaDLQ",
                reason="The DICOMweb function invokes this function synchronously and returns "
                "its errors to the client, so a dead-letter queue, which receives only failed "
                "asynchronous invocations, would stay empty.",
            )
        )
