"""The paper in miniature: every figure measured by a detector on the phantom world.

Sections (each timed, each a markdown table in ``results.md`` and a key in ``results.json``):

  detectors   AUC of each finding's detector on fresh phantoms
  base        the base with plain prompts: anatomy recognised, findings' base rates
  fidelity    per finding: detector rate with the learned token / its initializer word / plain
  sweep       vectors per token x training images (the paper's finding: more of both helps)
  downstream  gain in classifier AUC from 10N synthetic images over N scarce real ones, paired
              replicates, a 95% interval (lowbudget.bench.downstream)
  diversity   within-prompt MS-SSIM (4 images, 6 pairs) of generated vs real phantoms
  methods     TI vs LoRA vs TI+LoRA on the same data and steps
  compose     interpolation monotonicity, combination and inpainting rates (lowbudget.bench.compose_check)
  federated   each site alone vs pooled images vs a federation of the sites (lowbudget.bench.federated)
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable

import numpy as np

from lowbudget.bench.compose_check import compose_checks, placed_by_side
from lowbudget.bench.downstream import DownstreamConfig, downstream_gain
from lowbudget.bench.convergence import TARGET, ConvergenceConfig, claim_holds, convergence, summary_row
from lowbudget.bench.federated import FederatedConfig, federated
from lowbudget.bench.tables import ATTRIBUTE_HEADER, ATTRIBUTE_NOTE, attribute_row, markdown_table, save_pngs, save_strip
from lowbudget.bench.fidelity import (INIT_WORDS, Sampling, TokenSpec, attribute_fidelity, detection_rate, fidelity,
                                      generate_gray, modality_of, open_with, prompts, recognised_rate, request,
                                      train_finding, training_rate)
from lowbudget.errors import LowbudgetError
from lowbudget.evaluate.diversity import diversity
from lowbudget.io import atomic_write_text
from lowbudget.models.embedded import is_embedded
from lowbudget.phantoms import detectors
from lowbudget.phantoms.world import MODALITIES, generate
from lowbudget.progress import Progress
from lowbudget.sampling.sampler import sample
from lowbudget.viz import write_html

SECTIONS = ("detectors", "base", "fidelity", "sweep", "downstream", "diversity", "methods", "compose", "convergence",
            "federated")
# Seconds each section took in benchmarks/PHANTOM_RESULTS.md (2 CPU cores; fidelity and methods
# as measured with their attribute columns, training included): the weights of the progress
# display, whose time left is this share of work at this run's pace.
MEASURED_SECONDS = {"detectors": 8, "base": 54, "fidelity": 678, "sweep": 578, "downstream": 3413, "diversity": 11,
                    "methods": 314, "compose": 120, "convergence": 5920, "federated": 1200}


@dataclass
class BenchmarkConfig:
    findings: tuple[str, ...] = tuple(INIT_WORDS)
    token: TokenSpec = field(default_factory=lambda: TokenSpec("effusion"))  # finding is set per row
    n_eval: int = 32  # images per prompt
    sampling: Sampling = field(default_factory=Sampling)
    detector_n: int = 200
    sweep_finding: str = "effusion"
    sweep_vectors: tuple[int, ...] = (1, 4, 16, 64)
    sweep_images: tuple[int, ...] = (5, 10, 50, 100)
    sweep_eval: int = 16
    downstream: DownstreamConfig = field(default_factory=DownstreamConfig)  # finding, token, sampling set per run
    diversity_groups: int = 8
    compose_seeds: int = 8
    convergence: ConvergenceConfig = field(default_factory=ConvergenceConfig)
    federated: FederatedConfig = field(default_factory=FederatedConfig)
    quick_mode: bool = False

    def __post_init__(self) -> None:
        for finding in (*self.findings, self.sweep_finding):
            if finding not in INIT_WORDS:
                raise LowbudgetError(f"finding {finding!r} is not in the phantom world; expected one of {', '.join(INIT_WORDS)}")

    @classmethod
    def quick(cls) -> "BenchmarkConfig":
        """One finding, fewer images: about five minutes on 2 CPU cores (the CI test)."""
        return cls(findings=("effusion",), n_eval=16, detector_n=100, quick_mode=True)


def benchmark_config(*, quick: bool = False, findings: tuple[str, ...] = (), compose_seeds: int = 0,
                     base: str = "") -> BenchmarkConfig:
    """The configuration both front doors (``lowbudget phantom benchmark`` and
    ``benchmarks/phantom_world.py``) run: the full or quick preset, the chosen findings (the first
    is the one the sweep, downstream, diversity and methods sections study), the compose seeds,
    the base every section trains on and samples from ("" = the embedded phantom base)."""
    cfg = BenchmarkConfig.quick() if quick else BenchmarkConfig()
    if base and not is_embedded(base) and not Path(base).expanduser().exists():
        raise LowbudgetError(f"--base '{base}' does not exist; expected embedded-xl or a base pretrained on phantoms "
                             "(lowbudget phantom pretrain-base writes one: <output>/base)")
    if base:
        cfg = replace(cfg, token=replace(cfg.token, base=str(base)))
    if findings:
        cfg = replace(cfg, findings=tuple(findings), sweep_finding=findings[0])
    if compose_seeds < 0:
        raise LowbudgetError(f"--compose-seeds {compose_seeds}: expected a positive number of seeds")
    if compose_seeds:
        cfg = replace(cfg, compose_seeds=compose_seeds)
    return cfg


def run_benchmark(output: Path, cfg: BenchmarkConfig, *, sections: tuple[str, ...] | None = None,
                  log: Callable[[str], None] = print, progress: bool = False) -> Path:
    """Run the chosen sections (default: all; quick: detectors and fidelity); returns results.md
    (results.html beside it is the same for a browser). ``progress`` shows the share done and the
    time left, weighting each section by its measured cost."""
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    chosen = sections or (("detectors", "fidelity") if cfg.quick_mode else SECTIONS)
    unknown = set(chosen) - set(SECTIONS)
    if unknown:
        raise LowbudgetError(f"--sections: unknown {', '.join(sorted(unknown))}; expected some of {', '.join(SECTIONS)}")
    results, markdown = {"config": asdict(cfg)}, ["# Phantom-world benchmark", ""]
    markdown += [f"Base: `{cfg.token.base}`." if cfg.token.base else "Base: the embedded phantom base.", ""]
    order = [name for name in SECTIONS if name in chosen]
    with Progress(sum(MEASURED_SECONDS[n] for n in order), "benchmark", unit=None, enabled=progress) as bar:
        for k, name in enumerate(order, 1):
            bar.doing(f"[{k}/{len(order)}] {name}")
            t0 = time.perf_counter()
            lines, data = _RUNNERS[name](cfg, output, log)
            seconds = time.perf_counter() - t0
            data["seconds"] = round(seconds, 1)
            results[name] = data
            markdown += [f"## {name} ({seconds:.0f} s)", "", *lines, ""]
            atomic_write_text(output / "results.json", json.dumps(results, indent=2, default=str))
            atomic_write_text(output / "results.md", "\n".join(markdown))
            write_html("\n".join(markdown), output / "results.html", title="Phantom-world benchmark")
            bar.update(MEASURED_SECONDS[name])
    return output / "results.md"


def _detectors(cfg: BenchmarkConfig, output: Path, log) -> tuple[list[str], dict]:
    rows, data = [], {}
    for finding in cfg.findings:
        t0 = time.perf_counter()
        modality = modality_of(finding)
        auc = detectors.detector_auc(modality, finding, n=cfg.detector_n)
        cut = detectors.threshold(modality, finding)
        data[finding] = {"auc": auc, "threshold": cut}
        rows.append([finding, modality, auc, round(cut, 4), f"{time.perf_counter() - t0:.1f} s"])
        log(f"  detector {finding}: AUC {auc:.4f}")
    return markdown_table(["finding", "modality", "AUC", "threshold", "time"], rows), data


def _base(cfg: BenchmarkConfig, output: Path, log) -> tuple[list[str], dict]:
    pipe = open_with([], cfg.token.base)
    seeds = list(range(20_000, 20_000 + 2 * cfg.n_eval))
    rows, data = [], {}
    for name, mod in MODALITIES.items():
        t0 = time.perf_counter()
        images = generate_gray(pipe, mod.plain_prompt, seeds, cfg.sampling)
        save_strip(images[:8], output / f"base-{name}.png", [f"seed {s}" for s in seeds[:8]], title=mod.plain_prompt)
        rates = {f: detection_rate(f, images) for f in mod.findings}
        data[name] = {"recognised": recognised_rate(name, images), "finding_rates": rates}
        rows.append([name, f'"{mod.plain_prompt}"', data[name]["recognised"],
                     ", ".join(f"{f} {r:.2f}" for f, r in rates.items()), f"{time.perf_counter() - t0:.1f} s"])
    header = ["modality", "prompt", "anatomy recognised", "detector rates (pretraining prevalence 0.10 each)", "time"]
    return markdown_table(header, rows) + ["", "Sample strips: `base-chest.png`, `base-prostate.png`."], data


def _fidelity(cfg: BenchmarkConfig, output: Path, log) -> tuple[list[str], dict]:
    rows, attr_rows, data = [], [], {}
    for finding in cfg.findings:
        t0 = time.perf_counter()
        spec = replace(cfg.token, finding=finding)
        files = train_finding(spec, output / "runs" / finding)
        trained = time.perf_counter() - t0
        fid = fidelity(spec, files, n=cfg.n_eval, sampling=cfg.sampling)
        rates = fid["rates"] | {"training_images": training_rate(spec)}
        save_strip(fid["images"]["token"][:8], output / f"fidelity-{finding}.png",
                   title=f"{prompts(finding)['token']} ({', '.join(p.name for p in files)})")
        attr = attribute_fidelity(spec, fid["images"]["token"])
        data[finding] = {"rates": rates, "attributes": attr, "files": [str(p) for p in files],
                         "train_seconds": round(trained, 1)}
        attr_rows.append(attribute_row(finding, "ti", attr))
        if finding == "effusion":  # the side placed by inpainting instead of left to the token
            placed = data[finding]["placed"] = _placed(cfg, spec, files, fid["seeds"])
            attr_rows.append(attribute_row(finding, f"ti, inpainted into the lower third of the lung, right / left in turn "
                                                    f"(rate {placed['rate']:.2f})",
                                           placed["attributes"]))
        rows.append([finding, rates["token"], rates["init"], rates["plain"], rates["training_images"],
                     f"{trained:.0f} + {time.perf_counter() - t0 - trained:.0f} s"])
        log(f"  {finding}: token {rates['token']:.2f}, init word {rates['init']:.2f}, plain {rates['plain']:.2f}")
    header = ["finding", "with token", "initializer word alone", "plain prompt", "training images", "time (train + sample)"]
    notes = [f"{cfg.n_eval} images per prompt; TI, {cfg.token.n_vectors} vectors, {cfg.token.n_images} images, "
             f"{cfg.token.steps} steps; targets: >= 0.80 with token, <= 0.20 without."]
    return markdown_table(header, rows) + ["", *notes, "", "How the finding appears, with the token:", "",
                                           *markdown_table(ATTRIBUTE_HEADER, attr_rows), "", ATTRIBUTE_NOTE], data


def _placed(cfg: BenchmarkConfig, spec: TokenSpec, files: list[Path], seeds: list[int]) -> dict:
    """The effusion token inpainted into the lower third of the right and left lung in turn, on
    the base's own plain-prompt chests: the side placed instead of left to the token."""
    healthy = sample(open_with([], spec.base), request(cfg.sampling, prompts(spec.finding)["plain"], seeds))  # (N, 3, 64, 64)
    placed = placed_by_side(open_with(files, spec.base), prompts(spec.finding)["token"], healthy, cfg.sampling, seeds)
    return {"rate": detection_rate(spec.finding, placed), "attributes": attribute_fidelity(spec, placed)}


