"""``lowbudget phantom``: the phantom world and the proving ground built on it -- images with known
findings, the demo report, the embedded base's pretraining, the benchmark.

The old top-level names (``lowbudget phantoms / report / pretrain-base / benchmark``) still work
for this release, hidden from ``--help`` and marked deprecated when used."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from lowbudget.cli.common import Overwrite, Quiet, info, quiet_libraries
from lowbudget.errors import LowbudgetError, RecipeError


phantom_app = typer.Typer(help="The phantom world: images with known findings, a report on a token, the benchmark.",
                          no_args_is_help=True)
aliases = typer.Typer()  # the old top-level names, registered at the end of this module


@phantom_app.command("images")
def images(
    modality: Annotated[str, typer.Argument(help="chest | prostate")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Folder for the images (created).")],
    finding: Annotated[str, typer.Option("--finding",
        help="chest: effusion | pneumothorax | cardiomegaly | nodule | none; prostate: lesion | none.")] = "none",
    n: Annotated[int, typer.Option("-n", help="Number of images.")] = 24,
    prevalence: Annotated[float, typer.Option("--prevalence", help="Chance of each other finding per image.")] = 0.0,
    size: Annotated[int, typer.Option("--size", help="Image size in pixels.")] = 64,
    fmt: Annotated[str, typer.Option("--format",
        help="png | png16 | dicom | mixed (cycles png, png16, dicom).")] = "png",
    seed: Annotated[int, typer.Option("--seed")] = 0,
    scanner: Annotated[str, typer.Option("--scanner", help="How a site's scanner shows them: reference | bright | "
                                         "dim | noisy | soft, or exposure=1.2,contrast=0.8,noise=0.03,resolution=0.5.")]
        = "reference",
    overwrite: Overwrite = False,
) -> None:
    """Write phantom images with metadata.jsonl captions (never naming a finding) and labels.csv."""
    from lowbudget.io import output_folder
    from lowbudget.phantoms import write_phantoms
    from lowbudget.phantoms.scanners import parse_scanner
    from lowbudget.phantoms.world import check_request

    check_request(modality, finding, n=n, size=size, seed=seed, prevalence=prevalence)  # before the folder is made
    acquisition = parse_scanner(scanner)
    output_folder(output, overwrite=overwrite, command="phantom images")
    paths = write_phantoms(output, modality, finding, n=n, size=size, fmt=fmt, seed=seed, prevalence=prevalence,
                           scanner=None if scanner == "reference" else acquisition)
    info(f"wrote {len(paths)} {modality} phantoms, metadata.jsonl and labels.csv to {output}")


@phantom_app.command()
def report(
    adapter: Annotated[Path, typer.Argument(help="A token trained on phantoms of one finding (.safetensors).")],
    finding: Annotated[str, typer.Option("--finding", help="The finding it was trained on, e.g. effusion.")],
    output: Annotated[Path, typer.Option("--output", "-o",
        help="Folder for report.md and PNGs.")] = Path("runs/report"),
    library: Annotated[Path, typer.Option("--library", help="Shared embeddings to combine with.")] = Path("embeddings"),
    n: Annotated[int, typer.Option("-n", help="Images per prompt for the fidelity figure.")] = 16,
    steps: Annotated[int, typer.Option("--steps", help="Sampler steps.")] = 25,
    overwrite: Overwrite = False,
    quiet: Quiet = False,
) -> None:
    """Report on a phantom token: before/after grids, fidelity, interpolation, combination, inpainting."""
    from lowbudget.bench.demo import demo_report
    from lowbudget.bench.fidelity import INIT_WORDS, Sampling
    from lowbudget.io import output_folder

    if finding not in INIT_WORDS:
        raise LowbudgetError(f"--finding {finding!r} is not a phantom finding; expected one of {', '.join(INIT_WORDS)}")
    if not adapter.is_file():
        raise LowbudgetError(f"adapter '{adapter}' does not exist")
    output_folder(output, overwrite=overwrite, command="phantom report")
    quiet_libraries()
    path = demo_report(adapter, finding, output, library=library, n=n, sampling=Sampling(steps=steps), log=info,
                       progress=not quiet)
    info(f"wrote {path} and {path.with_suffix('.html')} (open it in a browser)")


@phantom_app.command("pretrain-base")
def pretrain_base(
    output: Annotated[Path, typer.Option("--output", "-o",
        help="Run folder (resumes if it has a checkpoint).")] = Path("runs/phantom-base"),
    overrides: Annotated[list[str], typer.Option("--set", metavar="KEY=VALUE",
        help="Override a pretraining setting: --set unet_steps=2000 (repeatable); --set shape=phantom-xl "
             "pretrains at SDXL's architecture.")] = [],
    overwrite: Overwrite = False,
) -> None:
    """Pretrain the phantom base model from scratch (about an hour on 2 CPU cores)."""
    from lowbudget.bench.pretrain import PretrainConfig, pretrain
    from lowbudget.io import output_folder
    from lowbudget.recipe import build_config, parse_override

    try:
        cfg = build_config(PretrainConfig, dict(parse_override(o) for o in overrides))
    except RecipeError as exc:
        raise RecipeError(f"pretrain-base {exc}" if str(exc).startswith("--set") else f"pretrain-base --set: {exc}") from None
    output_folder(output, overwrite=overwrite, command="phantom pretrain-base")
    packed = pretrain(output, cfg, log=info)
    info(f"wrote {output / 'base'} (diffusers folder) and {packed} ({packed.stat().st_size / 1e6:.1f} MB, fp16)")


@phantom_app.command()
def benchmark(
    output: Annotated[Path, typer.Option("--output", "-o",
        help="Folder for results.md, results.json, PNGs.")] = Path("runs/phantom-benchmark"),
    quick: Annotated[bool, typer.Option("--quick",
        help="One finding, reduced sizes (about 5 minutes on 2 cores).")] = False,
    sections: Annotated[str, typer.Option("--sections",
        help="Comma-separated: detectors,base,fidelity,sweep,downstream,diversity,methods,compose,convergence,"
             "federated.")] = "all",
    findings: Annotated[str, typer.Option("--findings",
        help="Comma-separated findings (default: all; quick: effusion); "
             "the first is the one sweep, downstream, diversity and methods study.")] = "",
    compose_seeds: Annotated[int, typer.Option("--compose-seeds",
        help="Interpolation seeds of the compose section (combination and inpainting use twice as many; default 8).")] = 0,
    base: Annotated[str, typer.Option("--base",
        help="A base pretrained on phantoms to measure instead of the embedded one "
             "(e.g. runs/phantom-xl-base/base from 'phantom pretrain-base --set shape=phantom-xl').")] = "",
    overwrite: Overwrite = False,
    quiet: Quiet = False,
) -> None:
    """The paper in miniature on the phantom world: fidelity, sweep, downstream, diversity, methods."""
    from lowbudget.bench.benchmark import benchmark_config, run_benchmark
    from lowbudget.io import output_folder

    cfg = benchmark_config(quick=quick, findings=tuple(findings.split(",")) if findings else (), compose_seeds=compose_seeds,
                           base=base)
    output_folder(output, overwrite=overwrite, command="phantom benchmark")
    quiet_libraries()
    path = run_benchmark(output, cfg, sections=None if sections == "all" else tuple(sections.split(",")), log=info,
                         progress=not quiet)
    typer.echo(path.read_text())


for _old, _command in (("phantoms", images), ("report", report), ("pretrain-base", pretrain_base), ("benchmark", benchmark)):
    aliases.command(_old, hidden=True, deprecated=True)(_command)
