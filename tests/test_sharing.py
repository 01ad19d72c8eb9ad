"""Sharing with trust (#17): keys, signatures in the header, signed loading, libraries over HTTP."""

from __future__ import annotations

import contextlib
import functools
import http.server
import json
import re
import shutil
import stat
import threading
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import lowbudget
from lowbudget.adapters.own_files import Provenance, read_header, save_embedding
from lowbudget.errors import LowbudgetError, SignatureError
from lowbudget.models import load_base
from lowbudget.adapters.keys import new_keys
from lowbudget.sharing.library import add_to_library, read_index, verify_library
from lowbudget.sharing.remote import publish, pull
from lowbudget.adapters.signing import read_signature, sign_file, verify_file
from helpers import assert_one_line_error, run

PROV = Provenance("tiny", "f" * 64, modality="chest phantom")


@pytest.fixture()
def sites(tmp_path):
    """Two sites' keys; site A's public key is trusted, B's is not."""
    new_keys("hospital-a", tmp_path / "keys-a")
    new_keys("hospital-b", tmp_path / "keys-b")
    trust = tmp_path / "trust"
    trust.mkdir()
    shutil.copy(tmp_path / "keys-a" / "hospital-a.pub", trust)
    return {"a": tmp_path / "keys-a" / "hospital-a.key", "b": tmp_path / "keys-b" / "hospital-b.key", "trust": trust}


def embedding(folder: Path, token="<eff>", width=32, seed=0) -> Path:
    vectors = torch.randn(3, width, generator=torch.Generator().manual_seed(seed))
    return save_embedding(folder / f"{token.strip('<>')}.safetensors", token, vectors, PROV)


def flip_byte(path: Path, from_end: int = 5) -> None:
    data = bytearray(path.read_bytes())
    data[-from_end] ^= 0x01
    path.write_bytes(bytes(data))


# --------------------------------------------------------------------------- keys and signatures


def test_keys_are_written_private_and_never_printed(monkeypatch, capsys, tmp_path):
    code, out, err = run(monkeypatch, capsys, "keys", "new", "--site", "hospital-a", "--output", tmp_path)
    assert code == 0, err
    private = tmp_path / "hospital-a.key"
    assert stat.S_IMODE(private.stat().st_mode) == 0o600 and (tmp_path / "hospital-a.pub").is_file()
    assert "PRIVATE KEY" in private.read_text() and "PRIVATE" not in out + err
    code, _, err = run(monkeypatch, capsys, "keys", "new", "--site", "hospital-a", "--output", tmp_path)
    assert_one_line_error(code, err, r"already exists; a key is never replaced")
    code, _, err = run(monkeypatch, capsys, "keys", "new", "--site", "../x", "--output", tmp_path)
    assert_one_line_error(code, err, r"--site '../x' must be 1-64 letters")


def test_a_signature_covers_every_tensor_byte_and_metadata_field(tmp_path, sites):
    path = embedding(tmp_path)
    before = load_file(path)
    signed = sign_file(path, sites["a"])
    assert signed.signer == "hospital-a" and verify_file(path, sites["trust"]).signer == "hospital-a"
    assert torch.equal(load_file(path)["<eff>"], before["<eff>"])  # the tensors are untouched

    tensor_changed = tmp_path / "t.safetensors"
    shutil.copy(path, tensor_changed)
    flip_byte(tensor_changed)
    with pytest.raises(SignatureError, match=r"does not match its signature by 'hospital-a': it was changed"):
        verify_file(tensor_changed, sites["trust"])

    header_changed = tmp_path / "h.safetensors"
    raw = path.read_bytes().replace(b"chest phantom", b"chest phantoX")
    header_changed.write_bytes(raw)
    with pytest.raises(SignatureError, match=r"does not match its signature"):
        verify_file(header_changed, sites["trust"])

    sign_file(path, sites["b"], tmp_path / "by-b.safetensors")
    with pytest.raises(SignatureError, match=r"signed by 'hospital-b' with key [0-9a-f]{16}, which is not in the trust"):
        verify_file(tmp_path / "by-b.safetensors", sites["trust"])
    with pytest.raises(SignatureError, match=r"is not signed"):
        verify_file(embedding(tmp_path, "<other>"), sites["trust"])