def _sweep(cfg: BenchmarkConfig, output: Path, log) -> tuple[list[str], dict]:
    finding, rows, data = cfg.sweep_finding, [], {}
    for n_vectors in cfg.sweep_vectors:
        row = [n_vectors]
        for n_images in cfg.sweep_images:
            t0 = time.perf_counter()
            spec = replace(cfg.token, finding=finding, n_vectors=n_vectors, n_images=n_images)
            files = train_finding(spec, output / "runs" / f"sweep-{n_vectors}v-{n_images}i")
            rate = fidelity(spec, files, n=cfg.sweep_eval, sampling=cfg.sampling, kinds=("token",))["rates"]["token"]
            data[f"{n_vectors}x{n_images}"] = {"rate": rate, "seconds": round(time.perf_counter() - t0, 1)}
            row.append(f"{rate:.2f} ({time.perf_counter() - t0:.0f} s)")
            log(f"  {n_vectors} vectors x {n_images} images: {rate:.2f}")
        rows.append(row)
    header = ["vectors \\ images", *map(str, cfg.sweep_images)]
    return markdown_table(header, rows) + ["", f"{finding} detector rate with the token, {cfg.sweep_eval} images per cell."], data


def _downstream(cfg: BenchmarkConfig, output: Path, log) -> tuple[list[str], dict]:
    finding = cfg.sweep_finding
    dcfg = replace(cfg.downstream, finding=finding, token=replace(cfg.token, finding=finding), sampling=cfg.sampling)
    result = downstream_gain(dcfg, output, log)
    rows = [[f"{r['replicates'][0]['n_train']} + {r['replicates'][0]['n_val']}", r["replicates"][0]["n_synthetic"],
             len(r["replicates"]), r["auc_real"], r["auc_real_synthetic"],
             f"{r['gain_mean']:+.3f} [{r['gain_low']:+.3f}, {r['gain_high']:+.3f}]",
             f"{r['positive']} of {len(r['replicates'])}", r["verdict"]] for r in result.values()]
    header = ["real images (train + validation)", "synthetic", "replicates", "AUC real", "AUC real + synthetic",
              "gain, mean [95% CI]", "replicates gaining", "verdict"]
    c = dcfg.classifier
    notes = ["", f"{finding} vs none. A replicate is one site: its real phantoms drawn afresh, a token ({dcfg.token.n_vectors} "
             f"vectors, {dcfg.token.steps} steps) trained on its real positives only, {dcfg.ratio}x synthetic (half token "
             f"prompt, half plain prompt from a shared pool), one classifier seed for both training sets (ResNet-18 at width "
             f"{c.width}, {c.steps} steps, best validation AUC kept); test: the same {dcfg.n_test} held-out real phantoms. "
             "Gain = AUC(real + synthetic) - AUC(real), paired per replicate; Student's t interval over replicates. "
             "The paper: 0.780 -> 0.803 (200 real + 2000 synthetic)."]
    return markdown_table(header, rows) + notes, {str(n): r for n, r in result.items()}


