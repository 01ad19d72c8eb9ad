"""``lowbudget evaluate``: diversity, realism, classifier, memorisation, all."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from lowbudget.cli.app import OVERWRITE, evaluate_app, info, parse_seeds


_OUT = typer.Option(Path("runs/evaluation"), "--output", "-o", help="Folder for <part>.json, <part>.md and PNGs.")
_EXTRACTOR = typer.Option(None, "--extractor", help="Feature extractor: TorchScript file, or .safetensors with --architecture.")
_ARCH = typer.Option(None, "--architecture", help="Network of a .safetensors extractor: resnet18.")
_INPUT = typer.Option(299, "--input-size", help="Extractor input size in pixels (299 for InceptionV3, 224 for DenseNet).")


@evaluate_app.command("diversity")
def evaluate_diversity(
    generated: Path = typer.Option(..., "--generated", help="Generated images (grouped by stored prompt, else 4 at a time)."),
    real: Optional[Path] = typer.Option(None, "--real", help="Real images for the reference score."),
    size: int = typer.Option(256, "--size", help="Images are compared at this size (grayscale)."),
    output: Path = _OUT, overwrite: bool = OVERWRITE,
) -> None:
    """Within-prompt MS-SSIM (4 images, 6 pairs, grayscale, data range 1.0) of generated vs real."""
    from lowbudget.evaluate.diversity import diversity

    _claim(output, overwrite)
    _report(output, "diversity", diversity(generated, real, size=size, progress=True), overwrite)


@evaluate_app.command("realism")
def evaluate_realism(
    real: Path = typer.Option(..., "--real"), generated: Path = typer.Option(..., "--generated"),
    extractor: Optional[Path] = _EXTRACTOR, architecture: Optional[str] = _ARCH, input_size: int = _INPUT,
    output: Path = _OUT, overwrite: bool = OVERWRITE,
) -> None:
    """FID and KID between real and generated images, with your feature extractor."""
    from lowbudget.evaluate.realism import load_extractor, realism

    _claim(output, overwrite)
    net = load_extractor(extractor, architecture=architecture, input_size=input_size)
    _report(output, "realism", realism(real, generated, net, size=input_size, progress=True), overwrite)


@evaluate_app.command("classifier")
def evaluate_classifier(
    real: Path = typer.Option(..., "--real", help="Real images, one sub-folder per class (or --labels)."),
    synthetic: Optional[Path] = typer.Option(None, "--synthetic", help="Synthetic images, same classes."),
    test: Optional[Path] = typer.Option(None, "--test", help="Real test images (default: 20% of --real, held out)."),
    labels: Optional[Path] = typer.Option(None, "--labels", help="CSV with file_name,label for --real instead of sub-folders."),
    steps: int = typer.Option(2000, "--steps"), size: int = typer.Option(128, "--size"),
    seeds: str = typer.Option("0,1,2", "--seeds", help="Comma-separated seeds."),
    width: int = typer.Option(64, "--width", help="ResNet-18 base width (64 = standard)."),
    init: Optional[Path] = typer.Option(None, "--init", help="Start from these .safetensors weights."),
    output: Path = _OUT, overwrite: bool = OVERWRITE,
) -> None:
    """Train a ResNet-18 on real / real+synthetic / synthetic; test AUC mean +- std over seeds."""
    from lowbudget.evaluate.classifier import ClassifierConfig, downstream
    from lowbudget.evaluate.images import labelled_images

    cfg = ClassifierConfig(size=size, steps=steps, seeds=parse_seeds(seeds), width=width, init=str(init) if init else None)
    _claim(output, overwrite)
    real_set = labelled_images(real, labels)
    syn = labelled_images(synthetic, classes=real_set.classes) if synthetic else None
    test_set = labelled_images(test, classes=real_set.classes) if test else None
    _report(output, "classifier", downstream(real_set, syn, test_set, cfg, log=info, progress=True), overwrite)


@evaluate_app.command("memorisation")
def evaluate_memorisation(
    generated: Path = typer.Option(..., "--generated"),
    training: Path = typer.Option(..., "--training", help="The images the adapter was trained on."),
    extractor: Optional[Path] = _EXTRACTOR, architecture: Optional[str] = _ARCH, input_size: int = _INPUT,
    percentile: float = typer.Option(1.0, "--percentile", help="Flag below this percentile of real-to-real distances."),
    output: Path = _OUT, overwrite: bool = OVERWRITE,
) -> None:
    """Nearest training image of each generated image; flagged near-copies and their fraction."""
    from lowbudget.evaluate.memorisation import memorisation
    from lowbudget.evaluate.realism import load_extractor

    _claim(output, overwrite)
    net = load_extractor(extractor, architecture=architecture, input_size=input_size) if extractor else None
    result = memorisation(generated, training, extractor=net, percentile=percentile, progress=True)
    _report(output, "memorisation", result, overwrite)


@evaluate_app.command("all")
def evaluate_all(
    real: Path = typer.Option(..., "--real", help="Real images (the training images, for the memorisation audit)."),
    generated: Path = typer.Option(..., "--generated", help="Generated images."),
    extractor: Optional[Path] = _EXTRACTOR, architecture: Optional[str] = _ARCH, input_size: int = _INPUT,
    steps: int = typer.Option(2000, "--steps", help="Classifier step budget."),
    output: Path = _OUT, overwrite: bool = OVERWRITE,
) -> None:
    """All four parts. The classifier part runs when both folders have one sub-folder per class."""
    from lowbudget.errors import DataError
    from lowbudget.evaluate.classifier import ClassifierConfig, downstream
    from lowbudget.evaluate.diversity import diversity
    from lowbudget.evaluate.images import labelled_images
    from lowbudget.evaluate.memorisation import memorisation
    from lowbudget.evaluate.realism import load_extractor, realism

    _claim(output, overwrite)
    net = load_extractor(extractor, architecture=architecture, input_size=input_size)  # fail before any work
    _report(output, "diversity", diversity(generated, real, progress=True), overwrite)
    _report(output, "realism", realism(real, generated, net, size=input_size, progress=True), overwrite)
    _report(output, "memorisation", memorisation(generated, real, extractor=net, progress=True), overwrite)
    try:
        real_set = labelled_images(real)
        syn_set = labelled_images(generated, classes=real_set.classes)
    except DataError as exc:
        info(f"classifier part skipped: {exc}")
        return
    result = downstream(real_set, syn_set, cfg=ClassifierConfig(steps=steps), log=info, progress=True)
    _report(output, "classifier", result, overwrite)


def _claim(output: Path, overwrite: bool) -> None:
    """Fail before the work, not after it, when --output holds files of the user's; the folder
    itself is made when the first report is written."""
    from lowbudget.io import check_output_folder

    check_output_folder(output, overwrite=overwrite)


def _report(output: Path, part: str, result: dict, overwrite: bool) -> None:
    from lowbudget.evaluate.report import write_report
    from lowbudget.io import output_folder

    output_folder(output, overwrite=overwrite, command=f"evaluate {part}")


    for path in write_report(output, part, result):
        info(f"wrote {path}")
    typer.echo((output / f"{part}.md").read_text())
