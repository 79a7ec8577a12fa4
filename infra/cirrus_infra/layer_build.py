"""Build the Lambda layers and function code on this machine, without Docker, and cache them.

The dependency layers come from pip with ``--only-binary=:all:`` and the manylinux platform
tags of the Lambda runtime, so no compiler and no container runs, whatever the machine's own
platform. There are two: the core layer (``layers/deps``), which every function has, and the
pixel layer (``layers/pixels``: numpy, Pillow and the codecs), which only the function that
decodes pixel data has on top of the core layer. Each build goes to a folder under
``build/layer-cache`` named by a hash of its inputs: the requirements files, the target
architecture and Python version, the bytecode interpreter and ``BUILD_FORMAT``. Only the first
build of each input set runs pip, which needs PyPI. Later synthesis and tests copy the cached
folder, as hard links where they can, offline.

Lambda mounts layers and code read-only, so Python cannot write ``__pycache__`` there, and
each cold start would compile every module it imports (about three times the import time,
measured in docs/benchmarks.md). The build therefore compiles every module with a CPython of
the runtime's version when one is found: the ``CIRRUS_LAYER_PYTHON`` environment variable,
``python3.12`` on PATH, or a 3.12 installed by pyenv. Without one, the build ships sources
only and prints a warning.

Run this module as a script to fill the cache before an offline ``cdk synth``.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from functools import cache
from pathlib import Path
from typing import Final

REPO: Final = Path(__file__).resolve().parents[2]
CACHE_ROOT: Final = REPO / "build" / "layer-cache"
CORE_REQUIREMENTS: Final = REPO / "layers" / "deps" / "requirements.txt"
# Installed on top of the core layer, so its build gets CORE_REQUIREMENTS as its base.
PIXEL_REQUIREMENTS: Final = REPO / "layers" / "pixels" / "requirements.txt"

# The Lambda runtime python3.12, on Amazon Linux 2023 (glibc 2.34).
PYTHON_VERSION: Final = "3.12"
# ``sys.implementation.cache_tag`` of that version, which names its bytecode files.
BYTECODE_TAG: Final = "cpython-312"
INTERPRETER_ENV: Final = "CIRRUS_LAYER_PYTHON"
# The manylinux tags that glibc 2.34 runs. pylibjpeg-libjpeg 2.5.0 has x86_64 wheels only for
# glibc 2.31 and later, so manylinux_2_34 is needed besides the older tags.
PLATFORM_TAGS: Final = ("manylinux2014", "manylinux_2_28", "manylinux_2_34")
# Machine names of the Lambda architectures, as wheel platform tags spell them.
MACHINES: Final = {"arm64": "aarch64", "x86_64": "x86_64"}
# Increase when a build step changes, so that every cached build is made again.
BUILD_FORMAT: Final = 1
# Lambda's limit on a function's code and layers together, unzipped: 250 MB. Checked as
# 250 * 10**6 bytes, the smaller reading of MB.
LAMBDA_UNZIPPED_LIMIT: Final = 250 * 10**6
# Builds kept in the cache per name: dependency layers (about 50 and 150 MB) change rarely, the
# shared layer and function code with every edit.
KEPT_DEPENDENCY_BUILDS: Final = 2
KEPT_SOURCE_BUILDS: Final = 4

_EXCLUDED_NAMES: Final = frozenset({"__pycache__", ".mypy_cache", ".pytest_cache"})
_EXCLUDED_SUFFIXES: Final = (".pyc", ".pyo")
# Folders of installed distributions that no handler imports: test suites and scripts.
_TRIMMED_FOLDERS: Final = ("bin", "pydicom/data/test_files")
_PIN: Final = re.compile(r"([A-Za-z0-9][A-Za-z0-9._-]*)==([A-Za-z0-9.+!_-]+)")
# The distribution name at the start of a Requires-Dist value, such as "numpy (>=2.0,<3.0)".
_REQUIREMENT_NAME: Final = re.compile(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)")

# A build step, which fills the folder it is given.
_Build = Callable[[Path], None]


class LayerBuildError(RuntimeError):
    """A failed layer build step. The message names the step and what to do next."""


@cache
def bytecode_interpreter() -> str | None:
    """Return a CPython of ``PYTHON_VERSION`` to compile bytecode with, or None.

    Raises ``LayerBuildError`` when ``CIRRUS_LAYER_PYTHON`` names anything else.
    """
    configured = os.environ.get(INTERPRETER_ENV)
    if configured:
        if _cache_tag(configured) != BYTECODE_TAG:
            raise LayerBuildError(
                f"{INTERPRETER_ENV}={configured} is not a working CPython {PYTHON_VERSION}; "
                f"set it to one, or unset it to build without bytecode"
            )
        return configured
    candidates = [shutil.which(f"python{PYTHON_VERSION}")]
    # pyenv's shim fails unless the version is selected, so its installations are tried too.
    pyenv_root = Path(os.environ.get("PYENV_ROOT") or Path.home() / ".pyenv")
    candidates += sorted(
        str(path) for path in pyenv_root.glob(f"versions/{PYTHON_VERSION}.*/bin/python3")
    )
    for candidate in candidates:
        if candidate and _cache_tag(candidate) == BYTECODE_TAG:
            return candidate
    return None


def _cache_tag(interpreter: str) -> str | None:
    try:
        # The commands of this module run pip and the developer's own interpreter.
        result = subprocess.run(  # noqa: S603
            [interpreter, "-c", "import sys; print(sys.implementation.cache_tag)"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    except OSError:
        return None
    return result.stdout.strip() if result.returncode == 0 else None


def bytecode_label(interpreter: str | None) -> str:
    """Return the label of a build's bytecode, which is part of its cache key."""
    return BYTECODE_TAG if interpreter else "none"


