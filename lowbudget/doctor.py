"""``lowbudget doctor``: will this environment train and sample, before a long run finds out at step 0.

Three parts, each a plain data object the CLI prints:

- the installed stack: every dependency's version against the range lowbudget declares (and
  was tested in, see pyproject.toml and requirements.lock);
- the device: CUDA (name, memory, bf16/fp16), Apple MPS, or the CPU threads;
- probes: the operations that broke before when releases moved under the project (a LoRA on
  the U-Net, a LoRA on the text encoder, a token loaded into a diffusers pipeline), run for real
  on a tiny model of Stable Diffusion's architecture in a second or two. A failing probe names
  the versions involved.
"""

from __future__ import annotations

import importlib.metadata as metadata
import platform
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from packaging.requirements import Requirement

from lowbudget.adapters.load import load_adapter
from lowbudget.adapters.own_files import Provenance, save_embedding
from lowbudget.adapters.lora import attach_lora
from lowbudget.errors import quote
from lowbudget.models.architectures import build_components, get_shape
from lowbudget.models.base import BaseModel
from lowbudget.recipe import LoraConfig

SHOWN_FIRST = ("torch", "diffusers", "transformers", "peft", "accelerate")


@dataclass
class PackageStatus:
    name: str
    installed: str | None  # None: not installed
    wanted: str  # the declared range, e.g. ">=0.15,<0.22"

    @property
    def ok(self) -> bool:
        if self.installed is None:
            return False
        return Requirement(f"{self.name}{self.wanted}").specifier.contains(self.installed, prereleases=True)


@dataclass
class Probe:
    name: str
    ok: bool
    detail: str  # what failed, or what was checked


def package_statuses() -> list[PackageStatus]:
    """Each runtime dependency of the installed lowbudget, torch and the Hugging Face stack first."""
    out = []
    for line in _installed_lowbudget().requires or []:
        req = Requirement(line)
        if req.marker is not None and not req.marker.evaluate({"extra": ""}):
            continue  # the test extra
        try:
            installed = metadata.version(req.name)
        except metadata.PackageNotFoundError:
            installed = None
        lower_first = sorted(req.specifier, key=lambda s: (s.operator.startswith("<"), s.version))
        out.append(PackageStatus(req.name, installed, ",".join(str(s) for s in lower_first)))
    order = {name: i for i, name in enumerate(SHOWN_FIRST)}
    return sorted(out, key=lambda p: order.get(p.name, len(order)))


def device_lines() -> list[str]:
    """Python, the torch build and the device it will run on."""
    lines = [f"python {platform.python_version()} on {platform.system()} {platform.machine()}",
             f"torch build: {'CUDA ' + torch.version.cuda if torch.version.cuda else 'CPU only'}"]
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            prop = torch.cuda.get_device_properties(i)
            bf16 = "yes" if torch.cuda.is_bf16_supported() else "no (use fp16)"
            lines.append(f"cuda:{i} {prop.name}, {prop.total_memory / 2**30:.1f} GiB, compute {prop.major}.{prop.minor}; "
                         f"fp16 yes, bf16 {bf16}")
    elif getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        lines.append("Apple MPS available (fp32; fp16 autocast where supported)")
    else:
        lines.append(f"no GPU: the CPU, {torch.get_num_threads()} torch threads (at SD 1.5 scale a training "
                     f"step takes seconds)")
    return lines


def probes() -> list[Probe]:
    """Run each operation once on a tiny random model; never raises."""
    return [_probe(name, check) for name, check in (
        ("LoRA on the U-Net (peft)", _lora_unet),
        ("LoRA on the text encoder (transformers + peft)", _lora_text_encoder),
        ("token loaded into a diffusers pipeline", _token_into_pipeline),
    )]


def _probe(name: str, check: Callable[[], str]) -> Probe:
    try:
        return Probe(name, True, check())
    except Exception as exc:  # the point is to report any failure, whatever its type
        return Probe(name, False, quote(exc, 300))


def _installed_lowbudget() -> metadata.Distribution:
    """The installed distribution, not a stale ``lowbudget.egg-info`` of a source tree on sys.path."""
    found = list(metadata.distributions(name="lowbudget"))
    if not found:
        raise metadata.PackageNotFoundError("lowbudget")
    return next((d for d in found if d.read_text("INSTALLER")), found[0])


def _tiny_base() -> BaseModel:
    parts = build_components(get_shape("tiny"))
    return BaseModel(name="doctor-probe", source="tiny random model", tokenizer=parts["tokenizer"],
                     text_encoder=parts["text_encoder"], vae=parts["vae"], unet=parts["unet"],
                     scheduler_config=dict(parts["scheduler"].config), prediction_type="epsilon")


def _lora_unet() -> str:
    params = attach_lora(_tiny_base(), LoraConfig(rank=2))
    return f"{len(params)} LoRA tensors attached"


def _lora_text_encoder() -> str:
    base = _tiny_base()
    attach_lora(base, LoraConfig(rank=2, text_encoder=True))
    text = [n for n, _ in base.text_encoder.named_parameters() if "lora_" in n]
    return f"{len(text)} LoRA tensors attached to the text encoder"


def _token_into_pipeline() -> str:
    base = _tiny_base()
    pipe = base.pipeline()
    with tempfile.TemporaryDirectory() as tmp:
        vectors = torch.randn(2, base.text_width)
        path = save_embedding(Path(tmp) / "probe.safetensors", "<doctor-probe>", vectors,
                              Provenance(base_name="doctor-probe", base_fingerprint=""))
        token = load_adapter(pipe, path, warn=lambda _message: None)
    prompt = pipe.maybe_convert_prompt(f"a {token}", pipe.tokenizer)  # diffusers' multi-vector expansion
    ids = pipe.tokenizer(prompt, add_special_tokens=False).input_ids[1:]
    rows = pipe.text_encoder.get_input_embeddings().weight[ids].detach()
    if not torch.equal(rows, vectors):
        raise RuntimeError(f"the prompt '{prompt}' does not look up the token's vectors")
    return f"'{prompt}' looks up the token's {len(ids)} vectors"