def test_signed_files_load_unchanged_in_plain_diffusers(tmp_path, tiny_base, sites):
    path = embedding(tmp_path)
    sign_file(path, sites["a"])
    pipe = load_base(tiny_base).pipeline()
    pipe.load_textual_inversion(str(path))  # diffusers' own loader, no lowbudget in between
    assert "<eff>" in pipe.tokenizer.get_vocab()
    assert read_signature(path).signer == "hospital-a"


def test_load_adapter_checks_signatures_when_asked(tmp_path, tiny_base, sites):
    signed, unsigned = embedding(tmp_path, "<s>"), embedding(tmp_path, "<u>", seed=1)
    sign_file(signed, sites["a"])
    pipe = load_base(tiny_base).pipeline()
    notes = []
    lowbudget.load_adapter(pipe, signed, trust=sites["trust"], require_signature=True, warn=notes.append)
    assert "signature by 'hospital-a'" in notes[0] and "verified" in notes[0]
    with pytest.raises(SignatureError, match="is not signed and a signature is required"):
        lowbudget.load_adapter(pipe, unsigned, trust=sites["trust"], require_signature=True)
    lowbudget.load_adapter(pipe, unsigned, warn=notes.append)  # without the option: loads, with a note
    assert any("'u.safetensors' is not signed" in n for n in notes), notes
    flip_byte(signed)
    with pytest.raises(SignatureError, match="does not match its signature"):
        lowbudget.load_adapter(load_base(tiny_base).pipeline(), signed, trust=sites["trust"])


def test_commands_refuse_what_does_not_verify(monkeypatch, capsys, tmp_path, tiny_base, sites):
    path = embedding(tmp_path)
    fast = ["--base", tiny_base, "-n", "1", "--steps", "1", "--size", "32", "--output", tmp_path / "g"]
    code, _, err = run(monkeypatch, capsys, "generate", "<eff>", "--adapter", path, "--require-signature", *fast)
    assert_one_line_error(code, err, r"--require-signature needs --trust DIR")
    code, _, err = run(monkeypatch, capsys, "generate", "<eff>", "--adapter", path, "--require-signature",
                       "--trust", sites["trust"], *fast)
    assert_one_line_error(code, err, r"is not signed and a signature is required")
    code, _, err = run(monkeypatch, capsys, "library", "add", path, "--library", tmp_path / "lib", "--require-signature",
                       "--trust", sites["trust"])
    assert_one_line_error(code, err, r"is not signed and a signature is required")
    assert not (tmp_path / "lib").exists()
    code, _, err = run(monkeypatch, capsys, "sign", path, "--key", sites["a"])
    assert code == 0 and "signed" in err
    code, _, err = run(monkeypatch, capsys, "library", "add", path, "--library", tmp_path / "lib", "--require-signature",
                       "--trust", sites["trust"], "--base", tiny_base)
    assert code == 0 and "signed by 'hospital-a'" in err, err
    code, _, err = run(monkeypatch, capsys, "generate", "<eff>", "--adapter", path, "--require-signature",
                       "--trust", sites["trust"], *fast)
    assert code == 0 and "verified" in err, err
    code, out, _ = run(monkeypatch, capsys, "inspect", path, "--trust", sites["trust"])
    assert code == 0 and re.search(r"signed by +hospital-a \(key [0-9a-f]{16}\), verified", out), out
    code, out, _ = run(monkeypatch, capsys, "verify", path, "--trust", sites["trust"])
    assert code == 0 and "signed by 'hospital-a'" in out
    flip_byte(path)
    code, out, _ = run(monkeypatch, capsys, "inspect", path, "--trust", sites["trust"])
    assert code == 1 and "NOT VERIFIED" in out
    code, _, err = run(monkeypatch, capsys, "verify", path, "--trust", sites["trust"])
    assert_one_line_error(code, err, r"does not match its signature")