def pinned_requirements(requirements: Path) -> dict[str, str]:
    """Return the normalized name and version of each requirement, which must be pinned."""
    pins = {}
    for line in requirements.read_text().splitlines():
        text = line.split("#", 1)[0].strip()
        if not text:
            continue
        match = _PIN.fullmatch(text)
        if match is None:
            raise LayerBuildError(
                f"requirement {text!r} in {requirements} is not pinned as name==version; pin "
                "every package, dependencies included, so that each build has the same files"
            )
        pins[_normalize(match.group(1))] = match.group(2)
    return pins


def _normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def dependency_key(
    requirements: Path, architecture: str, interpreter: str | None, base: Path | None = None
) -> str:
    """Return the cache key of the dependency layer built from ``requirements`` on ``base``."""
    inputs = {
        "format": BUILD_FORMAT,
        "requirements": requirements.read_text(),
        "base": base.read_text() if base is not None else None,
        "machine": _machine(architecture),
        "python": PYTHON_VERSION,
        "platforms": PLATFORM_TAGS,
        "bytecode": bytecode_label(interpreter),
    }
    return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()[:32]


def build_dependencies(
    requirements: Path = CORE_REQUIREMENTS,
    architecture: str = "arm64",
    *,
    base: Path | None = None,
    interpreter: str | None = None,
    cache_root: Path = CACHE_ROOT,
) -> Path:
    """Return the folder whose ``python/`` contains a dependency layer, building it if needed.

    ``architecture`` is a Lambda architecture name, ``arm64`` or ``x86_64``. A build installs
    the pinned requirements with pip for that machine, removes test suites, checks that pip
    installed nothing unpinned and compiles bytecode with ``interpreter`` if given. The cache
    entry is named after the folder of ``requirements``, such as ``deps-arm64``.

    ``base`` is the requirements file of a layer that every function with this layer also has.
    Then pip installs the pinned packages only (``--no-deps``), so that none of the base layer's
    packages is installed twice, and the build checks that the two files share no package and
    that one of them pins every dependency of what was installed.
    """
    key = dependency_key(requirements, architecture, interpreter, base)
    name = f"{requirements.parent.name}-{architecture}"

    def build(content: Path) -> None:
        site = content / "python"
        pins = pinned_requirements(requirements)
        base_pins = pinned_requirements(base) if base is not None else {}
        _check_disjoint(pins, requirements, base_pins, base)
        print(
            f"Building the dependency layer for {architecture} with pip from {requirements}; "
            "later builds of the same requirements come from the cache",
            file=sys.stderr,
        )
        _pip_install(requirements, _machine(architecture), site, with_dependencies=base is None)
        _check_installed(site, pins, requirements)
        if base is not None:
            _check_dependencies(site, {**base_pins, **pins}, requirements, base)
        _trim(site)
        if interpreter:
            _compile(interpreter, content)

    return _cached(cache_root, name, key, build, KEPT_DEPENDENCY_BUILDS)


