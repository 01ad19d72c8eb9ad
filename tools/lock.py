"""Make and compare the install lock (``requirements.lock``); run by ``make lock`` / ``make test-latest``.

    python tools/lock.py make --torch 2.13.0 [--uv .venv/bin/uv] [--upgrade]
    python tools/lock.py drift --python .venv-latest/bin/python

``make`` keeps every version already in the lock that still fits pyproject.toml (so adding a
dependency adds it and what it needs, and moves nothing else); ``--upgrade`` takes the newest
releases inside the ranges instead. It resolves pyproject.toml (with the ``test`` and ``federate`` extras and the build backend) for every
platform and Python >= 3.11 with uv, pins every package, direct and transitive, with its sha256
hashes, and leaves torch out: the torch build depends on the machine (the CPU wheel here, a CUDA
build on a GPU machine), so the Makefile installs ``torch==<version>`` itself. torch's own
dependencies stay in the lock, pinned to what the pinned torch accepts; the CUDA libraries that
only a CUDA build of torch pulls (nvidia-*, cuda-*, triton) are left to that build.

``drift`` prints, for an environment, every package whose version differs from the lock's.
Standard library only: it runs before anything is installed.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LOCK = ROOT / "requirements.lock"
BUILD_BACKEND = "setuptools>=68"  # pyproject's [build-system]: locked too, so the editable build cannot drift
CUDA_ONLY = re.compile(r"^(nvidia-[\w.-]+|cuda-[\w.-]+|triton)\b", re.M)
PIN = re.compile(r"^([A-Za-z0-9][\w.-]*)==([^\s;\\]+)(?:\s*;\s*([^\\\n]+?))?\s*\\?$", re.M)


def _compile(uv: str, torch: str, extra: list[str], output: Path, upgrade: bool) -> str:
    if not upgrade and LOCK.is_file():  # uv keeps the versions of an existing output file where it can
        output.write_text(LOCK.read_text())
    with tempfile.TemporaryDirectory() as tmp:
        pins = Path(tmp, "pins.txt")
        pins.write_text(f"torch=={torch}\n")
        inputs = Path(tmp, "build.in")
        inputs.write_text(f"{BUILD_BACKEND}\n")
        cmd = [uv, "pip", "compile", str(ROOT / "pyproject.toml"), str(inputs), "--extra", "test",
               "--extra", "federate",
               "--universal", "--python-version", "3.11", "--constraint", str(pins), "--quiet",
               "--custom-compile-command", "make lock", "--output-file", str(output), *extra,
               *(["--upgrade"] if upgrade else [])]
        subprocess.run(cmd, check=True, cwd=ROOT)
    return output.read_text()


def make(uv: str, torch: str, upgrade: bool = False) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        resolved = _compile(uv, torch, ["--no-annotate", "--no-header"], Path(tmp, "all.txt"), upgrade)
    leave_out = ["torch", *sorted(set(CUDA_ONLY.findall(resolved)))]
    text = _compile(uv, torch, ["--generate-hashes", *[a for p in leave_out for a in ("--no-emit-package", p)]],
                    Path(tempfile.mkdtemp()) / "lock.txt", upgrade)
    header = (f"# Installed by `make setup` with pip --require-hashes --no-deps, after torch=={torch}.\n"
              f"# Left out (installed with torch): {', '.join(leave_out)}\n")
    tmp_lock = LOCK.with_suffix(".tmp")
    tmp_lock.write_text(header + text)
    tmp_lock.replace(LOCK)
    print(f"wrote {LOCK.relative_to(ROOT)}: {len(locked_versions(LOCK.read_text()))} packages pinned with hashes")


def locked_versions(text: str) -> dict[str, set[str]]:
    """{normalised name: versions} -- one version per marker fork (numpy for 3.11 vs 3.12, say)."""
    out: dict[str, set[str]] = {}
    for name, version, _marker in PIN.findall(text):
        out.setdefault(normalise(name), set()).add(version)
    return out


def normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def drift(python: str) -> int:
    freeze = subprocess.run([python, "-m", "pip", "list", "--format", "freeze", "--exclude-editable"],
                            check=True, capture_output=True, text=True).stdout
    installed = {}
    for line in freeze.splitlines():
        name, pinned, version = line.partition("==")
        if pinned and normalise(name) != "pip":  # pip comes with the venv
            installed[normalise(name)] = version
    text = LOCK.read_text()
    locked = locked_versions(text)
    beside = {normalise(n) for n in re.findall(r"[\w.-]+", text.split("# Left out (installed with torch):")[1].splitlines()[0])}
    changed = [(name, "/".join(sorted(locked[name])), version) for name, version in sorted(installed.items())
               if name in locked and version not in locked[name]]
    new = [(name, version) for name, version in sorted(installed.items()) if name not in locked and name not in beside]
    for name, old, version in changed:
        print(f"  {name:<22} {old:>14} (lock) -> {version}")
    for name, version in new:
        print(f"  {name:<22} {'-':>14} (lock) -> {version} (not in the lock)")
    print(f"{len(changed)} package(s) newer or older than the lock, {len(new)} not in it")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p_make = sub.add_parser("make", help="resolve and write requirements.lock")
    p_make.add_argument("--torch", required=True, help="the torch version the Makefile installs")
    p_make.add_argument("--uv", default="uv", help="the uv executable")
    p_make.add_argument("--upgrade", action="store_true",
                        help="newest releases inside the ranges (default: keep every locked version that still fits)")
    p_drift = sub.add_parser("drift", help="compare an environment with the lock")
    p_drift.add_argument("--python", required=True, help="that environment's python")
    args = parser.parse_args(argv)
    if args.command == "make":
        make(args.uv, args.torch, args.upgrade)
        return 0
    return drift(args.python)


if __name__ == "__main__":
    sys.exit(main())
