"""Tests for the environment snapshot."""

from __future__ import annotations

import importlib.metadata
import json
import os
import platform
import stat
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipetrail.core.hashing import digest_json
from pipetrail.provenance import environment
from pipetrail.provenance.environment import (
    EnvironmentSnapshot,
    GpuInfo,
    PackageDiff,
    capture_environment,
    diff_packages,
    normalize_package_name,
)


@pytest.fixture(autouse=True)
def _fresh_caches() -> Iterator[None]:
    # Tests below fake nvidia-smi; never let a fake leak into another test's snapshot.
    yield
    capture_environment(refresh=True)


def _fake_nvidia_smi(bin_dir: Path, script: str) -> None:
    bin_dir.mkdir()
    tool = bin_dir / "nvidia-smi"
    tool.write_text("#!/bin/sh\n" + script)
    tool.chmod(tool.stat().st_mode | stat.S_IXUSR)


def test_snapshot_describes_this_interpreter() -> None:
    snapshot = capture_environment()

    assert snapshot.python_version == platform.python_version()
    assert snapshot.python_implementation == platform.python_implementation()
    assert snapshot.python_executable == sys.executable
    assert snapshot.platform == platform.platform()
    assert snapshot.system == platform.system()
    assert snapshot.cpu_count == os.cpu_count()
    assert snapshot.total_memory_bytes is not None
    assert snapshot.total_memory_bytes > 0


def test_snapshot_lists_installed_distributions_with_their_versions() -> None:
    snapshot = capture_environment()
    names = [name for name, _ in snapshot.packages]

    assert snapshot.package_version("pytest") == importlib.metadata.version("pytest")
    assert snapshot.package_version("PyTest") == importlib.metadata.version("pytest")
    assert dict(snapshot.packages)["psutil"] == importlib.metadata.version("psutil")
    assert names == sorted(set(names))
    assert all(name == normalize_package_name(name) for name in names)
    assert snapshot.package_version("no-such-distribution") is None


def test_content_hash_is_stable_across_captures() -> None:
    first = capture_environment()
    second = capture_environment(refresh=True)

    assert first == second
    assert first.content_hash == second.content_hash


def test_content_hash_changes_when_a_package_version_differs() -> None:
    data = capture_environment().to_dict()
    data["packages"]["pytest"] = "0.0.1"

    changed = EnvironmentSnapshot.from_dict(data)

    assert changed.package_version("pytest") == "0.0.1"
    assert changed.content_hash != capture_environment().content_hash


def test_to_dict_round_trips_through_json() -> None:
    snapshot = capture_environment()
    gpu_snapshot = EnvironmentSnapshot.from_dict(
        {
            **snapshot.to_dict(),
            "gpus": [GpuInfo("NVIDIA A100", 42 * 1024**3, "535.1").to_dict()],
            "cuda_version": "12.2",
        }
    )

    for original in (snapshot, gpu_snapshot):
        restored = EnvironmentSnapshot.from_dict(json.loads(json.dumps(original.to_dict())))
        assert restored == original
        assert restored.content_hash == original.content_hash


def test_from_dict_normalizes_and_sorts_packages() -> None:
    data = capture_environment().to_dict()
    data["packages"] = [["Zope.Interface", "6.0"], ["a_b", "1.0"], ["A-B", "2.0"]]

    snapshot = EnvironmentSnapshot.from_dict(data)

    assert snapshot.packages == (("a-b", "1.0"), ("zope-interface", "6.0"))


@pytest.mark.parametrize(
    ("name", "normalized"),
    [
        ("pytest", "pytest"),
        ("PyYAML", "pyyaml"),
        ("typing_extensions", "typing-extensions"),
        ("zope.interface", "zope-interface"),
        ("Foo__Bar-._baz", "foo-bar-baz"),
    ],
)
def test_normalize_package_name_follows_pep_503(name: str, normalized: str) -> None:
    assert normalize_package_name(name) == normalized


def test_diff_packages_reports_added_removed_and_changed() -> None:
    before = [("numpy", "1.26.4"), ("pandas", "2.1.0"), ("six", "1.16.0")]
    after = [("numpy", "2.0.0"), ("Pandas", "2.1.0"), ("scipy", "1.13.0")]

    diff = diff_packages(before, after)

    assert diff == PackageDiff(
        added=(("scipy", "1.13.0"),),
        removed=(("six", "1.16.0"),),
        changed=(("numpy", "1.26.4", "2.0.0"),),
    )
    assert diff
    assert PackageDiff.from_dict(json.loads(json.dumps(diff.to_dict()))) == diff


def test_diff_packages_of_identical_snapshots_is_empty() -> None:
    snapshot = capture_environment()

    diff = diff_packages(snapshot, snapshot)

    assert not diff
    assert diff.to_dict() == {"added": [], "removed": [], "changed": []}


def test_cuda_version_falls_back_to_the_environment_variable(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))

    snapshot = capture_environment(refresh=True, environ={"CUDA_VERSION": "12.1.0"})

    assert snapshot.gpus == ()
    assert snapshot.cuda_version == "12.1.0"
    assert capture_environment(environ={}).cuda_version is None


def test_gpus_are_read_from_nvidia_smi(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    _fake_nvidia_smi(
        tmp_path / "bin",
        'case "$1" in\n'
        "  --query-gpu=*)\n"
        '    echo "NVIDIA A100-SXM4-40GB, 40960 MiB, 535.104.05"\n'
        '    echo "NVIDIA A100-SXM4-40GB, [N/A], 535.104.05";;\n'
        '  *) echo "| NVIDIA-SMI 535.104.05   Driver Version: 535.104.05   CUDA Version: 12.2 |";;\n'
        "esac\n",
    )
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))

    snapshot = capture_environment(refresh=True, environ={"CUDA_VERSION": "11.8"})

    assert snapshot.gpus == (
        GpuInfo("NVIDIA A100-SXM4-40GB", 40960 * 1024**2, "535.104.05"),
        GpuInfo("NVIDIA A100-SXM4-40GB", None, "535.104.05"),
    )
    assert snapshot.cuda_version == "12.2"


@pytest.mark.parametrize("script", ["exit 9\n", "exec sleep 10\n", "echo garbage\n"])
def test_a_failing_nvidia_smi_means_no_gpus(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, script: str
) -> None:
    _fake_nvidia_smi(tmp_path / "bin", script)
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    monkeypatch.setattr(environment, "NVIDIA_SMI_TIMEOUT_S", 0.2)

    snapshot = capture_environment(refresh=True, environ={})

    assert snapshot.gpus == ()
    assert snapshot.cuda_version is None


def test_an_unchanged_environment_is_captured_once_and_hashed_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    first = capture_environment(refresh=True)
    digest = first.content_hash
    calls: list[object] = []
    real = digest_json

    def counted(doc: object) -> str:
        calls.append(doc)
        return real(doc)

    monkeypatch.setattr(environment, "digest_json", counted)

    again = capture_environment()

    assert again is first
    assert again.content_hash == digest == real(first.to_dict())
    assert calls == []
    # A different environment is a new snapshot with its own hash.
    other = capture_environment(environ={"CUDA_VERSION": "99.0"})
    if other.cuda_version == "99.0":  # no nvidia-smi here to override it
        assert other is not first
        assert other.content_hash != digest
        assert len(calls) == 1