def _diversity(cfg: BenchmarkConfig, output: Path, log) -> tuple[list[str], dict]:
    finding = cfg.sweep_finding
    modality = modality_of(finding)
    spec = replace(cfg.token, finding=finding)
    files = train_finding(spec, output / "runs" / finding)
    n = 4 * cfg.diversity_groups
    gen = output / "diversity" / "generated"
    save_pngs(generate_gray(open_with(files, spec.base), f"{MODALITIES[modality].plain_prompt} with <{finding}>",
                             list(range(50_000, 50_000 + n)), cfg.sampling), gen)
    real = output / "diversity" / "real"
    save_pngs(np.stack([p.image for p in generate(modality, finding, n=n, seed=51_000)]), real)
    result = diversity(gen, real, size=64)
    rows = [["generated (token prompt)", result["ms_ssim_mean"], result["ms_ssim_std"], result["n_groups"]],
            ["real phantoms", result["reference_ms_ssim_mean"], result["reference_ms_ssim_std"], result["reference_groups"]]]
    return markdown_table(["set", "MS-SSIM mean", "std", "groups of 4"], rows) + ["", "Lower = more diverse."], \
        {k: v for k, v in result.items() if k != "group_scores"}


def _methods(cfg: BenchmarkConfig, output: Path, log) -> tuple[list[str], dict]:
    rows, attr_rows, data = [], [], {}
    for method in ("ti", "lora", "ti+lora"):
        t0 = time.perf_counter()
        spec = replace(cfg.token, finding=cfg.sweep_finding, method=method)
        run = cfg.sweep_finding if method == "ti" else f"method-{method.replace('+', '-')}"  # TI = the fidelity run
        files = train_finding(spec, output / "runs" / run)
        fid = fidelity(spec, files, n=cfg.n_eval, sampling=cfg.sampling, kinds=("token", "plain"))
        rates, attr = fid["rates"], attribute_fidelity(spec, fid["images"]["token"])
        size = sum(p.stat().st_size for p in files)
        data[method] = {"rates": rates, "attributes": attr, "bytes": size, "seconds": round(time.perf_counter() - t0, 1)}
        attr_rows.append(attribute_row(cfg.sweep_finding, method, attr))
        rows.append([method, rates["token"], rates["plain"], f"{size / 1024:.0f} KiB", f"{time.perf_counter() - t0:.0f} s"])
        log(f"  {method}: {rates['token']:.2f}")
    header = ["method", "finding rate (adapter)", "plain prompt, no adapter", "file size", "time (train + sample)"]
    notes = [f"{cfg.sweep_finding}; LoRA rows use the plain prompt (LoRA has no token)."]
    return markdown_table(header, rows) + ["", *notes, "", *markdown_table(ATTRIBUTE_HEADER, attr_rows), "",
                                           ATTRIBUTE_NOTE], data


