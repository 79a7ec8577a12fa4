"""Web viewer of one deployment: Cognito sign-in and the static site behind CloudFront.

Viewer users are created by an administrator in a Cognito user pool and sign in through the
Cognito hosted UI with the authorization code grant and PKCE. Each site of the ``sites``
context value gets one Cognito group, so ID and access tokens list a user's sites in the
``cognito:groups`` claim. The ``viewer-groups`` context value adds groups that read several
sites, for teleradiologists: ``{"telerad": ["north", "south"]}``.

The browser calls DICOMweb, whose methods need IAM authorization, with credentials from a
Cognito identity pool. Each group has an IAM role that may call the API's GET and HEAD
methods, and the identity pool gives a user the role of the group that the ID token prefers
(``cognito:preferred_role``: the group with the lowest precedence). The DICOMweb function then
grants that role query and retrieve on the group's sites (``access_grants``), so the data a
user can read follows from their group, as for any other principal of ``cirrus.access``.

The viewer's files go to a private S3 bucket that only the CloudFront distribution reads,
through origin access control. The stack deploys the viewer's build folder (viewer/dist, or
the ``viewer-dist`` context value) into it, with a generated ``config.json`` that names the
DICOMweb API, the user pool, its client and hosted UI, and the identity pool.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from aws_cdk import Acknowledgment, Duration, RemovalPolicy, Stack, Validations
from aws_cdk import aws_apigateway as apigateway
from aws_cdk import aws_certificatemanager as acm
from aws_cdk import aws_cloudfront as cloudfront
from aws_cdk import aws_cloudfront_origins as origins
from aws_cdk import aws_cognito as cognito
from aws_cdk import aws_cognito_identitypool as identitypool
from aws_cdk import aws_iam as iam
from aws_cdk import aws_logs as logs
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_s3_assets as s3_assets
from aws_cdk import aws_s3_deployment as s3deploy
from constructs import Construct

from cirrus.config import DEFAULT_SITE, ResourceNames
from cirrus.storage.keys import validate_site
from cirrus.viewer_headers import content_security_policy
from cirrus_infra.lambdas import encrypted_log_group
from cirrus_infra.storage import Storage

# Context keys: `cdk synth -c sites=north,south`, and a custom domain for the viewer with
# `-c viewer-domain-name=viewer.example.org -c viewer-certificate-arn=arn:aws:acm:us-east-1:...`.
SITES_CONTEXT_KEY: Final = "sites"
VIEWER_GROUPS_CONTEXT_KEY: Final = "viewer-groups"
DOMAIN_NAME_CONTEXT_KEY: Final = "viewer-domain-name"
CERTIFICATE_CONTEXT_KEY: Final = "viewer-certificate-arn"
# The viewer's build folder, relative to the repository root or absolute; default viewer/dist.
DIST_CONTEXT_KEY: Final = "viewer-dist"

REPOSITORY: Final = Path(__file__).resolve().parents[2]
DEFAULT_DIST: Final = "viewer/dist"
VIEWER_BUILD_COMMAND: Final = "cd viewer && npm ci && npm run build"
# Vite writes content-hashed file names under assets/, so browsers and CloudFront may keep
# those files for a year. Every other file is revalidated at each use.
ASSETS_FOLDER: Final = "assets"
ASSETS_MAX_AGE: Final = Duration.days(365)
# The paths whose cached copies CloudFront drops after each deployment: the files whose names
# stay the same from one build to the next. "/" is cached apart from "/index.html".
INVALIDATED_PATHS: Final = ("/", "/index.html", "/config.json")
CONFIG_FILE: Final = "config.json"
# Memory of the deployment function: the AWS CLI syncs a few megabytes of files.
DEPLOYMENT_MEMORY_MIB: Final = 512
# The prefix of the construct id of the function that aws_s3_deployment creates once per stack.
DEPLOYMENT_FUNCTION_ID_PREFIX: Final = "Custom::CDKBucketDeployment"

# Cognito group of the viewer users of one site: "site-" and the site id.
SITE_GROUP_PREFIX: Final = "site-"
# Actions of a viewer user on the sites of their group, and the API methods that carry them.
VIEWER_ACTIONS: Final = ("query", "retrieve")
VIEWER_METHODS: Final = ("GET", "HEAD")

# Cognito rejects prefix domains that contain these words (InvalidParameterException "Domain
# cannot contain reserved word").
_RESERVED_DOMAIN_WORDS: Final = ("aws", "amazon", "cognito")

# max-age of the Strict-Transport-Security header: two years.
HSTS_MAX_AGE: Final = Duration.days(730)
# Refresh tokens last about one work shift, so users sign in again, with MFA, each shift.
REFRESH_TOKEN_VALIDITY: Final = Duration.hours(12)
TOKEN_VALIDITY: Final = Duration.hours(1)
MIN_PASSWORD_LENGTH: Final = 14


def read_sites(value: object) -> tuple[str, ...]:
    """Return the site ids of the ``sites`` context value, or raise ``ValueError``.

    The value is a list of site ids, or a string as ``cdk -c sites=...`` passes it: ids
    separated by commas, or a JSON list. Without a value the only site is ``DEFAULT_SITE``.
    """
    if value is None:
        return (DEFAULT_SITE,)
    if isinstance(value, str):
        text = value.strip()
        value = json.loads(text) if text.startswith("[") else text.split(",")
    if not isinstance(value, list | tuple) or not all(isinstance(item, str) for item in value):
        raise ValueError(
            f"context value {SITES_CONTEXT_KEY} {value!r} is invalid; give a list of site ids"
        )
    sites = tuple(item.strip() for item in value)
    if not sites:
        raise ValueError(f"context value {SITES_CONTEXT_KEY} is empty; give at least one site id")
    for site in sites:
        validate_site(site)
    duplicates = sorted({site for site in sites if sites.count(site) > 1})
    if duplicates:
        raise ValueError(f"context value {SITES_CONTEXT_KEY} repeats {', '.join(duplicates)}")
    return sites


def read_viewer_groups(value: object, sites: Sequence[str]) -> dict[str, tuple[str, ...]]:
    """Return the groups of the ``viewer-groups`` context value, each with its sites.

    The value is a JSON object (or its text) of group names to lists of site ids, each of
    which must be one of ``sites``. Raises ``ValueError`` for anything else.
    """
    if value is None:
        return {}
    if isinstance(value, str):
        value = json.loads(value)
    if not isinstance(value, dict):
        raise ValueError(f"context value {VIEWER_GROUPS_CONTEXT_KEY} must be a JSON object")
    groups: dict[str, tuple[str, ...]] = {}
    for name, members in value.items():
        if not isinstance(name, str) or not name or name.startswith(SITE_GROUP_PREFIX):
            raise ValueError(
                f"viewer group name {name!r} is invalid; use a name that does not start "
                f"with {SITE_GROUP_PREFIX!r}"
            )
        if not isinstance(members, list) or not members:
            raise ValueError(f"viewer group {name!r} must list at least one site id")
        unknown = [site for site in members if site not in sites]
        if unknown:
            raise ValueError(
                f"viewer group {name!r} names sites {unknown!r} that the "
                f"{SITES_CONTEXT_KEY} context value does not list"
            )
        groups[name] = tuple(members)
    return groups


def site_group_name(site: str) -> str:
    """Return the name of the Cognito group of the viewer users of ``site``."""
    return f"{SITE_GROUP_PREFIX}{validate_site(site)}"


@dataclass(frozen=True)
class CustomDomain:
    """A domain name of the viewer and its ACM certificate, which must be in us-east-1."""

    domain_name: str
    certificate_arn: str

    @classmethod
    def from_context(cls, scope: Construct) -> CustomDomain | None:
        """Read the custom domain from the context; raise ``ValueError`` if half is given."""
        domain_name = scope.node.try_get_context(DOMAIN_NAME_CONTEXT_KEY)
        certificate_arn = scope.node.try_get_context(CERTIFICATE_CONTEXT_KEY)
        if not domain_name and not certificate_arn:
            return None
        if not domain_name or not certificate_arn:
            raise ValueError(
                f"set both context values {DOMAIN_NAME_CONTEXT_KEY} and "
                f"{CERTIFICATE_CONTEXT_KEY}, or neither"
            )
        return cls(str(domain_name), str(certificate_arn))


def read_dist(value: object) -> Path:
    """Return the viewer's build folder of the ``viewer-dist`` context value.

    Raises ``ValueError`` when the folder has no index.html, which means that the viewer has
    not been built.
    """
    folder = Path(str(value) if value else DEFAULT_DIST)
    if not folder.is_absolute():
        folder = REPOSITORY / folder
    if not (folder / "index.html").is_file():
        raise ValueError(
            f"the viewer's build folder {folder} has no index.html; build the viewer with "
            f"'{VIEWER_BUILD_COMMAND}' (scripts/dev does it too), or name a build folder with "
            f"-c {DIST_CONTEXT_KEY}=DIR"
        )
    return folder


class Viewer(Construct):
    """User pool, site groups and browser client, and the viewer's bucket and distribution."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        names: ResourceNames,
        storage: Storage,
        api: apigateway.RestApi,
        sites: Sequence[str] | None = None,
    ) -> None:
        super().__init__(scope, construct_id)
        self.sites = read_sites(
            self.node.try_get_context(SITES_CONTEXT_KEY) if sites is None else list(sites)
        )
        self.custom_domain = CustomDomain.from_context(self)

        # Group name to the sites that its users read.
        self.group_sites: dict[str, tuple[str, ...]] = {
            site_group_name(site): (site,) for site in self.sites
        }
        self.group_sites.update(
            read_viewer_groups(self.node.try_get_context(VIEWER_GROUPS_CONTEXT_KEY), self.sites)
        )

        self.user_pool = self._user_pool(names)
        self.user_pool_domain = self._user_pool_domain(names)

        self.log_bucket = self._log_bucket(storage)
        self.bucket = self._site_bucket(storage)
        self.distribution = self._distribution(names, api)
        self.url = (
            f"https://{self.custom_domain.domain_name}"
            if self.custom_domain
            else f"https://{self.distribution.distribution_domain_name}"
        )
        self.client = self._client(names)
        self.identity_pool = self._identity_pool(names)
        self.group_roles = {group: self._group_role(group, api) for group in self.group_sites}
        self.groups = {
            group: cognito.UserPoolGroup(
                self,
                f"Group-{group}",
                user_pool=self.user_pool,
                group_name=group,
                description=f"Viewer users of sites {', '.join(sites)}",
                role=self.group_roles[group],
            )
            for group, sites in self.group_sites.items()
        }
        self.config = self._viewer_config(api)
        self.deployments = self._deploy_files(
            read_dist(self.node.try_get_context(DIST_CONTEXT_KEY)), storage
        )

    def access_grants(self) -> dict[str, dict[str, list[str]]]:
        """Return the grants of the groups' roles, as principals of a ``cirrus.access`` document.

        The role ARNs are tokens, which CloudFormation resolves when it deploys.
        """
        return {
            self.group_roles[group].role_arn: {site: list(VIEWER_ACTIONS) for site in sites}
            for group, sites in self.group_sites.items()
        }

    def _identity_pool(self, names: ResourceNames) -> identitypool.IdentityPool:
        """Create the identity pool that exchanges a user's ID token for their group's role."""
        provider = identitypool.UserPoolAuthenticationProvider(
            user_pool=self.user_pool, user_pool_client=self.client
        )
        return identitypool.IdentityPool(
            self,
            "Identities",
            identity_pool_name=f"{names.deployment}-viewer",
            allow_unauthenticated_identities=False,
            # The enhanced flow only: the classic flow would let a client pick any role.
            allow_classic_flow=False,
            authentication_providers=identitypool.IdentityPoolAuthenticationProviders(
                user_pools=[provider]
            ),
            role_mappings=[
                identitypool.IdentityPoolRoleMapping(
                    provider_url=identitypool.IdentityPoolProviderUrl.user_pool(
                        self.user_pool, self.client
                    ),
                    # Any fixed key: the provider URL is a token until deployment.
                    mapping_key="viewer",
                    use_token=True,
                    # A user in no group gets no credentials, not the pool's default role.
                    resolve_ambiguous_roles=False,
                )
            ],
        )

    def _group_role(self, group: str, api: apigateway.RestApi) -> iam.Role:
        """Create the role of one group's users: the API's reading methods, and nothing else."""
        pool_id = self.identity_pool.identity_pool_id
        role = iam.Role(
            self,
            f"Role-{group}",
            description=f"Viewer users of Cognito group {group}: DICOMweb GET and HEAD",
            assumed_by=iam.FederatedPrincipal(
                "cognito-identity.amazonaws.com",
                conditions={
                    "StringEquals": {"cognito-identity.amazonaws.com:aud": pool_id},
                    "ForAnyValue:StringLike": {
                        "cognito-identity.amazonaws.com:amr": "authenticated"
                    },
                },
                assume_role_action="sts:AssumeRoleWithWebIdentity",
            ),
            max_session_duration=Duration.hours(1),
        )
        stage = api.deployment_stage.stage_name
        policy = iam.ManagedPolicy(
            self,
            f"Policy-{group}",
            description=f"DICOMweb reads of the viewer users of Cognito group {group}",
            statements=[
                iam.PolicyStatement(
                    actions=["execute-api:Invoke"],
                    resources=[
                        api.arn_for_execute_api(method=method, path="/*", stage=stage)
                        for method in VIEWER_METHODS
                    ],
                )
            ],
            roles=[role],
        )
        api_id = Stack.of(self).resolve(api.rest_api_id)["Ref"]
        reason = (
            "Every DICOMweb resource path of the reading methods: the DICOMweb function "
            "limits the role to its group's sites."
        )
        _acknowledge(
            policy,
            {
                f"AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:execute-api:<AWS::Region>:"
                f"<AWS::AccountId>:<{api_id}>/<{Stack.of(self).resolve(stage)['Ref']}>/"
                f"{method}/*]": reason
                for method in VIEWER_METHODS
            },
        )
        return role

    # The viewer's files

    def _viewer_config(self, api: apigateway.RestApi) -> dict[str, Any]:
        """Return the viewer's ``config.json`` (``ViewerConfig`` in viewer/src/contract.ts).

        The values are tokens, which the deployment resolves when it writes the file.
        """
        stack = Stack.of(self)
        stage = api.deployment_stage.stage_name
        return {
            # The stage URL without the trailing slash of ``api.url``.
            "dicomweb": f"https://{api.rest_api_id}.execute-api.{stack.region}."
            f"{stack.url_suffix}/{stage}",
            "auth": {
                "mode": "cognito",
                "region": stack.region,
                "userPoolId": self.user_pool.user_pool_id,
                "clientId": self.client.user_pool_client_id,
                "domain": self.user_pool_domain.base_url(),
                "identityPoolId": self.identity_pool.identity_pool_id,
            },
        }

    def _deploy_files(self, dist: Path, storage: Storage) -> tuple[s3deploy.BucketDeployment, ...]:
        """Deploy the build folder and ``config.json`` into the bucket, in two deployments.

        S3 takes one Cache-Control per deployment. The hashed assets are kept for a year, and
        old ones are not pruned, so that a page loaded before a deployment can still load the
        chunks and codecs of its build. The other files are pruned, revalidated at each use,
        and dropped from CloudFront's caches after each deployment. The deployment function
        sets each Content-Type from the file name with Python's mimetypes, which maps .wasm to
        application/wasm in Python 3.11 and later (the function runs Python 3.13).
        """
        log_group = encrypted_log_group(self, "DeploymentLogs", storage.key)
        self.site_files = site_files = s3_assets.Asset(
            self, "SiteFiles", path=str(dist), exclude=[f"{ASSETS_FOLDER}/**", CONFIG_FILE]
        )
        self.asset_files = asset_files = (
            s3_assets.Asset(self, "AssetFiles", path=str(dist / ASSETS_FOLDER))
            if (dist / ASSETS_FOLDER).is_dir()
            else None
        )
        role = self._deployment_role(log_group, site_files.bucket)
        common: dict[str, Any] = {
            "destination_bucket": self.bucket,
            "log_group": log_group,
            "role": role,
            "memory_limit": DEPLOYMENT_MEMORY_MIB,
        }
        deployments = []
        if asset_files is not None:
            deployments.append(
                s3deploy.BucketDeployment(
                    self,
                    "DeployAssets",
                    sources=[s3deploy.Source.bucket(asset_files.bucket, asset_files.s3_object_key)],
                    destination_key_prefix=f"{ASSETS_FOLDER}/",
                    prune=False,
                    cache_control=[
                        s3deploy.CacheControl.set_public(),
                        s3deploy.CacheControl.max_age(ASSETS_MAX_AGE),
                        s3deploy.CacheControl.immutable(),
                    ],
                    **common,
                )
            )
        site = s3deploy.BucketDeployment(
            self,
            "DeploySite",
            sources=[
                s3deploy.Source.bucket(site_files.bucket, site_files.s3_object_key),
                s3deploy.Source.json_data(CONFIG_FILE, self.config),
            ],
            # Neither uploads nor prunes assets/, which the deployment above owns.
            exclude=[f"{ASSETS_FOLDER}/*"],
            prune=True,
            cache_control=[s3deploy.CacheControl.no_cache()],
            distribution=self.distribution,
            distribution_paths=list(INVALIDATED_PATHS),
            **common,
        )
        # index.html names the assets of its build, so they must be in the bucket first.
        for deployment in deployments:
            site.node.add_dependency(deployment)
        deployments.append(site)
        self._acknowledge_deployment_function()
        return tuple(deployments)

    def _acknowledge_deployment_function(self) -> None:
        """Acknowledge the findings on the function that CDK creates once per stack for every
        bucket deployment, at the stack's root."""
        stack = Stack.of(self)
        [function] = [
            child
            for child in stack.node.children
            if child.node.id.startswith(DEPLOYMENT_FUNCTION_ID_PREFIX)
        ]
        _acknowledge(
            function,
            {
                "AwsSolutions-L1": "CDK sets the runtime of its bucket deployment function, "
                "Python 3.13 in aws-cdk-lib 2.275.",
                "HIPAA.Security-LambdaInsideVPC": "The function calls the CloudFront API to "
                "invalidate the distribution, which has no VPC endpoint, and the VPC has no "
                "internet access. It handles only the viewer's static files, without PHI.",
                "HIPAA.Security-LambdaDLQ": "CloudFormation invokes the function during "
                "deployments and receives its result; a failure fails the deployment.",
                "HIPAA.Security-LambdaConcurrency": "Only CloudFormation invokes the function, "
                "once per bucket deployment of a stack update.",
            },
        )

    def _deployment_role(self, log_group: logs.ILogGroup, sources: s3.IBucket) -> iam.IRole:
        """Create the role of the deployment function, with one managed policy.

        The function reads the source archives from the CDK assets bucket (``sources``), syncs
        them into the viewer bucket with the AWS CLI, reads the bucket's tags, and invalidates
        the distribution. The role takes no policy that CDK would add to it.
        """
        policy = iam.ManagedPolicy(
            self,
            "DeploymentPolicy",
            description="Deploys the viewer's files into the viewer bucket",
            statements=[
                iam.PolicyStatement(
                    actions=["logs:CreateLogStream", "logs:PutLogEvents"],
                    resources=[log_group.log_group_arn],
                ),
                iam.PolicyStatement(
                    actions=["s3:GetObject"], resources=[sources.arn_for_objects("*")]
                ),
                iam.PolicyStatement(
                    actions=["s3:ListBucket", "s3:GetBucketTagging"],
                    resources=[self.bucket.bucket_arn],
                ),
                iam.PolicyStatement(
                    actions=[
                        "s3:GetObject",
                        "s3:PutObject",
                        "s3:DeleteObject",
                        "s3:AbortMultipartUpload",
                    ],
                    resources=[self.bucket.arn_for_objects("*")],
                ),
                iam.PolicyStatement(
                    actions=["cloudfront:CreateInvalidation", "cloudfront:GetInvalidation"],
                    resources=[self.distribution.distribution_arn],
                ),
            ],
        )
        role = iam.Role(
            self,
            "DeploymentRole",
            description="Deploys the viewer's files into the viewer bucket",
            assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"),
            managed_policies=[policy],
        )
        _acknowledge(
            policy,
            {
                f"AwsSolutions-IAM5[Resource::{_nag_bucket_arn(sources)}/*]": (
                    "The deployment reads source archives whose keys are content hashes, and "
                    "CDK does not expose the key of the generated config.json."
                ),
                f"AwsSolutions-IAM5[Resource::{_nag_bucket_arn(self.bucket)}/*]": (
                    "The deployment writes and prunes the viewer's files, whose names change "
                    "with each build. The bucket holds only those files."
                ),
            },
        )
        return role.without_policy_updates()

    # Cognito

    def _user_pool(self, names: ResourceNames) -> cognito.UserPool:
        # Essentials, not Plus: threat protection (the former advanced security features) comes
        # only with the Plus plan, which costs more per monthly active user. Essentials covers
        # TOTP MFA, the hosted UI and password history (which Lite lacks).
        user_pool = cognito.UserPool(
            self,
            "UserPool",
            user_pool_name=f"{names.deployment}-viewer",
            feature_plan=cognito.FeaturePlan.ESSENTIALS,
            self_sign_up_enabled=False,
            sign_in_aliases=cognito.SignInAliases(email=True, username=False),
            sign_in_case_sensitive=False,
            standard_attributes=cognito.StandardAttributes(
                email=cognito.StandardAttribute(required=True, mutable=True)
            ),
            auto_verify=cognito.AutoVerifiedAttrs(email=True),
            keep_original=cognito.KeepOriginalAttrs(email=True),
            # TOTP only: SMS codes can be taken over with a SIM swap, and need an SNS role.
            mfa=cognito.Mfa.REQUIRED,
            mfa_second_factor=cognito.MfaSecondFactor(otp=True, sms=False, email=False),
            password_policy=cognito.PasswordPolicy(
                min_length=MIN_PASSWORD_LENGTH,
                require_lowercase=True,
                require_uppercase=True,
                require_digits=True,
                require_symbols=True,
                temp_password_validity=Duration.days(3),
                password_history_size=5,
            ),
            account_recovery=cognito.AccountRecovery.EMAIL_ONLY,
            user_invitation=cognito.UserInvitationConfig(
                email_subject=f"Cirrus {names.deployment}: your viewer account",
                email_body="Your Cirrus viewer user name is {username} and your temporary "
                "password is {####}. Sign in within 3 days to set a password and an "
                "authenticator app.",
            ),
            # NOTE: Cognito's default email sender has a small daily quota. Configure SES
            # (cognito.UserPoolEmail.with_ses) before inviting many users at once.
            deletion_protection=True,
            removal_policy=RemovalPolicy.RETAIN,
        )
        Validations.of(user_pool).acknowledge(
            Acknowledgment(
                id="AwsSolutions-COG8",
                reason="Threat protection needs the Plus feature plan, charged per monthly "
                "active user. Admin-created users, required TOTP MFA and a 14-character "
                "password policy protect the sign-in instead.",
            )
        )
        return user_pool

    def _user_pool_domain(self, names: ResourceNames) -> cognito.UserPoolDomain:
        for word in _RESERVED_DOMAIN_WORDS:
            if word in names.deployment:
                raise ValueError(
                    f"deployment name {names.deployment!r} contains {word!r}, which Cognito "
                    "rejects in the hosted domain prefix; choose another deployment name"
                )
        # Prefix domains are unique across all AWS accounts in a region, hence the account id.
        prefix = f"{names.deployment}-viewer-{Stack.of(self).account}"
        return self.user_pool.add_domain(
            "Domain", cognito_domain=cognito.CognitoDomainOptions(domain_prefix=prefix)
        )

    def _client(self, names: ResourceNames) -> cognito.UserPoolClient:
        # A public client without a secret, because a browser cannot keep one. Cognito checks
        # the code_verifier whenever the authorize request carried a code_challenge.
        # NOTE: the client has no setting that makes PKCE mandatory, so the viewer must send it.
        return self.user_pool.add_client(
            "BrowserClient",
            user_pool_client_name=f"{names.deployment}-viewer",
            generate_secret=False,
            auth_flows=cognito.AuthFlow(user_srp=True),
            o_auth=cognito.OAuthSettings(
                flows=cognito.OAuthFlows(
                    authorization_code_grant=True,
                    implicit_code_grant=False,
                    client_credentials=False,
                ),
                scopes=[
                    cognito.OAuthScope.OPENID,
                    cognito.OAuthScope.EMAIL,
                    cognito.OAuthScope.PROFILE,
                ],
                callback_urls=[f"{self.url}/"],
                logout_urls=[f"{self.url}/"],
            ),
            supported_identity_providers=[cognito.UserPoolClientIdentityProvider.COGNITO],
            prevent_user_existence_errors=True,
            enable_token_revocation=True,
            access_token_validity=TOKEN_VALIDITY,
            id_token_validity=TOKEN_VALIDITY,
            refresh_token_validity=REFRESH_TOKEN_VALIDITY,
        )

    # S3

    def _log_bucket(self, storage: Storage) -> s3.Bucket:
        # CloudFront standard logging (legacy) writes with ACLs, so this bucket keeps ACLs
        # enabled. The storage access-log bucket enforces bucket ownership and cannot take them.
        bucket = s3.Bucket(
            self,
            "Logs",
            encryption=s3.BucketEncryption.S3_MANAGED,
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            object_ownership=s3.ObjectOwnership.OBJECT_WRITER,
            enforce_ssl=True,
            minimum_tls_version=1.2,
            versioned=True,
            server_access_logs_bucket=storage.access_log_bucket,
            server_access_logs_prefix="viewer-logs/",
            removal_policy=RemovalPolicy.RETAIN,
        )
        _acknowledge(
            bucket,
            {
                "HIPAA.Security-S3DefaultEncryptionKMS": "CloudFront standard logging writes "
                "to this bucket, and SSE-S3 needs no KMS key policy grant to its log delivery.",
                "HIPAA.Security-S3BucketReplicationEnabled": "CloudFront access logs are kept "
                "in one region, like the storage access logs.",
            },
        )
        return bucket

    def _site_bucket(self, storage: Storage) -> s3.Bucket:
        # SSE-S3, not SSE-KMS: the bucket stores the viewer's static files, which CloudFront
        # serves to any visitor before sign-in, so they contain no PHI. With SSE-KMS, the key
        # policy would have to let CloudFront decrypt, for no added confidentiality.
        bucket = s3.Bucket(
            self,
            "Site",
            encryption=s3.BucketEncryption.S3_MANAGED,
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
            enforce_ssl=True,
            minimum_tls_version=1.2,
            versioned=True,
            server_access_logs_bucket=storage.access_log_bucket,
            server_access_logs_prefix="viewer/",
            lifecycle_rules=[
                s3.LifecycleRule(
                    id="expire-old-versions",
                    noncurrent_version_expiration=Duration.days(30),
                )
            ],
            removal_policy=RemovalPolicy.RETAIN,
        )
        _acknowledge(
            bucket,
            {
                "HIPAA.Security-S3DefaultEncryptionKMS": "The bucket contains the viewer's static "
                "files, served to any visitor, with no PHI. SSE-KMS would need a key policy "
                "grant to CloudFront for no added confidentiality.",
                "HIPAA.Security-S3BucketReplicationEnabled": "The files are build output and "
                "can be deployed again from source.",
            },
        )
        return bucket

    # CloudFront

    def _distribution(
        self, names: ResourceNames, api: apigateway.RestApi
    ) -> cloudfront.Distribution:
        # OAC and response headers policy names are unique per account, so they carry the
        # deployment name.
        access_control = cloudfront.S3OriginAccessControl(
            self,
            "OriginAccessControl",
            origin_access_control_name=f"{names.deployment}-viewer",
            description=f"Cirrus {names.deployment}: CloudFront reads the viewer bucket",
            signing=cloudfront.Signing.SIGV4_ALWAYS,
        )
        origin = origins.S3BucketOrigin.with_origin_access_control(
            self.bucket,
            origin_access_control=access_control,
            origin_access_levels=[cloudfront.AccessLevel.READ],
        )
        headers = self._security_headers(names, api)

        certificate = None
        domain_names = None
        minimum_protocol_version = None
        if self.custom_domain:
            certificate = acm.Certificate.from_certificate_arn(
                self, "Certificate", self.custom_domain.certificate_arn
            )
            domain_names = [self.custom_domain.domain_name]
            minimum_protocol_version = cloudfront.SecurityPolicyProtocol.TLS_V1_2_2021

        # A single-page app routes in the browser: a missing object (403 from S3 without
        # s3:ListBucket, or 404) gets index.html, whose script shows the route.
        spa_errors = [
            cloudfront.ErrorResponse(
                http_status=status, response_http_status=200, response_page_path="/index.html"
            )
            for status in (403, 404)
        ]

        distribution = cloudfront.Distribution(
            self,
            "Distribution",
            comment=f"Cirrus {names.deployment} viewer",
            default_behavior=cloudfront.BehaviorOptions(
                origin=origin,
                viewer_protocol_policy=cloudfront.ViewerProtocolPolicy.REDIRECT_TO_HTTPS,
                allowed_methods=cloudfront.AllowedMethods.ALLOW_GET_HEAD,
                cache_policy=cloudfront.CachePolicy.CACHING_OPTIMIZED,
                response_headers_policy=headers,
                compress=True,
            ),
            default_root_object="index.html",
            error_responses=spa_errors,
            http_version=cloudfront.HttpVersion.HTTP2_AND_3,
            certificate=certificate,
            domain_names=domain_names,
            minimum_protocol_version=minimum_protocol_version,
            enable_logging=True,
            log_bucket=self.log_bucket,
            log_file_prefix="cloudfront/",
            log_includes_cookies=False,
        )
        self._acknowledge_distribution_findings(distribution)
        return distribution

    def _acknowledge_distribution_findings(self, distribution: cloudfront.Distribution) -> None:
        reasons = {
            "AwsSolutions-CFR1": "Sites and reading radiologists may be in any country. "
            "Sign-in with MFA controls access, and the distribution serves only static files.",
            "AwsSolutions-CFR2": "The distribution serves only static files without PHI, and "
            "a web ACL for CloudFront must be created in us-east-1, outside this stack. "
            "Sign-in goes to Cognito and API calls go to API Gateway directly.",
        }
        if not self.custom_domain:
            reasons["AwsSolutions-CFR4"] = (
                "Without a custom domain CloudFront uses its default certificate, and then it "
                "sets the TLSv1 security policy whatever the template says. Set the context values "
                f"{DOMAIN_NAME_CONTEXT_KEY} and {CERTIFICATE_CONTEXT_KEY} to get "
                "TLSv1.2_2021."
            )
        _acknowledge(distribution, reasons)

    def _security_headers(
        self, names: ResourceNames, api: apigateway.RestApi
    ) -> cloudfront.ResponseHeadersPolicy:
        override = True
        return cloudfront.ResponseHeadersPolicy(
            self,
            "SecurityHeaders",
            response_headers_policy_name=f"{names.deployment}-viewer-security-headers",
            comment=f"Cirrus {names.deployment}: security headers of the viewer",
            security_headers_behavior=cloudfront.ResponseSecurityHeadersBehavior(
                strict_transport_security=cloudfront.ResponseHeadersStrictTransportSecurity(
                    access_control_max_age=HSTS_MAX_AGE,
                    include_subdomains=True,
                    preload=False,
                    override=override,
                ),
                content_type_options=cloudfront.ResponseHeadersContentTypeOptions(
                    override=override
                ),
                frame_options=cloudfront.ResponseHeadersFrameOptions(
                    frame_option=cloudfront.HeadersFrameOption.DENY, override=override
                ),
                # The viewer's paths can contain study UIDs, which must not leak in Referer.
                referrer_policy=cloudfront.ResponseHeadersReferrerPolicy(
                    referrer_policy=cloudfront.HeadersReferrerPolicy.NO_REFERRER,
                    override=override,
                ),
                # Browsers dropped the XSS auditor, and "0" turns off what remains of it.
                xss_protection=cloudfront.ResponseHeadersXSSProtection(
                    protection=False, override=override
                ),
                content_security_policy=cloudfront.ResponseHeadersContentSecurityPolicy(
                    content_security_policy=self._content_security_policy(names, api),
                    override=override,
                ),
            ),
        )

    def _content_security_policy(self, names: ResourceNames, api: apigateway.RestApi) -> str:
        """Build a CSP that lets the page load only its own files and call only Cirrus and Cognito.

        The directives are those of ``cirrus.viewer_headers``, which the local stack sends too.
        connect-src lists the DICOMweb API, the archive bucket (large retrieves redirect to
        presigned S3 URLs, see docs/large-objects.md), the hosted UI domain for the token
        endpoint, and the Cognito user pool and identity pool endpoints. The policy applies to
        every response, so the decode workers, which Chromium gives the policy of their own
        script's response, may compile WebAssembly too.
        """
        stack = Stack.of(self)
        region, suffix = stack.region, stack.url_suffix
        # The archive bucket's name, built as Storage builds it rather than read from the
        # bucket, so that the distribution does not depend on the bucket and a CORS rule of the
        # bucket can name the distribution. Both the regional and the global S3 host are
        # listed, because the host of a presigned URL depends on the region and on botocore.
        archive = f"{names.bucket}-{stack.account}-{region}"
        connect = [
            f"https://{api.rest_api_id}.execute-api.{region}.{suffix}",
            f"https://{archive}.s3.{region}.{suffix}",
            f"https://{archive}.s3.{suffix}",
            self.user_pool_domain.base_url(),
            f"https://cognito-idp.{region}.{suffix}",
            f"https://cognito-identity.{region}.{suffix}",
        ]
        return content_security_policy(connect, upgrade_insecure_requests=True)


def _nag_bucket_arn(bucket: s3.IBucket) -> str:
    """Return the ARN of ``bucket`` as cdk-nag writes it in the ids of its findings."""
    name = Stack.of(bucket).resolve(bucket.bucket_name)
    if isinstance(name, dict) and "Ref" in name:
        return f"<{name['Ref']}.Arn>"
    if isinstance(name, dict) and "Fn::Sub" in name:
        # The CDK assets bucket: cdk-{qualifier}-assets-${AWS::AccountId}-${AWS::Region}.
        name = re.sub(r"\$\{([^}]+)\}", r"<\1>", name["Fn::Sub"])
    return f"arn:<AWS::Partition>:s3:::{name}"


def _acknowledge(construct: Construct, reasons: dict[str, str]) -> None:
    for rule_id, reason in reasons.items():
        Validations.of(construct).acknowledge(Acknowledgment(id=rule_id, reason=reason))
