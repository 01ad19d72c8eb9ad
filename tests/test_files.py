"""Adapter files that travel: layouts, safety, compatibility checks, inspect/convert, the API."""

import io
import pickle
import struct
import zipfile

import pytest
import torch
from safetensors.torch import load_file, save_file

import lowbudget
from lowbudget.adapters.compat import check_embedding
from lowbudget.adapters.files import Provenance, read_header, save_embedding
from lowbudget.adapters.formats import read_embedding, write_embedding
from lowbudget.errors import AdapterError
from lowbudget.models import load_base
from lowbudget.models.architectures import write_base_folder
from lowbudget.recipe import MethodConfig, Recipe

from test_cli import assert_one_line_error, run

PROV = Provenance(base_name="tiny", base_fingerprint="f" * 64, modality="chest X-ray", n_images=100, steps=5000,
                  recipe=Recipe(method=MethodConfig(kind="lora")).shareable_dict(), description="test", license="CC0-1.0")


@pytest.fixture(scope="module")
def base768(tmp_path_factory):
    return write_base_folder(tmp_path_factory.mktemp("b") / "w768", "tiny", text_width=768)


def lowbudget_file(tmp_path, n=4, dim=32, token="<eff>", seed=0, dtype="fp32"):
    vectors = torch.randn(n, dim, generator=torch.Generator().manual_seed(seed))
    return save_embedding(tmp_path / f"{token.strip('<>')}.safetensors", token, vectors, PROV, init="fluid", dtype=dtype), vectors


def a1111_pt(path, vectors, name="eff", device_tag="cuda:0"):
    """An A1111 .pt as the web UI writes it, its tensor tagged with a CUDA device."""
    buf = io.BytesIO()
    torch.save({"string_to_token": {"*": 265}, "string_to_param": {"*": torch.nn.Parameter(vectors)},
                "name": name, "step": 3000, "sd_checkpoint": "abc", "sd_checkpoint_name": "v1-5"}, buf)
    src = zipfile.ZipFile(io.BytesIO(buf.getvalue()))
    with zipfile.ZipFile(path, "w") as dst:
        for item in src.infolist():
            data = src.read(item)
            if item.filename.endswith("data.pkl"):  # pickled storage location 'cpu' -> 'cuda:0'
                old = b"X" + struct.pack("<I", 3) + b"cpu"  # BINUNICODE: opcode, 4-byte length, text
                assert old in data
                data = data.replace(old, b"X" + struct.pack("<I", len(device_tag)) + device_tag.encode())
            dst.writestr(item, data)
    return path


def test_embedding_file_layout_metadata_and_size(tmp_path):
    path, _ = lowbudget_file(tmp_path, n=64, dim=1024)
    tensors = load_file(path)
    assert list(tensors) == ["<eff>"] and tensors["<eff>"].shape == (64, 1024)
    assert path.stat().st_size < 300_000  # the paper's 64 x 1024 fp32 embedding, with provenance
    header = read_header(path)
    for key in ("lowbudget_format", "token", "n_vectors", "dim", "base_model", "base_fingerprint", "init",
                "modality", "n_images", "steps", "recipe", "lowbudget_version", "created", "description", "license"):
        assert header[key], key
    assert header["n_vectors"] == "64" and header["dim"] == "1024"
    half, _ = lowbudget_file(tmp_path / "h", n=64, dim=1024, dtype="fp16")
    assert load_file(half)["<eff>"].dtype == torch.float16


@pytest.mark.parametrize("chain", [["a1111", "kohya", "comfyui", "diffusers"], ["kohya", "a1111"], ["comfyui"]])
def test_round_trips_keep_tensors_identical(tmp_path, chain):
    path, vectors = lowbudget_file(tmp_path)
    current = read_embedding(path)
    for i, layout in enumerate(chain):
        out = write_embedding(current, layout, tmp_path / f"{i}-{layout}{'.pt' if layout == 'a1111' else '.safetensors'}")
        current = read_embedding(out)
        assert current.token == "<eff>" and torch.equal(current.vectors(), vectors), layout
        assert current.metadata.get("base_fingerprint") == "f" * 64  # provenance travels too


def test_a1111_pt_with_cuda_tag_loads_on_cpu(tmp_path):
    vectors = torch.randn(2, 32)
    path = a1111_pt(tmp_path / "eff.pt", vectors)
    if not torch.cuda.is_available():  # the fixture really is CUDA-tagged: a plain load fails here
        with pytest.raises(RuntimeError, match="CUDA"):
            torch.load(path, weights_only=True)
    emb = read_embedding(path)
    assert emb.layout == "a1111" and emb.token == "eff" and torch.equal(emb.vectors(), vectors)


def test_kohya_and_single_vector_files(tmp_path):
    save_file({"emb_params": torch.ones(3, 32)}, tmp_path / "k.safetensors")
    emb = read_embedding(tmp_path / "k.safetensors")
    assert emb.layout == "kohya" and emb.token == "<k>" and emb.vectors().shape == (3, 32)
    save_file({"<one>": torch.ones(32)}, tmp_path / "one.safetensors")  # stored as (dim,)
    assert read_embedding(tmp_path / "one.safetensors").vectors().shape == (1, 32)


def test_sdxl_file_gives_the_part_matching_the_base(tmp_path, base768):
    save_file({"clip_l": torch.ones(2, 768), "clip_g": torch.zeros(2, 1280)}, tmp_path / "xl.safetensors")
    emb = read_embedding(tmp_path / "xl.safetensors")
    base = load_base(base768)
    vectors, _ = check_embedding(emb, base.tokenizer, base.text_encoder, base_name="w768")
    assert vectors.shape == (2, 768) and bool((vectors == 1).all())
    with pytest.raises(AdapterError, match="none matches text width 1024"):
        emb.vectors(1024)


