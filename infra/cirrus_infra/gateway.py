"""The DICOM gateway of one deployment: Fargate tasks behind an internal network load balancer.

Modalities reach the load balancer over the hospital's VPN or Direct Connect. It passes DICOM
(port 11112) and DICOM TLS (port 2762) to the tasks as plain TCP. The gateway terminates TLS
itself, because it applies the BCP 195 profile of PS3.15 and verifies client certificates
against its own CA certificates, which a TLS listener of the load balancer would not pass on.
The load balancer keeps the client's address, so the gateway logs the modality's address.

The task reads its settings from environment variables. The AE configuration comes from the
CDK context and is checked at synthesis, so an invalid one never deploys, and a change rolls
out as a new task definition under the deployment circuit breaker. The TLS certificate, key
and client CA certificates come from a Secrets Manager secret that the deployer fills. The
image's entry point (gateway/entrypoint.sh) writes both to files, which gateway/main.py reads.

Context keys:

- ``dicom-client-cidrs``: IPv4 ranges that may connect to the DICOM ports, a list or a
  comma-separated string; default the VPC's range;
- ``gateway-ae-config``: the AE configuration (``cirrus.gateway.aeconfig``) as an object, or
  the path of its JSON file, relative to the folder where cdk runs. Without it the gateway
  accepts no calling AE title;
- ``dicom-tls-require-client-certificate``: ``true`` to reject TLS clients without a
  certificate that the secret's CA certificates verify, default ``false``. With ``true`` and
  no CA certificates in the secret, the gateway exits at start as misconfigured;
- ``gateway-image-repository`` and ``gateway-image-tag``: an image already pushed to an ECR
  repository of the account, by repository name and tag or digest. Without them the image is
  built from gateway/Dockerfile when the app is deployed (a Docker image asset).
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from aws_cdk import (
    Acknowledgment,
    Annotations,
    Duration,
    IgnoreMode,
    RemovalPolicy,
    SecretValue,
    Stack,
    Validations,
)
from aws_cdk import aws_applicationautoscaling as appscaling
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_ecr as ecr
from aws_cdk import aws_ecr_assets as ecr_assets
from aws_cdk import aws_ecs as ecs
from aws_cdk import aws_elasticloadbalancingv2 as elbv2
from aws_cdk import aws_iam as iam
from aws_cdk import aws_logs as logs
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_secretsmanager as secretsmanager
from constructs import Construct
from pydantic import ValidationError

from cirrus.config import DEFAULT_AE_TITLE, ENV, ResourceNames
from cirrus.gateway.aeconfig import AEConfig
from cirrus.gateway.health import DEFAULT_HEALTH_PORT, HEALTH_PATH
from cirrus.gateway.limits import (
    DEFAULT_MAX_ASSOCIATIONS,
    DEFAULT_MAX_INSTANCE_BYTES,
    DEFAULT_SPOOL_BYTES,
    ENV_MAX_ASSOCIATIONS,
    ENV_MAX_INSTANCE_BYTES,
    ENV_SPOOL_BYTES,
    ENV_SPOOL_DIR,
)
from cirrus.gateway.metrics import DEFAULT_NAMESPACE
from cirrus.gateway.server import SHUTDOWN_GRACE_SECONDS
from cirrus.gateway.tls import DEFAULT_TLS_PORT
from cirrus.gateway.workers import WORKERS_ENV
from cirrus_infra.network import Network
from cirrus_infra.storage import (
    AUDIT_WRITE_ACTIONS,
    GLOBAL_SECONDARY_INDEXES,
    INGEST_PREFIX,
    Storage,
)

REPO: Final = Path(__file__).resolve().parents[2]

CLIENT_CIDRS_CONTEXT_KEY: Final = "dicom-client-cidrs"
AE_CONFIG_CONTEXT_KEY: Final = "gateway-ae-config"
REQUIRE_CLIENT_CERTIFICATE_CONTEXT_KEY: Final = "dicom-tls-require-client-certificate"
IMAGE_REPOSITORY_CONTEXT_KEY: Final = "gateway-image-repository"
IMAGE_TAG_CONTEXT_KEY: Final = "gateway-image-tag"
CONTEXT_KEYS: Final = (
    CLIENT_CIDRS_CONTEXT_KEY,
    AE_CONFIG_CONTEXT_KEY,
    REQUIRE_CLIENT_CERTIFICATE_CONTEXT_KEY,
    IMAGE_REPOSITORY_CONTEXT_KEY,
    IMAGE_TAG_CONTEXT_KEY,
)

# The ports of gateway/main.py (its default DICOM port, and the defaults of cirrus.gateway),
# which the task also sets explicitly.
DICOM_PORT: Final = 11112
TLS_PORT: Final = DEFAULT_TLS_PORT
HEALTH_PORT: Final = DEFAULT_HEALTH_PORT

CONTAINER_NAME: Final = "gateway"
# The numeric user and group of gateway/Dockerfile.
CONTAINER_USER: Final = "10001:10001"
# The volumes of gateway/Dockerfile: ECS mounts each task volume at the path of a VOLUME.
SPOOL_DIR: Final = "/var/spool/cirrus"
RUN_DIR: Final = "/run/cirrus"

# The variables that gateway/entrypoint.sh writes to files in RUN_DIR.
AE_CONFIG_JSON_ENV: Final = "CIRRUS_AE_CONFIG_JSON"
TLS_SECRET_ENV: Final = {
    "CIRRUS_TLS_CERTIFICATE_PEM": "certificate",
    "CIRRUS_TLS_KEY_PEM": "private_key",
    "CIRRUS_TLS_CA_PEM": "ca_certificates",
}

# Task size. One gateway process uses about one core (cirrus.gateway.workers), so the task
# runs one worker per vCPU. The workers' limits are per process: each serves
# MAX_ASSOCIATIONS associations and spools SPOOL_BYTES_PER_WORKER bytes.
TASK_VCPUS: Final = 2
WORKERS: Final = TASK_VCPUS
MAX_ASSOCIATIONS: Final = DEFAULT_MAX_ASSOCIATIONS
MAX_INSTANCE_BYTES: Final = DEFAULT_MAX_INSTANCE_BYTES
SPOOL_BYTES_PER_WORKER: Final = DEFAULT_SPOOL_BYTES
# Memory, from the figures of bench/gateway_memory.py in docs/benchmarks.md: about 100 MiB for
# the supervisor and 100 MiB per idle worker, plus about 25 MiB per association storing at
# once, so about 1.6 GiB with every association of both workers storing. A C-MOVE or C-GET
# keeps one instance at a time in memory, about 2.5 times its uncompressed size when it is
# transcoded, so 8 GiB leaves room for one retrieve of a MAX_INSTANCE_BYTES instance.
# NOTE: several retrieves of instances near MAX_INSTANCE_BYTES at once can exceed it.
MEMORY_MIB: Final = 8192
# Ephemeral storage contains the spool of every worker and the image, which unpacks to about
# 1 GiB (an estimate from the sizes of its wheels). The rest is a margin.
IMAGE_AND_MARGIN_GIB: Final = 8
EPHEMERAL_STORAGE_GIB: Final = WORKERS * SPOOL_BYTES_PER_WORKER // 1024**3 + IMAGE_AND_MARGIN_GIB

# Scaling. Two tasks, one per availability zone, keep the gateway up while one is replaced.
# Eight tasks take 8 * WORKERS * MAX_ASSOCIATIONS = 400 associations at once, an estimate for
# a large hospital group. The target of half the association slots per task leaves room for
# the uneven spread of connections over a task's workers, which Linux picks by a hash of the
# client's address and port.
MIN_TASKS: Final = 2
MAX_TASKS: Final = 8
FLOWS_PER_TASK_TARGET: Final = WORKERS * MAX_ASSOCIATIONS // 2
CPU_TARGET_PERCENT: Final = 60
SCALE_OUT_COOLDOWN: Final = Duration.seconds(60)
SCALE_IN_COOLDOWN: Final = Duration.seconds(300)

# Draining. ECS deregisters a task from the target groups and waits for the deregistration
# delay before it sends SIGTERM, and during the delay no new connection reaches the task.
# After SIGTERM each worker drains for SHUTDOWN_GRACE_SECONDS, waits up to 5 s for the
# associations it aborts, and the supervisor kills the workers still running 10 s after the
# drain period. The stop timeout covers that, and ECS sends SIGKILL only after it.
DEREGISTRATION_DELAY: Final = Duration.seconds(int(SHUTDOWN_GRACE_SECONDS))
STOP_TIMEOUT: Final = Duration.seconds(int(SHUTDOWN_GRACE_SECONDS) + 15)
# Workers start within 60 s (cirrus.gateway.workers), so the health check waits that long.
HEALTH_CHECK_GRACE_PERIOD: Final = Duration.seconds(60)
HEALTH_CHECK_INTERVAL: Final = Duration.seconds(10)
HEALTH_CHECK_TIMEOUT: Final = Duration.seconds(5)
HEALTH_CHECK_THRESHOLD: Final = 2

# The log group keeps the gateway's records of associations and stored instances for a year.
LOG_RETENTION: Final = logs.RetentionDays.ONE_YEAR
LOG_STREAM_PREFIX: Final = "gateway"
ACCESS_LOG_PREFIX: Final = "gateway-nlb"


@dataclass(frozen=True)
class GatewayOptions:
    """Deployment choices for the gateway, read from the CDK context (see the module's doc).

    ``client_cidrs`` None means the VPC's range. ``ae_config`` None means a configuration
    without sites, which accepts no calling AE title.
    """

    client_cidrs: tuple[str, ...] | None = None
    ae_config: Mapping[str, Any] | None = None
    require_client_certificate: bool = False
    image_repository: str | None = None
    image_tag: str | None = None

    @classmethod
    def from_context(cls, context: Mapping[str, Any]) -> GatewayOptions:
        """Read the options, or raise ``ValueError`` naming the context key of a bad value."""
        cidrs = context.get(CLIENT_CIDRS_CONTEXT_KEY)
        repository = context.get(IMAGE_REPOSITORY_CONTEXT_KEY) or None
        tag = context.get(IMAGE_TAG_CONTEXT_KEY) or None
        if (repository is None) != (tag is None):
            raise ValueError(
                f"set both {IMAGE_REPOSITORY_CONTEXT_KEY} and {IMAGE_TAG_CONTEXT_KEY}, or "
                "neither to build the image from gateway/Dockerfile"
            )
        return cls(
            client_cidrs=None if cidrs is None else _read_cidrs(cidrs),
            ae_config=_read_ae_config(context.get(AE_CONFIG_CONTEXT_KEY)),
            require_client_certificate=_read_bool(
                context.get(REQUIRE_CLIENT_CERTIFICATE_CONTEXT_KEY, False),
                REQUIRE_CLIENT_CERTIFICATE_CONTEXT_KEY,
            ),
            image_repository=None if repository is None else str(repository),
            image_tag=None if tag is None else str(tag),
        )


def _read_cidrs(value: Any) -> tuple[str, ...]:
    items = value.split(",") if isinstance(value, str) else list(value)
    cidrs = []
    for item in items:
        text = str(item).strip()
        try:
            network = ipaddress.IPv4Network(text, strict=True)
        except ValueError as exc:
            raise ValueError(
                f"{CLIENT_CIDRS_CONTEXT_KEY}: {text!r} is not an IPv4 range such as "
                f"10.20.0.0/16: {exc}"
            ) from exc
        if network.prefixlen == 0:
            raise ValueError(
                f"{CLIENT_CIDRS_CONTEXT_KEY}: {text} admits every address; give the hospital's "
                "ranges"
            )
        cidrs.append(str(network))
    if not cidrs:
        raise ValueError(f"{CLIENT_CIDRS_CONTEXT_KEY} is empty; give at least one IPv4 range")
    return tuple(cidrs)


def _read_ae_config(value: Any) -> Mapping[str, Any] | None:
    """Return the AE configuration document, checked as gateway/main.py would load it."""
    if value is None:
        return None
    source = AE_CONFIG_CONTEXT_KEY
    if isinstance(value, str):
        path = Path(value)
        source = f"{AE_CONFIG_CONTEXT_KEY} file {path}"
        try:
            value = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ValueError(f"{source} is unreadable: {exc}") from exc
    if not isinstance(value, Mapping):
        raise ValueError(f"{source} must be a JSON object or the path of a JSON file")
    try:
        _ae_config_model(value)
    except ValidationError as exc:
        raise ValueError(f"{source} is invalid: {exc}") from exc
    return dict(value)


def _ae_config_model(document: Mapping[str, Any]) -> AEConfig:
    """Validate the document with the defaults that gateway/main.py gives ``AEConfig.load``."""
    return AEConfig.model_validate({"ae_title": DEFAULT_AE_TITLE, **document})


def _read_bool(value: Any, key: str) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text not in ("true", "false"):
        raise ValueError(f"{key} {value!r} is invalid; use true or false")
    return text == "true"


class Gateway(Construct):
    """ECS cluster and Fargate service of the gateway, its load balancer, roles and logs."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        names: ResourceNames,
        storage: Storage,
        network: Network,
        options: GatewayOptions | None = None,
    ) -> None:
        super().__init__(scope, construct_id)
        if options is None:
            context = {key: self.node.try_get_context(key) for key in CONTEXT_KEYS}
            options = GatewayOptions.from_context(
                {key: value for key, value in context.items() if value is not None}
            )
        self.client_cidrs = options.client_cidrs or (network.cidr,)
        self.ae_config = self._ae_config(options)

        self.log_group = logs.LogGroup(
            self,
            "Logs",
            encryption_key=storage.key,
            retention=LOG_RETENTION,
            removal_policy=RemovalPolicy.RETAIN,
        )
        self.tls_secret = self._tls_secret(names, storage)
        self.task_role = self._task_role(storage)
        image, repository = self._image(options)
        self.execution_role = self._execution_role(storage, repository)
        self.task_definition = self._task_definition(names, storage, options, image)

        # Fargate tasks in the isolated subnets read the secret through this endpoint.
        network.vpc.add_interface_endpoint(
            "SecretsManagerEndpoint",
            service=ec2.InterfaceVpcEndpointAwsService.SECRETS_MANAGER,
            subnets=network.subnets,
            private_dns_enabled=True,
            security_groups=[network.endpoint_group],
            open=False,
        )
        self.cluster = ecs.Cluster(
            self,
            "Cluster",
            vpc=network.vpc,
            container_insights_v2=ecs.ContainerInsights.ENABLED,
        )
        self.load_balancer_security_group = network.security_group(
            "GatewayLoadBalancerGroup", "Gateway load balancer: DICOM ports from the clients"
        )
        self.security_group = network.security_group(
            "GatewayTaskGroup", "Gateway tasks: DICOM ports from the clients, health checks"
        )
        self._allow_clients()
        self.service = self._service(network)
        self.load_balancer = self._load_balancer(storage, network)
        self.dicom_target_group = self._listen(network, "Dicom", DICOM_PORT)
        self.tls_target_group = self._listen(network, "DicomTls", TLS_PORT)
        self._scale()
        self._acknowledge(storage)

    def _ae_config(self, options: GatewayOptions) -> Mapping[str, Any]:
        if options.ae_config is None:
            Annotations.of(self).add_warning_v2(
                "cirrus:gatewayAeConfigMissing",
                f"{AE_CONFIG_CONTEXT_KEY} is not set, so the gateway rejects every calling AE "
                "title. Set it to the AE configuration of the sites.",
            )
            return {"sites": {}}
        if _ae_config_model(options.ae_config).open:
            Annotations.of(self).add_warning_v2(
                "cirrus:gatewayAeConfigOpen",
                f"{AE_CONFIG_CONTEXT_KEY} is open: the gateway accepts every calling AE title "
                "that reaches it, with every permission.",
            )
        return options.ae_config

    def _tls_secret(self, names: ResourceNames, storage: Storage) -> secretsmanager.Secret:
        # Empty fields until the deployer writes the PEM texts: the entry point then starts the
        # gateway without a TLS listener. CloudFormation rewrites the value only when this
        # template value changes, so a deployment keeps what the deployer wrote.
        return secretsmanager.Secret(
            self,
            "TlsSecret",
            description=f"Cirrus {names.deployment}: DICOM TLS certificate, private key and "
            "client CA certificates of the gateway, as PEM texts",
            encryption_key=storage.key,
            secret_object_value={
                field: SecretValue.unsafe_plain_text("") for field in TLS_SECRET_ENV.values()
            },
            removal_policy=RemovalPolicy.RETAIN,
        )

    def _task_role(self, storage: Storage) -> iam.Role:
        """Create the role of the gateway's code, allowed what cirrus.gateway reads and writes.

        - C-STORE claims the SOP Instance UID: PutItem of a claim item, whose key contains
          "#SOP#", and GetItem of an existing claim. It then writes the instance under
          ``sites/`` in one PUT or a multipart upload, which it aborts on failure, and reads
          the ETag back.
        - C-FIND queries the table and its global secondary indexes.
        - C-MOVE and C-GET query and get index items and get the instances and metadata
          objects. Storage Commitment gets the claim item and the instance.
        - With ListBucket, S3 returns 404 rather than 403 for a missing object, which the
          gateway reports as no such object instance rather than as a processing failure.
        - The data key may be used only through S3 and DynamoDB, which encrypt the objects and
          the table with it.
        """
        stack = Stack.of(self)
        role = iam.Role(
            self,
            "TaskRole",
            assumed_by=iam.ServicePrincipal(
                "ecs-tasks.amazonaws.com",
                conditions={
                    "ArnLike": {"aws:SourceArn": stack.format_arn(service="ecs", resource="*")},
                    "StringEquals": {"aws:SourceAccount": stack.account},
                },
            ),
            description="Cirrus gateway tasks: instances under sites/ and the index table",
        )
        bucket = storage.bucket.bucket_arn
        table = storage.table.table_arn
        indexes = [f"{table}/index/{name}" for name, _, _ in GLOBAL_SECONDARY_INDEXES]
        statements = [
            # Each instance is tagged in its PUT, which S3 allows only with s3:PutObjectTagging.
            iam.PolicyStatement(
                actions=[
                    "s3:GetObject",
                    "s3:PutObject",
                    "s3:PutObjectTagging",
                    "s3:AbortMultipartUpload",
                ],
                resources=[f"{bucket}/{INGEST_PREFIX}*"],
            ),
            iam.PolicyStatement(actions=["s3:ListBucket"], resources=[bucket]),
            iam.PolicyStatement(actions=["dynamodb:GetItem", "dynamodb:Query"], resources=[table]),
            iam.PolicyStatement(actions=["dynamodb:Query"], resources=indexes),
            iam.PolicyStatement(
                actions=["dynamodb:PutItem"],
                resources=[table],
                conditions={"ForAllValues:StringLike": {"dynamodb:LeadingKeys": ["*#SOP#*"]}},
            ),
            # Audit records of associations, in a table where nothing may change or delete them.
            iam.PolicyStatement(
                actions=list(AUDIT_WRITE_ACTIONS), resources=[storage.audit_table.table_arn]
            ),
            iam.PolicyStatement(
                actions=["kms:Decrypt", "kms:GenerateDataKey"],
                resources=[storage.key.key_arn],
                conditions={
                    "StringEquals": {
                        "kms:ViaService": [
                            f"s3.{stack.region}.amazonaws.com",
                            f"dynamodb.{stack.region}.amazonaws.com",
                        ]
                    }
                },
            ),
        ]
        # A managed policy rather than the role's inline default policy, which the
        # HIPAA.Security rule IAMNoInlinePolicy flags.
        self.task_policy = iam.ManagedPolicy(
            self,
            "TaskPolicy",
            description="Cirrus gateway tasks: instances under sites/ and the index table",
            statements=statements,
            roles=[role],
        )
        return role

    def _execution_role(self, storage: Storage, repository: ecr.IRepository) -> iam.Role:
        """Create the role that ECS uses to start a task: image pull, logs and the secret.

        The task definition gets the role without policy updates, so the grants that CDK's ECS
        constructs would add to an inline policy are dropped, and this managed policy is all
        that the role may do. A secret encrypted with a customer managed key needs kms:Decrypt
        through Secrets Manager.
        """
        stack = Stack.of(self)
        role = iam.Role(
            self,
            "ExecutionRole",
            assumed_by=iam.ServicePrincipal("ecs-tasks.amazonaws.com"),
            description="Cirrus gateway task execution: image pull, logs and the TLS secret",
        )
        statements = [
            iam.PolicyStatement(actions=["ecr:GetAuthorizationToken"], resources=["*"]),
            iam.PolicyStatement(
                actions=[
                    "ecr:BatchCheckLayerAvailability",
                    "ecr:GetDownloadUrlForLayer",
                    "ecr:BatchGetImage",
                ],
                resources=[repository.repository_arn],
            ),
            iam.PolicyStatement(
                actions=["logs:CreateLogStream", "logs:PutLogEvents"],
                resources=[self.log_group.log_group_arn],
            ),
            iam.PolicyStatement(
                actions=["secretsmanager:GetSecretValue"],
                resources=[self.tls_secret.secret_arn],
            ),
            iam.PolicyStatement(
                actions=["kms:Decrypt"],
                resources=[storage.key.key_arn],
                conditions={
                    "StringEquals": {
                        "kms:ViaService": f"secretsmanager.{stack.region}.amazonaws.com"
                    }
                },
            ),
        ]
        self.execution_policy = iam.ManagedPolicy(
            self,
            "ExecutionPolicy",
            description="Cirrus gateway task execution: image pull, logs and the TLS secret",
            statements=statements,
            roles=[role],
        )
        return role

    def _task_definition(
        self,
        names: ResourceNames,
        storage: Storage,
        options: GatewayOptions,
        image: ecs.ContainerImage,
    ) -> ecs.FargateTaskDefinition:
        task_definition = ecs.FargateTaskDefinition(
            self,
            "TaskDefinition",
            family=f"{names.deployment}-gateway",
            cpu=TASK_VCPUS * 1024,
            memory_limit_mib=MEMORY_MIB,
            ephemeral_storage_gib=EPHEMERAL_STORAGE_GIB,
            runtime_platform=ecs.RuntimePlatform(
                cpu_architecture=ecs.CpuArchitecture.ARM64,
                operating_system_family=ecs.OperatingSystemFamily.LINUX,
            ),
            task_role=self.task_role,
            execution_role=self.execution_role.without_policy_updates(),
        )
        # Bind mounts on the task's ephemeral storage, each at a VOLUME path of the image.
        mount_points = []
        for volume, path in (("spool", SPOOL_DIR), ("run", RUN_DIR)):
            task_definition.add_volume(name=volume)
            mount_points.append(
                ecs.MountPoint(source_volume=volume, container_path=path, read_only=False)
            )
        container = task_definition.add_container(
            CONTAINER_NAME,
            image=image,
            essential=True,
            readonly_root_filesystem=True,
            user=CONTAINER_USER,
            environment=self._environment(names, storage, options),
            secrets={
                variable: ecs.Secret.from_secrets_manager(self.tls_secret, field)
                for variable, field in TLS_SECRET_ENV.items()
            },
            port_mappings=[
                ecs.PortMapping(container_port=port, protocol=ecs.Protocol.TCP, name=name)
                for name, port in (("dicom", DICOM_PORT), ("dicom-tls", TLS_PORT))
            ]
            + [ecs.PortMapping(container_port=HEALTH_PORT, name="health")],
            stop_timeout=STOP_TIMEOUT,
            # Blocking: a log record of an association or a stored instance is never dropped,
            # and the gateway waits instead when CloudWatch Logs is slow. CloudWatch Logs
            # extracts the gateway's EMF metric lines from this log group.
            logging=ecs.LogDrivers.aws_logs(
                stream_prefix=LOG_STREAM_PREFIX,
                log_group=self.log_group,
                mode=ecs.AwsLogDriverMode.BLOCKING,
            ),
        )
        container.add_mount_points(*mount_points)
        return task_definition

    def _image(self, options: GatewayOptions) -> tuple[ecs.ContainerImage, ecr.IRepository]:
        """Return the container image and the ECR repository that it is pulled from."""
        if options.image_repository is not None and options.image_tag is not None:
            repository = ecr.Repository.from_repository_name(
                self, "ImageRepository", options.image_repository
            )
            image = ecs.ContainerImage.from_ecr_repository(repository, options.image_tag)
            return image, repository
        # Synthesis only stages the build context, which the repository's .dockerignore
        # filters. `cdk deploy` builds the image with Docker and pushes it to the bootstrap
        # repository of container assets.
        asset = ecr_assets.DockerImageAsset(
            self,
            "Image",
            directory=str(REPO),
            file="gateway/Dockerfile",
            platform=ecr_assets.Platform.LINUX_ARM64,
            ignore_mode=IgnoreMode.DOCKER,
        )
        return ecs.ContainerImage.from_docker_image_asset(asset), asset.repository

    def _environment(
        self, names: ResourceNames, storage: Storage, options: GatewayOptions
    ) -> dict[str, str]:
        ae_config = self.ae_config
        environment = {
            # cirrus.config.Settings. The queue names keep their defaults: the gateway sends no
            # message, because S3 notifies the ingest queue of each stored instance.
            ENV["deployment"]: names.deployment,
            ENV["bucket"]: storage.bucket.bucket_name,
            ENV["table"]: storage.table.table_name,
            ENV["audit_table"]: storage.audit_table.table_name,
            ENV["kms_key_id"]: storage.key.key_arn,
            ENV["region"]: Stack.of(self).region,
            # gateway/main.py
            "CIRRUS_AE_TITLE": _ae_config_model(ae_config).ae_title,
            "CIRRUS_DICOM_PORT": str(DICOM_PORT),
            "CIRRUS_TLS_PORT": str(TLS_PORT),
            "CIRRUS_HEALTH_PORT": str(HEALTH_PORT),
            "CIRRUS_TLS_REQUIRE_CLIENT_CERTIFICATE": str(
                options.require_client_certificate
            ).lower(),
            "CIRRUS_METRICS_NAMESPACE": DEFAULT_NAMESPACE,
            WORKERS_ENV: str(WORKERS),
            ENV_MAX_ASSOCIATIONS: str(MAX_ASSOCIATIONS),
            ENV_MAX_INSTANCE_BYTES: str(MAX_INSTANCE_BYTES),
            ENV_SPOOL_BYTES: str(SPOOL_BYTES_PER_WORKER),
            ENV_SPOOL_DIR: SPOOL_DIR,
            "TMPDIR": SPOOL_DIR,
            # gateway/entrypoint.sh
            "CIRRUS_RUN_DIR": RUN_DIR,
            AE_CONFIG_JSON_ENV: json.dumps(ae_config, separators=(",", ":"), sort_keys=True),
        }
        return environment

    def _allow_clients(self) -> None:
        """Admit the DICOM ports from the client ranges, and the health check from the NLB.

        The target groups keep the client's address, so the tasks see the clients' addresses
        on the DICOM ports, and the load balancer's own addresses for health checks.
        """
        for cidr in self.client_cidrs:
            for port, name in ((DICOM_PORT, "DICOM"), (TLS_PORT, "DICOM TLS")):
                description = f"{name} from {cidr}"
                self.load_balancer_security_group.add_ingress_rule(
                    ec2.Peer.ipv4(cidr), ec2.Port.tcp(port), description
                )
                self.security_group.add_ingress_rule(
                    ec2.Peer.ipv4(cidr), ec2.Port.tcp(port), description
                )
        self.security_group.add_ingress_rule(
            self.load_balancer_security_group,
            ec2.Port.tcp(HEALTH_PORT),
            "Health checks from the gateway load balancer",
        )

    def _service(self, network: Network) -> ecs.FargateService:
        # NOTE: CloudFormation passes DesiredCount in each update of the service, so a
        # deployment that changes the service sets a scaled-out service back to MIN_TASKS
        # until scaling acts again.
        service = ecs.FargateService(
            self,
            "Service",
            cluster=self.cluster,
            task_definition=self.task_definition,
            desired_count=MIN_TASKS,
            vpc_subnets=network.subnets,
            security_groups=[self.security_group],
            assign_public_ip=False,
            platform_version=ecs.FargatePlatformVersion.LATEST,
            circuit_breaker=ecs.DeploymentCircuitBreaker(enable=True, rollback=True),
            # A deployment starts the new tasks before the old ones drain.
            min_healthy_percent=100,
            max_healthy_percent=200,
            health_check_grace_period=HEALTH_CHECK_GRACE_PERIOD,
            enable_execute_command=False,
            enable_ecs_managed_tags=True,
            propagate_tags=ecs.PropagatedTagSource.SERVICE,
        )
        # Tasks start only once the roles may pull the image, read the secret and log.
        service.node.add_dependency(self.task_policy, self.execution_policy)
        return service

    def _load_balancer(self, storage: Storage, network: Network) -> elbv2.NetworkLoadBalancer:
        load_balancer = elbv2.NetworkLoadBalancer(
            self,
            "LoadBalancer",
            vpc=network.vpc,
            vpc_subnets=network.subnets,
            internet_facing=False,
            cross_zone_enabled=True,
            deletion_protection=True,
            security_groups=[self.load_balancer_security_group],
        )
        self._log_access(load_balancer, storage.access_log_bucket)
        return load_balancer

    def _log_access(self, load_balancer: elbv2.NetworkLoadBalancer, bucket: s3.IBucket) -> None:
        """Send the access logs to ``bucket``, which log delivery may write, as for flow logs.

        ``log_access_logs`` of CDK also grants the Elastic Load Balancing account of the region,
        which application load balancers need, and so needs a stack with a region.
        NOTE: a network load balancer writes access log entries for TLS listeners only, so these
        TCP listeners leave none. The VPC's flow logs record the connections.
        """
        stack = Stack.of(self)
        load_balancer.set_attribute("access_logs.s3.enabled", "true")
        load_balancer.set_attribute("access_logs.s3.bucket", bucket.bucket_name)
        load_balancer.set_attribute("access_logs.s3.prefix", ACCESS_LOG_PREFIX)
        delivery = iam.ServicePrincipal("delivery.logs.amazonaws.com")
        from_this_account = {
            "StringEquals": {"aws:SourceAccount": stack.account},
            "ArnLike": {"aws:SourceArn": stack.format_arn(service="logs", resource="*")},
        }
        bucket.add_to_resource_policy(
            iam.PolicyStatement(
                actions=["s3:PutObject"],
                principals=[delivery],
                resources=[
                    bucket.arn_for_objects(f"{ACCESS_LOG_PREFIX}/AWSLogs/{stack.account}/*")
                ],
                conditions={
                    "StringEquals": {
                        "s3:x-amz-acl": "bucket-owner-full-control",
                        "aws:SourceAccount": stack.account,
                    },
                    "ArnLike": from_this_account["ArnLike"],
                },
            )
        )
        bucket.add_to_resource_policy(
            iam.PolicyStatement(
                actions=["s3:GetBucketAcl"],
                principals=[delivery],
                resources=[bucket.bucket_arn],
                conditions=from_this_account,
            )
        )
        # The load balancer checks that it may write to the bucket when logging is turned on.
        if bucket.policy is not None:
            load_balancer.node.add_dependency(bucket.policy)

    def _listen(self, network: Network, name: str, port: int) -> elbv2.NetworkTargetGroup:
        """Add a TCP listener on ``port`` that forwards to the tasks' ``port``."""
        target_group = elbv2.NetworkTargetGroup(
            self,
            f"{name}Targets",
            vpc=network.vpc,
            port=port,
            protocol=elbv2.Protocol.TCP,
            target_type=elbv2.TargetType.IP,
            targets=[
                self.service.load_balancer_target(
                    container_name=CONTAINER_NAME, container_port=port
                )
            ],
            preserve_client_ip=True,
            deregistration_delay=DEREGISTRATION_DELAY,
            connection_termination=False,
            health_check=elbv2.HealthCheck(
                protocol=elbv2.Protocol.HTTP,
                port=str(HEALTH_PORT),
                path=HEALTH_PATH,
                healthy_http_codes="200",
                interval=HEALTH_CHECK_INTERVAL,
                timeout=HEALTH_CHECK_TIMEOUT,
                healthy_threshold_count=HEALTH_CHECK_THRESHOLD,
                unhealthy_threshold_count=HEALTH_CHECK_THRESHOLD,
            ),
        )
        self.load_balancer.add_listener(
            f"{name}Listener",
            port=port,
            protocol=elbv2.Protocol.TCP,
            default_target_groups=[target_group],
        )
        return target_group

    def _scale(self) -> None:
        """Scale the service on CPU and on connections per task.

        Application Auto Scaling scales out when either metric is above its target, and scales
        in only when both allow it.
        """
        scaling = self.service.auto_scale_task_count(min_capacity=MIN_TASKS, max_capacity=MAX_TASKS)
        scaling.scale_on_cpu_utilization(
            "CpuScaling",
            target_utilization_percent=CPU_TARGET_PERCENT,
            scale_in_cooldown=SCALE_IN_COOLDOWN,
            scale_out_cooldown=SCALE_OUT_COOLDOWN,
        )
        target = scaling.node.find_child("Target")
        assert isinstance(target, appscaling.ScalableTarget)
        self._scale_on_connections(target)

    def _scale_on_connections(self, target: appscaling.ScalableTarget) -> None:
        """Track the load balancer's ActiveFlowCount, both listeners, per running task.

        CDK's target tracking takes a single metric, so the policy is a CloudFormation resource
        with metric math. Container Insights counts the running tasks.
        """
        policy = appscaling.CfnScalingPolicy
        dimension = policy.TargetTrackingMetricDimensionProperty
        flows = policy.TargetTrackingMetricStatProperty(
            stat="Average",
            metric=policy.TargetTrackingMetricProperty(
                namespace="AWS/NetworkELB",
                metric_name="ActiveFlowCount",
                dimensions=[
                    dimension(name="LoadBalancer", value=self.load_balancer.load_balancer_full_name)
                ],
            ),
        )
        tasks = policy.TargetTrackingMetricStatProperty(
            stat="Average",
            metric=policy.TargetTrackingMetricProperty(
                namespace="ECS/ContainerInsights",
                metric_name="RunningTaskCount",
                dimensions=[
                    dimension(name="ClusterName", value=self.cluster.cluster_name),
                    dimension(name="ServiceName", value=self.service.service_name),
                ],
            ),
        )
        queries = [
            policy.TargetTrackingMetricDataQueryProperty(
                id="flows", metric_stat=flows, return_data=False
            ),
            policy.TargetTrackingMetricDataQueryProperty(
                id="tasks", metric_stat=tasks, return_data=False
            ),
            policy.TargetTrackingMetricDataQueryProperty(
                id="flows_per_task",
                expression="flows / tasks",
                label="Connections per gateway task",
                return_data=True,
            ),
        ]
        configuration = policy.TargetTrackingScalingPolicyConfigurationProperty(
            target_value=FLOWS_PER_TASK_TARGET,
            scale_in_cooldown=SCALE_IN_COOLDOWN.to_seconds(),
            scale_out_cooldown=SCALE_OUT_COOLDOWN.to_seconds(),
            customized_metric_specification=policy.CustomizedMetricSpecificationProperty(
                metrics=queries
            ),
        )
        policy(
            self,
            "FlowScaling",
            policy_name=f"{Stack.of(self).stack_name}-gateway-flows-per-task",
            policy_type="TargetTrackingScaling",
            scaling_target_id=target.scalable_target_id,
            target_tracking_scaling_policy_configuration=configuration,
        )

    def _acknowledge(self, storage: Storage) -> None:
        bucket = _logical(storage.bucket)
        task_policy = {
            f"AwsSolutions-IAM5[Resource::<{bucket}.Arn>/{INGEST_PREFIX}*]": "Instance keys are "
            "made from the site and the UIDs of each instance that the gateway stores or reads.",
        }
        execution_policy = {
            "AwsSolutions-IAM5[Resource::*]": "ecr:GetAuthorizationToken, which the image pull "
            "needs, applies to resource * only.",
        }
        task_definition = {
            "AwsSolutions-ECS2": "The variables are resource names, ports, limits and the AE "
            "configuration. The TLS certificate and key come from Secrets Manager as ECS "
            "secrets.",
        }
        rotation = (
            "The secret contains a TLS certificate and its key, which the deployer replaces "
            "before the certificate expires. Secrets Manager has no rotation function for them."
        )
        secret = {
            "AwsSolutions-SMG4": rotation,
            "HIPAA.Security-SecretsManagerRotationEnabled": rotation,
        }
        listener = {
            "HIPAA.Security-ELBv2ACMCertificateRequired": "The listener passes TCP to the "
            "gateway, which terminates DICOM TLS on port 2762 with the certificate of the TLS "
            "secret, so that it can verify client certificates. Port 11112 serves DICOM "
            "without TLS to the client ranges only, for modalities that do not support TLS.",
        }
        for construct, reasons in (
            (self.task_policy, task_policy),
            (self.execution_policy, execution_policy),
            (self.task_definition, task_definition),
            (self.tls_secret, secret),
            (self.load_balancer.node.find_child("DicomListener"), listener),
            (self.load_balancer.node.find_child("DicomTlsListener"), listener),
        ):
            for rule, reason in reasons.items():
                Validations.of(construct).acknowledge(Acknowledgment(id=rule, reason=reason))


def _logical(construct: Construct) -> str:
    """Return the logical id of the CloudFormation resource of an L2 construct."""
    child = construct.node.default_child
    assert child is not None
    return str(Stack.of(construct).get_logical_id(child))  # type: ignore[arg-type]
