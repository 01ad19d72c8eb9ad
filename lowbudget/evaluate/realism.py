"""Realism: FID and KID between a real and a generated folder, with the user's extractor.

Nothing is downloaded. The feature extractor is a local file: a TorchScript module (e.g. an
InceptionV3 or a chest-X-ray DenseNet-121 exported with ``torch.jit.script``/``trace``; loaded
with ``torch.jit.load``, which runs no Python pickle code), or ``.safetensors`` weights of an
architecture lowbudget defines (``resnet18``). The metrics themselves are torchmetrics'
implementations, fed by streaming batches.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import nn
from torchmetrics.image.fid import FrechetInceptionDistance
from torchmetrics.image.kid import KernelInceptionDistance

from lowbudget import checks
from lowbudget.errors import DataError, LowbudgetError
from lowbudget.evaluate.images import iter_batches, list_images
from lowbudget.evaluate.networks import ResNet18

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
HOW_TO_SUPPLY = ("give --extractor FILE: a TorchScript module (.pt/.ts, e.g. an InceptionV3 exported with "
                 "torch.jit.trace) or .safetensors weights with --architecture resnet18")


class FeatureExtractor(nn.Module):
    """Resize, normalise, run the user's network, flatten: (B, 3, H, W) in [0, 1] -> (B, d)."""

    def __init__(self, network: nn.Module, input_size: int, mean=IMAGENET_MEAN, std=IMAGENET_STD) -> None:
        super().__init__()
        self.network = network.eval()
        self.input_size = input_size
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1))
        with torch.no_grad():
            self.num_features = int(self(torch.rand(1, 3, input_size, input_size)).shape[-1])

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(images.float(), size=(self.input_size,) * 2, mode="bilinear", antialias=True, align_corners=False)
        out = self.network((x - self.mean) / self.std)
        if isinstance(out, (tuple, list)):
            out = out[0]
        return out.flatten(1)


def load_extractor(path: str | Path | None, *, architecture: str | None = None, input_size: int = 299) -> FeatureExtractor:
    checks.within("--input-size", input_size, 16, checks.MAX_IMAGE_SIZE)
    if path is None:
        raise LowbudgetError(f"realism needs a feature extractor; {HOW_TO_SUPPLY}")
    path = Path(path)
    if not path.is_file():
        raise LowbudgetError(f"feature extractor '{path}' does not exist; {HOW_TO_SUPPLY}")
    if path.suffix == ".safetensors":
        return FeatureExtractor(_named_architecture(path, architecture), input_size)
    try:
        network = torch.jit.load(str(path), map_location="cpu")
    except Exception as exc:
        raise LowbudgetError(f"'{path}' is not a TorchScript module ({type(exc).__name__}); {HOW_TO_SUPPLY}") from None
    return FeatureExtractor(network, input_size)


def _named_architecture(path: Path, architecture: str | None) -> nn.Module:
    if architecture != "resnet18":
        raise LowbudgetError(f"'{path}' holds bare weights; say which network with --architecture resnet18")
    state = load_file(str(path))
    width = int(state["conv1.weight"].shape[0]) if "conv1.weight" in state else 64
    classes = int(state["fc.weight"].shape[0]) if "fc.weight" in state else 2
    net = ResNet18(num_classes=classes, width=width)
    missing, unexpected = net.load_state_dict(state, strict=False)
    if unexpected or [m for m in missing if not m.startswith("fc.")]:
        raise LowbudgetError(f"'{path}' does not match the resnet18 architecture (e.g. {(unexpected or missing)[0]})")
    return _Features(net)


class _Features(nn.Module):
    """Use a classifier's pooled penultimate layer as the feature."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.features(x)


def realism(real: str | Path, generated: str | Path, extractor: FeatureExtractor, *, size: int = 299,
            batch_size: int = 32, kid_subsets: int = 100, kid_subset_size: int = 1000, seed: int = 0,
            progress: bool = False) -> dict[str, Any]:
    """FID and KID of ``generated`` against ``real``; both folders are streamed once."""
    real_paths, gen_paths = list_images(real), list_images(generated)
    subset = min(kid_subset_size, len(real_paths), len(gen_paths))
    if subset < 2:
        raise DataError("FID/KID need at least 2 images in each folder")
    fid = FrechetInceptionDistance(feature=extractor, normalize=True)
    with warnings.catch_warnings():  # "KID keeps all features": yes, they are what it needs
        warnings.simplefilter("ignore", UserWarning)
        kid = KernelInceptionDistance(feature=extractor, normalize=True, subsets=kid_subsets, subset_size=subset)
    for paths, is_real, name in ((real_paths, True, "real"), (gen_paths, False, "generated")):
        for batch, _ in iter_batches(paths, size, batch_size, progress=name if progress else None):
            features = extractor(batch)  # computed once, shared by both metrics
            _update(fid, features, is_real)
            _update(kid, features, is_real)
    torch.manual_seed(seed)  # KID draws its subsets from the global generator
    kid_mean, kid_std = kid.compute()
    return {"fid": float(fid.compute()), "kid": float(kid_mean), "kid_std": float(kid_std),
            "n_real": len(real_paths), "n_generated": len(gen_paths), "features": extractor.num_features,
            "kid_subset_size": subset, "kid_subsets": kid_subsets}


def _update(metric, features: torch.Tensor, real: bool) -> None:
    """Feed precomputed features: the metric's extractor is bypassed for this call."""
    network = metric.inception
    metric.inception = nn.Identity()
    try:
        metric.update(features, real=real)
    finally:
        metric.inception = network