def source_key(entries: Sequence[tuple[Path, str]], interpreter: str | None) -> str:
    """Return the cache key of a copy of ``entries``: their paths and contents."""
    digest = hashlib.sha256(f"{BUILD_FORMAT}:{bytecode_label(interpreter)}".encode())
    for source, target in entries:
        for path, relative in _source_files(source):
            digest.update(f"\0{target}/{relative}\0".encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()[:32]


def build_sources(
    name: str,
    entries: Sequence[tuple[Path, str]],
    *,
    interpreter: str | None = None,
    cache_root: Path = CACHE_ROOT,
) -> Path:
    """Return a folder with each source of ``entries`` copied to its relative target path.

    Caches, bytecode and type-checker folders are left out, and the copy is compiled with
    ``interpreter`` if given.
    """
    key = source_key(entries, interpreter)

    def build(content: Path) -> None:
        for source, target in entries:
            for path, relative in _source_files(source):
                destination = content / target / relative
                destination.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(path, destination)
        if interpreter:
            _compile(interpreter, content)

    return _cached(cache_root, name, key, build, KEPT_SOURCE_BUILDS)


def link_tree(source: Path, target: Path) -> None:
    """Copy the files under ``source`` into ``target`` as hard links, or as copies.

    Hard links need no space and no time, but only work within one file system.
    """
    for path in sorted(source.rglob("*")):
        destination = target / path.relative_to(source)
        if path.is_dir():
            destination.mkdir(parents=True, exist_ok=True)
            continue
        destination.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(path, destination)
        except OSError:
            shutil.copy2(path, destination)


def tree_size(path: Path) -> int:
    """Return the bytes of the files under ``path``, as Lambda counts an unzipped package."""
    return sum(file.stat().st_size for file in path.rglob("*") if file.is_file())


def _machine(architecture: str) -> str:
    try:
        return MACHINES[architecture]
    except KeyError:
        raise LayerBuildError(
            f"architecture {architecture!r} is not a Lambda architecture; use "
            f"{' or '.join(MACHINES)}"
        ) from None


def _source_files(source: Path) -> Iterator[tuple[Path, str]]:
    """Yield each file to copy from ``source`` (a file or folder) and its relative path."""
    if source.is_file():
        yield source, ""
        return
    if not source.is_dir():
        raise LayerBuildError(f"layer source {source} does not exist")
    for path in sorted(source.rglob("*")):
        relative = path.relative_to(source)
        if any(part in _EXCLUDED_NAMES for part in relative.parts):
            continue
        if path.is_file() and not path.name.endswith(_EXCLUDED_SUFFIXES):
            yield path, relative.as_posix()


def _cached(cache_root: Path, name: str, key: str, build: _Build, keep: int) -> Path:
    """Return ``cache_root/{name}-{key}/content``, running ``build`` into it when missing.

    Only the ``keep`` most recently used builds of ``name`` stay. A lock serializes builds
    across processes. Each build writes to a temporary folder that
    is renamed into place, so a failed or interrupted build leaves no entry.
    """
    entry = cache_root / f"{name}-{key}"
    content = entry / "content"
    if content.is_dir():
        os.utime(entry)
        return content
    cache_root.mkdir(parents=True, exist_ok=True)
    with (cache_root / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not content.is_dir():
            work = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=cache_root))
            try:
                (work / "content").mkdir()
                build(work / "content")
                work.rename(entry)
            finally:
                shutil.rmtree(work, ignore_errors=True)
        _prune(cache_root, name, keep)
    return content


def _prune(cache_root: Path, name: str, keep: int) -> None:
    """Remove all but the ``keep`` most recently used builds of ``name``."""
    pattern = re.compile(re.escape(name) + r"-[0-9a-f]{32}")
    entries = [path for path in cache_root.iterdir() if pattern.fullmatch(path.name)]
    entries.sort(key=lambda path: path.stat().st_mtime, reverse=True)
    for stale in entries[keep:]:
        shutil.rmtree(stale, ignore_errors=True)


def _pip_install(
    requirements: Path, machine: str, site: Path, *, with_dependencies: bool = True
) -> None:
    platforms = [option for tag in PLATFORM_TAGS for option in ("--platform", f"{tag}_{machine}")]
    command = [
        sys.executable, "-m", "pip", "install",
        "--quiet", "--disable-pip-version-check", "--no-compile",
        "--only-binary=:all:", "--implementation", "cp", "--python-version", PYTHON_VERSION,
        *platforms, "--target", str(site), "--requirement", str(requirements),
        *([] if with_dependencies else ["--no-deps"]),
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, check=False)  # noqa: S603
    if result.returncode != 0:
        output = "\n".join((result.stdout + result.stderr).strip().splitlines()[-20:])
        raise LayerBuildError(
            f"pip install of {requirements} for {machine} failed with exit status "
            f"{result.returncode}. The first build of each requirements file needs PyPI. "
            f"pip's output ends with:\n{output}"
        )


