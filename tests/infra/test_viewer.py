"""CDK assertions and cdk-nag checks on the viewer: Cognito sign-in, bucket and distribution.

The stack of cdk.json's context is built once for the module, and a second one with two
sites and a custom domain. Each build costs seconds of jsii time.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from aws_cdk.assertions import Match, Template
from constructs import IConstruct

from cirrus.config import DEFAULT_SITE
from cirrus.viewer_headers import content_security_policy as local_content_security_policy
from cirrus_infra import CirrusStack, build_app
from cirrus_infra.viewer import (
    CERTIFICATE_CONTEXT_KEY,
    DIST_CONTEXT_KEY,
    DOMAIN_NAME_CONTEXT_KEY,
    MIN_PASSWORD_LENGTH,
    SITES_CONTEXT_KEY,
    VIEWER_GROUPS_CONTEXT_KEY,
    read_dist,
    read_sites,
    read_viewer_groups,
    site_group_name,
)
from tests.infra.nag import acknowledged, findings
from tests.infra.test_stack import CDK_CONTEXT, NAMES, REPO, VIEWER_DIST

CERTIFICATE_ARN = (
    "arn:aws:acm:us-east-1:111122223333:certificate/0f9e8d7c-6b5a-4321-8fed-cba987654321"
)
CUSTOM_DOMAIN = "viewer.example.org"
SITES = ["north", "south-2"]

# Every acknowledged cdk-nag finding under Cirrus/Viewer without a custom domain. A new
# acknowledgment must be added here, so that it shows in review.
ACKNOWLEDGED_FINDINGS = {
    ("Cirrus/Viewer/UserPool", "AwsSolutions-COG8"),
    ("Cirrus/Viewer/Distribution", "AwsSolutions-CFR1"),
    ("Cirrus/Viewer/Distribution", "AwsSolutions-CFR2"),
    ("Cirrus/Viewer/Distribution", "AwsSolutions-CFR4"),
    ("Cirrus/Viewer/Site", "HIPAA.Security-S3DefaultEncryptionKMS"),
    ("Cirrus/Viewer/Site", "HIPAA.Security-S3BucketReplicationEnabled"),
    ("Cirrus/Viewer/Logs", "HIPAA.Security-S3DefaultEncryptionKMS"),
    ("Cirrus/Viewer/Logs", "HIPAA.Security-S3BucketReplicationEnabled"),
    (
        "Cirrus/Viewer/DeploymentPolicy",
        "AwsSolutions-IAM5[Resource::<ViewerSiteFE591040.Arn>/*]",
    ),
    (
        "Cirrus/Viewer/DeploymentPolicy",
        "AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:s3:::"
        "cdk-hnb659fds-assets-<AWS::AccountId>-<AWS::Region>/*]",
    ),
    *(
        (
            "Cirrus/Viewer/Policy-site-default",
            "AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:execute-api:<AWS::Region>:"
            "<AWS::AccountId>:<DicomwebApi96B75F29>/<DicomwebApiDeploymentStagedicomweb94DBE0A0>/"
            f"{method}/*]",
        )
        for method in ("GET", "HEAD")
    ),
}
# The function that CDK creates at the stack's root for every bucket deployment.
DEPLOYMENT_FUNCTION = "Cirrus/Custom::CDKBucketDeployment8693BB64968944B69AAFB0CC9EB8756C512MiB"
DEPLOYMENT_FUNCTION_FINDINGS = {
    (DEPLOYMENT_FUNCTION, rule)
    for rule in (
        "AwsSolutions-L1",
        "HIPAA.Security-LambdaInsideVPC",
        "HIPAA.Security-LambdaDLQ",
        "HIPAA.Security-LambdaConcurrency",
    )
}
IMMUTABLE = "public, max-age=31536000, immutable"
# A group of teleradiologists who read both sites of the configured stack.
VIEWER_GROUPS = {"telerad": SITES}

DENY_INSECURE_TRANSPORT = Match.object_like(
    {"Effect": "Deny", "Condition": {"Bool": {"aws:SecureTransport": "false"}}}
)
DENY_TLS_BELOW_1_2 = Match.object_like(
    {"Effect": "Deny", "Condition": {"NumericLessThan": {"s3:TlsVersion": 1.2}}}
)
BLOCK_ALL_PUBLIC_ACCESS = {
    "BlockPublicAcls": True,
    "BlockPublicPolicy": True,
    "IgnorePublicAcls": True,
    "RestrictPublicBuckets": True,
}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> CirrusStack:
    _, stack = build_app(CDK_CONTEXT, outdir=str(tmp_path_factory.mktemp("cdk.out")))
    return stack


@pytest.fixture(scope="module")
def template(stack: CirrusStack) -> Template:
    return Template.from_stack(stack)


@pytest.fixture(scope="module")
def resources(template: Template) -> dict[str, Any]:
    resources: dict[str, Any] = template.to_json()["Resources"]
    return resources


@pytest.fixture(scope="module")
def configured_stack(tmp_path_factory: pytest.TempPathFactory) -> CirrusStack:
    """The stack with two sites and a custom domain with its certificate."""
    context = {
        **CDK_CONTEXT,
        SITES_CONTEXT_KEY: SITES,
        VIEWER_GROUPS_CONTEXT_KEY: VIEWER_GROUPS,
        DOMAIN_NAME_CONTEXT_KEY: CUSTOM_DOMAIN,
        CERTIFICATE_CONTEXT_KEY: CERTIFICATE_ARN,
    }
    _, stack = build_app(context, outdir=str(tmp_path_factory.mktemp("cdk.out")))
    return stack


@pytest.fixture(scope="module")
def configured_resources(configured_stack: CirrusStack) -> dict[str, Any]:
    resources: dict[str, Any] = Template.from_stack(configured_stack).to_json()["Resources"]
    return resources


def logical_id(stack: CirrusStack, construct: IConstruct) -> str:
    return stack.get_logical_id(construct.node.default_child)  # type: ignore[arg-type]


def properties(resources: dict[str, Any], stack: CirrusStack, construct: IConstruct) -> Any:
    return resources[logical_id(stack, construct)]["Properties"]


def of_type(resources: dict[str, Any], kind: str) -> dict[str, Any]:
    return {key: value for key, value in resources.items() if value["Type"] == kind}


def flatten(value: Any) -> str:
    """Return a Fn::Join as one string, each intrinsic in it as JSON without spaces."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and list(value) == ["Fn::Join"]:
        separator, parts = value["Fn::Join"]
        return str(separator).join(flatten(part) for part in parts)
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def ref(logical: str) -> str:
    return flatten({"Ref": logical})