def test_code_carrying_pickle_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (marker.touch, ())

    (tmp_path / "evil.pt").write_bytes(pickle.dumps({"string_to_param": {"*": Evil()}}))
    with pytest.raises(AdapterError, match="refusing .*evil.pt.*holds more than tensors"):
        read_embedding(tmp_path / "evil.pt")
    assert not marker.exists()


def test_width_mismatch_names_both_widths_and_families(tmp_path, base768):
    path, _ = lowbudget_file(tmp_path, dim=1024)
    base = load_base(base768)
    with pytest.raises(AdapterError, match=r"text width 1024 \(SD 2.x\) \(made for tiny\) but base 'w768' has text width 768 \(SD 1.x\)"):
        check_embedding(read_embedding(path), base.tokenizer, base.text_encoder, base_name="w768")
    save_file({"clip_g": torch.ones(2, 1280)}, tmp_path / "g.safetensors")
    with pytest.raises(AdapterError, match=r"1280 \(SDXL's second text encoder\)"):
        check_embedding(read_embedding(tmp_path / "g.safetensors"), base.tokenizer, base.text_encoder, base_name="w768")


def test_foreign_fingerprint_warns_and_existing_token_is_refused(tmp_path, tiny_base):
    path, _ = lowbudget_file(tmp_path)
    base = load_base(tiny_base)
    _, warnings = check_embedding(read_embedding(path), base.tokenizer, base.text_encoder, base_name="tiny")
    assert len(warnings) == 1 and "fingerprint ffffffffffff" in warnings[0]
    with pytest.raises(AdapterError, match="token 'chest' already exists .* load it under another name"):
        check_embedding(read_embedding(path, token="chest"), base.tokenizer, base.text_encoder, base_name="tiny")


def test_load_adapter_puts_every_layout_into_a_diffusers_pipeline(tmp_path, tiny_base, mixed_folder):
    from diffusers import StableDiffusionPipeline

    from conftest import tiny_recipe
    from lowbudget.training import train

    pipe = StableDiffusionPipeline.from_pretrained(tiny_base, safety_checker=None, local_files_only=True)
    fp = load_base(tiny_base).fingerprint
    ours = save_embedding(tmp_path / "ours.safetensors", "<ours>", torch.randn(3, 32),
                          Provenance(base_name="tiny", base_fingerprint=fp))
    a1111 = a1111_pt(tmp_path / "theirs.pt", torch.randn(2, 32), name="<theirs>")
    warnings = []
    assert lowbudget.load_adapter(pipe, ours, warn=warnings.append) == "<ours>"
    assert lowbudget.load_adapter(pipe, a1111, warn=warnings.append) == "<theirs>"
    assert warnings == []  # same base fingerprint: nothing to warn about
    table = pipe.text_encoder.get_input_embeddings().weight
    ids = pipe.tokenizer.convert_tokens_to_ids(["<theirs>", "<theirs>_1"])
    assert torch.equal(table[ids], read_embedding(a1111).vectors())
    with pytest.raises(AdapterError, match="token '<ours>' already exists"):
        lowbudget.load_adapter(pipe, ours)
    assert lowbudget.load_adapter(pipe, ours, token="<ours-2>") == "<ours-2>"

    train(tiny_recipe(mixed_folder, tmp_path / "run", tiny_base, "lora", steps=1), progress=False, log=lambda m: None)
    assert lowbudget.load_adapter(pipe, tmp_path / "run") == "run"
    assert pipe.unet.active_adapters() == ["run"]


def test_lora_for_another_width_is_refused(tmp_path, tiny_base, base768, mixed_folder):
    from diffusers import StableDiffusionPipeline

    from conftest import tiny_recipe
    from lowbudget.training import train

    train(tiny_recipe(mixed_folder, tmp_path / "run", tiny_base, "lora", steps=1), progress=False, log=lambda m: None)
    pipe = StableDiffusionPipeline.from_pretrained(base768, safety_checker=None, local_files_only=True)
    with pytest.raises(AdapterError, match=r"expects text width 32 but base .* has 768 \(SD 1.x\)"):
        lowbudget.load_adapter(pipe, tmp_path / "run")


def test_inspect_and_convert_from_the_cli(monkeypatch, capsys, tmp_path, tiny_base, base768):
    path, vectors = lowbudget_file(tmp_path)
    code, out, _ = run(monkeypatch, capsys, "inspect", path, "--base", tiny_base)
    assert code == 0 and "4 x 32 float32" in out and "fits base         yes" in out and "sha256" in out
    code, out, _ = run(monkeypatch, capsys, "inspect", path, "--base", base768, "--json")
    import json

    report = json.loads(out)[0]
    assert code == 1 and report["fits_base"]["ok"] is False and len(report["parts"]["<eff>"]["norms"]) == 4
    code, _, err = run(monkeypatch, capsys, "convert", path, "--to", "a1111", "-o", tmp_path / "e.pt")
    assert code == 0 and torch.equal(read_embedding(tmp_path / "e.pt").vectors(), vectors)
    code, _, err = run(monkeypatch, capsys, "convert", tmp_path / "e.pt", "--to", "comfyui")
    assert code == 0 and "embedding:e-comfyui" in err
    code, _, err = run(monkeypatch, capsys, "convert", path, "--to", "a1111", "-o", tmp_path / "e.pt")
    assert_one_line_error(code, err, r"already exists; choose another --output")
    code, _, err = run(monkeypatch, capsys, "convert", path, "--to", "webui")
    assert_one_line_error(code, err, r"--to 'webui' is not a known layout")
    code, _, err = run(monkeypatch, capsys, "inspect", tmp_path / "missing.safetensors")
    assert_one_line_error(code, err, r"does not exist")
