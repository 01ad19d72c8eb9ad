"""Downstream benefit, the paper's protocol: does adding synthetic images help a classifier?

A ResNet-18-style network is trained on real / real + synthetic / synthetic images for a
fixed budget of steps, the checkpoint with the best validation AUC is kept, and its test AUC
is reported as mean +- std over seeds. The test set is always real and the same for every
setting and seed; validation images are real too.
"""

from __future__ import annotations

import copy
import random
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from lowbudget import checks, stats
from lowbudget.evaluate.images import LabelledImages, load_image
from lowbudget.evaluate.networks import ResNet18
from lowbudget.progress import track


@dataclass
class ClassifierConfig:
    size: int = 128  # training resolution
    steps: int = 2000
    batch_size: int = 32
    lr: float = 1e-3
    eval_every: int = 100
    seeds: tuple[int, ...] = (0, 1, 2)
    width: int = 64  # 64 = the standard ResNet-18
    val_fraction: float = 0.2
    test_fraction: float = 0.2  # of the real images, when no test folder is given
    hflip: bool = False  # off by default: laterality is a finding in radiographs
    init: str | None = None  # optional .safetensors weights to start from

    def __post_init__(self) -> None:
        checks.within("--size", self.size, 16, checks.MAX_IMAGE_SIZE)  # ResNet-18 halves the size 5 times
        for name in ("steps", "batch_size", "eval_every", "width"):
            checks.at_least(f"--{name.replace('_', '-')}", getattr(self, name), 1)
        checks.finite("lr", self.lr)
        checks.seeds("--seeds", list(self.seeds))
        for name in ("val_fraction", "test_fraction"):
            checks.within(name, getattr(self, name), 0.0, 0.9)


def auc(scores: torch.Tensor, labels: torch.Tensor) -> float:
    """ROC AUC of class probabilities (see :func:`lowbudget.stats.auc`)."""
    return stats.auc(scores.double().numpy(), labels.numpy())


def _tensors(images: LabelledImages, idx: list[int], size: int) -> tuple[torch.Tensor, torch.Tensor]:
    # kept as uint8: 4x less memory than float, and 1/255 steps do not matter to a classifier
    x = torch.stack([(load_image(images.paths[i], size) * 255).round().to(torch.uint8) for i in idx])
    return x, torch.tensor([images.labels[i] for i in idx])