def content_security_policy(resources: dict[str, Any], stack: CirrusStack) -> str:
    """Return the CSP of the distribution's response headers policy, flattened."""
    distribution = properties(resources, stack, stack.viewer.distribution)
    behavior = distribution["DistributionConfig"]["DefaultCacheBehavior"]
    policy = resources[behavior["ResponseHeadersPolicyId"]["Ref"]]
    config = policy["Properties"]["ResponseHeadersPolicyConfig"]
    csp = config["SecurityHeadersConfig"]["ContentSecurityPolicy"]
    assert csp["Override"] is True
    return flatten(csp["ContentSecurityPolicy"])


def directives(csp: str) -> dict[str, list[str]]:
    parsed = {}
    for directive in csp.split(";"):
        name, *sources = directive.split()
        parsed[name] = sources
    return parsed


# Sites


def test_read_sites_default() -> None:
    assert read_sites(None) == (DEFAULT_SITE,)


@pytest.mark.parametrize(
    "value",
    [["north", "south-2"], ("north", "south-2"), "north,south-2", " north , south-2 ",
     '["north", "south-2"]'],
)  # fmt: skip
def test_read_sites_forms(value: object) -> None:
    assert read_sites(value) == ("north", "south-2")


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (["North"], "site 'North' is invalid"),
        (["a" * 33], "is invalid"),
        ("north,,south", "site '' is invalid"),
        ([], "is empty"),
        (["north", "north"], "repeats north"),
        ({"site": "north"}, "give a list of site ids"),
        ([1, 2], "give a list of site ids"),
    ],
)
def test_read_sites_rejects(value: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        read_sites(value)


def test_site_group_name() -> None:
    assert site_group_name("north") == "site-north"
    with pytest.raises(ValueError, match="is invalid"):
        site_group_name("North")


# Cognito user pool


def test_user_pool_admin_created_users(resources: dict[str, Any], stack: CirrusStack) -> None:
    pool = properties(resources, stack, stack.viewer.user_pool)
    assert pool["AdminCreateUserConfig"]["AllowAdminCreateUserOnly"] is True
    assert pool["UsernameAttributes"] == ["email"]
    assert pool["UsernameConfiguration"] == {"CaseSensitive": False}
    assert pool["AutoVerifiedAttributes"] == ["email"]
    assert pool["UserPoolName"] == f"{NAMES.deployment}-viewer"


def test_user_pool_requires_totp_mfa(resources: dict[str, Any], stack: CirrusStack) -> None:
    pool = properties(resources, stack, stack.viewer.user_pool)
    assert pool["MfaConfiguration"] == "ON"
    assert pool["EnabledMfas"] == ["SOFTWARE_TOKEN_MFA"]
    assert "SmsConfiguration" not in pool


def test_user_pool_password_policy(resources: dict[str, Any], stack: CirrusStack) -> None:
    policy = properties(resources, stack, stack.viewer.user_pool)["Policies"]["PasswordPolicy"]
    assert policy == {
        "MinimumLength": MIN_PASSWORD_LENGTH,
        "RequireLowercase": True,
        "RequireUppercase": True,
        "RequireNumbers": True,
        "RequireSymbols": True,
        "TemporaryPasswordValidityDays": 3,
        "PasswordHistorySize": 5,
    }


def test_user_pool_recovery_by_email(resources: dict[str, Any], stack: CirrusStack) -> None:
    pool = properties(resources, stack, stack.viewer.user_pool)
    assert pool["AccountRecoverySetting"] == {
        "RecoveryMechanisms": [{"Name": "verified_email", "Priority": 1}]
    }


def test_user_pool_feature_plan(resources: dict[str, Any], stack: CirrusStack) -> None:
    # Essentials: threat protection (UserPoolAddOns) would need the Plus plan.
    pool = properties(resources, stack, stack.viewer.user_pool)
    assert pool["UserPoolTier"] == "ESSENTIALS"
    assert "UserPoolAddOns" not in pool


def test_user_pool_retained(resources: dict[str, Any], stack: CirrusStack) -> None:
    pool = resources[logical_id(stack, stack.viewer.user_pool)]
    assert pool["Properties"]["DeletionProtection"] == "ACTIVE"
    assert pool["DeletionPolicy"] == "Retain"
    assert pool["UpdateReplacePolicy"] == "Retain"


def test_domain_prefix_from_deployment(resources: dict[str, Any], stack: CirrusStack) -> None:
    domain = properties(resources, stack, stack.viewer.user_pool_domain)
    assert domain["Domain"] == {
        "Fn::Join": ["", [f"{NAMES.deployment}-viewer-", {"Ref": "AWS::AccountId"}]]
    }
    assert domain["UserPoolId"] == {"Ref": logical_id(stack, stack.viewer.user_pool)}
    assert "CustomDomainConfig" not in domain


@pytest.mark.parametrize("deployment", ["aws-dev", "amazonia", "cognito1"])
def test_reserved_domain_word_rejected(deployment: str) -> None:
    with pytest.raises(ValueError, match="which Cognito rejects in the hosted domain prefix"):
        build_app({**CDK_CONTEXT, "deployment": deployment})


def test_groups_default_site(resources: dict[str, Any], stack: CirrusStack) -> None:
    groups = of_type(resources, "AWS::Cognito::UserPoolGroup")
    assert [group["Properties"]["GroupName"] for group in groups.values()] == [
        f"site-{DEFAULT_SITE}"
    ]


def test_groups_one_per_site(
    configured_resources: dict[str, Any], configured_stack: CirrusStack
) -> None:
    groups = of_type(configured_resources, "AWS::Cognito::UserPoolGroup")
    pool = {"Ref": logical_id(configured_stack, configured_stack.viewer.user_pool)}

    assert sorted(group["Properties"]["GroupName"] for group in groups.values()) == [
        "site-north",
        "site-south-2",
        "telerad",
    ]
    for group in groups.values():
        assert group["Properties"]["UserPoolId"] == pool
    assert configured_stack.viewer.sites == tuple(SITES)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ({"telerad": ["east"]}, "does not list"),
        ({"site-x": ["north"]}, "does not start with"),
        ({"telerad": []}, "at least one site"),
        (["telerad"], "JSON object"),
    ],
)
def test_read_viewer_groups_rejects(value: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        read_viewer_groups(value, SITES)


def test_read_viewer_groups_from_text() -> None:
    assert read_viewer_groups('{"telerad": ["north"]}', SITES) == {"telerad": ("north",)}
    assert read_viewer_groups(None, SITES) == {}


def test_identity_pool_uses_token_roles(
    configured_resources: dict[str, Any], configured_stack: CirrusStack
) -> None:
    viewer = configured_stack.viewer
    [pool] = of_type(configured_resources, "AWS::Cognito::IdentityPool").values()
    [attachment] = of_type(
        configured_resources, "AWS::Cognito::IdentityPoolRoleAttachment"
    ).values()
    [mapping] = attachment["Properties"]["RoleMappings"].values()

    assert pool["Properties"]["AllowUnauthenticatedIdentities"] is False
    assert pool["Properties"]["AllowClassicFlow"] is False
    [provider] = pool["Properties"]["CognitoIdentityProviders"]
    assert provider["ClientId"] == {"Ref": logical_id(configured_stack, viewer.client)}
    assert mapping["Type"] == "Token"
    assert mapping["AmbiguousRoleResolution"] == "Deny"


def test_group_roles_read_api_only(
    configured_resources: dict[str, Any], configured_stack: CirrusStack
) -> None:
    viewer = configured_stack.viewer
    pool = {"Ref": logical_id(configured_stack, viewer.identity_pool)}
    groups = of_type(configured_resources, "AWS::Cognito::UserPoolGroup")
    roles_of_groups = {
        group["Properties"]["GroupName"]: group["Properties"]["RoleArn"]
        for group in groups.values()
    }

    assert set(roles_of_groups) == {"site-north", "site-south-2", "telerad"}
    for name, role in viewer.group_roles.items():
        assert roles_of_groups[name] == {"Fn::GetAtt": [logical_id(configured_stack, role), "Arn"]}
        trust = properties(configured_resources, configured_stack, role)["AssumeRolePolicyDocument"]
        [statement] = trust["Statement"]
        assert statement["Action"] == "sts:AssumeRoleWithWebIdentity"
        assert statement["Principal"] == {"Federated": "cognito-identity.amazonaws.com"}
        assert statement["Condition"]["StringEquals"] == {
            "cognito-identity.amazonaws.com:aud": pool
        }
    policies = of_type(configured_resources, "AWS::IAM::ManagedPolicy")
    viewer_policies = [
        policy for logical, policy in policies.items() if logical.startswith("ViewerPolicy")
    ]
    assert len(viewer_policies) == 3
    for policy in viewer_policies:
        [statement] = policy["Properties"]["PolicyDocument"]["Statement"]
        assert statement["Action"] == "execute-api:Invoke"
        methods = sorted(flatten(resource).rsplit("/", 2)[1] for resource in statement["Resource"])
        assert methods == ["GET", "HEAD"]


def test_access_grants_of_groups(configured_stack: CirrusStack) -> None:
    viewer = configured_stack.viewer
    grants = viewer.access_grants()

    assert grants[viewer.group_roles["telerad"].role_arn] == {
        "north": ["query", "retrieve"],
        "south-2": ["query", "retrieve"],
    }
    assert grants[viewer.group_roles["site-north"].role_arn] == {"north": ["query", "retrieve"]}
    assert len(grants) == 3


def test_invalid_site_context_rejected() -> None:
    with pytest.raises(ValueError, match="site 'North' is invalid"):
        build_app({**CDK_CONTEXT, SITES_CONTEXT_KEY: ["North"]})


# Browser client


def test_client_is_public_with_code_grant(resources: dict[str, Any], stack: CirrusStack) -> None:
    client = properties(resources, stack, stack.viewer.client)
    assert client["GenerateSecret"] is False
    assert client["AllowedOAuthFlows"] == ["code"]
    assert client["AllowedOAuthFlowsUserPoolClient"] is True
    assert client["AllowedOAuthScopes"] == ["openid", "email", "profile"]
    assert client["SupportedIdentityProviders"] == ["COGNITO"]
    assert client["PreventUserExistenceErrors"] == "ENABLED"
    assert client["EnableTokenRevocation"] is True
    assert client["ExplicitAuthFlows"] == ["ALLOW_USER_SRP_AUTH", "ALLOW_REFRESH_TOKEN_AUTH"]


def test_client_token_validity(resources: dict[str, Any], stack: CirrusStack) -> None:
    client = properties(resources, stack, stack.viewer.client)
    assert client["AccessTokenValidity"] == 60
    assert client["IdTokenValidity"] == 60
    assert client["RefreshTokenValidity"] == 12 * 60
    assert client["TokenValidityUnits"] == {
        "AccessToken": "minutes",
        "IdToken": "minutes",
        "RefreshToken": "minutes",
    }


def test_client_callback_is_distribution(resources: dict[str, Any], stack: CirrusStack) -> None:
    client = properties(resources, stack, stack.viewer.client)
    domain = {"Fn::GetAtt": [logical_id(stack, stack.viewer.distribution), "DomainName"]}
    expected = [{"Fn::Join": ["", ["https://", domain, "/"]]}]
    assert client["CallbackURLs"] == expected
    assert client["LogoutURLs"] == expected


def test_client_callback_is_custom_domain(
    configured_resources: dict[str, Any], configured_stack: CirrusStack
) -> None:
    client = properties(configured_resources, configured_stack, configured_stack.viewer.client)
    assert client["CallbackURLs"] == [f"https://{CUSTOM_DOMAIN}/"]
    assert client["LogoutURLs"] == [f"https://{CUSTOM_DOMAIN}/"]


# Viewer bucket


def test_site_bucket_private(resources: dict[str, Any], stack: CirrusStack) -> None:
    bucket = properties(resources, stack, stack.viewer.bucket)
    assert bucket["PublicAccessBlockConfiguration"] == BLOCK_ALL_PUBLIC_ACCESS
    assert bucket["OwnershipControls"] == {"Rules": [{"ObjectOwnership": "BucketOwnerEnforced"}]}
    assert "WebsiteConfiguration" not in bucket
    assert "AccessControl" not in bucket


def test_site_bucket_sse_s3(resources: dict[str, Any], stack: CirrusStack) -> None:
    bucket = properties(resources, stack, stack.viewer.bucket)
    [rule] = bucket["BucketEncryption"]["ServerSideEncryptionConfiguration"]
    assert rule["ServerSideEncryptionByDefault"] == {"SSEAlgorithm": "AES256"}


def test_site_bucket_versioned_and_logged(resources: dict[str, Any], stack: CirrusStack) -> None:
    bucket = properties(resources, stack, stack.viewer.bucket)
    assert bucket["VersioningConfiguration"] == {"Status": "Enabled"}
    assert bucket["LoggingConfiguration"] == {
        "DestinationBucketName": {"Ref": logical_id(stack, stack.storage.access_log_bucket)},
        "LogFilePrefix": "viewer/",
    }
    [rule] = bucket["LifecycleConfiguration"]["Rules"]
    assert rule["NoncurrentVersionExpiration"] == {"NoncurrentDays": 30}


def test_site_bucket_read_only_by_distribution(
    resources: dict[str, Any], stack: CirrusStack
) -> None:
    bucket_id = logical_id(stack, stack.viewer.bucket)
    distribution_id = logical_id(stack, stack.viewer.distribution)
    [policy] = [
        resource["Properties"]["PolicyDocument"]
        for resource in of_type(resources, "AWS::S3::BucketPolicy").values()
        if resource["Properties"]["Bucket"] == {"Ref": bucket_id}
    ]
    allows = [statement for statement in policy["Statement"] if statement["Effect"] == "Allow"]
    distribution_arn = {
        "Fn::Join": [
            "",
            ["arn:", {"Ref": "AWS::Partition"}, ":cloudfront::", {"Ref": "AWS::AccountId"},
             ":distribution/", {"Ref": distribution_id}],
        ]
    }  # fmt: skip
    assert allows == [
        {
            "Action": "s3:GetObject",
            "Condition": {"StringEquals": {"AWS:SourceArn": distribution_arn}},
            "Effect": "Allow",
            "Principal": {"Service": "cloudfront.amazonaws.com"},
            "Resource": {"Fn::Join": ["", [{"Fn::GetAtt": [bucket_id, "Arn"]}, "/*"]]},
        }
    ]


# Log bucket


def test_log_bucket_accepts_cloudfront_logs(resources: dict[str, Any], stack: CirrusStack) -> None:
    bucket = properties(resources, stack, stack.viewer.log_bucket)
    # CloudFront standard logging writes with ACLs, so the bucket keeps them enabled.
    assert bucket["OwnershipControls"] == {"Rules": [{"ObjectOwnership": "ObjectWriter"}]}
    assert bucket["PublicAccessBlockConfiguration"] == BLOCK_ALL_PUBLIC_ACCESS
    [rule] = bucket["BucketEncryption"]["ServerSideEncryptionConfiguration"]
    assert rule["ServerSideEncryptionByDefault"] == {"SSEAlgorithm": "AES256"}
    assert bucket["VersioningConfiguration"] == {"Status": "Enabled"}
    assert bucket["LoggingConfiguration"] == {
        "DestinationBucketName": {"Ref": logical_id(stack, stack.storage.access_log_bucket)},
        "LogFilePrefix": "viewer-logs/",
    }


@pytest.mark.parametrize("attribute", ["bucket", "log_bucket"])
def test_bucket_policy_requires_tls(template: Template, stack: CirrusStack, attribute: str) -> None:
    bucket = getattr(stack.viewer, attribute)
    template.has_resource_properties(
        "AWS::S3::BucketPolicy",
        {
            "Bucket": {"Ref": logical_id(stack, bucket)},
            "PolicyDocument": {
                "Statement": Match.array_with([DENY_INSECURE_TRANSPORT, DENY_TLS_BELOW_1_2])
            },
        },
    )


@pytest.mark.parametrize("attribute", ["bucket", "log_bucket"])
def test_access_logs_allowed_from_bucket(
    resources: dict[str, Any], stack: CirrusStack, attribute: str
) -> None:
    source = {"Fn::GetAtt": [logical_id(stack, getattr(stack.viewer, attribute)), "Arn"]}
    access_logs = {"Ref": logical_id(stack, stack.storage.access_log_bucket)}
    [policy] = [
        resource["Properties"]["PolicyDocument"]
        for resource in of_type(resources, "AWS::S3::BucketPolicy").values()
        if resource["Properties"]["Bucket"] == access_logs
    ]
    sources = [
        statement["Condition"]["ArnLike"]["aws:SourceArn"]
        for statement in policy["Statement"]
        if statement.get("Principal") == {"Service": "logging.s3.amazonaws.com"}
    ]
    assert source in sources


# Distribution


def test_origin_uses_access_control(resources: dict[str, Any], stack: CirrusStack) -> None:
    config = properties(resources, stack, stack.viewer.distribution)["DistributionConfig"]
    [origin] = config["Origins"]
    [(oac_id, oac)] = of_type(resources, "AWS::CloudFront::OriginAccessControl").items()

    assert origin["DomainName"] == {
        "Fn::GetAtt": [logical_id(stack, stack.viewer.bucket), "RegionalDomainName"]
    }
    assert origin["OriginAccessControlId"] == {"Fn::GetAtt": [oac_id, "Id"]}
    assert origin["S3OriginConfig"] == {"OriginAccessIdentity": ""}
    assert oac["Properties"]["OriginAccessControlConfig"] == {
        "Name": f"{NAMES.deployment}-viewer",
        "Description": f"Cirrus {NAMES.deployment}: CloudFront reads the viewer bucket",
        "OriginAccessControlOriginType": "s3",
        "SigningBehavior": "always",
        "SigningProtocol": "sigv4",
    }
    assert of_type(resources, "AWS::CloudFront::CloudFrontOriginAccessIdentity") == {}


def test_distribution_https_only(resources: dict[str, Any], stack: CirrusStack) -> None:
    config = properties(resources, stack, stack.viewer.distribution)["DistributionConfig"]
    behavior = config["DefaultCacheBehavior"]
    assert behavior["ViewerProtocolPolicy"] == "redirect-to-https"
    assert behavior["AllowedMethods"] == ["GET", "HEAD"]
    assert "CacheBehaviors" not in config


def test_distribution_default_certificate(resources: dict[str, Any], stack: CirrusStack) -> None:
    # The default *.cloudfront.net certificate: CloudFront sets its security policy itself,
    # which is why AwsSolutions-CFR4 is acknowledged.
    config = properties(resources, stack, stack.viewer.distribution)["DistributionConfig"]
    assert "ViewerCertificate" not in config
    assert "Aliases" not in config


def test_distribution_custom_domain_tls_1_2(
    configured_resources: dict[str, Any], configured_stack: CirrusStack
) -> None:
    distribution = configured_stack.viewer.distribution
    config = properties(configured_resources, configured_stack, distribution)
    config = config["DistributionConfig"]
    assert config["Aliases"] == [CUSTOM_DOMAIN]
    assert config["ViewerCertificate"] == {
        "AcmCertificateArn": CERTIFICATE_ARN,
        "MinimumProtocolVersion": "TLSv1.2_2021",
        "SslSupportMethod": "sni-only",
    }


def test_half_custom_domain_rejected() -> None:
    with pytest.raises(ValueError, match="or neither"):
        build_app({**CDK_CONTEXT, DOMAIN_NAME_CONTEXT_KEY: CUSTOM_DOMAIN})


def test_distribution_single_page_app(resources: dict[str, Any], stack: CirrusStack) -> None:
    config = properties(resources, stack, stack.viewer.distribution)["DistributionConfig"]
    assert config["DefaultRootObject"] == "index.html"
    assert config["CustomErrorResponses"] == [
        {"ErrorCode": 403, "ResponseCode": 200, "ResponsePagePath": "/index.html"},
        {"ErrorCode": 404, "ResponseCode": 200, "ResponsePagePath": "/index.html"},
    ]


def test_distribution_logs_and_no_geo_restriction(
    resources: dict[str, Any], stack: CirrusStack
) -> None:
    config = properties(resources, stack, stack.viewer.distribution)["DistributionConfig"]
    assert config["Logging"] == {
        "Bucket": {
            "Fn::GetAtt": [logical_id(stack, stack.viewer.log_bucket), "RegionalDomainName"]
        },
        "IncludeCookies": False,
        "Prefix": "cloudfront/",
    }
    assert "Restrictions" not in config


def test_security_headers(resources: dict[str, Any], stack: CirrusStack) -> None:
    [policy] = of_type(resources, "AWS::CloudFront::ResponseHeadersPolicy").values()
    config = policy["Properties"]["ResponseHeadersPolicyConfig"]
    headers = config["SecurityHeadersConfig"]

    assert config["Name"] == f"{NAMES.deployment}-viewer-security-headers"
    assert headers["StrictTransportSecurity"] == {
        "AccessControlMaxAgeSec": 2 * 365 * 24 * 3600,
        "IncludeSubdomains": True,
        "Preload": False,
        "Override": True,
    }
    assert headers["ContentTypeOptions"] == {"Override": True}
    assert headers["FrameOptions"] == {"FrameOption": "DENY", "Override": True}
    assert headers["ReferrerPolicy"] == {"ReferrerPolicy": "no-referrer", "Override": True}
    assert headers["XSSProtection"] == {"Protection": False, "Override": True}


def test_security_headers_attached(resources: dict[str, Any], stack: CirrusStack) -> None:
    config = properties(resources, stack, stack.viewer.distribution)["DistributionConfig"]
    [policy_id] = of_type(resources, "AWS::CloudFront::ResponseHeadersPolicy")
    assert config["DefaultCacheBehavior"]["ResponseHeadersPolicyId"] == {"Ref": policy_id}


def test_csp_loads_only_own_files(resources: dict[str, Any], stack: CirrusStack) -> None:
    csp = directives(content_security_policy(resources, stack))
    assert csp["default-src"] == ["'self'"]
    assert csp["script-src"] == ["'self'", "'wasm-unsafe-eval'"]
    assert csp["style-src"] == ["'self'"]
    assert csp["object-src"] == ["'none'"]
    assert csp["frame-ancestors"] == ["'none'"]
    assert csp["base-uri"] == ["'self'"]
    assert csp["form-action"] == ["'self'"]
    for sources in csp.values():
        assert "'unsafe-inline'" not in sources
        assert "'unsafe-eval'" not in sources
        assert "*" not in sources


def test_csp_connects_to_api_and_cognito(resources: dict[str, Any], stack: CirrusStack) -> None:
    connect = directives(content_security_policy(resources, stack))["connect-src"]
    region, suffix = ref("AWS::Region"), ref("AWS::URLSuffix")
    api = ref(logical_id(stack, stack.dicomweb.api))
    domain = ref(logical_id(stack, stack.viewer.user_pool_domain))
    assert connect == [
        "'self'",
        f"https://{api}.execute-api.{region}.{suffix}",
        *archive_hosts(resources, stack),
        f"https://{domain}.auth.{region}.amazoncognito.com",
        f"https://cognito-idp.{region}.{suffix}",
        f"https://cognito-identity.{region}.{suffix}",
    ]


def archive_hosts(resources: dict[str, Any], stack: CirrusStack) -> list[str]:
    """Return the regional and global S3 hosts of the archive bucket, from its BucketName."""
    name = flatten(properties(resources, stack, stack.storage.bucket)["BucketName"])
    region, suffix = ref("AWS::Region"), ref("AWS::URLSuffix")
    return [f"https://{name}.s3.{region}.{suffix}", f"https://{name}.s3.{suffix}"]


def test_distribution_independent_of_archive(resources: dict[str, Any], stack: CirrusStack) -> None:
    # The CSP names the archive bucket by its name, so a later CORS rule on the archive bucket
    # can name the distribution without a circular dependency.
    archive_id = logical_id(stack, stack.storage.bucket)
    for kind in ("AWS::CloudFront::Distribution", "AWS::CloudFront::ResponseHeadersPolicy"):
        for resource in of_type(resources, kind).values():
            assert archive_id not in json.dumps(resource)


def test_csp_matches_local_stack(resources: dict[str, Any], stack: CirrusStack) -> None:
    csp = directives(content_security_policy(resources, stack))
    local = directives(local_content_security_policy())
    assert csp.pop("upgrade-insecure-requests") == []
    assert csp.pop("connect-src")[0] == "'self'"
    assert local.pop("connect-src") == ["'self'"]
    assert csp == local
    assert csp["script-src"] == ["'self'", "'wasm-unsafe-eval'"]
    assert csp["worker-src"] == ["'self'", "blob:"]
    assert csp["img-src"] == ["'self'", "data:", "blob:"]


# The viewer's files


def deployments(resources: dict[str, Any]) -> dict[str, Any]:
    """Return the bucket deployments' properties by the construct id in their logical id."""
    found = of_type(resources, "Custom::CDKBucketDeployment")
    return {
        name: properties
        for name in ("DeployAssets", "DeploySite")
        for logical, resource in found.items()
        if logical.startswith(f"Viewer{name}")
        for properties in [resource["Properties"]]
    }


def test_read_dist_missing(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"has no index\.html") as error:
        read_dist(str(tmp_path))
    assert "npm ci && npm run build" in str(error.value)
    assert f"-c {DIST_CONTEXT_KEY}=DIR" in str(error.value)


def test_read_dist_relative_to_repository() -> None:
    assert read_dist(str(VIEWER_DIST.relative_to(REPO))) == VIEWER_DIST
    assert read_dist(str(VIEWER_DIST)) == VIEWER_DIST


def test_synth_without_build_fails(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="build the viewer with"):
        build_app({**CDK_CONTEXT, DIST_CONTEXT_KEY: str(tmp_path)})


def test_assets_deployed_immutable(resources: dict[str, Any], stack: CirrusStack) -> None:
    assets = deployments(resources)["DeployAssets"]
    assert assets["DestinationBucketName"] == {"Ref": logical_id(stack, stack.viewer.bucket)}
    assert assets["DestinationBucketKeyPrefix"] == "assets/"
    assert assets["Prune"] is False
    assert assets["SystemMetadata"] == {"cache-control": IMMUTABLE}
    assert "DistributionId" not in assets


def test_site_deployed_no_cache(resources: dict[str, Any], stack: CirrusStack) -> None:
    site = deployments(resources)["DeploySite"]
    assert site["DestinationBucketName"] == {"Ref": logical_id(stack, stack.viewer.bucket)}
    assert "DestinationBucketKeyPrefix" not in site
    assert site["Prune"] is True
    assert site["Exclude"] == ["assets/*"]
    assert site["SystemMetadata"] == {"cache-control": "no-cache"}


def test_site_deployment_invalidates(resources: dict[str, Any], stack: CirrusStack) -> None:
    site = deployments(resources)["DeploySite"]
    assert site["DistributionId"] == {"Ref": logical_id(stack, stack.viewer.distribution)}
    assert site["DistributionPaths"] == ["/", "/index.html", "/config.json"]
    assert site["WaitForDistributionInvalidation"] is True


def test_site_after_assets(resources: dict[str, Any]) -> None:
    found = of_type(resources, "Custom::CDKBucketDeployment")
    [assets_id] = [logical for logical in found if logical.startswith("ViewerDeployAssets")]
    [site] = [value for logical, value in found.items() if logical.startswith("ViewerDeploySite")]
    assert assets_id in site["DependsOn"]


def test_deployed_files_split(stack: CirrusStack) -> None:
    outdir = Path(stack.node.root.outdir)  # type: ignore[attr-defined]
    site, assets = stack.viewer.site_files, stack.viewer.asset_files
    assert assets is not None
    site_folder = outdir / site.asset_path
    assets_folder = outdir / assets.asset_path

    assert sorted(path.name for path in site_folder.rglob("*") if path.is_file()) == [
        "favicon.svg",
        "index.html",
    ]
    assert sorted(path.name for path in assets_folder.rglob("*")) == sorted(
        path.name for path in (VIEWER_DIST / "assets").iterdir()
    )


def test_config_json(resources: dict[str, Any], stack: CirrusStack) -> None:
    viewer = stack.viewer
    config = stack.resolve(viewer.config)
    region = {"Ref": "AWS::Region"}

    assert set(config) == {"dicomweb", "auth"}
    assert flatten(config["dicomweb"]) == (
        f"https://{ref(logical_id(stack, stack.dicomweb.api))}.execute-api."
        f"{ref('AWS::Region')}.{ref('AWS::URLSuffix')}/"
        f"{ref(stack.get_logical_id(stack.dicomweb.api.deployment_stage.node.default_child))}"  # type: ignore[arg-type]
    )
    assert config["auth"] == {
        "mode": "cognito",
        "region": region,
        "userPoolId": {"Ref": logical_id(stack, viewer.user_pool)},
        "clientId": {"Ref": logical_id(stack, viewer.client)},
        "domain": config["auth"]["domain"],
        "identityPoolId": {"Ref": logical_id(stack, viewer.identity_pool)},
    }
    domain = ref(logical_id(stack, viewer.user_pool_domain))
    assert flatten(config["auth"]["domain"]) == (
        f"https://{domain}.auth.{ref('AWS::Region')}.amazoncognito.com"
    )


def test_config_json_deployed(resources: dict[str, Any], stack: CirrusStack) -> None:
    # Source.json_data writes config.json with a marker for each deploy-time value.
    markers = deployments(resources)["DeploySite"]["SourceMarkers"]
    values = json.dumps(markers)
    for construct in (stack.viewer.user_pool, stack.viewer.client, stack.viewer.identity_pool):
        assert json.dumps({"Ref": logical_id(stack, construct)}) in values
    assert logical_id(stack, stack.dicomweb.api) in values


def test_deployment_role_least_privilege(resources: dict[str, Any], stack: CirrusStack) -> None:
    [(role_id, role)] = [
        (logical, resource)
        for logical, resource in of_type(resources, "AWS::IAM::Role").items()
        if logical.startswith("ViewerDeploymentRole")
    ]
    [policy_ref] = role["Properties"]["ManagedPolicyArns"]
    policy = resources[policy_ref["Ref"]]["Properties"]["PolicyDocument"]
    statements = {tuple(statement["Action"]): statement for statement in policy["Statement"]}
    distribution = logical_id(stack, stack.viewer.distribution)

    for actions in statements:
        assert all("*" not in action for action in actions), actions
    invalidation = statements[("cloudfront:CreateInvalidation", "cloudfront:GetInvalidation")]
    assert distribution in json.dumps(invalidation["Resource"])
    assert "Policies" not in role["Properties"]
    inline = [
        resource
        for resource in of_type(resources, "AWS::IAM::Policy").values()
        if {"Ref": role_id} in resource["Properties"].get("Roles", [])
    ]
    assert inline == []
    [function] = [
        resource
        for logical, resource in of_type(resources, "AWS::Lambda::Function").items()
        if logical.startswith("CustomCDKBucketDeployment")
    ]
    assert function["Properties"]["Role"] == {"Fn::GetAtt": [role_id, "Arn"]}


def test_deployment_function_logs_encrypted(resources: dict[str, Any], stack: CirrusStack) -> None:
    [function] = [
        resource
        for logical, resource in of_type(resources, "AWS::Lambda::Function").items()
        if logical.startswith("CustomCDKBucketDeployment")
    ]
    log_group = function["Properties"]["LoggingConfig"]["LogGroup"]["Ref"]
    assert resources[log_group]["Properties"]["KmsKeyId"] == {
        "Fn::GetAtt": [logical_id(stack, stack.storage.key), "Arn"]
    }


# Outputs


def test_outputs(template: Template, stack: CirrusStack) -> None:
    viewer = stack.viewer
    template.has_output("ViewerBucketName", {"Value": {"Ref": logical_id(stack, viewer.bucket)}})
    template.has_output(
        "ViewerDomainName",
        {"Value": {"Fn::GetAtt": [logical_id(stack, viewer.distribution), "DomainName"]}},
    )
    template.has_output(
        "ViewerUrl",
        {
            "Value": {
                "Fn::Join": [
                    "",
                    [
                        "https://",
                        {"Fn::GetAtt": [logical_id(stack, viewer.distribution), "DomainName"]},
                        "/",
                    ],
                ]
            }
        },
    )
    template.has_output("ViewerUserPoolId", {"Value": {"Ref": logical_id(stack, viewer.user_pool)}})
    template.has_output("ViewerClientId", {"Value": {"Ref": logical_id(stack, viewer.client)}})


# cdk-nag


def test_rule_packs_pass(stack: CirrusStack) -> None:
    assert findings(stack, "Cirrus/Viewer") == []


def test_acknowledged_findings(stack: CirrusStack) -> None:
    assert acknowledged(stack, "Cirrus/Viewer") == ACKNOWLEDGED_FINDINGS


def test_deployment_function_findings(stack: CirrusStack) -> None:
    assert findings(stack, DEPLOYMENT_FUNCTION) == []
    assert acknowledged(stack, DEPLOYMENT_FUNCTION) == DEPLOYMENT_FUNCTION_FINDINGS


def test_rule_packs_pass_with_custom_domain(configured_stack: CirrusStack) -> None:
    assert findings(configured_stack, "Cirrus/Viewer") == []


def test_custom_domain_needs_no_tls_acknowledgment(configured_stack: CirrusStack) -> None:
    found = acknowledged(configured_stack, "Cirrus/Viewer")
    group_policies = {item for item in found if item[0].startswith("Cirrus/Viewer/Policy-")}

    assert found - group_policies == {
        item for item in ACKNOWLEDGED_FINDINGS if not item[0].startswith("Cirrus/Viewer/Policy-")
    } - {("Cirrus/Viewer/Distribution", "AwsSolutions-CFR4")}
    # The API's GET and HEAD on every path, for each of the three groups.
    assert len(group_policies) == 6
