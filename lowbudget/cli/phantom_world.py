"""Commands of the phantom world: images, the demo report, the base's pretraining, the benchmark."""

from __future__ import annotations

from pathlib import Path

import typer

from lowbudget.cli.app import OVERWRITE, app, info, quiet_libraries
from lowbudget.errors import LowbudgetError


@app.command()
def phantoms(
    modality: str = typer.Argument(..., help="chest | prostate"),
    output: Path = typer.Option(..., "--output", "-o", help="Folder for the images (created)."),
    finding: str = typer.Option("none", "--finding", help="chest: effusion | pneumothorax | cardiomegaly | nodule | none; "
                                                          "prostate: lesion | none."),
    n: int = typer.Option(24, "-n", help="Number of images."),
    prevalence: float = typer.Option(0.0, "--prevalence", help="Chance of each other finding per image."),
    size: int = typer.Option(64, "--size", help="Image size in pixels."),
    fmt: str = typer.Option("png", "--format", help="png | png16 | dicom | mixed (cycles png, png16, dicom)."),
    seed: int = typer.Option(0, "--seed"), overwrite: bool = OVERWRITE,
) -> None:
    """Write phantom images with metadata.jsonl captions (never naming a finding) and labels.csv."""
    from lowbudget.io import output_folder
    from lowbudget.phantoms import write_phantoms
    from lowbudget.phantoms.world import check_request

    check_request(modality, finding, n=n, size=size, seed=seed, prevalence=prevalence)  # before the folder is made
    output_folder(output, overwrite=overwrite, command="phantoms")
    paths = write_phantoms(output, modality, finding, n=n, size=size, fmt=fmt, seed=seed, prevalence=prevalence)
    info(f"wrote {len(paths)} {modality} phantoms, metadata.jsonl and labels.csv to {output}")


@app.command()
def report(
    adapter: Path = typer.Argument(..., help="A token trained on phantoms of one finding (.safetensors)."),
    finding: str = typer.Option(..., "--finding", help="The finding it was trained on, e.g. effusion."),
    output: Path = typer.Option(Path("runs/report"), "--output", "-o", help="Folder for report.md and PNGs."),
    library: Path = typer.Option(Path("embeddings"), "--library", help="Shared embeddings to combine with."),
    n: int = typer.Option(16, "-n", help="Images per prompt for the fidelity figure."),
    steps: int = typer.Option(25, "--steps", help="Sampler steps."), overwrite: bool = OVERWRITE,
) -> None:
    """Report on a phantom token: before/after grids, fidelity, interpolation, combination, inpainting."""
    from lowbudget.io import output_folder
    from lowbudget.bench.fidelity import INIT_WORDS, Sampling
    from lowbudget.bench.demo import demo_report

    if finding not in INIT_WORDS:
        raise LowbudgetError(f"--finding {finding!r} is not a phantom finding; expected one of {', '.join(INIT_WORDS)}")
    if not adapter.is_file():
        raise LowbudgetError(f"adapter '{adapter}' does not exist")
    output_folder(output, overwrite=overwrite, command="report")
    quiet_libraries()
    path = demo_report(adapter, finding, output, library=library, n=n, sampling=Sampling(steps=steps), log=info)
    info(f"wrote {path}")


@app.command("pretrain-base")
def pretrain_base(
    output: Path = typer.Option(Path("runs/phantom-base"), "--output", "-o", help="Run folder (resumes if it has a checkpoint)."),
    overrides: list[str] = typer.Option([], "--set", help="Override a pretraining setting: --set unet_steps=2000 (repeatable)."),
    overwrite: bool = OVERWRITE,
) -> None:
    """Pretrain the phantom base model from scratch (about an hour on 2 CPU cores)."""
    from lowbudget.io import output_folder
    from lowbudget.bench.pretrain import PretrainConfig, pretrain

    cfg = PretrainConfig(**dict(_pretrain_override(o) for o in overrides))
    output_folder(output, overwrite=overwrite, command="pretrain-base")
    packed = pretrain(output, cfg, log=info)
    info(f"wrote {output / 'base'} (diffusers folder) and {packed} ({packed.stat().st_size / 1e6:.1f} MB, fp16)")


def _pretrain_override(text: str) -> tuple[str, float]:
    from dataclasses import fields

    from lowbudget.bench.pretrain import PretrainConfig

    kinds = {f.name: f.type for f in fields(PretrainConfig)}
    key, _, value = text.partition("=")
    if key not in kinds or not value:
        raise LowbudgetError(f"--set {text!r}: expected KEY=VALUE with KEY one of {', '.join(kinds)}")
    try:
        return key, (int if kinds[key] in (int, "int") else float)(value)
    except ValueError:
        raise LowbudgetError(f"--set {text!r}: {value!r} is not a number") from None


@app.command()
def benchmark(
    output: Path = typer.Option(Path("runs/phantom-benchmark"), "--output", "-o", help="Folder for results.md, results.json, PNGs."),
    quick: bool = typer.Option(False, "--quick", help="One finding, reduced sizes (about 5 minutes on 2 cores)."),
    sections: str = typer.Option("all", "--sections", help="Comma-separated: detectors,base,fidelity,sweep,downstream,diversity,methods,compose."),
    findings: str = typer.Option("", "--findings", help="Comma-separated findings (default: all; quick: effusion); "
                                 "the first is the one sweep, downstream, diversity and methods study."),
    overwrite: bool = OVERWRITE,
) -> None:
    """The paper in miniature on the phantom world: fidelity, sweep, downstream, diversity, methods."""
    from dataclasses import replace

    from lowbudget.io import output_folder
    from lowbudget.bench.benchmark import BenchmarkConfig, run_benchmark

    output_folder(output, overwrite=overwrite, command="benchmark")
    cfg = BenchmarkConfig.quick() if quick else BenchmarkConfig()
    if findings:
        chosen = tuple(findings.split(","))
        cfg = replace(cfg, findings=chosen, sweep_finding=chosen[0])
    quiet_libraries()
    path = run_benchmark(output, cfg, sections=None if sections == "all" else tuple(sections.split(",")), log=info)
    typer.echo(path.read_text())
