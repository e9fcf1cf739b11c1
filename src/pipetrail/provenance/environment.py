"""Snapshot of the Python interpreter, platform, installed distributions and GPUs."""

from __future__ import annotations

import functools
import importlib.metadata
import os
import platform
import re
import shutil
import subprocess
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import psutil

from pipetrail.core.hashing import digest_json

__all__ = [
    "current_user",
    "EnvironmentSnapshot",
    "GpuInfo",
    "PackageDiff",
    "capture_environment",
    "diff_packages",
    "normalize_package_name",
]

#: How long ``nvidia-smi`` may take before the GPU facts are recorded as absent.
NVIDIA_SMI_TIMEOUT_S = 5.0

_NAME_SEPARATORS = re.compile(r"[-_.]+")
_CUDA_VERSION = re.compile(r"CUDA Version:\s*([0-9][0-9.]*)")
_MEMORY_UNITS = {"B": 1, "KIB": 1024, "MIB": 1024**2, "GIB": 1024**3, "TIB": 1024**4}

Package = tuple[str, str]


def normalize_package_name(name: str) -> str:
    """The PEP 503 normalized form of a distribution name (``Foo_Bar.baz`` → ``foo-bar-baz``)."""
    return _NAME_SEPARATORS.sub("-", name).lower()


