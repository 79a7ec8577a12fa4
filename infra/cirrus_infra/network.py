"""The private network of one deployment: the gateway tasks and the Lambda functions run here.

The VPC has isolated subnets only: no internet gateway and no NAT gateway. Every AWS service
that the gateway and the functions call has an endpoint in the VPC, gateway endpoints for S3
and DynamoDB and interface endpoints for the others, so their traffic never leaves AWS's
network. Modalities reach the gateway's internal load balancer over the hospital's
site-to-site VPN or Direct Connect, which the deployer attaches to this VPC.
"""

from __future__ import annotations

from typing import Final

from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_s3 as s3
from constructs import Construct

# A /16 leaves room for peering with a hospital network; deployers whose ranges overlap set
# the `vpc-cidr` context value.
DEFAULT_CIDR: Final = "10.40.0.0/16"
AVAILABILITY_ZONES: Final = 2
SUBNET_MASK: Final = 22
# The interface endpoints: KMS (SSE-KMS and SQS encryption), SQS (ingest queue), CloudWatch
# Logs (function and task logs, EMF metrics), ECR and its Docker registry (the gateway image;
# the layers come through the S3 endpoint), X-Ray (function traces), and Lambda (the DICOMweb
# function invokes the pixel function).
INTERFACE_SERVICES: Final = (
    ("Kms", ec2.InterfaceVpcEndpointAwsService.KMS),
    ("Sqs", ec2.InterfaceVpcEndpointAwsService.SQS),
    ("Logs", ec2.InterfaceVpcEndpointAwsService.CLOUDWATCH_LOGS),
    ("Ecr", ec2.InterfaceVpcEndpointAwsService.ECR),
    ("EcrDocker", ec2.InterfaceVpcEndpointAwsService.ECR_DOCKER),
    ("XRay", ec2.InterfaceVpcEndpointAwsService.XRAY),
    ("Lambda", ec2.InterfaceVpcEndpointAwsService.LAMBDA_),
)
FLOW_LOG_PREFIX: Final = "vpc-flow-logs/"
HTTPS: Final = 443


class Network(Construct):
    """VPC with isolated subnets, flow logs and the endpoints of the services Cirrus calls."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        log_bucket: s3.IBucket,
        cidr: str = DEFAULT_CIDR,
    ) -> None:
        super().__init__(scope, construct_id)
        self.cidr = cidr
        # Flow logs go to the access-log bucket, which log delivery writes without an IAM role.
        self.vpc = ec2.Vpc(
            self,
            "Vpc",
            ip_addresses=ec2.IpAddresses.cidr(cidr),
            max_azs=AVAILABILITY_ZONES,
            nat_gateways=0,
            subnet_configuration=[
                ec2.SubnetConfiguration(
                    name="private",
                    subnet_type=ec2.SubnetType.PRIVATE_ISOLATED,
                    cidr_mask=SUBNET_MASK,
                )
            ],
            restrict_default_security_group=True,
            flow_logs={
                "all": ec2.FlowLogOptions(
                    destination=ec2.FlowLogDestination.to_s3(log_bucket, FLOW_LOG_PREFIX),
                    traffic_type=ec2.FlowLogTrafficType.ALL,
                )
            },
        )
        self.subnets = ec2.SubnetSelection(subnet_type=ec2.SubnetType.PRIVATE_ISOLATED)
        for name, service in (
            ("S3", ec2.GatewayVpcEndpointAwsService.S3),
            ("DynamoDb", ec2.GatewayVpcEndpointAwsService.DYNAMODB),
        ):
            self.vpc.add_gateway_endpoint(
                f"{name}Endpoint", service=service, subnets=[self.subnets]
            )
        # One group for every interface endpoint: HTTPS from the VPC's range, nothing else.
        # The range is written out rather than read from the VPC, so cdk-nag can check it.
        self.endpoint_group = ec2.SecurityGroup(
            self,
            "EndpointGroup",
            vpc=self.vpc,
            description="Interface endpoints: HTTPS from the VPC",
            allow_all_outbound=False,
        )
        self.endpoint_group.add_ingress_rule(ec2.Peer.ipv4(cidr), ec2.Port.tcp(HTTPS))
        for name, service in INTERFACE_SERVICES:
            self.vpc.add_interface_endpoint(
                f"{name}Endpoint",
                service=service,
                subnets=self.subnets,
                private_dns_enabled=True,
                security_groups=[self.endpoint_group],
                open=False,
            )

    def security_group(self, construct_id: str, description: str) -> ec2.SecurityGroup:
        """Return a new security group in the VPC, with outbound traffic allowed.

        Outbound traffic can reach only the VPC and its endpoints, because the VPC has no route
        to the internet.
        """
        return ec2.SecurityGroup(
            self, construct_id, vpc=self.vpc, description=description, allow_all_outbound=True
        )
