"""CDK assertions and cdk-nag checks on the Lambda layers and the Cirrus functions.

The functions are ingest, DICOMweb and the DICOMweb pixel function, which runs the DICOMweb
code with the pixel layer. The layers are bundled locally at synthesis from
``build/layer-cache``. The first run on a machine builds the dependency layers with pip, which
needs PyPI, and later runs are offline.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from aws_cdk.assertions import Template
from constructs import IConstruct

from cirrus.config import ENV, Settings
from cirrus.lambda_metrics import REQUEST_METRICS_VARIABLE
from cirrus_infra import CirrusStack, build_app, layers
from cirrus_infra import dicomweb as dicomweb_module
from cirrus_infra import ingest as ingest_module
from cirrus_infra import pixels as pixels_module
from cirrus_infra.dicomweb import read_access_context
from cirrus_infra.layer_build import (
    LAMBDA_UNZIPPED_LIMIT,
    PIXEL_REQUIREMENTS,
    pinned_requirements,
    tree_size,
)
from cirrus_infra.storage import GLOBAL_SECONDARY_INDEXES, INGEST_VISIBILITY_TIMEOUT
from tests.infra.nag import acknowledged, findings
from tests.infra.test_stack import CDK_CONTEXT, NAMES, arn_of, logical_id

_ARCHIVE = "<StorageArchiveEF4C9845.Arn>"
INGEST_ACKNOWLEDGMENTS = {
    ("Cirrus/Ingest/FunctionRolePolicy", f"AwsSolutions-IAM5[Resource::{_ARCHIVE}/sites/*]"),
    ("Cirrus/Ingest/FunctionRolePolicy", "AwsSolutions-IAM5[Resource::*]"),
    ("Cirrus/Ingest/Function", "AwsSolutions-L1"),
}
_PIXEL = "Cirrus/Dicomweb/Pixel"
PIXEL_ACKNOWLEDGMENTS = {
    (f"{_PIXEL}/FunctionRolePolicy", f"AwsSolutions-IAM5[Resource::{_ARCHIVE}/sites/*]"),
    (
        f"{_PIXEL}/FunctionRolePolicy",
        f"AwsSolutions-IAM5[Resource::{_ARCHIVE}/transfers/sites/*/responses/*]",
    ),
    (f"{_PIXEL}/FunctionRolePolicy", "AwsSolutions-IAM5[Resource::*]"),
    (f"{_PIXEL}/Function", "AwsSolutions-L1"),
    (f"{_PIXEL}/Function", "HIPAA.Security-LambdaDLQ"),
}
# Expected settings of each function: its handler package, whether it has the pixel layer,
# and its configuration.
FUNCTIONS = {
    "ingest": {
        "package": "ingest",
        "pixels": False,
        "memory": ingest_module.FUNCTION_MEMORY_MB,
        "timeout": 20,
        "concurrency": ingest_module.CONCURRENCY,
        "service": ingest_module.SERVICE,
    },
    "dicomweb": {
        "package": "dicomweb",
        "pixels": False,
        "memory": dicomweb_module.FUNCTION_MEMORY_MB,
        "timeout": 30,
        "concurrency": dicomweb_module.CONCURRENCY,
        "service": dicomweb_module.SERVICE,
    },
    "pixel": {
        "package": "dicomweb",
        "pixels": True,
        "memory": pixels_module.FUNCTION_MEMORY_MB,
        "timeout": 30,
        "concurrency": dicomweb_module.CONCURRENCY,
        "service": dicomweb_module.SERVICE,
    },
}
# The packages that only the pixel layer contains, by import name.
PIXEL_PACKAGES = ("numpy", "PIL", "pylibjpeg", "libjpeg", "openjpeg", "rle", "jpeg_ls", "gdcm")
# Actions that write data. The pixel function's role has them only on staged responses and on
# audit records.
DATA_WRITE_ACTIONS = {
    "s3:PutObject",
    "s3:PutObjectTagging",
    "s3:DeleteObject",
    "s3:AbortMultipartUpload",
    "dynamodb:PutItem",
    "dynamodb:UpdateItem",
    "dynamodb:DeleteItem",
    "dynamodb:BatchWriteItem",
}
# Actions that a role may hold on resource "*": X-Ray and the function's network interfaces.
WILDCARD_RESOURCE_ACTIONS = {
    "xray:PutTraceSegments",
    "xray:PutTelemetryRecords",
    "ec2:CreateNetworkInterface",
    "ec2:DescribeNetworkInterfaces",
    "ec2:DescribeSubnets",
    "ec2:DeleteNetworkInterface",
    "ec2:AssignPrivateIpAddresses",
    "ec2:UnassignPrivateIpAddresses",
}
DATA_KEY_ACTIONS = ["kms:Decrypt", "kms:DescribeKey", "kms:Encrypt", "kms:GenerateDataKey"]


@pytest.fixture(scope="module")
def outdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cdk.out")


@pytest.fixture(scope="module")
def stack(outdir: Path) -> CirrusStack:
    _, stack = build_app(CDK_CONTEXT, outdir=str(outdir))
    return stack


@pytest.fixture(scope="module")
def resources(stack: CirrusStack) -> dict[str, Any]:
    resources: dict[str, Any] = Template.from_stack(stack).to_json()["Resources"]
    return resources


def component(stack: CirrusStack, name: str) -> Any:
    """Return the construct of function ``name`` (a key of FUNCTIONS), with its role and policy."""
    components = {
        "ingest": stack.ingest,
        "dicomweb": stack.dicomweb,
        "pixel": stack.dicomweb.pixels,
        "stable": stack.events,
    }
    return components[name]


def properties(resources: dict[str, Any], stack: CirrusStack, construct: IConstruct) -> Any:
    return resources[logical_id(stack, construct)]["Properties"]


def function_of(resources: dict[str, Any], stack: CirrusStack, name: str) -> Any:
    return properties(resources, stack, component(stack, name).function)


def asset_dir(outdir: Path, code: dict[str, Any]) -> Path:
    """Return the staged folder of an asset from its S3 key, "{hash}.zip"."""
    return outdir / f"asset.{code['S3Key'].removesuffix('.zip')}"


def statements_of(resources: dict[str, Any], stack: CirrusStack, name: str) -> list[Any]:
    policy = properties(resources, stack, component(stack, name).policy)
    return sorted(
        (
            {
                "Action": sorted(as_list(statement["Action"])),
                "Resource": as_list(statement["Resource"]),
                "Condition": statement.get("Condition"),
            }
            for statement in policy["PolicyDocument"]["Statement"]
        ),
        key=json.dumps,
    )


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def under(logical: str, suffix: str) -> dict[str, Any]:
    return {"Fn::Join": ["", [{"Fn::GetAtt": [logical, "Arn"]}, suffix]]}


def via(*services: str) -> dict[str, Any]:
    endpoints = [
        {"Fn::Join": ["", [f"{service}.", {"Ref": "AWS::Region"}, ".amazonaws.com"]]}
        for service in services
    ]
    return {"StringEquals": {"kms:ViaService": endpoints}}


def statement(actions: list[str], resources: list[Any], condition: Any = None) -> dict[str, Any]:
    return {"Action": sorted(actions), "Resource": resources, "Condition": condition}


def events_environment(stack: CirrusStack) -> dict[str, Any]:
    """Return the settings of the event bus, the change feed and StudyStable."""
    events = stack.events
    return {
        ENV["changes_table"]: {"Ref": logical_id(stack, events.table)},
        ENV["event_bus"]: {"Ref": logical_id(stack, events.bus)},
        ENV["stable_queue"]: {"Fn::GetAtt": [logical_id(stack, events.queue), "QueueName"]},
        ENV["stable_after_seconds"]: "120",
    }


def put_events_statement(stack: CirrusStack) -> dict[str, Any]:
    return statement(["events:PutEvents"], [arn_of(stack, stack.events.bus)])


def common_statements(stack: CirrusStack, name: str) -> list[dict[str, Any]]:
    log_group = component(stack, name).log_group
    return [
        statement(["logs:CreateLogStream", "logs:PutLogEvents"], [arn_of(stack, log_group)]),
        statement(sorted(WILDCARD_RESOURCE_ACTIONS), ["*"]),
    ]


# Layers


def test_layers_for_python312_arm64(resources: dict[str, Any], stack: CirrusStack) -> None:
    for layer in (stack.layers.core, stack.layers.pixels, stack.layers.shared):
        layer_properties = properties(resources, stack, layer)
        assert layer_properties["CompatibleRuntimes"] == ["python3.12"]
        assert layer_properties["CompatibleArchitectures"] == ["arm64"]


@pytest.mark.parametrize("name", FUNCTIONS)
def test_function_layers(resources: dict[str, Any], stack: CirrusStack, name: str) -> None:
    function = function_of(resources, stack, name)
    core = {"Ref": logical_id(stack, stack.layers.core)}
    pixels = {"Ref": logical_id(stack, stack.layers.pixels)}
    shared = {"Ref": logical_id(stack, stack.layers.shared)}

    if FUNCTIONS[name]["pixels"]:
        assert function["Layers"] == [core, pixels, shared]
    else:
        assert function["Layers"] == [core, shared]


def test_core_layer_contents(resources: dict[str, Any], stack: CirrusStack, outdir: Path) -> None:
    content = asset_dir(outdir, properties(resources, stack, stack.layers.core)["Content"])
    site = content / "python"
    for package in ("pydicom", "aws_lambda_powertools", "aws_xray_sdk", "pynamodb", "boto3"):
        assert (site / package / "__init__.py").is_file(), package
    for package in (*PIXEL_PACKAGES, "pydantic", "pydantic_core"):
        assert not (site / package).exists(), package
    assert list(site.glob("numpy*")) == []
    assert not (site / "pydicom" / "data" / "test_files").exists()
    assert list(site.glob("*/**/tests")) == []
    assert list(site.rglob("*.cpython-311.pyc")) == []


def test_pixel_layer_contents(resources: dict[str, Any], stack: CirrusStack, outdir: Path) -> None:
    content = asset_dir(outdir, properties(resources, stack, stack.layers.pixels)["Content"])
    site = content / "python"
    for package in ("numpy", "PIL", "pylibjpeg"):
        assert (site / package / "__init__.py").is_file(), package
    # aarch64 wheels for CPython 3.12, as the arm64 python3.12 runtime loads them.
    assert list(site.glob("numpy/_core/_multiarray_umath.cpython-312-aarch64-linux-gnu.so"))
    assert list(site.glob("_CharLS.cpython-312-aarch64-linux-gnu.so"))
    assert list(site.glob("*/**/tests")) == []
    assert list(site.rglob("*.cpython-311.pyc")) == []


def test_pixel_layer_has_no_core_package(
    resources: dict[str, Any], stack: CirrusStack, outdir: Path
) -> None:
    core = asset_dir(outdir, properties(resources, stack, stack.layers.core)["Content"])
    pixels = asset_dir(outdir, properties(resources, stack, stack.layers.pixels)["Content"])
    core_entries = {path.name for path in (core / "python").iterdir()} - {"__pycache__"}
    pixel_entries = {path.name for path in (pixels / "python").iterdir()} - {"__pycache__"}
    installed = {}
    for path in pixels.glob("python/*.dist-info"):
        name, version = path.name.removesuffix(".dist-info").split("-", 1)
        installed[name.replace("_", "-").lower()] = version

    assert core_entries & pixel_entries == set()
    assert not (pixels / "python" / "pydicom").exists()
    assert installed == pinned_requirements(PIXEL_REQUIREMENTS)


def test_shared_layer_contents(resources: dict[str, Any], stack: CirrusStack, outdir: Path) -> None:
    content = asset_dir(outdir, properties(resources, stack, stack.layers.shared)["Content"])
    assert (content / "python" / "cirrus" / "config.py").is_file()
    assert list(content.rglob("*.cpython-311.pyc")) == []


@pytest.mark.parametrize("name", FUNCTIONS)
def test_function_code_is_own_package(
    resources: dict[str, Any], stack: CirrusStack, outdir: Path, name: str
) -> None:
    package = FUNCTIONS[name]["package"]
    content = asset_dir(outdir, function_of(resources, stack, name)["Code"])
    names = {path.name for path in (content / "functions").iterdir()} - {"__pycache__"}
    assert names == {"__init__.py", package}
    assert (content / "functions" / package / "handler.py").is_file()


def test_pixel_function_runs_dicomweb_code(resources: dict[str, Any], stack: CirrusStack) -> None:
    pixel = function_of(resources, stack, "pixel")
    dicomweb = function_of(resources, stack, "dicomweb")
    assert pixel["Code"] == dicomweb["Code"]
    assert pixel["Handler"] == dicomweb["Handler"]


@pytest.mark.parametrize("name", FUNCTIONS)
def test_unzipped_size_within_limit(
    resources: dict[str, Any], stack: CirrusStack, outdir: Path, name: str
) -> None:
    function = function_of(resources, stack, name)
    layer_ids = [layer["Ref"] for layer in function["Layers"]]
    folders = [asset_dir(outdir, resources[layer]["Properties"]["Content"]) for layer in layer_ids]
    folders.append(asset_dir(outdir, function["Code"]))
    sizes = {folder.name: tree_size(folder) for folder in folders}

    assert all(size > 0 for size in sizes.values()), sizes
    assert sum(sizes.values()) < LAMBDA_UNZIPPED_LIMIT, sizes


@pytest.mark.parametrize("name", FUNCTIONS)
def test_size_check_counts_function_layers(
    resources: dict[str, Any],
    stack: CirrusStack,
    outdir: Path,
    monkeypatch: pytest.MonkeyPatch,
    name: str,
) -> None:
    function = function_of(resources, stack, name)
    contents = [resources[layer["Ref"]]["Properties"]["Content"] for layer in function["Layers"]]
    size = sum(tree_size(asset_dir(outdir, content)) for content in [*contents, function["Code"]])
    expected = FUNCTIONS[name]
    _, check = stack.layers.code_for(str(expected["package"]), pixels=bool(expected["pixels"]))

    monkeypatch.setattr(layers, "LAMBDA_UNZIPPED_LIMIT", size)
    assert check.validate() == []
    monkeypatch.setattr(layers, "LAMBDA_UNZIPPED_LIMIT", size - 1)
    [error] = check.validate()
    assert f"{size / 10**6:.1f} MB" in error


# Function settings


@pytest.mark.parametrize("name", FUNCTIONS)
def test_function_runtime_and_handler(
    resources: dict[str, Any], stack: CirrusStack, name: str
) -> None:
    function = function_of(resources, stack, name)
    expected = FUNCTIONS[name]
    assert function["Runtime"] == "python3.12"
    assert function["Architectures"] == ["arm64"]
    assert function["Handler"] == f"functions.{expected['package']}.handler.lambda_handler"
    assert function["MemorySize"] == expected["memory"]
    assert function["Timeout"] == expected["timeout"]
    assert function["ReservedConcurrentExecutions"] == expected["concurrency"]
    assert function["TracingConfig"] == {"Mode": "Active"}


@pytest.mark.parametrize("name", FUNCTIONS)
def test_function_in_vpc(resources: dict[str, Any], stack: CirrusStack, name: str) -> None:
    function = function_of(resources, stack, name)
    subnets = stack.network.vpc.select_subnets(
        subnet_type=stack.network.subnets.subnet_type
    ).subnets
    [group] = function["VpcConfig"]["SecurityGroupIds"]
    group_id = group["Fn::GetAtt"][0]

    assert function["VpcConfig"]["SubnetIds"] == [
        {"Ref": logical_id(stack, subnet)} for subnet in subnets
    ]
    assert group["Fn::GetAtt"][1] == "GroupId"
    assert resources[group_id]["Type"] == "AWS::EC2::SecurityGroup"
    assert "SecurityGroupIngress" not in resources[group_id]["Properties"]
    ingress = [
        resource
        for resource in resources.values()
        if resource["Type"] == "AWS::EC2::SecurityGroupIngress"
        and resource["Properties"]["GroupId"] == group
    ]
    assert ingress == []


@pytest.mark.parametrize("name", FUNCTIONS)
def test_function_environment(resources: dict[str, Any], stack: CirrusStack, name: str) -> None:
    variables = function_of(resources, stack, name)["Environment"]["Variables"]
    storage = stack.storage
    expected = {
        "POWERTOOLS_SERVICE_NAME": FUNCTIONS[name]["service"],
        "POWERTOOLS_METRICS_NAMESPACE": "Cirrus",
        "POWERTOOLS_LOG_LEVEL": "INFO",
        ENV["deployment"]: NAMES.deployment,
        ENV["bucket"]: {"Ref": logical_id(stack, storage.bucket)},
        ENV["table"]: {"Ref": logical_id(stack, storage.table)},
        ENV["audit_table"]: {"Ref": logical_id(stack, storage.audit_table)},
        ENV["ingest_queue"]: {"Fn::GetAtt": [logical_id(stack, storage.ingest_queue), "QueueName"]},
        ENV["dead_letter_queue"]: {
            "Fn::GetAtt": [logical_id(stack, storage.dead_letter_queue), "QueueName"]
        },
        ENV["kms_key_id"]: arn_of(stack, storage.key),
        ENV["default_site"]: "default",
    }
    if name != "ingest":
        # The viewer's origin, which the stack allows to call DICOMweb from a browser. The
        # pixel function adds the CORS headers to the responses it makes, so it needs it too.
        distribution = logical_id(stack, stack.viewer.distribution)
        expected[ENV["cors_origins"]] = {
            "Fn::Join": ["", ["https://", {"Fn::GetAtt": [distribution, "DomainName"]}]]
        }
    if name == "dicomweb":
        expected[ENV["pixel_function"]] = {"Ref": logical_id(stack, stack.dicomweb.pixels.function)}
    if name == "pixel":
        # Forwarded requests are counted once, by the DICOMweb function.
        expected[REQUEST_METRICS_VARIABLE] = "false"
    if name in ("ingest", "dicomweb"):
        expected.update(events_environment(stack))
    if name != "ingest":
        # Without the access context value, only the viewer's group may read.
        role = logical_id(stack, stack.viewer.group_roles["site-default"])
        expected[ENV["access_document"]] = {
            "Fn::Join": [
                "",
                [
                    '{"principals":{"',
                    {"Fn::GetAtt": [role, "Arn"]},
                    '":{"default":["query","retrieve"]}}}',
                ],
            ]
        }
    assert variables == expected


def test_access_context_joins_viewer_grants(tmp_path: Path) -> None:
    modality = "arn:aws:iam::111122223333:role/ct-north"
    context = {**CDK_CONTEXT, "access": {"principals": {modality: {"default": ["store"]}}}}
    _, stack = build_app(context, outdir=str(tmp_path))
    variables = Template.from_stack(stack).to_json()["Resources"][
        logical_id(stack, stack.dicomweb.function)
    ]["Properties"]["Environment"]["Variables"]
    [[prefix, _, suffix]] = [variables[ENV["access_document"]]["Fn::Join"][1]]

    assert prefix == '{"principals":{"' + modality + '":{"default":["store"]},"'
    assert suffix == '":{"default":["query","retrieve"]}}}'


@pytest.mark.parametrize(
    "value",
    [
        {"principals": {"arn:aws:iam::111122223333:role/r": {"default": ["erase"]}}},
        {"principals": {"not-an-arn": {"default": ["store"]}}},
        '{"principals": ',
    ],
)
def test_invalid_access_context_rejected(value: object) -> None:
    with pytest.raises(ValueError, match="context value access"):
        read_access_context(value)


@pytest.mark.parametrize("name", FUNCTIONS)
def test_environment_builds_settings(
    resources: dict[str, Any], stack: CirrusStack, name: str
) -> None:
    variables = function_of(resources, stack, name)["Environment"]["Variables"]
    # Values that CloudFormation resolves at deployment get a stand-in of their kind.
    stand_ins = {
        ENV["cors_origins"]: "https://d111111abcdef8.cloudfront.net",
        ENV["pixel_function"]: "cirrus-DicomwebPixelFunction-1A2B3C4D5E6F",
    }
    literal = {
        name: value if isinstance(value, str) else stand_ins.get(name, "resolved")
        for name, value in variables.items()
    }
    settings = Settings.from_env(literal)
    assert settings.deployment == NAMES.deployment
    expected_origins = (stand_ins[ENV["cors_origins"]],) if name != "ingest" else ()
    assert settings.cors_origins == expected_origins
    expected_pixel_function = stand_ins[ENV["pixel_function"]] if name == "dicomweb" else None
    assert settings.pixel_function == expected_pixel_function


def test_service_names_match_handlers() -> None:
    from functions.dicomweb.handler import SERVICE_NAME
    from functions.ingest.handler import logger

    assert FUNCTIONS["dicomweb"]["service"] == SERVICE_NAME
    assert FUNCTIONS["pixel"]["service"] == SERVICE_NAME
    assert FUNCTIONS["ingest"]["service"] == logger.service


@pytest.mark.parametrize("name", FUNCTIONS)
def test_log_group_encrypted_and_retained(
    resources: dict[str, Any], stack: CirrusStack, name: str
) -> None:
    log_group = component(stack, name).log_group
    function = function_of(resources, stack, name)
    group = properties(resources, stack, log_group)

    assert function["LoggingConfig"] == {"LogGroup": {"Ref": logical_id(stack, log_group)}}
    assert group["KmsKeyId"] == arn_of(stack, stack.storage.key)
    assert group["RetentionInDays"] == 90


# Roles


@pytest.mark.parametrize("name", FUNCTIONS)
def test_role_has_only_managed_policy(
    resources: dict[str, Any], stack: CirrusStack, name: str
) -> None:
    role = properties(resources, stack, component(stack, name).role)
    assert role["ManagedPolicyArns"] == [{"Ref": logical_id(stack, component(stack, name).policy)}]
    assert "Policies" not in role
    assert role["AssumeRolePolicyDocument"]["Statement"] == [
        {
            "Action": "sts:AssumeRole",
            "Effect": "Allow",
            "Principal": {"Service": "lambda.amazonaws.com"},
        }
    ]
    role_ref = {"Ref": logical_id(stack, component(stack, name).role)}
    inline = [
        resource
        for resource in resources.values()
        if resource["Type"] == "AWS::IAM::Policy" and role_ref in resource["Properties"]["Roles"]
    ]
    assert inline == []


@pytest.mark.parametrize("name", FUNCTIONS)
def test_role_has_no_wildcard_on_data(
    resources: dict[str, Any], stack: CirrusStack, name: str
) -> None:
    for policy_statement in statements_of(resources, stack, name):
        assert policy_statement["Action"] != ["*"]
        assert all(not action.endswith("*") for action in policy_statement["Action"])
        if "*" in policy_statement["Resource"]:
            assert set(policy_statement["Action"]) <= WILDCARD_RESOURCE_ACTIONS


def test_ingest_role_statements(resources: dict[str, Any], stack: CirrusStack) -> None:
    storage = stack.storage
    archive = logical_id(stack, storage.bucket)
    expected = [
        *common_statements(stack, "ingest"),
        statement(["s3:GetObject", "s3:PutObject"], [under(archive, "/sites/*")]),
        statement(["s3:ListBucket"], [arn_of(stack, storage.bucket)]),
        statement(
            [
                "dynamodb:DeleteItem",
                "dynamodb:GetItem",
                "dynamodb:PutItem",
                "dynamodb:Query",
                "dynamodb:UpdateItem",
            ],
            [arn_of(stack, storage.table)],
        ),
        statement(
            [
                "sqs:DeleteMessage",
                "sqs:GetQueueAttributes",
                "sqs:GetQueueUrl",
                "sqs:ReceiveMessage",
                "sqs:SendMessage",
            ],
            [arn_of(stack, storage.ingest_queue)],
        ),
        statement(["sqs:SendMessage"], [arn_of(stack, storage.dead_letter_queue)]),
        statement(DATA_KEY_ACTIONS, [arn_of(stack, storage.key)], via("s3", "sqs", "dynamodb")),
        # The change feed and the arrival records, the first StudyStable check, and events.
        statement(
            ["dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem"],
            [arn_of(stack, stack.events.table)],
        ),
        statement(["sqs:GetQueueUrl", "sqs:SendMessage"], [arn_of(stack, stack.events.queue)]),
        put_events_statement(stack),
    ]
    assert statements_of(resources, stack, "ingest") == sorted(expected, key=json.dumps)


def test_dicomweb_role_statements(resources: dict[str, Any], stack: CirrusStack) -> None:
    storage = stack.storage
    archive = logical_id(stack, storage.bucket)
    table = logical_id(stack, storage.table)
    indexes = sorted(name for name, _, _ in GLOBAL_SECONDARY_INDEXES)
    expected = [
        *common_statements(stack, "dicomweb"),
        statement(
            ["s3:DeleteObject", "s3:GetObject", "s3:PutObject", "s3:PutObjectTagging"],
            [under(archive, "/sites/*")],
        ),
        statement(["dynamodb:GetItem", "dynamodb:PutItem"], [arn_of(stack, storage.audit_table)]),
        statement(
            ["s3:AbortMultipartUpload", "s3:DeleteObject", "s3:GetObject", "s3:PutObject"],
            [under(archive, "/transfers/*")],
        ),
        statement(["s3:ListBucket"], [arn_of(stack, storage.bucket)]),
        statement(
            [
                "dynamodb:DeleteItem",
                "dynamodb:GetItem",
                "dynamodb:PutItem",
                "dynamodb:Query",
                "dynamodb:UpdateItem",
            ],
            [arn_of(stack, storage.table)],
        ),
        statement(["dynamodb:Query"], [under(table, f"/index/{name}") for name in indexes]),
        statement(DATA_KEY_ACTIONS, [arn_of(stack, storage.key)], via("s3", "dynamodb")),
        statement(["lambda:InvokeFunction"], [arn_of(stack, stack.dicomweb.pixels.function)]),
        # GET /changes reads the feed, and a DELETE writes its changes and sends events.
        statement(
            ["dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:Query", "dynamodb:UpdateItem"],
            [arn_of(stack, stack.events.table)],
        ),
        put_events_statement(stack),
    ]
    assert statements_of(resources, stack, "dicomweb") == sorted(expected, key=json.dumps)


def test_pixel_role_statements(resources: dict[str, Any], stack: CirrusStack) -> None:
    storage = stack.storage
    archive = logical_id(stack, storage.bucket)
    expected = [
        *common_statements(stack, "pixel"),
        statement(["s3:GetObject"], [under(archive, "/sites/*")]),
        statement(["dynamodb:GetItem", "dynamodb:PutItem"], [arn_of(stack, storage.audit_table)]),
        statement(
            ["s3:AbortMultipartUpload", "s3:GetObject", "s3:PutObject"],
            [under(archive, "/transfers/sites/*/responses/*")],
        ),
        statement(["s3:ListBucket"], [arn_of(stack, storage.bucket)]),
        statement(["dynamodb:GetItem", "dynamodb:Query"], [arn_of(stack, storage.table)]),
        statement(DATA_KEY_ACTIONS, [arn_of(stack, storage.key)], via("s3", "dynamodb")),
    ]
    assert statements_of(resources, stack, "pixel") == sorted(expected, key=json.dumps)


def test_pixel_role_cannot_write_data(resources: dict[str, Any], stack: CirrusStack) -> None:
    storage = stack.storage
    archive = logical_id(stack, storage.bucket)
    statements = statements_of(resources, stack, "pixel")
    writes = [item for item in statements if set(item["Action"]) & DATA_WRITE_ACTIONS]
    on_table = [item for item in statements if arn_of(stack, storage.table) in item["Resource"]]
    on_instances = [item for item in statements if under(archive, "/sites/*") in item["Resource"]]
    audit = arn_of(stack, storage.audit_table)
    on_audit = [item for item in statements if audit in item["Resource"]]
    written = sorted(json.dumps(item["Resource"]) for item in writes)

    # Staged responses and audit records are the only data that the function writes, and it
    # deletes none.
    assert written == sorted(
        [json.dumps([under(archive, "/transfers/sites/*/responses/*")]), json.dumps([audit])]
    )
    assert all("s3:DeleteObject" not in item["Action"] for item in writes)
    assert [item["Action"] for item in on_table] == [["dynamodb:GetItem", "dynamodb:Query"]]
    assert [item["Action"] for item in on_instances] == [["s3:GetObject"]]
    assert [item["Action"] for item in on_audit] == [["dynamodb:GetItem", "dynamodb:PutItem"]]


def test_dicomweb_invokes_only_pixel_function(
    resources: dict[str, Any], stack: CirrusStack
) -> None:
    invoking = [
        policy_statement
        for name in FUNCTIONS
        for policy_statement in statements_of(resources, stack, name)
        if any(action.startswith("lambda:") for action in policy_statement["Action"])
    ]
    assert invoking == [
        statement(["lambda:InvokeFunction"], [arn_of(stack, stack.dicomweb.pixels.function)])
    ]
    assert invoking[0] in statements_of(resources, stack, "dicomweb")


def test_pixel_function_has_no_trigger(resources: dict[str, Any], stack: CirrusStack) -> None:
    pixel = logical_id(stack, stack.dicomweb.pixels.function)
    permissions = [
        resource["Properties"]
        for resource in resources.values()
        if resource["Type"] == "AWS::Lambda::Permission"
    ]
    mappings = [
        resource["Properties"]
        for resource in resources.values()
        if resource["Type"] == "AWS::Lambda::EventSourceMapping"
    ]
    methods = [
        resource["Properties"]
        for resource in resources.values()
        if resource["Type"] == "AWS::ApiGateway::Method"
    ]

    assert permissions
    assert [p for p in permissions if pixel in json.dumps(p["FunctionName"])] == []
    assert [m for m in mappings if pixel in json.dumps(m["FunctionName"])] == []
    assert methods
    assert [m for m in methods if pixel in json.dumps(m["Integration"])] == []


# Ingest event source


def ingest_mappings(resources: dict[str, Any], stack: CirrusStack) -> list[Any]:
    function = {"Ref": logical_id(stack, stack.ingest.function)}
    return [
        resource["Properties"]
        for resource in resources.values()
        if resource["Type"] == "AWS::Lambda::EventSourceMapping"
        and resource["Properties"]["FunctionName"] == function
    ]


def test_ingest_event_source(resources: dict[str, Any], stack: CirrusStack) -> None:
    [mapping] = ingest_mappings(resources, stack)
    assert mapping["FunctionName"] == {"Ref": logical_id(stack, stack.ingest.function)}
    assert mapping["EventSourceArn"] == arn_of(stack, stack.storage.ingest_queue)
    assert mapping["BatchSize"] == 10
    assert mapping["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert mapping["MaximumBatchingWindowInSeconds"] == 1
    assert mapping["ScalingConfig"] == {"MaximumConcurrency": ingest_module.CONCURRENCY}


def test_ingest_concurrency_within_reserved(resources: dict[str, Any], stack: CirrusStack) -> None:
    function = function_of(resources, stack, "ingest")
    [mapping] = ingest_mappings(resources, stack)
    maximum = mapping["ScalingConfig"]["MaximumConcurrency"]
    assert 2 <= maximum <= function["ReservedConcurrentExecutions"]


def test_ingest_timeout_fits_visibility(resources: dict[str, Any], stack: CirrusStack) -> None:
    function = function_of(resources, stack, "ingest")
    assert 6 * function["Timeout"] <= INGEST_VISIBILITY_TIMEOUT.to_seconds()


def test_ingest_dead_letter_queue(resources: dict[str, Any], stack: CirrusStack) -> None:
    function = function_of(resources, stack, "ingest")
    assert function["DeadLetterConfig"] == {
        "TargetArn": arn_of(stack, stack.storage.dead_letter_queue)
    }


# cdk-nag


@pytest.mark.parametrize("path", ["Cirrus/Ingest", "Cirrus/Layers", _PIXEL, "Cirrus/Network"])
def test_rule_packs_pass(stack: CirrusStack, path: str) -> None:
    assert findings(stack, path) == []


def test_acknowledged_findings(stack: CirrusStack) -> None:
    assert acknowledged(stack, "Cirrus/Ingest") == INGEST_ACKNOWLEDGMENTS
    assert acknowledged(stack, "Cirrus/Layers") == set()
    assert acknowledged(stack, _PIXEL) == PIXEL_ACKNOWLEDGMENTS
