"""Adapter files that travel: layouts, safety, compatibility checks, inspect/convert, the API."""

import io
import pickle
import re
import struct
import zipfile

import pytest
import torch
from safetensors.torch import load_file, save_file

import lowbudget
from lowbudget.adapters.compat import check_embedding
from lowbudget.adapters.own_files import Provenance, read_header, save_embedding
from lowbudget.adapters.foreign_layouts import read_embedding, write_embedding
from lowbudget.errors import AdapterError
from lowbudget.models import load_base
from lowbudget.models.architectures import write_base_folder
from lowbudget.recipe import MethodConfig, Recipe

from helpers import assert_one_line_error, run

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
    (vectors,), warnings = check_embedding(emb, base.text_encoders, base_name="w768")
    assert vectors.shape == (2, 768) and bool((vectors == 1).all())
    assert warnings == [f"'{emb.path}' is an SDXL embedding: only its 768-wide part loads on 'w768', and SDXL "
                        "trained it through its encoder's penultimate layer; check its output"]
    with pytest.raises(AdapterError, match="none matches text width 1024"):
        emb.vectors(1024)


def test_code_carrying_pickle_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (marker.touch, ())

    (tmp_path / "evil.pt").write_bytes(pickle.dumps({"string_to_param": {"*": Evil()}}))
    with pytest.raises(AdapterError, match="refusing .*evil.pt.*more than tensors") as err:
        read_embedding(tmp_path / "evil.pt")
    assert not marker.exists() and "\x1b" not in str(err.value) and "\n" not in str(err.value)


def test_width_mismatch_names_both_widths_and_families(tmp_path, base768):
    path, _ = lowbudget_file(tmp_path, dim=1024)
    base = load_base(base768)
    with pytest.raises(AdapterError, match=r"text width 1024 \(SD 2.x\) \(made for tiny\) but base 'w768' has text width 768 \(SD 1.x\)"):
        check_embedding(read_embedding(path), base.text_encoders, base_name="w768")
    save_file({"clip_g": torch.ones(2, 1280)}, tmp_path / "g.safetensors")
    with pytest.raises(AdapterError, match=r"1280 \(SDXL's second text encoder\)"):
        check_embedding(read_embedding(tmp_path / "g.safetensors"), base.text_encoders, base_name="w768")


def test_foreign_fingerprint_warns_and_existing_token_is_refused(tmp_path, tiny_base):
    path, _ = lowbudget_file(tmp_path)
    base = load_base(tiny_base)
    _, warnings = check_embedding(read_embedding(path), base.text_encoders, base_name="tiny")
    assert len(warnings) == 1 and "fingerprint ffffffffffff" in warnings[0]
    with pytest.raises(AdapterError, match="token 'chest' already exists .* load it under another name"):
        check_embedding(read_embedding(path, token="chest"), base.text_encoders, base_name="tiny")


def test_load_adapter_puts_every_layout_into_a_diffusers_pipeline(tmp_path, tiny_base, mixed_folder):
    from diffusers import StableDiffusionPipeline

    from helpers import tiny_recipe
    from lowbudget.training import train

    pipe = StableDiffusionPipeline.from_pretrained(tiny_base, safety_checker=None, local_files_only=True)
    fp = load_base(tiny_base).fingerprint
    ours = save_embedding(tmp_path / "ours.safetensors", "<ours>", torch.randn(3, 32),
                          Provenance(base_name="tiny", base_fingerprint=fp))
    a1111 = a1111_pt(tmp_path / "theirs.pt", torch.randn(2, 32), name="<theirs>")
    warnings = []
    assert lowbudget.load_adapter(pipe, ours, warn=warnings.append) == "<ours>"
    assert lowbudget.load_adapter(pipe, a1111, warn=warnings.append) == "<theirs>"
    # same base fingerprint: nothing to warn about but the missing signatures
    assert [w.split("'")[1] for w in warnings] == ["ours.safetensors", "theirs.pt"]
    assert all("is not signed" in w for w in warnings)
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

    from helpers import tiny_recipe
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
    assert code == 0 and "embedding:eff" in err and (tmp_path / "comfyui" / "eff.safetensors").is_file()
    code, _, err = run(monkeypatch, capsys, "convert", path, "--to", "a1111", "-o", tmp_path / "e.pt")
    assert_one_line_error(code, err, r"already exists and lowbudget did not write it")
    code, _, err = run(monkeypatch, capsys, "convert", path, "--to", "webui")
    assert_one_line_error(code, err, r"--to 'webui' is not a known layout")
    code, _, err = run(monkeypatch, capsys, "inspect", tmp_path / "missing.safetensors")
    assert_one_line_error(code, err, r"does not exist")


