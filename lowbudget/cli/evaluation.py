"""``lowbudget evaluate``: diversity, realism, classifier, memorisation, all."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from lowbudget.cli.common import Overwrite, info, parse_seeds


evaluate_app = typer.Typer(help="Evaluate synthetic images: diversity, realism, classifier, memorisation.",
                          no_args_is_help=True)


_Out = Annotated[Path, typer.Option("--output", "-o", help="Folder for <part>.json, <part>.md, <part>.html and PNGs.")]
_Extractor = Annotated[Optional[Path], typer.Option("--extractor", help="Feature extractor: TorchScript file, or .safetensors with --architecture.")]
_Arch = Annotated[Optional[str], typer.Option("--architecture", help="Network of a .safetensors extractor: resnet18.")]
_Input = Annotated[int, typer.Option("--input-size", help="Extractor input size in pixels (299 for InceptionV3, 224 for DenseNet).")]


@evaluate_app.command("diversity")
def evaluate_diversity(
    generated: Annotated[Path, typer.Option("--generated",
        help="Generated images (grouped by stored prompt, else 4 at a time).")],
    real: Annotated[Optional[Path], typer.Option("--real", help="Real images for the reference score.")] = None,
    size: Annotated[int, typer.Option("--size", help="Images are compared at this size (grayscale).")] = 256,
    output: _Out = Path("runs/evaluation"),
    overwrite: Overwrite = False,
) -> None:
    """Within-prompt MS-SSIM (4 images, 6 pairs, grayscale, data range 1.0) of generated vs real."""
    from lowbudget.evaluate.diversity import diversity

    _claim(output, overwrite)
    _report(output, "diversity", diversity(generated, real, size=size, progress=True), overwrite)


@evaluate_app.command("realism")
def evaluate_realism(
    real: Annotated[Path, typer.Option("--real")],
    generated: Annotated[Path, typer.Option("--generated")],
    extractor: _Extractor = None,
    architecture: _Arch = None,
    input_size: _Input = 299,
    output: _Out = Path("runs/evaluation"),
    overwrite: Overwrite = False,
) -> None:
    """FID and KID between real and generated images, with your feature extractor."""
    from lowbudget.evaluate.realism import load_extractor, realism

    _claim(output, overwrite)
    net = load_extractor(extractor, architecture=architecture, input_size=input_size)
    _report(output, "realism", realism(real, generated, net, size=input_size, progress=True), overwrite)


@evaluate_app.command("classifier")
def evaluate_classifier(
    real: Annotated[Path, typer.Option("--real", help="Real images, one sub-folder per class (or --labels).")],
    synthetic: Annotated[Optional[Path], typer.Option("--synthetic", help="Synthetic images, same classes.")] = None,
    test: Annotated[Optional[Path], typer.Option("--test",
        help="Real test images (default: 20% of --real, held out).")] = None,
    labels: Annotated[Optional[Path], typer.Option("--labels",
        help="CSV with file_name,label for --real instead of sub-folders.")] = None,
    steps: Annotated[int, typer.Option("--steps")] = 2000,
    size: Annotated[int, typer.Option("--size")] = 128,
    seeds: Annotated[str, typer.Option("--seeds", help="Comma-separated seeds.")] = "0,1,2",
    width: Annotated[int, typer.Option("--width", help="ResNet-18 base width (64 = standard).")] = 64,
    init: Annotated[Optional[Path], typer.Option("--init", help="Start from these .safetensors weights.")] = None,
    output: _Out = Path("runs/evaluation"),
    overwrite: Overwrite = False,
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
    generated: Annotated[Path, typer.Option("--generated")],
    training: Annotated[Path, typer.Option("--training", help="The images the adapter was trained on.")],
    extractor: _Extractor = None,
    architecture: _Arch = None,
    input_size: _Input = 299,
    percentile: Annotated[float, typer.Option("--percentile",
        help="Flag below this percentile of real-to-real distances.")] = 1.0,
    output: _Out = Path("runs/evaluation"),
    overwrite: Overwrite = False,
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
    real: Annotated[Path, typer.Option("--real",
        help="Real images (the training images, for the memorisation audit).")],
    generated: Annotated[Path, typer.Option("--generated", help="Generated images.")],
    extractor: _Extractor = None,
    architecture: _Arch = None,
    input_size: _Input = 299,
    steps: Annotated[int, typer.Option("--steps", help="Classifier step budget.")] = 2000,
    output: _Out = Path("runs/evaluation"),
    overwrite: Overwrite = False,
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
