"""The Lambda layers and function code of Cirrus, bundled at synthesis without Docker.

Every function has the core dependency layer (layers/deps) and the shared-code layer. Only the
DICOMweb pixel function also has the pixel layer (layers/pixels: numpy, Pillow and the codecs),
because pydicom imports all of them when it is imported, which would slow every cold start.

Each asset uses CDK's local bundling (``ILocalBundling``). At synthesis CDK calls the bundler
to fill the asset's output folder, and the bundler links in a build from
``cirrus_infra.layer_build``, which is cached by a hash of its inputs.

A local bundler was chosen over a build step that cdk.json would run before the app. Tests
that build the app in-process then get the same layers as ``cdk synth``, and only the assets
that a synthesis stages are built. The Docker image that ``BundlingOptions`` requires is
never used, because the bundler never declines.

The asset hash derives from the build's cache key, so a layer version changes exactly when its
requirements, sources, architecture or bytecode change.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

import jsii
from aws_cdk import (
    Annotations,
    AssetHashType,
    BundlingOptions,
    DockerImage,
    ILocalBundling,
)
from aws_cdk import aws_lambda as lambda_
from constructs import Construct, IValidation

from cirrus_infra import layer_build
from cirrus_infra.layer_build import (
    CORE_REQUIREMENTS,
    LAMBDA_UNZIPPED_LIMIT,
    PIXEL_REQUIREMENTS,
    REPO,
    build_dependencies,
    build_sources,
    bytecode_interpreter,
    dependency_key,
    source_key,
    tree_size,
)

RUNTIME: Final = lambda_.Runtime.PYTHON_3_12
# Every package of both dependency layers has aarch64 wheels for CPython 3.12, and Graviton
# costs less per GB-second than x86_64.
ARCHITECTURE: Final = lambda_.Architecture.ARM_64
SHARED_SOURCE: Final = REPO / "layers" / "shared" / "python"
FUNCTIONS_SOURCE: Final = REPO / "functions"


@jsii.implements(ILocalBundling)
class _CachedBuild:
    """Fills an asset's output folder with a cached build, running the build when missing."""

    def __init__(self, build: Callable[[], Path]) -> None:
        self._build = build
        self.content: Path | None = None

    def try_bundle(self, output_dir: str, *, image: DockerImage, **options: Any) -> bool:
        self.content = self._build()
        layer_build.link_tree(self.content, Path(output_dir))
        return True


def _asset(
    source: Path, build: Callable[[], Path], key: str
) -> tuple[lambda_.AssetCode, _CachedBuild]:
    bundler = _CachedBuild(build)
    # CDK does not read ``source``: the hash is the build's key, and the bundler writes the
    # content.
    code = lambda_.Code.from_asset(
        str(source),
        asset_hash=key,
        asset_hash_type=AssetHashType.CUSTOM,
        bundling=BundlingOptions(image=RUNTIME.bundling_image, local=bundler),
    )
    return code, bundler


def function_code(package: str) -> tuple[lambda_.AssetCode, _CachedBuild]:
    """Return the code asset of the handler package ``functions/{package}``, and its bundler.

    The asset contains ``functions/__init__.py`` and that package only, so the handler is
    ``functions.{package}.handler.lambda_handler``, the module that tests import.
    """
    entries = [
        (FUNCTIONS_SOURCE / "__init__.py", "functions/__init__.py"),
        (FUNCTIONS_SOURCE / package, f"functions/{package}"),
    ]
    interpreter = bytecode_interpreter()
    return _asset(
        FUNCTIONS_SOURCE / package,
        lambda: build_sources(f"code-{package}", entries, interpreter=interpreter),
        source_key(entries, interpreter),
    )


