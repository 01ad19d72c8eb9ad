"""The shared adapter library and its index."""

import json
from pathlib import Path

import pytest
import torch

from lowbudget.adapters.own_files import Provenance, save_embedding
from lowbudget.sharing.library import add_to_library, read_index, verify_library
from lowbudget.models import load_base

ROOT = Path(__file__).resolve().parents[1]


def test_every_shipped_embedding_matches_its_checksum_and_loads_on_its_base():
    index = json.loads((ROOT / "embeddings" / "index.json").read_text())
    assert isinstance(index["embeddings"], list)
    assert verify_library(ROOT / "embeddings") == []


def test_add_verify_and_detect_tampering(tmp_path, tiny_base):
    fp = load_base(tiny_base).fingerprint
    src = save_embedding(tmp_path / "eff.safetensors", "<eff>", torch.randn(2, 32),
                         Provenance(base_name="tiny", base_fingerprint=fp, modality="chest X-ray", description="d"))
    lib = tmp_path / "lib"
    entry = add_to_library(lib, src, base=str(tiny_base))
    assert entry.token == "<eff>" and entry.n_vectors == 2 and entry.modality == "chest X-ray"
    assert [e.file for e in read_index(lib)] == ["eff.safetensors"]
    assert verify_library(lib) == []
    data = bytearray((lib / "eff.safetensors").read_bytes())
    data[-1] ^= 0xFF  # one flipped bit in the tensor data
    (lib / "eff.safetensors").write_bytes(bytes(data))
    assert verify_library(lib) == ["eff.safetensors: sha256 differs from index.json"]
    (lib / "eff.safetensors").unlink()
    assert verify_library(lib) == ["eff.safetensors: listed in index.json but missing"]


def test_an_entry_on_the_wrong_base_is_reported(tmp_path, tiny_base):
    from lowbudget.models.architectures import write_base_folder

    wide = write_base_folder(tmp_path / "w768", "tiny", text_width=768)
    src = save_embedding(tmp_path / "e.safetensors", "<e>", torch.randn(2, 32), Provenance(base_name="t", base_fingerprint=""))
    add_to_library(tmp_path / "lib", src, base=str(tiny_base))
    (tmp_path / "lib" / "index.json").write_text((tmp_path / "lib" / "index.json").read_text()
                                                 .replace(f'"{tiny_base.name}"', f'"{wide}"'))  # an index of old: a path
    (problem,) = verify_library(tmp_path / "lib")
    assert "does not load on base" in problem and "768 (SD 1.x)" in problem


def test_the_index_names_the_base_and_never_holds_a_local_path(tmp_path, tiny_base):
    from lowbudget.errors import AdapterError
    from lowbudget.models.architectures import write_base_folder

    src = save_embedding(tmp_path / "e.safetensors", "<e>", torch.randn(2, 32), Provenance(base_name="t", base_fingerprint=""))
    lib = tmp_path / "lib"
    entry = add_to_library(lib, src, base=str(tiny_base))
    assert entry.base == tiny_base.name and str(tmp_path) not in (lib / "index.json").read_text()
    said = []
    assert verify_library(lib, log=said.append) == []  # another site: the base is not here, so fit is not checked
    assert said == [f"e.safetensors: its base '{tiny_base.name}' is not on this machine, so its fit was not "
                    f"checked (give --base {tiny_base.name}=PATH)"]
    wide = write_base_folder(tmp_path / "w768", "tiny", text_width=768)
    (problem,) = verify_library(lib, bases={tiny_base.name: wide})  # the name, located here
    assert "does not load on base" in problem
    assert verify_library(lib, bases={tiny_base.name: tiny_base}, log=said.append) == [] and len(said) == 1
    # the base is checked before anything is copied: an embedding of another width stays out
    other = save_embedding(tmp_path / "o.safetensors", "<o>", torch.randn(2, 768), Provenance("t", ""))
    with pytest.raises(AdapterError, match="768"):
        add_to_library(lib, other, base=str(tiny_base))
    assert not (lib / "o.safetensors").exists() and [e.file for e in read_index(lib)] == ["e.safetensors"]