def test_sign_changes_in_place_only_what_lowbudget_wrote(monkeypatch, capsys, tmp_path, sites):
    from safetensors.torch import save_file

    foreign = tmp_path / "kohya.safetensors"
    save_file({"emb_params": torch.randn(2, 32)}, foreign)
    code, _, err = run(monkeypatch, capsys, "sign", foreign, "--key", sites["a"])
    assert_one_line_error(code, err, r"was not written by lowbudget, so it is not changed in place")
    code, _, err = run(monkeypatch, capsys, "sign", foreign, "--key", sites["a"], "--output", tmp_path / "signed.safetensors")
    assert code == 0 and verify_file(tmp_path / "signed.safetensors", sites["trust"]).signer == "hospital-a"
    code, _, err = run(monkeypatch, capsys, "sign", tmp_path / "e.pt", "--key", sites["a"])
    assert code == 1 and "Traceback" not in err


# --------------------------------------------------------------------------- libraries over HTTP


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):  # keep the test output clean
        pass


class _Broken(_Quiet):
    mode = "500"

    def do_GET(self):  # noqa: N802 (http.server's name)
        if self.mode == "500":
            self.send_error(500, "Internal Server Error")
        elif self.mode == "hang":
            time.sleep(3)
        elif self.mode == "truncate" and not self.path.endswith("index.json"):
            self.send_response(200)
            self.send_header("Content-Length", "100000")
            self.end_headers()
            self.wfile.write(b"\0" * 100)
            self.close_connection = True
        else:
            super().do_GET()


@contextlib.contextmanager
def serve(folder: Path, handler=_Quiet, mode: str = ""):
    """A real HTTP server on 127.0.0.1 in a thread, stopped whatever happens."""
    cls = type("Handler", (handler,), {"mode": mode}) if mode else handler
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(cls, directory=str(folder)))
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.fixture(scope="module")
def base768(tmp_path_factory):
    from lowbudget.models.architectures import write_base_folder

    return write_base_folder(tmp_path_factory.mktemp("b") / "w768", "tiny", text_width=768)


@pytest.fixture()
def published(tmp_path, sites, tiny_base, base768):
    """A signed library of two embeddings (one for another model family), published."""
    lib = tmp_path / "lib"
    for token, width, seed, base in (("<eff>", 32, 0, tiny_base), ("<wide>", 768, 1, base768)):
        path = embedding(tmp_path / "made", token, width, seed)
        sign_file(path, sites["a"])
        add_to_library(lib, path, base=str(base))
    keys = tmp_path / "published-keys"
    keys.mkdir()
    shutil.copy(tmp_path / "keys-a" / "hospital-a.pub", keys)
    publish(lib, tmp_path / "www", keys=keys)
    return tmp_path / "www"


def test_pull_over_http_checks_everything_before_anything_lands(tmp_path, sites, tiny_base, published):
    assert sorted(p.name for p in published.iterdir()) == [".lowbudget-output", "eff.safetensors", "index.json",
                                                            "keys", "wide.safetensors"]
    base = load_base(tiny_base)
    said = []
    with serve(published) as url:
        result = pull(url, tmp_path / "mine", base=base, trust=sites["trust"], timeout=5, log=said.append)
        again = pull(url, tmp_path / "mine", base=base, trust=sites["trust"], timeout=5, log=said.append)
    assert result.added == ["eff.safetensors"] and any("wide.safetensors: text width [768]" in s for s in said)
    assert again.added == [] and again.present == ["eff.safetensors"]
    assert [e.file for e in read_index(tmp_path / "mine")] == ["eff.safetensors"]
    assert verify_library(tmp_path / "mine", trust=sites["trust"]) == []


