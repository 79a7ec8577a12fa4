"""The local build and cache of the Lambda layers and function code (cirrus_infra.layer_build)."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest

from cirrus_infra import layer_build, layers
from cirrus_infra.layer_build import (
    CORE_REQUIREMENTS,
    PIXEL_REQUIREMENTS,
    REPO,
    LayerBuildError,
    build_dependencies,
    build_sources,
    dependency_key,
    link_tree,
    pinned_requirements,
    source_key,
    tree_size,
)


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


# The packages of the pixel layer, which the core layer must not contain: pydicom imports
# each of them that is installed when it is imported.
PIXEL_PACKAGES = {
    "numpy",
    "pillow",
    "pylibjpeg",
    "pylibjpeg-libjpeg",
    "pylibjpeg-openjpeg",
    "pylibjpeg-rle",
    "pyjpegls",
    "python-gdcm",
}


def test_core_requirements_pinned() -> None:
    pins = pinned_requirements(CORE_REQUIREMENTS)
    assert pins["pydicom"] == "3.0.2"
    assert "aws-xray-sdk" in pins
    assert "boto3" in pins


def test_core_requirements_without_pixel_packages() -> None:
    pins = pinned_requirements(CORE_REQUIREMENTS)
    assert "numpy" not in pins
    assert set(pins) & PIXEL_PACKAGES == set()
    # No handler imports pydantic: only the gateway's AE configuration uses it.
    pydantic = {"pydantic", "pydantic-core", "annotated-types", "typing-inspection"}
    assert pydantic & set(pins) == set()


def test_pixel_requirements_pinned() -> None:
    pins = pinned_requirements(PIXEL_REQUIREMENTS)
    assert set(pins) == PIXEL_PACKAGES
    assert "pydicom" not in pins


def test_requirement_files_share_no_package() -> None:
    core = pinned_requirements(CORE_REQUIREMENTS)
    pixels = pinned_requirements(PIXEL_REQUIREMENTS)
    assert set(core) & set(pixels) == set()


def test_layer_pins_match_project() -> None:
    # The layers run the versions that the tests run in the development virtualenv.
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    project_pins = {}
    for requirement in project["dependencies"]:
        name, separator, version = requirement.partition("==")
        if separator:
            project_pins[layer_build._normalize(name)] = version
    layer_pins = {
        **pinned_requirements(CORE_REQUIREMENTS),
        **pinned_requirements(PIXEL_REQUIREMENTS),
    }
    shared = project_pins.keys() & layer_pins.keys()

    assert PIXEL_PACKAGES | {"pydicom"} <= shared
    assert {name: layer_pins[name] for name in shared} == {
        name: project_pins[name] for name in shared
    }


@pytest.mark.parametrize("line", ["numpy", "numpy>=2", "numpy==2.*,<3", "-e ."])
def test_unpinned_requirement_rejected(tmp_path: Path, line: str) -> None:
    requirements = write(tmp_path / "requirements.txt", f"# comment\npydicom==3.0.2\n{line}\n")
    with pytest.raises(LayerBuildError, match="not pinned"):
        pinned_requirements(requirements)


def test_dependency_key_inputs(tmp_path: Path) -> None:
    requirements = write(tmp_path / "requirements.txt", "pydicom==3.0.2\n")
    base = write(tmp_path / "base" / "requirements.txt", "six==1.17.0\n")
    key = dependency_key(requirements, "arm64", None)

    assert dependency_key(requirements, "arm64", None) == key
    assert dependency_key(requirements, "x86_64", None) != key
    assert dependency_key(requirements, "arm64", "/usr/bin/python3.12") != key
    on_base = dependency_key(requirements, "arm64", None, base)
    assert on_base != key
    write(base, "six==1.16.0\n")
    assert dependency_key(requirements, "arm64", None, base) != on_base
    write(requirements, "pydicom==3.0.1\n")
    assert dependency_key(requirements, "arm64", None) != key


def test_unknown_architecture_rejected(tmp_path: Path) -> None:
    requirements = write(tmp_path / "requirements.txt", "pydicom==3.0.2\n")
    with pytest.raises(LayerBuildError, match="not a Lambda architecture"):
        dependency_key(requirements, "riscv64", None)


def test_source_key_ignores_bytecode(tmp_path: Path) -> None:
    source = tmp_path / "src"
    write(source / "pkg" / "module.py", "VALUE = 1\n")
    entries = [(source, "python")]
    key = source_key(entries, None)

    write(source / "pkg" / "__pycache__" / "module.cpython-311.pyc", "bytecode")
    assert source_key(entries, None) == key
    write(source / "pkg" / "module.py", "VALUE = 2\n")
    assert source_key(entries, None) != key
    assert source_key([(source, "other")], None) != source_key(entries, None)


def test_sources_copied_without_caches(tmp_path: Path) -> None:
    source = tmp_path / "src"
    write(source / "pkg" / "module.py", "VALUE = 1\n")
    write(source / "pkg" / "__pycache__" / "module.cpython-311.pyc", "bytecode")
    write(tmp_path / "single.py", "")

    content = build_sources(
        "test",
        [(source, "python"), (tmp_path / "single.py", "code/single.py")],
        cache_root=tmp_path / "cache",
    )

    assert (content / "python" / "pkg" / "module.py").read_text() == "VALUE = 1\n"
    assert (content / "code" / "single.py").is_file()
    assert list(content.rglob("__pycache__")) == []


def test_cached_build_runs_once(tmp_path: Path) -> None:
    runs = []

    def build(content: Path) -> None:
        runs.append(content)
        write(content / "file.txt", "built")

    first = layer_build._cached(tmp_path, "test", "0" * 32, build, keep=2)
    second = layer_build._cached(tmp_path, "test", "0" * 32, build, keep=2)

    assert first == second
    assert len(runs) == 1
    assert (first / "file.txt").read_text() == "built"


def test_failed_build_leaves_no_entry(tmp_path: Path) -> None:
    def build(content: Path) -> None:
        write(content / "partial.txt", "")
        raise LayerBuildError("step failed")

    with pytest.raises(LayerBuildError, match="step failed"):
        layer_build._cached(tmp_path, "test", "1" * 32, build, keep=2)
    assert [path.name for path in tmp_path.iterdir()] == [".lock"]


def test_old_builds_pruned(tmp_path: Path) -> None:
    for digit in "123":
        layer_build._cached(tmp_path, "test", digit * 32, lambda content: None, keep=2)

    entries = sorted(path.name for path in tmp_path.iterdir() if not path.name.startswith("."))
    assert entries == ["test-" + "2" * 32, "test-" + "3" * 32]


def test_link_tree_links_files(tmp_path: Path) -> None:
    source = tmp_path / "source"
    write(source / "a" / "b.txt", "content")
    target = tmp_path / "target"
    target.mkdir()

    link_tree(source, target)

    copied = target / "a" / "b.txt"
    assert copied.read_text() == "content"
    assert copied.stat().st_ino == (source / "a" / "b.txt").stat().st_ino
    assert tree_size(target) == len("content")


def test_unpinned_install_rejected(tmp_path: Path) -> None:
    site = tmp_path / "python"
    write(site / "six-1.17.0.dist-info" / "METADATA", "Name: six\nVersion: 1.17.0\n\nText\n")
    write(site / "extra-1.0.dist-info" / "METADATA", "Name: Extra_Package\nVersion: 1.0\n")
    pins = {"six": "1.17.0"}

    with pytest.raises(LayerBuildError, match=re.escape("Extra_Package==1.0")):
        layer_build._check_installed(site, pins, tmp_path / "requirements.txt")
    layer_build._check_installed(site, {**pins, "extra-package": "1.0"}, tmp_path / "r.txt")


def test_base_package_rejected(tmp_path: Path) -> None:
    requirements = write(tmp_path / "pixels" / "requirements.txt", "numpy==2.4.6\nsix==1.17.0\n")
    base = write(tmp_path / "deps" / "requirements.txt", "six==1.17.0\n")

    with pytest.raises(LayerBuildError, match="six, which the layer beneath it"):
        build_dependencies(requirements, "arm64", base=base, cache_root=tmp_path / "cache")
    assert list((tmp_path / "cache").glob("pixels-*")) == []


@pytest.mark.parametrize(("base", "expected"), [(None, False), ("deps", True)])
def test_pip_without_dependencies_on_base(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, base: str | None, expected: bool
) -> None:
    commands = []

    def run(command: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
        commands.append(command)
        return subprocess.CompletedProcess(command, 0, "", "")

    monkeypatch.setattr(subprocess, "run", run)
    requirements = write(tmp_path / "pixels" / "requirements.txt", "numpy==2.4.6\n")
    base_file = write(tmp_path / "deps" / "requirements.txt", "six==1.17.0\n") if base else None

    build_dependencies(requirements, "arm64", base=base_file, cache_root=tmp_path / "cache")

    [command] = commands
    assert ("--no-deps" in command) is expected
    assert command[command.index("--requirement") + 1] == str(requirements)


def test_missing_dependency_rejected(tmp_path: Path) -> None:
    site = tmp_path / "python"
    metadata = (
        "Name: pylibjpeg\nVersion: 2.1.0\nRequires-Dist: numpy (>=2.0,<3.0)\n"
        'Requires-Dist: pydicom; extra == "all"\n\nText\n'
    )
    write(site / "pylibjpeg-2.1.0.dist-info" / "METADATA", metadata)
    requirements, base = tmp_path / "pixels.txt", tmp_path / "deps.txt"

    with pytest.raises(LayerBuildError, match=re.escape("requires 'numpy (>=2.0,<3.0)'")):
        layer_build._check_dependencies(site, {"pylibjpeg": "2.1.0"}, requirements, base)
    # Found in either file, and the extra's dependency is not needed.
    pins = {"pylibjpeg": "2.1.0", "numpy": "2.4.6"}
    layer_build._check_dependencies(site, pins, requirements, base)


def test_trim_removes_test_suites(tmp_path: Path) -> None:
    site = tmp_path / "python"
    write(site / "numpy" / "_core" / "tests" / "test_x.py", "")
    write(site / "numpy" / "testing" / "__init__.py", "")
    write(site / "pydicom" / "data" / "test_files" / "CT_small.dcm", "")
    write(site / "pydicom" / "data" / "palettes" / "hotiron", "")
    write(site / "bin" / "script", "")

    layer_build._trim(site)

    assert not (site / "numpy" / "_core" / "tests").exists()
    assert (site / "numpy" / "testing" / "__init__.py").is_file()
    assert not (site / "pydicom" / "data" / "test_files").exists()
    assert (site / "pydicom" / "data" / "palettes" / "hotiron").is_file()
    assert not (site / "bin").exists()


def test_wrong_interpreter_rejected(monkeypatch: pytest.MonkeyPatch) -> None:
    layer_build.bytecode_interpreter.cache_clear()
    monkeypatch.setenv(layer_build.INTERPRETER_ENV, sys.executable)
    try:
        with pytest.raises(LayerBuildError, match=re.escape("not a working CPython 3.12")):
            layer_build.bytecode_interpreter()
    finally:
        layer_build.bytecode_interpreter.cache_clear()


def test_warm_cache_needs_no_pip(monkeypatch: pytest.MonkeyPatch) -> None:
    # The first calls build the layers if this machine has not yet (pip needs PyPI then).
    interpreter = layer_build.bytecode_interpreter()
    core = build_dependencies(CORE_REQUIREMENTS, "arm64", interpreter=interpreter)
    pixels = build_dependencies(
        PIXEL_REQUIREMENTS, "arm64", base=CORE_REQUIREMENTS, interpreter=interpreter
    )

    def no_subprocess(*args: Any, **kwargs: Any) -> None:
        raise AssertionError(f"unexpected subprocess {args}")

    monkeypatch.setattr(subprocess, "run", no_subprocess)
    assert build_dependencies(CORE_REQUIREMENTS, "arm64", interpreter=interpreter) == core
    assert (
        build_dependencies(
            PIXEL_REQUIREMENTS, "arm64", base=CORE_REQUIREMENTS, interpreter=interpreter
        )
        == pixels
    )
    assert (core / "python" / "pydicom").is_dir()
    assert not (core / "python" / "numpy").exists()
    assert (pixels / "python" / "numpy").is_dir()
    assert not (pixels / "python" / "pydicom").exists()


def test_size_check_fails_over_limit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(tmp_path / "content" / "file.bin", "x" * 100)
    build = layers._CachedBuild(lambda: tmp_path / "content")
    build.content = tmp_path / "content"
    check = layers._PackageSize([build])

    assert check.validate() == []
    monkeypatch.setattr(layers, "LAMBDA_UNZIPPED_LIMIT", 99)
    [error] = check.validate()
    assert "over Lambda's limit" in error


def test_size_check_skips_unbundled() -> None:
    build = layers._CachedBuild(lambda: Path("/nonexistent"))
    assert layers._PackageSize([build]).validate() == []