A1111_ENTRY_RULE = r"^([^/]+)/((data/\d+)|version|(data\.pkl))$"  # modules/safe.py: allowed_zip_names_re
# The globals A1111's RestrictedUnpickler.find_class admits that a tensor dict can use
A1111_GLOBALS = {("collections", "OrderedDict"), ("torch._utils", "_rebuild_tensor_v2"),
                 ("torch._utils", "_rebuild_parameter"), ("torch", "FloatStorage"), ("torch", "HalfStorage"),
                 ("torch.nn.modules.container", "ParameterDict"), ("__builtin__", "set")}


def pickle_globals(data: bytes) -> set[tuple[str, str]]:
    """Every global a pickle asks for (GLOBAL and protocol-4 STACK_GLOBAL alike)."""
    import pickletools

    found, strings = set(), []
    for op, arg, _ in pickletools.genops(data):
        if op.name == "GLOBAL":
            found.add(tuple(arg.split(" ", 1)))
        elif op.name == "STACK_GLOBAL":
            found.add((strings[-2], strings[-1]))
        elif isinstance(arg, str):
            strings.append(arg)
    return found


def test_a1111_pt_passes_the_web_ui_safe_unpickle_check(monkeypatch, capsys, tmp_path, tiny_base):
    from diffusers import StableDiffusionPipeline

    path, vectors = lowbudget_file(tmp_path, token="<pleural-effusion>")
    code, _, err = run(monkeypatch, capsys, "convert", path, "--to", "a1111")
    target = tmp_path / "a1111" / "pleural-effusion.pt"
    assert code == 0 and target.is_file(), err
    with zipfile.ZipFile(target) as z:
        names = z.namelist()
        data_pkl = [n for n in names if n.endswith("/data.pkl")]
        assert all(re.match(A1111_ENTRY_RULE, n) for n in names), names
        assert len(data_pkl) == 1 and {n.split("/")[0] for n in names} == {"pleural-effusion"}
        assert pickle_globals(z.read(data_pkl[0])) <= A1111_GLOBALS
    loaded = torch.load(target, weights_only=True)  # what A1111 calls once the check passes
    assert torch.equal(loaded["string_to_param"]["*"], vectors) and loaded["name"] == "<pleural-effusion>"
    assert torch.equal(read_embedding(target).vectors(), vectors)
    pipe = StableDiffusionPipeline.from_pretrained(tiny_base, safety_checker=None, local_files_only=True)
    pipe.load_textual_inversion(str(target))  # plain diffusers names it by the file's "name"
    ids = pipe.tokenizer.convert_tokens_to_ids(["<pleural-effusion>"] + [f"<pleural-effusion>_{i}" for i in range(1, 4)])
    assert torch.equal(pipe.text_encoder.get_input_embeddings().weight[ids].detach(), vectors)


def torch1_parameter_dict_pt(path, vectors):
    """A .pt the way the original textual-inversion code (torch 1.11) saved it.

    ``string_to_param`` is an ``nn.ParameterDict`` whose pickled state is torch 1.11's module
    attributes: the parameters in ``_parameters``, no ``_keys``; ``string_to_token`` holds a tensor.
    """
    params = torch.nn.ParameterDict()
    state = {"training": True, "_parameters": {"*": torch.nn.Parameter(vectors)}, "_buffers": {},
             "_non_persistent_buffers_set": set(), "_backward_hooks": {}, "_is_full_backward_hook": None,
             "_forward_hooks": {}, "_forward_pre_hooks": {}, "_state_dict_hooks": {},
             "_load_state_dict_pre_hooks": {}, "_load_state_dict_post_hooks": {}, "_modules": {}}
    import collections

    params.__dict__.clear()
    params.__dict__.update({k: collections.OrderedDict(v) if isinstance(v, dict) else v for k, v in state.items()})
    torch.save({"string_to_token": {"*": torch.tensor(265)}, "string_to_param": params}, path)
    return path


def test_original_ti_parameter_dict_layout_is_read_safely(tmp_path):
    vectors = torch.randn(3, 32)
    path = torch1_parameter_dict_pt(tmp_path / "old-style.pt", vectors)
    with zipfile.ZipFile(path) as z:
        assert ("torch.nn.modules.container", "ParameterDict") in pickle_globals(z.read("old-style/data.pkl"))
    emb = read_embedding(path)
    assert emb.layout == "a1111" and emb.token == "<old-style>" and torch.equal(emb.vectors(), vectors)


