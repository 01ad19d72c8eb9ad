from lowbudget.models.tokenizer import VOCAB_SIZE, clip_tokenizer


def test_ids_match_stable_diffusion_tokenizer():
    tok = clip_tokenizer()
    assert len(tok) == VOCAB_SIZE == 49408
    # the ids SD 1.x / 2.x tokenizers give (openai/clip-vit-large-patch14 vocabulary)
    assert tok("a photo of a cat").input_ids == [49406, 320, 1125, 539, 320, 2368, 49407]


def test_padding_to_77_and_sd2_pad_token():
    ids = clip_tokenizer()("a chest x-ray", padding="max_length", max_length=77).input_ids
    assert len(ids) == 77 and ids[-1] == 49407
    sd2 = clip_tokenizer(pad_token="!")("a chest x-ray", padding="max_length", max_length=77).input_ids
    assert sd2[-1] == 0  # '!' is id 0, as in SD 2.x's tokenizer
