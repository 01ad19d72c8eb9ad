"""The install: a lock of exact versions, ranges with no known-bad combination, a README that says
what was tested, and `lowbudget doctor` that says what will fail."""

import re
import sys
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from helpers import run

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
import lock  # noqa: E402  (tools/lock.py: the script `make lock` runs)

LOCK_TEXT = (ROOT / "requirements.lock").read_text()
PYPROJECT = (ROOT / "pyproject.toml").read_text()
README = (ROOT / "README.md").read_text()
TESTED_PYTHON = "3.11"


def declared() -> list[Requirement]:
    import tomllib

    project = tomllib.loads(PYPROJECT)["project"]
    return [Requirement(r) for r in project["dependencies"] + project["optional-dependencies"]["test"]]


def lock_entries() -> list[tuple[str, str, str]]:
    """(name, version, marker) for every pinned line."""
    return [(lock.normalise(n), v, m) for n, v, m in lock.PIN.findall(LOCK_TEXT)]


def locked_for_ci() -> dict[str, str]:
    """The version each package gets on the Python CI runs (the lock's forks by marker)."""
    from packaging.markers import Marker

    env = {"python_version": TESTED_PYTHON, "python_full_version": f"{TESTED_PYTHON}.7", "sys_platform": "linux",
           "platform_system": "Linux", "platform_machine": "x86_64", "implementation_name": "cpython",
           "platform_python_implementation": "CPython", "os_name": "posix", "extra": ""}
    return {name: version for name, version, marker in lock_entries() if not marker or Marker(marker).evaluate(env)}


def test_every_locked_package_is_pinned_with_hashes():
    blocks = re.split(r"\n(?=[A-Za-z0-9])", LOCK_TEXT.split("make lock\n", 1)[1].strip())
    assert len(blocks) == len(lock_entries()) >= 40
    for block in blocks:
        assert "==" in block.splitlines()[0] and re.search(r"--hash=sha256:[0-9a-f]{64}", block), block[:200]


def test_lock_leaves_torch_and_cuda_libraries_to_the_torch_install():
    names = {name for name, _, _ in lock_entries()}
    assert "torch" not in names and not any(n.startswith(("nvidia-", "cuda-")) or n == "triton" for n in names)
    assert {"sympy", "networkx", "jinja2", "filelock", "fsspec", "setuptools"} <= names  # torch's own and the build's
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^TORCH_VERSION \?= 2\.13\.0$", makefile, re.M)
    assert "--require-hashes --no-deps -r $(LOCK)" in makefile and "--no-build-isolation" in makefile


def test_every_declared_dependency_is_locked_inside_its_range():
    tested = locked_for_ci()
    for req in declared():
        name = lock.normalise(req.name)
        if name == "torch" or (req.marker and not req.marker.evaluate({"python_version": TESTED_PYTHON, "extra": "test"})):
            continue
        assert name in tested, f"{name} is declared but not locked"
        assert req.specifier.contains(tested[name]), f"{name} {tested[name]} outside {req.specifier}"
        upper = [s for s in req.specifier if s.operator in ("<", "<=")]
        assert upper or name == "packaging", f"{name} has no upper bound"


# Pairs of releases known not to work together: (package, versions, other package, versions, why)
KNOWN_BAD = [("transformers", "5.24.0", "peft", "0.21.2", "transformers 5.24 refuses peft < 0.22 for text-encoder LoRA")]


@pytest.mark.parametrize("name,version,other,other_version,why", KNOWN_BAD)
def test_no_known_bad_combination_is_inside_the_ranges(name, version, other, other_version, why):
    ranges = {lock.normalise(r.name): r.specifier for r in declared()}
    assert not (ranges[name].contains(version) and ranges[other].contains(other_version)), why


def test_readme_lists_the_locked_for_ci():
    tested = locked_for_ci()
    rows = dict(re.findall(r"^\| (\w+) \| ([\w.]+)", README.split("Tested versions", 1)[1], re.M))
    assert rows["Python"] == TESTED_PYTHON and rows["torch"] == "2.13.0"
    for name in ("diffusers", "transformers", "peft", "accelerate"):
        assert rows[name] == tested[name], name
    assert "make test-latest" in README and "make lock" in README


def test_drift_names_the_packages_that_differ_from_the_lock(tmp_path, capsys):
    fake = tmp_path / "python"
    fake.write_text("#!/bin/sh\nprintf 'peft==0.22.0\\ndiffusers==0.42.1\\nsomething-new==1.0\\ntorch==2.13.0+cpu\\n'\n")
    fake.chmod(0o755)
    lock.drift(str(fake))
    out = capsys.readouterr().out
    assert re.search(r"peft\s+0\.21\.2 \(lock\) -> 0\.22\.0", out) and "diffusers" not in out
    assert "something-new" in out and "torch" not in out
    assert "1 package(s) newer or older than the lock, 1 not in it" in out


def test_doctor_reports_stack_device_and_live_checks(monkeypatch, capsys):
    code, out, err = run(monkeypatch, capsys, "doctor")
    assert code == 0, out + err
    wanted = next(str(r.specifier) for r in declared() if r.name == "transformers")
    lower_first = ",".join(sorted(wanted.split(","), key=lambda s: s.startswith("<")))
    assert re.search(rf"^  transformers\s+\S+\s+{re.escape(lower_first)}\s+ok$", out, re.M), out
    assert "torch build:" in out and "ok   LoRA on the text encoder" in out
    assert "looks up the token's 2 vectors" in out and "everything lowbudget needs works here" in out


def test_doctor_fails_plainly_when_an_operation_or_a_version_is_off(monkeypatch, capsys):
    import lowbudget.doctor as doctor

    def broken_text_encoder_lora():
        raise ValueError("The version of PEFT you are using is not compatible, please use a version >= 0.22.0")

    monkeypatch.setattr(doctor, "_lora_text_encoder", broken_text_encoder_lora)
    real = doctor.package_statuses
    monkeypatch.setattr(doctor, "package_statuses",
                        lambda: [doctor.PackageStatus("transformers", "5.24.0", ">=4.45,<5.24")] + real()[1:])
    code, out, err = run(monkeypatch, capsys, "doctor")
    assert code == 1
    assert re.search(r"transformers\s+5\.24\.0\s+>=4\.45,<5\.24\s+OUTSIDE the tested range", out)
    assert "FAIL LoRA on the text encoder (transformers + peft): The version of PEFT" in out
    assert "2 problems: transformers; LoRA on the text encoder" in err and "Traceback" not in err