def test_a_parameter_dict_does_not_open_the_door_to_other_modules(tmp_path):
    torch.save({"string_to_param": torch.nn.Linear(2, 2)}, tmp_path / "module.pt")
    with pytest.raises(AdapterError, match=r"refusing .*module.pt.*'torch.nn.modules.linear.Linear'") as err:
        read_embedding(tmp_path / "module.pt")
    message = str(err.value)
    assert "\x1b" not in message and "\n" not in message and message.endswith("only loads weights")


def test_quoted_library_messages_are_clean_and_whole_words():
    from lowbudget.errors import quote

    raw = "Weights only load failed. \x1b[1mdo those steps only if you trust the source\x1b[0m.\n\t(1) more"
    assert quote(raw) == "Weights only load failed. do those steps only if you trust the source."
    long = "alpha " * 50
    short = quote(long, limit=40)
    assert short.endswith("…") and len(short) <= 40 and short[:-1].split() == ["alpha"] * len(short[:-1].split())
    assert quote(ValueError("")) == "ValueError"
    from lowbudget.errors import one_line

    assert one_line("cannot load:\n  \x1b[31mbad\x1b[0m\theader") == "cannot load: bad header"


def test_convert_names_files_by_the_token_word_and_inspect_lists_triggers(monkeypatch, capsys, tmp_path):
    import json

    path, _ = lowbudget_file(tmp_path, token="<eff>")
    for layout, name in (("a1111", "eff.pt"), ("kohya", "eff.safetensors"), ("comfyui", "eff.safetensors")):
        code, _, err = run(monkeypatch, capsys, "convert", path, "--to", layout)
        assert code == 0 and (tmp_path / layout / name).is_file(), err
    code, out, _ = run(monkeypatch, capsys, "inspect", tmp_path / "kohya" / "eff.safetensors", "--json")
    triggers = json.loads(out)[0]["triggers"]
    assert triggers == {"lowbudget": "<eff>", "diffusers": "emb_params (the file's key), unless you pass token=",
                        "A1111": "eff", "kohya": "eff", "ComfyUI": "embedding:eff"}
    code, out, _ = run(monkeypatch, capsys, "inspect", tmp_path / "a1111" / "eff.pt")
    assert "type in A1111     eff" in out and "type in diffusers <eff>" in out
    code, _, err = run(monkeypatch, capsys, "convert", path, "--to", "a1111", "-o", tmp_path / "other.pt")
    assert code == 0 and "trigger it by its file name 'other', not 'eff'" in err
    # 'eff' is a CLIP word: kohya's generator would refuse eff.safetensors ("please rename the file")
    code, _, err = run(monkeypatch, capsys, "convert", path, "--to", "kohya", "-o", tmp_path / "k" / "eff.safetensors")
    assert code == 0 and "kohya's gen_img refuses a file named 'eff': 'eff' is already a word" in err
    code, _, err = run(monkeypatch, capsys, "convert", path, "--to", "kohya", "-o", tmp_path / "k" / "pleural-eff.safetensors")
    assert code == 0 and "refuses" not in err


def test_inspect_names_lora_targets_whole(monkeypatch, capsys, tmp_path):
    import json

    tensors = {f"unet.down_blocks.0.attentions.0.transformer_blocks.0.{m}.lora_{ab}.weight": torch.zeros(2, 2)
               for m in ("attn1.to_out.0", "attn2.to_k") for ab in "AB"}
    tensors["text_encoder.text_model.encoder.layers.1.self_attn.q_proj.lora_A.weight"] = torch.zeros(2, 2)
    save_file(tensors, tmp_path / "lora.safetensors")
    code, out, _ = run(monkeypatch, capsys, "inspect", tmp_path / "lora.safetensors", "--json")
    assert code == 0 and json.loads(out)[0]["targets"] == ["attn1.to_out.0", "attn2.to_k", "self_attn.q_proj"]


def torch_zip_pt(path, pickle_bytes):
    """A .pt archive around a hand-written pickle (what an attacker controls)."""
    with zipfile.ZipFile(path, "w") as z:
        z.writestr(f"{path.stem}/data.pkl", pickle_bytes)
        z.writestr(f"{path.stem}/version", b"3\n")
    return path