@dataclass(frozen=True, slots=True)
class GpuInfo:
    """One GPU as reported by ``nvidia-smi``.

    Attributes:
        name: Product name, e.g. ``"NVIDIA A100-SXM4-40GB"``.
        memory_total_bytes: Total device memory, or ``None`` when not reported.
        driver_version: Driver version string, or ``None`` when not reported.
    """

    name: str
    memory_total_bytes: int | None
    driver_version: str | None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form of this GPU."""
        return {
            "name": self.name,
            "memory_total_bytes": self.memory_total_bytes,
            "driver_version": self.driver_version,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> GpuInfo:
        """Rebuild a GPU from :meth:`to_dict` output."""
        memory = data.get("memory_total_bytes")
        driver = data.get("driver_version")
        return cls(
            name=str(data["name"]),
            memory_total_bytes=None if memory is None else int(memory),
            driver_version=None if driver is None else str(driver),
        )


@dataclass(frozen=True, slots=True)
class EnvironmentSnapshot:
    """The interpreter, platform, distributions and GPUs a run executed with.

    Nothing here varies between two captures of the same environment on the same host (no
    timestamps, no process ids), so :attr:`content_hash` identifies the environment.

    Attributes:
        python_version: ``platform.python_version()``, e.g. ``"3.11.7"``.
        python_implementation: ``"CPython"``, ``"PyPy"``, …
        python_executable: ``sys.executable``.
        platform: ``platform.platform()``.
        machine: ``platform.machine()``, e.g. ``"x86_64"``.
        system: ``platform.system()``, e.g. ``"Linux"``.
        release: ``platform.release()`` (the kernel release on Linux).
        cpu_count: Logical CPUs, or ``None`` when unknown.
        total_memory_bytes: Physical memory, or ``None`` when unknown.
        packages: Every installed distribution as ``(normalized name, version)``, sorted by name.
        gpus: GPUs reported by ``nvidia-smi``; empty without NVIDIA GPUs.
        cuda_version: CUDA version from ``nvidia-smi`` or ``$CUDA_VERSION``; ``None`` otherwise.
    """

    python_version: str
    python_implementation: str
    python_executable: str
    platform: str
    machine: str
    system: str
    release: str
    cpu_count: int | None
    total_memory_bytes: int | None
    packages: tuple[Package, ...]
    gpus: tuple[GpuInfo, ...] = ()
    cuda_version: str | None = None

    @property
    def content_hash(self) -> str:
        """Digest of :meth:`to_dict`: equal environments give equal hashes."""
        global _CAPTURED
        snapshot, digest = _CAPTURED
        if snapshot is self and digest is not None:
            return digest
        digest = digest_json(self.to_dict())
        if _CAPTURED[0] is self:
            _CAPTURED = (self, digest)
        return digest

    def package_version(self, name: str) -> str | None:
        """Installed version of distribution ``name`` (any spelling), or ``None`` if absent."""
        wanted = normalize_package_name(name)
        return next((version for pkg, version in self.packages if pkg == wanted), None)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form; ``packages`` becomes a name → version mapping in name order."""
        return {
            "python_version": self.python_version,
            "python_implementation": self.python_implementation,
            "python_executable": self.python_executable,
            "platform": self.platform,
            "machine": self.machine,
            "system": self.system,
            "release": self.release,
            "cpu_count": self.cpu_count,
            "total_memory_bytes": self.total_memory_bytes,
            "packages": dict(self.packages),
            "gpus": [gpu.to_dict() for gpu in self.gpus],
            "cuda_version": self.cuda_version,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> EnvironmentSnapshot:
        """Rebuild a snapshot from :meth:`to_dict` output (packages re-normalized and sorted)."""
        raw_packages = data["packages"]
        pairs: Iterable[Any] = (
            raw_packages.items() if isinstance(raw_packages, Mapping) else raw_packages
        )
        cpu_count = data.get("cpu_count")
        memory = data.get("total_memory_bytes")
        cuda = data.get("cuda_version")
        return cls(
            python_version=str(data["python_version"]),
            python_implementation=str(data["python_implementation"]),
            python_executable=str(data["python_executable"]),
            platform=str(data["platform"]),
            machine=str(data["machine"]),
            system=str(data["system"]),
            release=str(data["release"]),
            cpu_count=None if cpu_count is None else int(cpu_count),
            total_memory_bytes=None if memory is None else int(memory),
            packages=_sorted_unique((str(name), str(version)) for name, version in pairs),
            gpus=tuple(GpuInfo.from_dict(gpu) for gpu in data.get("gpus", ())),
            cuda_version=None if cuda is None else str(cuda),
        )


@dataclass(frozen=True, slots=True)
class PackageDiff:
    """How the installed distributions of two environments differ.

    Attributes:
        added: ``(name, version)`` present only in the second environment.
        removed: ``(name, version)`` present only in the first environment.
        changed: ``(name, first version, second version)`` for distributions in both.
    """

    added: tuple[Package, ...]
    removed: tuple[Package, ...]
    changed: tuple[tuple[str, str, str], ...]

    def __bool__(self) -> bool:
        return bool(self.added or self.removed or self.changed)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form of the difference."""
        return {
            "added": [list(pkg) for pkg in self.added],
            "removed": [list(pkg) for pkg in self.removed],
            "changed": [list(change) for change in self.changed],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PackageDiff:
        """Rebuild a difference from :meth:`to_dict` output."""
        return cls(
            added=tuple((str(n), str(v)) for n, v in data["added"]),
            removed=tuple((str(n), str(v)) for n, v in data["removed"]),
            changed=tuple((str(n), str(a), str(b)) for n, a, b in data["changed"]),
        )


def diff_packages(
    a: EnvironmentSnapshot | Iterable[Package], b: EnvironmentSnapshot | Iterable[Package]
) -> PackageDiff:
    """Compare the distributions of environment ``a`` with those of environment ``b``.

    Args:
        a: The first (older) environment, or its ``(name, version)`` pairs.
        b: The second (newer) environment, or its ``(name, version)`` pairs.

    Returns:
        The added, removed and changed distributions, each sorted by normalized name.
    """
    before = dict(_sorted_unique(a.packages if isinstance(a, EnvironmentSnapshot) else a))
    after = dict(_sorted_unique(b.packages if isinstance(b, EnvironmentSnapshot) else b))
    return PackageDiff(
        added=tuple((name, after[name]) for name in sorted(after.keys() - before.keys())),
        removed=tuple((name, before[name]) for name in sorted(before.keys() - after.keys())),
        changed=tuple(
            (name, before[name], after[name])
            for name in sorted(before.keys() & after.keys())
            if before[name] != after[name]
        ),
    )


def capture_environment(
    *, refresh: bool = False, environ: Mapping[str, str] | None = None
) -> EnvironmentSnapshot:
    """Capture the current interpreter, platform, distributions and GPUs.

    Platform facts, the distribution list and the GPU query are cached per process, so only the
    first call pays for scanning ``site-packages`` and running ``nvidia-smi``. Never raises for a
    missing or failing ``nvidia-smi``.

    Args:
        refresh: Drop the per-process caches first (e.g. after installing a package at runtime).
        environ: Environment variables to read ``CUDA_VERSION`` from; defaults to ``os.environ``.

    Returns:
        The snapshot; its :attr:`~EnvironmentSnapshot.content_hash` is stable for this environment.
    """
    global _CAPTURED
    if refresh:
        for cached in (_platform_facts, _installed_packages, _nvidia_smi_facts, _total_memory):
            cached.cache_clear()
    variables = os.environ if environ is None else environ
    implementation, executable, platform_name, machine, system, release = _platform_facts()
    gpus, smi_cuda = _nvidia_smi_facts()
    snapshot = EnvironmentSnapshot(
        python_version=platform.python_version(),
        python_implementation=implementation,
        python_executable=executable,
        platform=platform_name,
        machine=machine,
        system=system,
        release=release,
        cpu_count=os.cpu_count(),
        total_memory_bytes=_total_memory(),
        packages=_installed_packages(),
        gpus=gpus,
        cuda_version=smi_cuda or variables.get("CUDA_VERSION") or None,
    )
    last = _CAPTURED[0]
    if last is not None and last == snapshot:
        return last  # the same object: its content hash is computed once
    _CAPTURED = (snapshot, None)
    return snapshot


#: The last snapshot this process captured, and its content hash once asked for: a process
#: recording run after run captures the same environment every time, and hashes it once.
_CAPTURED: tuple[EnvironmentSnapshot | None, str | None] = (None, None)


@functools.lru_cache(maxsize=1)
def _total_memory() -> int | None:
    try:
        return int(psutil.virtual_memory().total)
    except (OSError, RuntimeError):
        return None


@functools.lru_cache(maxsize=1)
def _platform_facts() -> tuple[str, str, str, str, str, str]:
    # platform.platform() inspects the interpreter binary for the libc version: worth caching.
    return (
        platform.python_implementation(),
        sys.executable,
        platform.platform(),
        platform.machine(),
        platform.system(),
        platform.release(),
    )


@functools.lru_cache(maxsize=1)
def _installed_packages() -> tuple[Package, ...]:
    found: list[Package] = []
    for dist in importlib.metadata.distributions():
        package = _name_and_version(dist)
        if package is not None:
            found.append(package)
    return _sorted_unique(found)


def _name_and_version(dist: importlib.metadata.Distribution) -> Package | None:
    # Reading just the header block is ~15x faster than dist.metadata, which parses the whole
    # file (long description included) with the email package.
    name = version = None
    try:
        text = dist.read_text("METADATA") or dist.read_text("PKG-INFO")
    except (OSError, UnicodeDecodeError):
        text = None
    if text:
        for line in text.partition("\n\n")[0].splitlines():
            key, sep, value = line.partition(":")
            if not sep:
                continue
            if key == "Name":
                name = value.strip()
            elif key == "Version":
                version = value.strip()
            if name and version:
                break
    if not (name and version):
        try:
            name = name or dist.metadata["Name"]
            version = version or dist.version
        except (OSError, KeyError, UnicodeDecodeError):
            return None
    if not (name and version):
        return None
    return normalize_package_name(name), str(version)


def _sorted_unique(packages: Iterable[Package]) -> tuple[Package, ...]:
    # The first occurrence wins: importlib.metadata yields in sys.path order, as imports resolve.
    unique: dict[str, str] = {}
    for name, version in packages:
        unique.setdefault(normalize_package_name(name), version)
    return tuple(sorted(unique.items()))


@functools.lru_cache(maxsize=1)
def _nvidia_smi_facts() -> tuple[tuple[GpuInfo, ...], str | None]:
    executable = shutil.which("nvidia-smi")
    if executable is None:
        return (), None
    query = _run_quietly(
        [
            executable,
            "--query-gpu=name,memory.total,driver_version",
            "--format=csv,noheader",
        ]
    )
    if not query:
        return (), None
    gpus = tuple(gpu for line in query.splitlines() if (gpu := _parse_gpu_line(line)))
    if not gpus:
        return (), None
    # The query interface has no CUDA field; the default report prints it in its banner.
    banner = _run_quietly([executable])
    match = _CUDA_VERSION.search(banner or "")
    return gpus, match.group(1) if match else None


def _run_quietly(argv: list[str]) -> str | None:
    try:
        completed = subprocess.run(
            argv,
            capture_output=True,
            text=True,
            timeout=NVIDIA_SMI_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.SubprocessError, UnicodeDecodeError):
        return None
    return completed.stdout if completed.returncode == 0 else None


def _parse_gpu_line(line: str) -> GpuInfo | None:
    parts = [part.strip() for part in line.split(",")]
    if len(parts) < 3 or not parts[0]:
        return None
    name = ",".join(parts[:-2]).strip()
    driver = parts[-1] if parts[-1] and not parts[-1].startswith("[") else None
    return GpuInfo(name=name, memory_total_bytes=_parse_memory(parts[-2]), driver_version=driver)


def _parse_memory(text: str) -> int | None:
    amount, _, unit = text.partition(" ")
    try:
        return int(float(amount) * _MEMORY_UNITS[unit.strip().upper() or "MIB"])
    except (KeyError, ValueError):
        return None


def current_user() -> str:
    """The name of the user running this process ("unknown" when the system cannot tell)."""
    import getpass

    try:
        return getpass.getuser()
    except Exception:
        return os.environ.get("USER") or "unknown"