@pytest.mark.parametrize("damage,pattern", [
    ("tamper", r"sha256 differs from its index \(corrupt or truncated download\); nothing was changed"),
    ("untrusted", r"signed by 'hospital-b' .* not in the trust folder"),
    ("escape", r"entry file '../../evil.safetensors' must be a file name inside the library"),
    ("huge", r"lists 10,001 entries; at most 10,000 are read"),
    ("500", r"the server answered 500 Internal Server Error; nothing was changed"),
    ("hang", r"no answer \(.*timed out.*; timeout 0.5 s\); nothing was changed"),
    ("truncate", r"the download was cut short \(100 of 100,000 bytes\); nothing was changed"),
])
def test_a_failed_pull_leaves_the_local_library_as_it_was(tmp_path, sites, tiny_base, published, damage, pattern):
    mine = tmp_path / "mine"
    mine.mkdir()
    keep = embedding(tmp_path / "own", "<own>", seed=7)
    add_to_library(mine, keep, base=str(tiny_base))
    before = {p.name: p.read_bytes() for p in mine.iterdir()}
    index = json.loads((published / "index.json").read_text())
    if damage == "tamper":
        flip_byte(published / "eff.safetensors")
    elif damage == "untrusted":
        sign_file(published / "eff.safetensors", sites["b"])
        from lowbudget.io import sha256_file

        index["embeddings"][0]["sha256"] = sha256_file(published / "eff.safetensors")
    elif damage == "escape":
        index["embeddings"][0]["file"] = "../../evil.safetensors"
    elif damage == "huge":
        index["embeddings"] = index["embeddings"][:1] * 10_001
    (published / "index.json").write_text(json.dumps(index))
    mode = damage if damage in ("500", "hang", "truncate") else ""
    t0 = time.monotonic()
    with serve(published, _Broken if mode else _Quiet, mode) as url:
        for into in (mine, tmp_path / "new"):  # an existing library, and one the pull would create
            with pytest.raises(LowbudgetError, match=pattern):
                pull(url, into, base=load_base(tiny_base), trust=sites["trust"], timeout=0.5, log=lambda m: None)
    assert time.monotonic() - t0 < 30
    assert {p.name: p.read_bytes() for p in mine.iterdir()} == before
    assert not (tmp_path / "new").exists()


def test_publish_and_pull_from_the_cli(monkeypatch, capsys, tmp_path, sites, tiny_base, published):
    with serve(published) as url:
        code, _, err = run(monkeypatch, capsys, "library", "pull", url, "--into", tmp_path / "mine", "--base", tiny_base,
                           "--trust", sites["trust"], "--timeout", "5")
    assert code == 0 and "pulled 1 new file into" in err and "skipped wide.safetensors" in err, err
    code, _, err = run(monkeypatch, capsys, "library", "verify", "--library", tmp_path / "mine", "--trust", sites["trust"])
    assert code == 0, err
    code, _, err = run(monkeypatch, capsys, "library", "pull", str(tmp_path / "nowhere"), "--into", tmp_path / "mine",
                       "--base", tiny_base)
    assert_one_line_error(code, err, r"is neither an http\(s\) URL nor a folder")



# --------------------------------------------------------------------------- the release check