def split(labels: list[int], fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Stratified split of indices: (rest, held out)."""
    rng = random.Random(seed)
    rest, held = [], []
    for cls in sorted(set(labels)):
        idx = [i for i, y in enumerate(labels) if y == cls]
        rng.shuffle(idx)
        k = max(1, round(fraction * len(idx)))
        held += idx[:k]
        rest += idx[k:]
    return sorted(rest), sorted(held)


def _augment(x: torch.Tensor, gen: torch.Generator, hflip: bool) -> torch.Tensor:
    """Random shift (reflect-pad 1/16 and crop), brightness/contrast jitter, optional flip."""
    b, _, h, w = x.shape
    pad = max(1, h // 16)
    x = F.pad(x, (pad,) * 4, mode="reflect")
    dy, dx = torch.randint(0, 2 * pad + 1, (2,), generator=gen).tolist()
    x = x[:, :, dy : dy + h, dx : dx + w]
    gain = 1 + 0.2 * (torch.rand(b, 1, 1, 1, generator=gen) - 0.5)
    bias = 0.1 * (torch.rand(b, 1, 1, 1, generator=gen) - 0.5)
    x = (x * gain + bias).clamp(0, 1)
    if hflip and bool(torch.rand(1, generator=gen) < 0.5):
        x = x.flip(-1)
    return x


@torch.no_grad()
def _scores(model: ResNet18, x: torch.Tensor, batch: int = 64) -> torch.Tensor:
    model.eval()
    out = torch.cat([model(x[i : i + batch].float() / 255).softmax(-1) for i in range(0, len(x), batch)])
    model.train()
    return out


def train_once(train_x: torch.Tensor, train_y: torch.Tensor, val: tuple, test: tuple, n_classes: int,
               cfg: ClassifierConfig, seed: int, progress: str | None = None) -> dict[str, float]:
    """One run: fixed step budget, keep the best-validation-AUC weights, report their test AUC."""
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    model = ResNet18(num_classes=n_classes, width=cfg.width)
    if cfg.init:
        state = {k: v for k, v in load_file(cfg.init).items() if not k.startswith("fc.")}
        model.load_state_dict(state, strict=False)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=1e-4)
    best_auc, best_state, best_step = -1.0, None, 0
    for step in track(range(1, cfg.steps + 1), progress, "step"):
        idx = torch.randint(0, len(train_x), (min(cfg.batch_size, len(train_x)),), generator=gen)
        x = _augment(train_x[idx].float() / 255, gen, cfg.hflip)  # (B, 3, S, S)
        loss = F.cross_entropy(model(x), train_y[idx])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if step % cfg.eval_every == 0 or step == cfg.steps:
            val_auc = auc(_scores(model, val[0]), val[1])
            if val_auc > best_auc:
                best_auc, best_state, best_step = val_auc, copy.deepcopy(model.state_dict()), step
    model.load_state_dict(best_state)
    return {"val_auc": best_auc, "test_auc": auc(_scores(model, test[0]), test[1]), "best_step": best_step}


def downstream(real: LabelledImages, synthetic: LabelledImages | None = None, test: LabelledImages | None = None,
               cfg: ClassifierConfig | None = None, log=print, progress: bool = False) -> dict[str, Any]:
    """The paper's table: test AUC (mean +- std over seeds) per training set."""
    cfg = cfg or ClassifierConfig()
    classes = real.classes
    real_idx = list(range(len(real.paths)))
    if test is None:  # a fixed real test set, the same for every setting and seed
        real_idx, test_idx = split(real.labels, cfg.test_fraction, seed=12345)
        test_set = _tensors(real, test_idx, cfg.size)
    else:
        test_set = _tensors(test, list(range(len(test.paths))), cfg.size)
    train_idx, val_idx = split([real.labels[i] for i in real_idx], cfg.val_fraction, seed=54321)
    train_idx, val_idx = [real_idx[i] for i in train_idx], [real_idx[i] for i in val_idx]
    val_set = _tensors(real, val_idx, cfg.size)
    real_x, real_y = _tensors(real, train_idx, cfg.size)
    settings = {"real": (real_x, real_y)}
    if synthetic is not None:
        syn_x, syn_y = _tensors(synthetic, list(range(len(synthetic.paths))), cfg.size)
        settings["real+synthetic"] = (torch.cat([real_x, syn_x]), torch.cat([real_y, syn_y]))
        settings["synthetic"] = (syn_x, syn_y)
    results: dict[str, Any] = {"classes": classes, "n_val": len(val_idx), "n_test": len(test_set[1]), "settings": {}}
    for name, (x, y) in settings.items():
        runs = [train_once(x, y, val_set, test_set, len(classes), cfg, seed, f"{name}, seed {seed}" if progress else None)
                for seed in cfg.seeds]
        aucs = [r["test_auc"] for r in runs]
        mean = sum(aucs) / len(aucs)
        std = (sum((a - mean) ** 2 for a in aucs) / max(1, len(aucs) - 1)) ** 0.5
        results["settings"][name] = {"n_train": len(y), "auc_mean": mean, "auc_std": std, "aucs": aucs, "runs": runs}
        log(f"{name:>15}: n={len(y):5d}  test AUC {mean:.3f} +- {std:.3f}")
    headline = results["settings"].get("real+synthetic", results["settings"]["real"])
    results["auc_mean"], results["auc_std"] = headline["auc_mean"], headline["auc_std"]
    return results
