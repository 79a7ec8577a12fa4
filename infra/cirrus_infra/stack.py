"""The Cirrus stack of one deployment, and the CDK app that contains it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aws_cdk import App, CfnOutput, Stack, Validations
from cdk_nag import AwsSolutionsChecks, HIPAASecurityChecks
from constructs import Construct

from cirrus.config import DEFAULT_DEPLOYMENT, DEFAULT_STABLE_AFTER_SECONDS, ResourceNames
from cirrus_infra.dicomweb import ACCESS_CONTEXT_KEY, DicomwebApi, read_access_context
from cirrus_infra.events import STABLE_AFTER_CONTEXT_KEY, Events
from cirrus_infra.gateway import DICOM_PORT, MIN_TASKS, TLS_PORT, Gateway
from cirrus_infra.ingest import IngestFunction
from cirrus_infra.layers import Layers
from cirrus_infra.monitoring import Monitoring
from cirrus_infra.network import DEFAULT_CIDR, Network
from cirrus_infra.retention import RetentionSchedule
from cirrus_infra.storage import ArchiveOptions, Storage
from cirrus_infra.viewer import Viewer

# Context key that selects the deployment: `cdk synth -c deployment=cirrus-dev`.
DEPLOYMENT_CONTEXT_KEY = "deployment"


class CirrusStack(Stack):
    """All resources of one deployment, with one construct per component."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        names: ResourceNames,
        archive: ArchiveOptions | None = None,
        vpc_cidr: str = DEFAULT_CIDR,
        **kwargs: Any,
    ) -> None:
        super().__init__(scope, construct_id, **kwargs)
        self.names = names
        self.storage = Storage(self, "Storage", names=names, options=archive)
        self.network = Network(
            self, "Network", log_bucket=self.storage.access_log_bucket, cidr=vpc_cidr
        )
        self.layers = Layers(self, "Layers")
        self.dicomweb = DicomwebApi(
            self,
            "Dicomweb",
            names=names,
            storage=self.storage,
            network=self.network,
            layers=self.layers,
        )
        self.ingest = IngestFunction(
            self,
            "Ingest",
            names=names,
            storage=self.storage,
            network=self.network,
            layers=self.layers,
        )
        self.retention = self._retention(names)
        self.gateway = Gateway(
            self, "Gateway", names=names, storage=self.storage, network=self.network
        )
        self.viewer = Viewer(
            self, "Viewer", names=names, storage=self.storage, api=self.dicomweb.api
        )
        # The viewer's pages call DICOMweb from the browser, with the roles of their groups.
        self.dicomweb.add_cors_origins([self.viewer.url])
        configured = read_access_context(self.node.try_get_context(ACCESS_CONTEXT_KEY))
        self.dicomweb.set_access({**configured, **self.viewer.access_grants()})
        self.monitoring = Monitoring(
            self, "Monitoring", names=names, storage=self.storage, api=self.dicomweb.api
        )
        self.monitoring.add_function(self.dicomweb.function, "dicomweb")
        self.monitoring.add_function(self.dicomweb.pixels.function, "dicomweb-pixel")
        self.monitoring.add_function(self.ingest.function, "ingest")
        if self.retention is not None:
            self.monitoring.add_function(self.retention.function, "retention")
        self.monitoring.add_gateway(
            self.gateway.service, self.gateway.dicom_target_group, desired_count=MIN_TASKS
        )
        self.events = Events(
            self,
            "Events",
            names=names,
            storage=self.storage,
            network=self.network,
            layers=self.layers,
            stable_after_seconds=int(
                self.node.try_get_context(STABLE_AFTER_CONTEXT_KEY) or DEFAULT_STABLE_AFTER_SECONDS
            ),
        )
        self.events.connect_ingest(self.ingest.function, self.ingest.policy)
        self.events.connect_dicomweb(self.dicomweb.function, self.dicomweb.policy)
        self.events.connect_gateway(self.gateway.task_policy)
        if self.retention is not None:
            self.events.connect_retention(self.retention.function, self.retention.policy)
        self.events.add_alarms(
            self.monitoring.topic,
            [
                self.ingest.log_group,
                self.dicomweb.log_group,
                self.events.log_group,
                self.gateway.log_group,
            ],
        )
        self.monitoring.add_function(self.events.function, "stable")

        CfnOutput(self, "BucketName", value=self.storage.bucket.bucket_name)
        CfnOutput(self, "TableName", value=self.storage.table.table_name)
        CfnOutput(self, "IngestQueueUrl", value=self.storage.ingest_queue.queue_url)
        CfnOutput(self, "KeyArn", value=self.storage.key.key_arn)
        CfnOutput(self, "DicomwebUrl", value=self.dicomweb.api.url)
        CfnOutput(self, "IngestFunctionName", value=self.ingest.function.function_name)
        CfnOutput(self, "GatewayDnsName", value=self.gateway.load_balancer.load_balancer_dns_name)
        CfnOutput(self, "GatewayDicomPort", value=str(DICOM_PORT))
        CfnOutput(self, "GatewayTlsPort", value=str(TLS_PORT))
        CfnOutput(self, "GatewayTlsSecretArn", value=self.gateway.tls_secret.secret_arn)
        CfnOutput(self, "ViewerBucketName", value=self.viewer.bucket.bucket_name)
        CfnOutput(self, "ViewerDomainName", value=self.viewer.distribution.distribution_domain_name)
        CfnOutput(self, "ViewerUrl", value=f"{self.viewer.url}/")
        CfnOutput(self, "ViewerUserPoolId", value=self.viewer.user_pool.user_pool_id)
        CfnOutput(self, "ViewerClientId", value=self.viewer.client.user_pool_client_id)
        CfnOutput(self, "AlarmTopicArn", value=self.monitoring.topic.topic_arn)
        CfnOutput(self, "EventBusName", value=self.events.bus.event_bus_name)
        CfnOutput(self, "ChangesTableName", value=self.events.table.table_name)

    def _retention(self, names: ResourceNames) -> RetentionSchedule | None:
        """Return the daily retention function when the lifecycle rules give a retention."""
        rules = self.storage.options.lifecycle_rules
        if rules is None or not any(rule.has_retention for rule in rules.rules):
            return None
        return RetentionSchedule(
            self,
            "Retention",
            names=names,
            storage=self.storage,
            network=self.network,
            layers=self.layers,
            rules=rules,
        )


def build_app(
    context: Mapping[str, Any] | None = None, *, outdir: str | None = None
) -> tuple[App, CirrusStack]:
    """Build the app with the stack of the deployment named in the context.

    cdk-nag's AwsSolutions and HIPAA Security checks run at synthesis, and any finding that
    the code does not acknowledge with a reason fails it.
    """
    app = App(context=dict(context or {}), outdir=outdir)
    deployment = app.node.try_get_context(DEPLOYMENT_CONTEXT_KEY) or DEFAULT_DEPLOYMENT
    names = ResourceNames(deployment=deployment)
    archive_keys = ("archive-tiering", "archive-object-lock", "archive-replica", "lifecycle-rules")
    archive = ArchiveOptions.from_context(
        {key: app.node.try_get_context(key) for key in archive_keys}
    )
    stack = CirrusStack(
        app,
        "Cirrus",
        names=names,
        archive=archive,
        vpc_cidr=app.node.try_get_context("vpc-cidr") or DEFAULT_CIDR,
        stack_name=names.deployment,
        description=f"Cirrus PACS, deployment {names.deployment}",
    )
    Validations.of(app).add_plugins(AwsSolutionsChecks(app), HIPAASecurityChecks(app))
    return app, stack
