"""Textual-inversion tokens and LoRA layers, attached to the tiny base."""

import pytest
import torch

from lowbudget.adapters.lora import attach_lora, lora_state_dict
from lowbudget.adapters.textual_inversion import TokenTable, attach_tokens, expand_tokens
from lowbudget.errors import AdapterError
from lowbudget.models import load_base
from lowbudget.recipe import LoraConfig, TokenConfig


def test_tokens_expand_and_initialise_from_words(tiny_base):
    base = load_base(tiny_base)
    table_before = base.text_encoder.get_input_embeddings().weight.detach().clone()
    bank = attach_tokens(base, [TokenConfig(name="<eff>", init="pleural fluid", n_vectors=5)])
    ids = base.tokenizer("pleural fluid", add_special_tokens=False).input_ids
    assert len(ids) >= 2
    (vectors,) = bank.vectors("<eff>")  # one text encoder: one (5, D) tensor
    for i in range(5):  # vector i is initializer word i, cycled
        assert torch.equal(vectors[i], table_before[ids[i % len(ids)]])
    assert bank.expand("a <eff> here") == "a <eff> <eff>_1 <eff>_2 <eff>_3 <eff>_4 here"
    assert bank.expand(bank.expand("<eff>")) == bank.expand("<eff>")  # idempotent
    new_ids = base.tokenizer(bank.expand("<eff>"), add_special_tokens=False).input_ids
    assert new_ids == list(range(49408, 49413))


def test_token_table_looks_up_base_and_new_rows(tiny_base):
    base = load_base(tiny_base)
    bank = attach_tokens(base, [TokenConfig(name="<a>", init="lung", n_vectors=2)])
    table = base.text_encoder.get_input_embeddings()
    assert isinstance(table, TokenTable) and table.num_embeddings == 49410
    with torch.no_grad():
        bank.parameters[0].add_(1.0)
    ids = torch.tensor([[320, 49408, 49409]])
    out = table(ids)
    assert torch.equal(out[0, 0], table.base.weight[320])
    assert torch.equal(out[0, 1:], bank.parameters[0].detach())


def test_existing_word_is_refused_with_a_rename_hint(tiny_base):
    base = load_base(tiny_base)
    with pytest.raises(AdapterError, match="token 'chest' is already in the vocabulary of .*choose a new name such as '<chest>'"):
        attach_tokens(base, [TokenConfig(name="chest", init="lung")])


def test_lora_is_a_no_op_at_initialisation(tiny_base):
    base = load_base(tiny_base)
    x = torch.randn(1, 4, 16, 16, generator=torch.Generator().manual_seed(0))
    cond = torch.randn(1, 77, 32, generator=torch.Generator().manual_seed(1))
    t = torch.tensor([500])
    with torch.no_grad():
        before = base.unet(x, t, cond).sample
        attach_lora(base, LoraConfig(preset="attention", text_encoder=True))
        after = base.unet(x, t, cond).sample
    assert torch.equal(before, after)
    keys = lora_state_dict(base)
    assert any(k.startswith("text_encoder.") for k in keys) and any(".attn1.to_q." in k for k in keys)


def test_cross_kv_preset_touches_only_cross_attention_kv(tiny_base):
    base = load_base(tiny_base)
    attach_lora(base, LoraConfig(preset="cross-kv"))
    keys = lora_state_dict(base)
    assert keys and all(".attn2.to_k." in k or ".attn2.to_v." in k for k in keys)


def test_cross_kv_rank4_file_is_under_1mb_on_sd15_shapes():
    """Counted on an SD 1.5-shaped U-Net built on the meta device (no memory, no weights)."""
    from diffusers import UNet2DConditionModel
    from peft import LoraConfig as PeftLoraConfig

    from lowbudget.adapters.lora import PRESET_TARGETS
    from lowbudget.models.architectures import SD15

    with torch.device("meta"):
        unet = UNet2DConditionModel(**SD15.unet)
    assert sum(p.numel() for p in unet.parameters()) == 859_520_964  # the published SD 1.5 U-Net
    unet.add_adapter(PeftLoraConfig(r=4, lora_alpha=4, target_modules=PRESET_TARGETS["cross-kv"]))
    n = sum(p.numel() for name, p in unet.named_parameters() if "lora_" in name)
    assert n == 198_144 and n * 4 < 1_000_000


def test_custom_targets_that_match_nothing_are_named(tiny_base):
    base = load_base(tiny_base)
    with pytest.raises(AdapterError, match="method.lora"):
        attach_lora(base, LoraConfig(preset="custom", target_modules=["no_such_layer"]))


def test_expand_tokens_handles_several_tokens():
    assert expand_tokens("<a> and <b>", {"<a>": 2, "<b>": 1}) == "<a> <a>_1 and <b>"
