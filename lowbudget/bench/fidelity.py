"""Does a learned adapter draw its finding? Train on phantoms, sample, ask the detector.

The core measurement of the phantom world, shared by the demo report, the quick test and the
benchmark: train a token (or LoRA) on generated images of one finding with lowbudget's own
training loop, sample with lowbudget's own sampling loop, and count the images the finding's
detector flags -- with the learned token, with its initializer word alone, and with the plain
modality prompt.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from lowbudget.phantoms import attributes, detectors
from lowbudget.phantoms.world import MODALITIES, generate
from lowbudget.recipe import DataConfig, MethodConfig, ModelConfig, OptimConfig, OutputConfig, Recipe, TokenConfig
from lowbudget.sampling.outputs import open_pipeline
from lowbudget.sampling.sampler import SampleRequest, Watch, sample
from lowbudget.training.loop import train

# Words never used in pretraining captions: their embeddings are as untrained as a medical
# term's meaning is to Stable Diffusion, which makes them the honest "without token" control.
INIT_WORDS = {"effusion": "fluid", "pneumothorax": "air", "cardiomegaly": "heart", "nodule": "spot", "lesion": "tumor"}
HEALTHY_WORD = "normal"  # initializer of a modality's healthy token, '<healthy-chest>'


def modality_of(finding: str) -> str:
    if finding.startswith("healthy-") and finding[len("healthy-"):] in MODALITIES:
        return finding[len("healthy-"):]
    for name, mod in MODALITIES.items():
        if finding in mod.findings:
            return name
    raise ValueError(f"no phantom modality has the finding {finding!r}; known: {', '.join(INIT_WORDS)}")


def token_name(finding: str) -> str:
    return f"<{finding}>"


def init_word(finding: str) -> str:
    return HEALTHY_WORD if finding.startswith("healthy-") else INIT_WORDS[finding]


@dataclass
class Sampling:
    """How benchmark images are drawn (the same for every row, so rows compare)."""

    steps: int = 25
    guidance: float = 5.0  # picked over 3.0 and 7.5 on the nodule and lesion rows (PHANTOM_RESULTS.md)
    guidance_from: float = 0.0  # share of the steps run unguided (SampleRequest.guidance_from)
    scheduler: str = "ddim"
    batch_size: int = 16


@dataclass
class TokenSpec:
    finding: str
    method: str = "ti"  # ti | lora | ti+lora
    n_images: int = 100
    n_vectors: int = 4
    steps: int = 300
    batch_size: int = 8
    lr_ti: float = 2e-2
    lr_lora: float = 1e-3
    min_timestep: int = 0
    seed: int = 0
    data_seed: int = 0
    captions: str = "auto"  # data.captions: the phantoms' own; "templates" for the modality template
    long_captions: str = ""  # data.long_captions; "" = "trim" for tokens over 48 vectors, else "error"
    base: str = ""  # the base it trains on and samples from: a folder or file; "" = the embedded phantom base


def drawn(spec: TokenSpec) -> str:
    """The finding ``spec``'s training phantoms show: its own, or none for a healthy token."""
    return "none" if spec.finding.startswith("healthy-") else spec.finding


def token_recipe(spec: TokenSpec, output: Path, data: Path | None = None) -> Recipe:
    """The recipe a user would write for ``spec``: generated phantoms (or the phantom folder
    ``data``), on ``spec.base``."""
    modality = modality_of(spec.finding)
    tokens = [] if spec.method == "lora" else [
        TokenConfig(name=token_name(spec.finding), init=init_word(spec.finding), n_vectors=spec.n_vectors)]
    fmt = "{caption}" if spec.method == "lora" else "{caption} with {token}"
    # A phantom caption is up to ~24 CLIP tokens: with 64 vectors it would pass the 77-token
    # limit. Long tokens keep the captions, shortened to fit: on the modality template instead,
    # 64 vectors scored 0.77 against 0.94 trimmed (benchmarks/vectors.py, PHANTOM_RESULTS.md).
    captions = spec.captions
    long_captions = spec.long_captions or ("trim" if spec.n_vectors > 48 else "error")
    return Recipe(
        data=DataConfig(phantoms="" if data else f"{modality}/{drawn(spec)}", path=str(data or ""), phantoms_n=spec.n_images,
                        phantoms_seed=spec.data_seed, modality=f"{modality} phantom", resolution=64, caption_format=fmt, captions=captions,
                        long_captions=long_captions,
                        templates=[fmt.replace("{caption}", MODALITIES[modality].plain_prompt)]),
        model=ModelConfig(base=spec.base),
        method=MethodConfig(kind=spec.method, tokens=tokens),
        optim=OptimConfig(max_steps=spec.steps, batch_size=spec.batch_size, lr_ti=spec.lr_ti, lr_lora=spec.lr_lora,
                          min_timestep=spec.min_timestep, seed=spec.seed),
        output=OutputConfig(dir=str(output), checkpoint_every=0, description=f"{spec.finding} on {modality} phantoms",
                            license="CC0-1.0"),
    )