def test_hostile_pickles_are_refused_before_they_cost_time_or_memory(tmp_path):
    import time

    laughs = ["lol"] * 10  # 10**26 strings once expanded; 2 KB on disk
    for _ in range(25):
        laughs = [laughs] * 10
    torch.save({"string_to_param": {"*": torch.zeros(1, 4)}, "name": laughs}, tmp_path / "laughs.pt")
    tuples = ("lol",) * 10  # as tuples: used as a dict key, hashing it inside torch.load would never end
    for _ in range(25):
        tuples = (tuples,) * 10
    torch.save({"string_to_param": {"*": torch.zeros(1, 4)}, "extra": tuples}, tmp_path / "laughs-tuples.pt")
    head = b"\x80\x02}X\x04\x00\x00\x00name"  # PROTO 2, EMPTY_DICT, BINUNICODE 'name'
    torch_zip_pt(tmp_path / "deep.pt", head + b"]" * 5000 + b"a" * 4999 + b"s.")  # lists in lists
    torch_zip_pt(tmp_path / "deep-tuples.pt", head + b"]" + b"\x85" * 5000 + b"s.")  # TUPLE1: constant stack
    zeros = io.BytesIO()
    torch.save({"string_to_param": {"*": torch.zeros(20_000_000, 4)}}, zeros)  # 305 MiB of zeros
    with zipfile.ZipFile(io.BytesIO(zeros.getvalue())) as src, \
            zipfile.ZipFile(tmp_path / "bomb.pt", "w", zipfile.ZIP_DEFLATED) as dst:
        for entry in src.infolist():
            dst.writestr(entry.filename, src.read(entry))
    assert (tmp_path / "bomb.pt").stat().st_size < 1 << 20
    cases = {"laughs.pt": "refers to one container from two places", "laughs-tuples.pt": "from two places",
             "deep.pt": "nests containers more than 64 deep", "deep-tuples.pt": "more than 64 deep",
             "bomb.pt": r"unpacks to 305\.2 MiB from 0\.\d MiB"}
    for name, why in cases.items():
        started = time.perf_counter()
        with pytest.raises(AdapterError, match=rf"refusing '.*{name}': its (pickle|archive) .*{why}"):
            read_embedding(tmp_path / name)
        assert time.perf_counter() - started < 5, name


def test_fields_are_type_checked_and_shared_tensors_still_load(tmp_path, monkeypatch, capsys):
    t = torch.randn(2, 4)
    torch.save({"string_to_param": {"*": t}, "name": ["not", "a", "string"]}, tmp_path / "odd-name.pt")
    code, _, err = run(monkeypatch, capsys, "inspect", tmp_path / "odd-name.pt")
    assert_one_line_error(code, err, r"odd-name.pt': field 'name' is a list; expected a string")
    torch.save({"string_to_param": {"*": t}, "backup": t, "name": "twice"}, tmp_path / "twice.pt")
    torch.save({"string_to_param": {"*": t}, "name": "legacy"}, tmp_path / "legacy.pt",
               _use_new_zipfile_serialization=False)  # the pre-1.6 format: five pickles, then raw data
    assert torch.equal(read_embedding(tmp_path / "twice.pt").vectors(), t)
    assert torch.equal(read_embedding(tmp_path / "legacy.pt").vectors(), t)


def test_unusable_embeddings_are_refused_everywhere_and_shown_by_inspect(monkeypatch, capsys, tmp_path):
    import json

    cases = {
        "nan": ({"<nan>": torch.full((2, 32), float("nan"))}, "holds NaN or infinite values"),
        "empty": ({"<empty>": torch.zeros(0, 32)}, r"holds no vectors \(shape \[0, 32\]\)"),
        "huge": ({"<huge>": torch.full((2, 32), 3e30)}, "holds values up to 3e\\+30"),
        "spaced": ({"two words": torch.ones(2, 32)}, "token 'two words' is empty or holds whitespace"),
    }
    for name, (tensors, why) in cases.items():
        path = tmp_path / f"{name}.safetensors"
        save_file(tensors, path)
        for args in (["convert", path, "--to", "kohya"], ["library", "add", path, "--library", tmp_path / "lib"]):
            code, _, err = run(monkeypatch, capsys, *args)
            assert_one_line_error(code, err, rf"{name}.safetensors'.*{why}")
        code, out, err = run(monkeypatch, capsys, "inspect", path, "--json")
        report = json.loads(out)[0]
        assert code == 1 and re.search(why, report["problems"][0]), report
        code, out, _ = run(monkeypatch, capsys, "inspect", path)
        assert code == 1 and "UNUSABLE" in out
    code, _, err = run(monkeypatch, capsys, "convert", lowbudget_file(tmp_path)[0], "--to", "kohya", "--token", "")
    assert_one_line_error(code, err, r"token '' is empty or holds whitespace")
    assert not (tmp_path / "lib").exists()