class Layers(Construct):
    """The core dependency layer, the pixel layer and the shared-code layer (layers/shared)."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        architecture: lambda_.Architecture = ARCHITECTURE,
    ) -> None:
        super().__init__(scope, construct_id)
        self.architecture = architecture
        interpreter = bytecode_interpreter()
        if interpreter is None:
            Annotations.of(self).add_warning_v2(
                "cirrus:layers-without-bytecode",
                f"No CPython {layer_build.PYTHON_VERSION} found: the layers have no bytecode, "
                "so each cold start compiles the modules it imports. Set "
                f"{layer_build.INTERPRETER_ENV} to a python{layer_build.PYTHON_VERSION}.",
            )
        name = architecture.name
        core_code, self._core_build = _asset(
            CORE_REQUIREMENTS.parent,
            lambda: build_dependencies(CORE_REQUIREMENTS, name, interpreter=interpreter),
            dependency_key(CORE_REQUIREMENTS, name, interpreter),
        )
        self.core = lambda_.LayerVersion(
            self,
            "Core",
            code=core_code,
            compatible_runtimes=[RUNTIME],
            compatible_architectures=[architecture],
            description=f"Cirrus core dependencies from layers/deps/requirements.txt ({name})",
        )
        pixels_code, self._pixels_build = _asset(
            PIXEL_REQUIREMENTS.parent,
            lambda: build_dependencies(
                PIXEL_REQUIREMENTS, name, base=CORE_REQUIREMENTS, interpreter=interpreter
            ),
            dependency_key(PIXEL_REQUIREMENTS, name, interpreter, CORE_REQUIREMENTS),
        )
        self.pixels = lambda_.LayerVersion(
            self,
            "Pixels",
            code=pixels_code,
            compatible_runtimes=[RUNTIME],
            compatible_architectures=[architecture],
            description="Cirrus pixel data dependencies from layers/pixels/requirements.txt, "
            f"on top of the core layer ({name})",
        )
        shared = [(SHARED_SOURCE, "python")]
        shared_code, self._shared_build = _asset(
            SHARED_SOURCE,
            lambda: build_sources("shared", shared, interpreter=interpreter),
            source_key(shared, interpreter),
        )
        self.shared = lambda_.LayerVersion(
            self,
            "Shared",
            code=shared_code,
            compatible_runtimes=[RUNTIME],
            compatible_architectures=[architecture],
            description="Cirrus domain package (cirrus)",
        )
        # One asset per handler package: functions that run the same code share it and its
        # bundler, whose build the size check of each of them counts.
        self._code: dict[str, tuple[lambda_.AssetCode, _CachedBuild]] = {}

    def layers_for(self, *, pixels: bool = False) -> list[lambda_.ILayerVersion]:
        """Return the layers of a function, with the pixel layer if ``pixels`` is true."""
        return [self.core, *([self.pixels] if pixels else []), self.shared]

    def code_for(
        self, package: str, *, pixels: bool = False
    ) -> tuple[lambda_.AssetCode, IValidation]:
        """Return the code of ``functions/{package}`` and a check of the function's size.

        ``pixels`` says whether the function has the pixel layer, which the check then counts.
        Add the check to the function with ``node.add_validation``: synthesis then fails when
        the function's layers and code together exceed Lambda's unzipped limit.
        """
        if package not in self._code:
            self._code[package] = function_code(package)
        code, bundler = self._code[package]
        builds = [self._core_build, *([self._pixels_build] if pixels else []), self._shared_build]
        return code, _PackageSize([*builds, bundler])


@jsii.implements(IValidation)
class _PackageSize:
    """Fails synthesis when a function's layers and code exceed Lambda's unzipped limit."""

    def __init__(self, builds: list[_CachedBuild]) -> None:
        self._builds = builds

    def validate(self) -> list[str]:
        contents = [build.content for build in self._builds]
        if any(content is None for content in contents):
            return []  # Not bundled in this synthesis (CDK skipped bundling for this stack).
        size = sum(tree_size(content) for content in contents if content is not None)
        if size <= LAMBDA_UNZIPPED_LIMIT:
            return []
        return [
            f"the function's layers and code are {size / 10**6:.1f} MB unzipped, over Lambda's "
            f"limit of {LAMBDA_UNZIPPED_LIMIT / 10**6:.0f} MB; trim the requirements of its "
            "layers (layers/deps, layers/pixels)"
        ]
