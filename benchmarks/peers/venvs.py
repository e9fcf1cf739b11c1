"""The peers' virtualenvs under ``.bench-venvs/``: created when missing, pinned, their versions read.

Each peer is installed as a user installs it (``pip install kedro==…``), with numpy at the
version pipetrail's own ``.venv`` had when the pins were set, so the array scenarios
serialize with the same library. A virtualenv whose ``pins.txt`` differs from the pins here
is rebuilt from scratch.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

__all__ = ["PEERS", "Peer", "ensure", "versions"]

NUMPY = "numpy==2.4.6"


@dataclass(frozen=True)
class Peer:
    """A peer tool: its name, what to pip-install (exact pins) and the distributions to report."""

    name: str
    pins: tuple[str, ...]
    report: tuple[str, ...]


#: MLflow 3.17.2 is the latest 3.17 patch on PyPI (3.18.0 is out too; the issue measured 3.17).
PEERS = {
    "kedro": Peer(
        "kedro",
        ("kedro==1.7.0", "kedro-datasets==9.6.0", NUMPY),
        ("kedro", "kedro-datasets", "kedro-telemetry", "numpy", "rich"),
    ),
    "mlflow": Peer(
        "mlflow",
        ("mlflow==3.17.2", NUMPY),
        ("mlflow", "mlflow-skinny", "sqlalchemy", "alembic", "numpy", "pandas"),
    ),
}


def ensure(peer: Peer, root: Path) -> Path:
    """The Python of ``peer``'s virtualenv under ``root``, created and installed if missing."""
    folder = root / peer.name
    python = folder / "bin" / "python"
    marker = folder / "pins.txt"
    wanted = "\n".join(peer.pins) + "\n"
    if python.exists() and marker.exists() and marker.read_text() == wanted:
        return python
    if folder.exists():
        shutil.rmtree(folder)
    print(f"creating {folder} ({' '.join(peer.pins)}) ...", file=sys.stderr, flush=True)
    subprocess.run([sys.executable, "-m", "venv", str(folder)], check=True)
    pip = [str(python), "-m", "pip", "--disable-pip-version-check", "-q"]
    done = subprocess.run([*pip, "install", *peer.pins], capture_output=True, text=True)
    if done.returncode != 0:
        tail = "\n".join(done.stderr.splitlines()[-15:])
        raise RuntimeError(f"pip install {' '.join(peer.pins)} into {folder} failed:\n{tail}")
    marker.write_text(wanted)  # last: a half-made virtualenv has none and is rebuilt
    return python


def versions(python: Path, distributions: tuple[str, ...]) -> dict[str, str]:
    """Installed versions of ``distributions`` in the interpreter ``python`` ("-" if absent)."""
    code = (
        "import importlib.metadata as m, json, sys\n"
        "def v(n):\n"
        "    try:\n"
        "        return m.version(n)\n"
        "    except m.PackageNotFoundError:\n"
        "        return '-'\n"
        "print(json.dumps({'python': sys.version.split()[0], **{n: v(n) for n in sys.argv[1:]}}))"
    )
    out = subprocess.run(
        [str(python), "-c", code, *distributions], capture_output=True, text=True, check=True
    ).stdout
    found: dict[str, str] = json.loads(out)
    return found