def _installed(site: Path) -> Iterator[tuple[str, str, list[str]]]:
    """Yield the name, version and Requires-Dist values of each distribution under ``site``."""
    for metadata in sorted(site.glob("*.dist-info/METADATA")):
        header = metadata.read_text(errors="replace").split("\n\n", 1)[0]
        fields = [line.split(": ", 1) for line in header.splitlines() if ": " in line]
        values = dict(fields)
        requires = [value for field, value in fields if field == "Requires-Dist"]
        yield values["Name"], values["Version"], requires


def _check_installed(site: Path, pins: dict[str, str], requirements: Path) -> None:
    """Raise unless every installed distribution is pinned in ``requirements`` at its version."""
    for name, version, _ in _installed(site):
        if pins.get(_normalize(name)) != version:
            raise LayerBuildError(
                f"pip installed {name} {version}, which {requirements} does not pin; "
                f"add '{name}=={version}' so that every build installs the same files"
            )


def _check_disjoint(
    pins: dict[str, str], requirements: Path, base_pins: dict[str, str], base: Path | None
) -> None:
    """Raise when ``requirements`` pins a package of its base layer, which would load twice."""
    shared = sorted(pins.keys() & base_pins.keys())
    if shared:
        raise LayerBuildError(
            f"{requirements} pins {', '.join(shared)}, which the layer beneath it ({base}) "
            "already contains; remove them from one of the two files"
        )


def _check_dependencies(site: Path, pins: dict[str, str], requirements: Path, base: Path) -> None:
    """Raise unless ``pins`` names every dependency of the distributions under ``site``.

    Only names are checked, not version ranges: the pins are the versions of the development
    virtualenv, where pip resolved both files together. A dependency under an environment
    marker counts as needed unless the marker names an extra, since markers are not evaluated.
    """
    for name, _, requires in _installed(site):
        for requirement in requires:
            specifier, _, marker = requirement.partition(";")
            if "extra" in marker:
                continue
            match = _REQUIREMENT_NAME.match(specifier)
            if match is None:
                continue
            dependency = match.group(1)
            if _normalize(dependency) not in pins:
                raise LayerBuildError(
                    f"{name} requires {requirement.strip()!r}, which neither {requirements} nor "
                    f"{base} pins; pip ran with --no-deps, so pin it in one of them"
                )


def _trim(site: Path) -> None:
    """Remove the test suites and scripts of the installed distributions."""
    for relative in _TRIMMED_FOLDERS:
        shutil.rmtree(site / relative, ignore_errors=True)
    # Only folders inside a package: a top-level "tests" would be a distribution of its own.
    for folder in sorted(site.glob("*/**/tests"), reverse=True):
        if folder.is_dir():
            shutil.rmtree(folder)


def _compile(interpreter: str, root: Path) -> None:
    """Compile every module under ``root`` for the runtime's interpreter.

    ``unchecked-hash`` bytecode is used without looking at the source: the zip of an asset
    resets file times, which would make timestamp-based bytecode look stale, and a layer never
    changes after it is published.
    """
    command = [
        interpreter, "-m", "compileall", "-q", "-j", "0",
        "--invalidation-mode", "unchecked-hash", str(root),
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, check=False)  # noqa: S603
    if result.returncode != 0:
        output = "\n".join((result.stdout + result.stderr).strip().splitlines()[-20:])
        raise LayerBuildError(f"compiling {root} with {interpreter} failed:\n{output}")


def main(argv: Sequence[str] | None = None) -> int:
    """Build both dependency layers of each architecture given (default arm64) into the cache."""
    architectures = list(argv if argv is not None else sys.argv[1:]) or ["arm64"]
    interpreter = bytecode_interpreter()
    if interpreter is None:
        print(
            f"No CPython {PYTHON_VERSION} found (set {INTERPRETER_ENV}); building without bytecode",
            file=sys.stderr,
        )
    for architecture in architectures:
        layers = {
            "core": build_dependencies(CORE_REQUIREMENTS, architecture, interpreter=interpreter),
            "pixels": build_dependencies(
                PIXEL_REQUIREMENTS, architecture, base=CORE_REQUIREMENTS, interpreter=interpreter
            ),
        }
        for label, content in layers.items():
            size = tree_size(content) / 10**6
            print(f"{architecture} {label}: {content} ({size:.1f} MB unzipped)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
