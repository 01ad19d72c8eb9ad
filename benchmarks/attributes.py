"""Why does the effusion token draw effusions on both sides? One suspect per row.

Every training phantom has its effusion on one side; the shipped `<effusion>` token draws both
sides in most images at the benchmark's guidance 5.0 (PHANTOM_RESULTS.md, attributes). Suspects:

  reader     the per-side detectors misread images that went through the VAE
  guidance   classifier-free guidance at high noise pulls towards the mean of the two sides
  averaging  one token learns the mean of left and right (then a token per side fixes it)
  text path  the base itself does not tie a side to words (then no token can carry it)
  method     LoRA on the U-Net instead of a token
  placed     not a suspect, a remedy: the token (or LoRA) inpainted into one lung per image, the
             box's top at 0.45 / 0.50 / 0.55 of the image height (the last: the lower third)

Each row: effusion detector rate, sides read (right / left / both) and their total variation
distance to the training set's, and leakage (another finding flagged), on the same 32 seeds.

    python benchmarks/attributes.py --output runs/attributes      # ~20 min on 2 CPU cores
    python benchmarks/attributes.py --output runs/attributes --only placed     # the inpainting rows
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from lowbudget.bench.compose_check import LOWER_THIRD, placed_by_side
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
    parser.add_argument("--only", choices=("placed",), help="only the rows that inpaint the side")
    args = parser.parse_args()
    seeds = list(range(10_000, 10_000 + args.n))
    print("| row | effusion rate | sides R / L / both | side TV | leakage |\n|---|---|---|---|---|")
    token = open_with(train_finding(SPEC, args.output / "ti"))
    lora = open_with(train_finding(replace(SPEC, method="lora"), args.output / "lora"))
    if not args.only:
        suspects(args.output, seeds, token, lora)
    healthy = sample(open_with([]), request(at(5.0), PLAIN, seeds))  # (N, 3, 64, 64): the base, no adapter
    for name, pipe, prompt, tops in (("token", token, TOKEN, (0.45, 0.50, LOWER_THIRD)), ("LoRA", lora, PLAIN, (0.45, LOWER_THIRD))):
        for top in tops:
            print(row(f"{name}, inpainted into the right / left lung below {top:.2f} of the image height in turn, "
                      "guidance 5.0", placed_by_side(pipe, prompt, healthy, at(5.0), seeds, top=top)), flush=True)


def at(guidance: float, start: float = 0.0) -> Sampling:
    return Sampling(guidance=guidance, guidance_from=start)


def suspects(output: Path, seeds: list[int], token, lora) -> None:
    """The rows that ask what draws both sides: reader, guidance, base words, a token per side, vectors, LoRA."""
    n = len(seeds)
    print(row("training images", np.stack(training_images(SPEC)[:n])), flush=True)
    print(row("training images through the VAE", vae_round_trip(token, training_images(SPEC)[:n])), flush=True)
    for g in (1.0, 2.0, 3.0, 5.0, 7.5):
        print(row(f"token, guidance {g}", generate_gray(token, TOKEN, seeds, at(g))), flush=True)
    for start in (0.2, 0.4):
        images = generate_gray(token, TOKEN, seeds, at(5.0, start))
        print(row(f"token, guidance 5.0 from {start:.0%} of the steps", images), flush=True)
    for side in ("right", "left"):
        for g in (2.0, 5.0):
            print(row(f"no token: '{PLAIN}, hazy {side} base' (pretraining words), guidance {g}",
                      generate_gray(token, f"{PLAIN}, hazy {side} base", seeds, at(g))), flush=True)
    per_side = {s: open_with(train_finding(SPEC, output / f"side-{s}", data=side_folder(output / f"data-{s}", s)))
                for s in ("right", "left")}
    for g in (2.0, 5.0):
        images = np.concatenate([generate_gray(per_side[s], TOKEN, seeds[k::2], at(g)) for k, s in enumerate(per_side)])
        print(row(f"a token per side (each on its side's images), half the seeds each, guidance {g}", images), flush=True)
    for n_vectors in (1, 16):
        pipe = open_with(train_finding(replace(SPEC, n_vectors=n_vectors), output / f"ti-{n_vectors}v"))
        print(row(f"token of {n_vectors} vectors, guidance 5.0", generate_gray(pipe, TOKEN, seeds, at(5.0))), flush=True)
    for g, start in ((1.5, 0.0), (3.0, 0.0), (5.0, 0.0), (5.0, 0.3)):
        label = f"LoRA, plain prompt, guidance {g}" + (f" from {start:.0%} of the steps" if start else "")
        print(row(label, generate_gray(lora, PLAIN, seeds, at(g, start))), flush=True)


if __name__ == "__main__":
    main()