def _compose(cfg: BenchmarkConfig, output: Path, log) -> tuple[list[str], dict]:
    return compose_checks(cfg, output, log)


def _convergence(cfg: BenchmarkConfig, output: Path, log) -> tuple[list[str], dict]:
    conv, budget, rows, data = cfg.convergence, cfg.token.steps, [], {}
    rules = list(conv.rules)
    for finding in cfg.findings:
        records = convergence(replace(cfg.token, finding=finding), conv, output / "runs" / "convergence", cfg.sampling, log)
        data[finding] = {"records": records, "claim": {rule: claim_holds(records, rule, budget) for rule in rules}}
        rows.append(summary_row(finding, records, rules, budget)
                    + [", ".join(f"{rule} {'yes' if data[finding]['claim'][rule] else 'no'}" for rule in rules)])
    header = ["finding", f"steps to >= {TARGET} (per seed)", f"fixed {budget} steps"]
    for rule in rules:
        header += [f"{rule}: step written", f"{rule}: fidelity"]
    header += ["claim holds"]
    notes = [f"Fidelity: detector rate of {conv.n_final} images with the token (along the fixed run: {conv.n_check} "
             f"images every {conv.every} steps); mean ± std over seeds {', '.join(map(str, conv.seeds))}. Early stopping "
             f"computes its loss every {conv.validate_every} steps; " + "; ".join(f"{rule}: {changes}" for rule, changes in conv.rules.items())
             + f". Claim: early-stopped fidelity >= fixed - 0.05 with at most {budget // 3} steps."]
    return markdown_table(header, rows) + [""] + notes, data


def _federated(cfg: BenchmarkConfig, output: Path, log) -> tuple[list[str], dict]:
    return federated(cfg.federated, output / "federated", cfg.sampling, log, base=cfg.token.base)


_RUNNERS = {"detectors": _detectors, "base": _base, "fidelity": _fidelity, "sweep": _sweep,
            "downstream": _downstream, "diversity": _diversity, "methods": _methods, "compose": _compose,
            "convergence": _convergence, "federated": _federated}
