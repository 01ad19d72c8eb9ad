"""The README is the user's manual: every `lowbudget` command and Python snippet in it runs here.

`make demo` and `make test` are run by CI (.ci/run). Paths to the user's model and data are
replaced by a tiny SD 1.x-shaped model (text width 768) and a folder of phantoms, and
training commands are shortened to one step at 32 px.
"""

import re
import shlex
from pathlib import Path

import pytest

from test_cli import run

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
SHORT_TRAINING = ["--max-steps", "1", "--set", "data.resolution=32", "--set", "output.validation_every=0", "--quiet"]


def blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", README, flags=re.S)


def readme_commands() -> list[str]:
    seen = []
    for block in blocks("bash"):
        for line in block.splitlines():
            if line.startswith("lowbudget ") and line not in seen:
                seen.append(line)
    return seen


@pytest.fixture
def user_site(tmp_path, monkeypatch, mixed_folder):
    from lowbudget.models.architectures import write_base_folder

    base = write_base_folder(tmp_path / "sd15-shaped", "tiny", text_width=768)
    work = tmp_path / "work"
    work.mkdir()
    (work / "recipes").symlink_to(ROOT / "recipes")
    monkeypatch.chdir(work)
    return {"/models/sd15": str(base), "/data/cxr": str(mixed_folder)}


def test_readme_has_the_commands_we_promise():
    commands = " ".join(readme_commands())
    for verb in ("train", "inspect", "convert", "check-recipe", "phantoms", "make-base", "library add", "library verify"):
        assert f"lowbudget {verb}" in commands
    assert "make demo" in README and "make test" in README


def test_every_readme_command_runs(user_site, monkeypatch, capsys):
    for line in readme_commands():
        args = [user_site.get(a, a) for a in shlex.split(line, comments=True)[1:]]
        if args[0] == "train":
            args += SHORT_TRAINING
        code, out, err = run(monkeypatch, capsys, *args)
        assert code == 0, f"{line}\n{err}"


def test_every_readme_python_snippet_runs(user_site, monkeypatch, capsys):
    from diffusers import StableDiffusionPipeline

    for line in readme_commands():  # the snippets use the files the commands write
        if line.startswith("lowbudget train"):
            args = [user_site.get(a, a) for a in shlex.split(line, comments=True)[1:]] + SHORT_TRAINING
            assert run(monkeypatch, capsys, *args)[0] == 0
            break
    real_call = StableDiffusionPipeline.__call__
    calls = []

    def small_call(self, prompt, **kwargs):  # the same pipeline, 2 steps at 32 px
        calls.append(prompt)
        return real_call(self, prompt, num_inference_steps=2, height=32, width=32)

    monkeypatch.setattr(StableDiffusionPipeline, "__call__", small_call)
    snippets = blocks("python")
    assert len(snippets) >= 2
    for code in snippets:
        for placeholder, real in user_site.items():
            code = code.replace(placeholder, real)
        namespace: dict = {}
        exec(compile(code, "README.md", "exec"), namespace)
        assert namespace["image"].size == (32, 32)
        pipe = namespace["pipe"]
        assert "<chest-xray>_63" in pipe.tokenizer.get_vocab()
    assert len(calls) == len(snippets)