def test_the_release_check_refuses_an_adapter_that_hands_back_training_images(monkeypatch, capsys, tmp_path, tiny_base,
                                                                               mixed_folder, sites):
    """Two training sets for one token: phantoms only (its samples are far from all of them:
    released, signed, audit in the header), and phantoms plus images the adapter itself draws at
    the seeds the check samples -- what a model that memorised its training set hands back."""
    from lowbudget.phantoms import write_chest_phantoms

    adapter = embedding(tmp_path / "made")
    fast = ["--base", tiny_base, "--steps", "2", "--prompt", "a chest x-ray with <eff>", "--samples", "8"]
    real = tmp_path / "real"
    write_chest_phantoms(real, n=8, size=32, seed=3)
    code, _, err = run(monkeypatch, capsys, "share", adapter, "--training", real, "--key", sites["a"],
                       "--output", tmp_path / "ok", *fast)
    assert code == 0 and "released" in err and "0.0% of 8 samples flagged" in err, err
    released = tmp_path / "ok" / adapter.name
    assert verify_file(released, sites["trust"]).signer == "hospital-a"
    audit = json.loads(read_header(released)["lowbudget_audit"])
    assert audit["samples"] == 8 and audit["threshold"] == 0.05 and audit["flagged_fraction"] == 0.0
    code, out, _ = run(monkeypatch, capsys, "inspect", released)
    assert re.search(r"release check +0.0% of 8 samples flagged as near-copies \(threshold 5%, 8 training images\)", out)

    copied = tmp_path / "copied"
    shutil.copytree(real, copied)
    code, _, err = run(monkeypatch, capsys, "generate", "a chest x-ray with <eff>", "--adapter", adapter, "--base",
                       tiny_base, "--steps", "2", "-n", "4", "--output", copied / "drawn")
    assert code == 0, err
    code, _, err = run(monkeypatch, capsys, "share", adapter, "--training", copied, "--key", sites["a"],
                       "--output", tmp_path / "refused", *fast)
    assert_one_line_error(code, err, r"not released: 50.0% of 8 samples are near-copies of training images \(threshold 5%\)")
    assert (tmp_path / "refused" / "memorisation.md").is_file() and not (tmp_path / "refused" / adapter.name).exists()


@pytest.mark.slow
def test_the_release_check_refuses_a_lora_trained_to_copy_its_training_images(tmp_path, sites):
    """The real thing, on the embedded base (about 2 minutes on 2 CPU cores): a LoRA trained
    600 steps on 8 phantoms hands them back and is refused; the same LoRA after 1 step is not."""
    from lowbudget.phantoms import write_chest_phantoms
    from lowbudget.recipe import (DataConfig, LoraConfig, MethodConfig, OptimConfig, OutputConfig,
                                  Recipe)
    from lowbudget.sharing.release import ReleaseCheck, ReleaseRefused, share
    from lowbudget.training import train

    data = tmp_path / "eight"
    write_chest_phantoms(data, n=8, size=64, seed=5)
    outcomes = {}
    for name, steps in (("fresh", 1), ("copy", 600)):
        recipe = Recipe(data=DataConfig(path=str(data), resolution=64, captions="templates",
                                        templates=["a frontal chest x-ray"]),
                        method=MethodConfig(kind="lora", lora=LoraConfig(rank=8, alpha=8, preset="attention")),
                        optim=OptimConfig(max_steps=steps, batch_size=2, lr_lora=3e-3),
                        output=OutputConfig(dir=str(tmp_path / name), checkpoint_every=0))
        train(recipe, progress=False, log=lambda m: None)
        try:
            share(tmp_path / name, data, sites["a"], tmp_path / f"out-{name}", base=load_base(None),
                  prompt="a frontal chest x-ray", check=ReleaseCheck(samples=16), log=lambda m: None)
            outcomes[name] = "released"
        except ReleaseRefused:
            outcomes[name] = "refused"
    assert outcomes == {"fresh": "released", "copy": "refused"}, outcomes


def test_a_signed_lora_loads_unchanged_in_plain_diffusers(tmp_path, tiny_base, mixed_folder, sites):
    from helpers import tiny_recipe
    from lowbudget.adapters.own_files import LORA_WEIGHT_NAME
    from lowbudget.training import train

    train(tiny_recipe(mixed_folder, tmp_path / "run", tiny_base, "lora", steps=1), progress=False, log=lambda m: None)
    sign_file(tmp_path / "run" / LORA_WEIGHT_NAME, sites["a"])
    pipe = load_base(tiny_base).pipeline()
    pipe.load_lora_weights(str(tmp_path / "run"), weight_name=LORA_WEIGHT_NAME, adapter_name="signed")  # diffusers' own
    assert pipe.unet.active_adapters() == ["signed"]
    assert verify_file(tmp_path / "run" / LORA_WEIGHT_NAME, sites["trust"]).signer == "hospital-a"
