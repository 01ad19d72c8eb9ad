"""Why does the effusion token draw effusions on both sides? One suspect per row.

Every training phantom has its effusion on one side; the shipped `<effusion>` token draws both
sides in most images at the benchmark's guidance 5.0 (PHANTOM_RESULTS.md, attributes). Suspects:

  reader     the per-side detectors misread images that went through the VAE
  guidance   classifier-free guidance at high noise pulls towards the mean of the two sides
  averaging  one token learns the mean of left and right (then a token per side fixes it)
  text path  the base itself does not tie a side to words (then no token can carry it)
  method     LoRA on the U-Net instead of a token

Each row: effusion detector rate, sides read (right / left / both) and their total variation
distance to the training set's, and leakage (another finding flagged), on the same 32 seeds.

    python benchmarks/attributes.py --output runs/attributes      # ~12 min on 2 CPU cores
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from lowbudget.bench.compose_check import placed_by_side
from lowbudget.bench.fidelity import (Sampling, TokenSpec, attribute_fidelity, detection_rate, generate_gray, open_with,
                                      request, train_finding, training_images)
from lowbudget.data.writers import write_png
from lowbudget.phantoms import attributes
from lowbudget.phantoms.world import generate
from lowbudget.sampling.sampler import decode, sample

PLAIN = "a frontal chest x-ray"
TOKEN = f"{PLAIN} with <effusion>"
SPEC = TokenSpec("effusion")  # the benchmark's token: 4 vectors, 100 images, 300 steps


def row(name: str, images: np.ndarray) -> str:
    attr = attribute_fidelity(SPEC, images)
    sides = attr["sides_generated"]
    return (f"| {name} | {detection_rate('effusion', images):.2f} | {sides['right']:.2f} / {sides['left']:.2f} / "
            f"{sides['both']:.2f} | {attr['side_tv']:.2f} | {attr['leakage']:.2f} "
            f"({', '.join(f'{f} {r:.2f}' for f, r in attr['others_generated'].items() if r > 0) or 'none'}) |")


def vae_round_trip(pipe, images: list[np.ndarray]) -> np.ndarray:
    with torch.no_grad():
        x = torch.tensor(np.stack(images))[:, None].repeat(1, 3, 1, 1)  # (N, 3, 64, 64)
        latents = pipe.vae.encode(x * 2 - 1).latent_dist.mean * pipe.vae.config.scaling_factor
        return decode(pipe, latents).mean(dim=1).numpy()


def side_folder(folder: Path, side: str) -> Path:
    """The benchmark token's training phantoms whose effusion is on ``side``, as a folder."""
    phantoms = [p for p in generate("chest", "effusion", n=SPEC.n_images, seed=SPEC.data_seed)
                if attributes.true_side("effusion", p) == side]
    for i, p in enumerate(phantoms):
        write_png(folder / f"{i:04d}.png", p.image)
    (folder / "metadata.jsonl").write_text("".join(json.dumps({"file_name": f"{i:04d}.png", "text": p.caption}) + "\n"
                                                   for i, p in enumerate(phantoms)))
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=Path("runs/attributes"))
    parser.add_argument("-n", type=int, default=32, help="images per row")
    args = parser.parse_args()
    seeds = list(range(10_000, 10_000 + args.n))
    at = lambda g, start=0.0: Sampling(guidance=g, guidance_from=start)  # noqa: E731
    print("| row | effusion rate | sides R / L / both | side TV | leakage |\n|---|---|---|---|---|")
    token = open_with(train_finding(SPEC, args.output / "ti"))
    print(row("training images", np.stack(training_images(SPEC)[: args.n])), flush=True)
    print(row("training images through the VAE", vae_round_trip(token, training_images(SPEC)[: args.n])), flush=True)
    for g in (1.0, 2.0, 3.0, 5.0, 7.5):
        print(row(f"token, guidance {g}", generate_gray(token, TOKEN, seeds, at(g))), flush=True)
    for start in (0.2, 0.4):
        images = generate_gray(token, TOKEN, seeds, at(5.0, start))
        print(row(f"token, guidance 5.0 from {start:.0%} of the steps", images), flush=True)
    for side in ("right", "left"):
        for g in (2.0, 5.0):
            print(row(f"no token: '{PLAIN}, hazy {side} base' (pretraining words), guidance {g}",
                      generate_gray(token, f"{PLAIN}, hazy {side} base", seeds, at(g))), flush=True)
    per_side = {s: open_with(train_finding(SPEC, args.output / f"side-{s}", data=side_folder(args.output / f"data-{s}", s)))
                for s in ("right", "left")}
    for g in (2.0, 5.0):
        images = np.concatenate([generate_gray(per_side[s], TOKEN, seeds[k::2], at(g)) for k, s in enumerate(per_side)])
        print(row(f"a token per side (each on its side's images), half the seeds each, guidance {g}", images), flush=True)
    for n_vectors in (1, 16):
        pipe = open_with(train_finding(replace(SPEC, n_vectors=n_vectors), args.output / f"ti-{n_vectors}v"))
        print(row(f"token of {n_vectors} vectors, guidance 5.0", generate_gray(pipe, TOKEN, seeds, at(5.0))), flush=True)
    lora = open_with(train_finding(replace(SPEC, method="lora"), args.output / "lora"))
    for g, start in ((1.5, 0.0), (3.0, 0.0), (5.0, 0.0), (5.0, 0.3)):
        label = f"LoRA, plain prompt, guidance {g}" + (f" from {start:.0%} of the steps" if start else "")
        print(row(label, generate_gray(lora, PLAIN, seeds, at(g, start))), flush=True)
    healthy = sample(open_with([]), request(at(5.0), PLAIN, seeds))  # (N, 3, 64, 64): the base, no adapter
    print(row("token, inpainted into the right / left lower lung in turn, guidance 5.0",
              placed_by_side(token, TOKEN, healthy, at(5.0), seeds)), flush=True)
    print(row("LoRA, inpainted into the right / left lower lung in turn, guidance 5.0",
              placed_by_side(lora, PLAIN, healthy, at(5.0), seeds)), flush=True)


if __name__ == "__main__":
    main()
