"""The local build and cache of the Lambda layers and function code (cirrus_infra.layer_build)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from cirrus_infra import layer_build, layers
from cirrus_infra.layer_build import (
    REQUIREMENTS,
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


def test_project_requirements_pinned() -> None:
    pins = pinned_requirements(REQUIREMENTS)
    assert pins["pydicom"] == "3.0.2"
    assert "aws-xray-sdk" in pins
    assert "pydantic-core" in pins


@pytest.mark.parametrize("line", ["numpy", "numpy>=2", "numpy==2.*,<3", "-e ."])
def test_unpinned_requirement_rejected(tmp_path: Path, line: str) -> None:
    requirements = write(tmp_path / "requirements.txt", f"# comment\npydicom==3.0.2\n{line}\n")
    with pytest.raises(LayerBuildError, match="not pinned"):
        pinned_requirements(requirements)


def test_dependency_key_inputs(tmp_path: Path) -> None:
    requirements = write(tmp_path / "requirements.txt", "pydicom==3.0.2\n")
    key = dependency_key(requirements, "arm64", None)

    assert dependency_key(requirements, "arm64", None) == key
    assert dependency_key(requirements, "x86_64", None) != key
    assert dependency_key(requirements, "arm64", "/usr/bin/python3.12") != key
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
    # The first call builds the layer if this machine has not yet (pip needs PyPI then).
    interpreter = layer_build.bytecode_interpreter()
    content = build_dependencies(REQUIREMENTS, "arm64", interpreter=interpreter)

    def no_subprocess(*args: Any, **kwargs: Any) -> None:
        raise AssertionError(f"unexpected subprocess {args}")

    monkeypatch.setattr(subprocess, "run", no_subprocess)
    assert build_dependencies(REQUIREMENTS, "arm64", interpreter=interpreter) == content
    assert (content / "python" / "pydicom").is_dir()


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