def train_finding(spec: TokenSpec, output: Path, log: Callable[[str], None] = lambda s: None,
                  data: Path | None = None) -> list[Path]:
    """Train ``spec`` under ``output`` (or reuse a finished run of the same spec and data there);
    returns the adapter files. ``data``: a phantom folder instead of generated phantoms.

    Each spec has its own folder, ``output/spec-<hash of the spec (base included) and data>``:
    sections that ask for the same token share one run, and a changed setting never picks up
    another's files.
    """
    key = hashlib.sha256(json.dumps([asdict(spec), *([str(data)] if data else [])],
                                    sort_keys=True).encode()).hexdigest()[:12]
    run = Path(output) / f"spec-{key}"
    done = finished(run)
    if done:
        return done
    files = train(token_recipe(spec, run, data), progress=False, log=log).files
    return [p for p in files if p.suffix == ".safetensors"]  # not the loss chart


def finished(run: Path) -> list[Path]:
    """The adapter files of a finished run in ``run`` (written last, atomically: their presence
    means the run finished), or [] ."""
    return sorted(Path(run).glob("*.safetensors"))


def prompts(finding: str, with_adapter: bool = True) -> dict[str, str]:
    """The prompts a fidelity row compares."""
    plain = MODALITIES[modality_of(finding)].plain_prompt
    out = {"token": f"{plain} with {token_name(finding)}", "init": f"{plain} with {init_word(finding)}", "plain": plain}
    return out if with_adapter else {k: v for k, v in out.items() if k != "token"}


def request(sampling: Sampling, prompt: str, seeds: list[int]) -> SampleRequest:
    return SampleRequest(prompt=prompt, seeds=seeds, steps=sampling.steps, guidance=sampling.guidance,
                         guidance_from=sampling.guidance_from, scheduler=sampling.scheduler, batch_size=sampling.batch_size)


def generate_gray(pipe, prompt: str, seeds: list[int], sampling: Sampling, watch: Watch | None = None) -> np.ndarray:
    """(N, H, W) float images in [0, 1] from lowbudget's sampling loop; ``watch`` sees each step."""
    return sample(pipe, request(sampling, prompt, seeds), watch=watch).mean(dim=1).cpu().numpy()


def detection_rate(finding: str, images: np.ndarray) -> float:
    return float(detectors.flagged(modality_of(finding), finding, images).mean())


def recognised_rate(modality: str, images: np.ndarray) -> float:
    """Fraction of images the template check recognises as ``modality``."""
    return float(np.mean([detectors.recognise(im) == modality for im in images]))


def training_images(spec: TokenSpec, size: int = 64) -> list[np.ndarray]:
    """The images ``spec`` trains on (generated phantoms of its finding)."""
    return [p.image for p in generate(modality_of(spec.finding), drawn(spec), n=spec.n_images, size=size,
                                      seed=spec.data_seed)]


def training_rate(spec: TokenSpec, size: int = 64) -> float:
    """Detector rate on the training images themselves: the ceiling a faithful token can reach."""
    return detection_rate(spec.finding, np.stack(training_images(spec, size)))


def attribute_fidelity(spec: TokenSpec, images: np.ndarray) -> dict:
    """Sides and other findings of ``images`` against ``spec``'s training images, with the floor
    a second real set of the same size gives (:func:`lowbudget.phantoms.attributes.compare`)."""
    return attributes.compare(modality_of(spec.finding), spec.finding, images, training_images(spec, images.shape[-1]))


def open_with(adapters: list[Path], base: str = ""):
    """A pipeline on ``base`` (embedded by default) with ``adapters`` loaded."""
    return open_pipeline(base or None, adapters, warn=lambda s: None)[0]


def fidelity(spec: TokenSpec, adapters: list[Path], *, n: int = 32, seed: int = 10_000,
             sampling: Sampling | None = None, kinds: tuple[str, ...] = ("token", "init", "plain")) -> dict:
    """Detector rates with the adapter's prompt, the initializer word alone and the plain prompt.

    ``kinds`` picks which of the three to sample (the sweep needs only "token").
    """
    sampling = sampling or Sampling()
    seeds = list(range(seed, seed + n))
    with_adapter = open_with(adapters, spec.base) if "token" in kinds else None
    without = open_with([], spec.base) if set(kinds) - {"token"} else None
    rates, images = {}, {}
    for what, prompt in prompts(spec.finding).items():
        if what not in kinds:
            continue
        if spec.method == "lora" and what == "token":
            prompt = prompts(spec.finding)["plain"]  # LoRA has no token: it changes the plain prompt's images
        pipe = with_adapter if what == "token" else without
        images[what] = generate_gray(pipe, prompt, seeds, sampling)
        rates[what] = detection_rate(spec.finding, images[what])
    if "token" in kinds:
        rates["recognised"] = recognised_rate(modality_of(spec.finding), images["token"])
    return {"rates": rates, "images": images, "seeds": seeds}
