"""Why do 64-vector tokens score below 16-vector ones in the phantom sweep? One cause at a time.

The sweep (PHANTOM_RESULTS.md) gave effusion 0.94 with 16 vectors and 0.75-0.81 with 64, on
16 images and one training seed. Three suspects differ between those rows:

  captions   64-vector tokens train on the modality template ("a frontal chest x-ray with
             <effusion>"), since phantom captions plus 64 vectors pass CLIP's 77 tokens;
             16-vector tokens train on the phantoms' own captions.
  lr         Adam moves every vector by about the learning rate per step, so 64 vectors move
             the prompt's conditioning further than 16 at the same optim.lr_ti.
  norms      learned vectors may drift from the norms of the vocabulary they sit among.

The last row keeps the phantoms' captions beside 64 vectors, trimmed to fit the 77 tokens
(data.long_captions = "trim").

Each row changes one thing against its neighbour; every row is trained with several seeds and
measured on 32 images, with the mean L2 norm of the learned vectors against the vocabulary's.

    python benchmarks/vectors.py --output runs/vectors          # ~15 min on 2 CPU cores
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

import numpy as np
from safetensors.torch import load_file

from lowbudget.bench.fidelity import Sampling, TokenSpec, fidelity, token_name, train_finding
from lowbudget.models import load_base

ROWS = {  # name: what changes against the sweep's 16-vector row
    "16 vectors, phantom captions (the sweep's 16 row)": {"n_vectors": 16},
    "16 vectors, template captions": {"n_vectors": 16, "captions": "templates"},
    "64 vectors, template captions (the sweep's 64 row until this benchmark)": {"n_vectors": 64, "captions": "templates"},
    "64 vectors, template captions, lr / 4": {"n_vectors": 64, "captions": "templates", "lr_ti": 5e-3},
    "64 vectors, phantom captions trimmed to fit (now the default)": {"n_vectors": 64, "long_captions": "trim"},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=Path("runs/vectors"))
    parser.add_argument("--finding", default="effusion")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--rows", default="", help="comma-separated row numbers (1-based) to run; default: all")
    parser.add_argument("-n", type=int, default=32, help="images per measurement")
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    vocabulary = load_base(None).text_encoder.get_input_embeddings().weight.detach()
    vocab_norm = float(vocabulary.norm(dim=1).mean())
    print(f"{args.finding}; seeds {seeds}; {args.n} images per measurement; vocabulary mean vector norm {vocab_norm:.3f}\n")
    print("| row | fidelity (mean ± std) | per seed | learned vector norm / vocabulary's |")
    print("|---|---|---|---|")
    chosen = {int(r) for r in args.rows.split(",")} if args.rows else set(range(1, len(ROWS) + 1))
    for number, (name, changes) in enumerate(ROWS.items(), start=1):
        if number not in chosen:
            continue
        rates, norms = [], []
        for seed in seeds:
            spec = replace(TokenSpec(args.finding, seed=seed), **changes)
            files = train_finding(spec, args.output)
            rates.append(fidelity(spec, files, n=args.n, sampling=Sampling(), kinds=("token",))["rates"]["token"])
            vectors = load_file(files[0])[token_name(args.finding)]
            norms.append(float(vectors.norm(dim=1).mean()) / vocab_norm)
        print(f"| {name} | {np.mean(rates):.2f} ± {np.std(rates):.2f} | {', '.join(f'{r:.2f}' for r in rates)} "
              f"| {np.mean(norms):.2f} |", flush=True)


if __name__ == "__main__":
    main()
