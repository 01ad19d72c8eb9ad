"""The ``lowbudget`` command line. The only module that imports Typer.

Each command parses its options, calls one library function, and prints a short summary.
One error boundary (:func:`main`) turns :class:`~lowbudget.errors.LowbudgetError` into a
one-line message on stderr and exit code 1; ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Optional

import typer

from lowbudget.errors import LowbudgetError

app = typer.Typer(
    name="lowbudget",
    help="Adapt Stable Diffusion to medical imaging on a budget: train, share and use small adapters.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

library_app = typer.Typer(help="The shared adapter library (embeddings/ and its index.json).", no_args_is_help=True)
app.add_typer(library_app, name="library")

evaluate_app = typer.Typer(help="Evaluate synthetic images: diversity, realism, classifier, memorisation.",
                           no_args_is_help=True)
app.add_typer(evaluate_app, name="evaluate")

_state = {"debug": False}


@app.callback()
def _root(debug: bool = typer.Option(False, "--debug", help="Show Python tracebacks for errors.")) -> None:
    _state["debug"] = debug


@app.command()
def train(
    recipe: Path = typer.Argument(..., help="Training recipe (TOML), e.g. recipes/chest-xray/sd15-ti.toml."),
    base: Optional[str] = typer.Option(None, "--base", help="Base model: diffusers folder or .safetensors file."),
    data: Optional[str] = typer.Option(None, "--data", help="Folder of training images."),
    output: Optional[str] = typer.Option(None, "--output", "-o", help="Output folder."),
    max_steps: Optional[int] = typer.Option(None, "--max-steps", help="Override optim.max_steps."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --output from its last checkpoint."),
    overrides: list[str] = typer.Option([], "--set", help="Override any recipe value: --set optim.lr_ti=0.01 (repeatable)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    """Train a textual-inversion embedding, a LoRA, or both, as the recipe says."""
    from lowbudget.recipe import load_recipe, parse_override
    from lowbudget.training import train as run_training

    values = dict(parse_override(o) for o in overrides)
    for key, value in (("model.base", base), ("data.path", data), ("output.dir", output), ("optim.max_steps", max_steps)):
        if value is not None:
            values[key] = value
    loaded = load_recipe(recipe, values)
    _quiet_libraries()
    result = run_training(loaded, resume=resume, progress=not quiet, log=_info)
    _info(f"trained {result.steps} steps; median {result.seconds_per_step:.3f} s/step; "
          f"start-up {result.startup_seconds:.1f} s; final loss {result.losses[-1]:.4f}")
    for path in result.files:
        _info(f"wrote {path} ({path.stat().st_size / 1024:.1f} KiB)")


_BASE = typer.Option(None, "--base", help="Base model (diffusers folder or .safetensors); default: the embedded base.")
_ADAPTERS = typer.Option([], "--adapter", help="Embedding or LoRA file to load (repeatable).")
_SEEDS = typer.Option("0,1,2,3", "--seeds", help="Comma-separated seeds: one image (or row) per seed.")


def _sampling_options(steps: int, guidance: float, scheduler: str, negative: str, size: Optional[int]) -> dict:
    return {"steps": steps, "guidance": guidance, "scheduler": scheduler, "negative_prompt": negative, "size": size}


_STEPS = typer.Option(30, "--steps", help="Sampler steps.")
_GUIDANCE = typer.Option(7.5, "--guidance", help="Classifier-free guidance scale.")
_SCHEDULER = typer.Option("ddim", "--scheduler", help="ddim | dpm++ | euler | pndm")
_NEGATIVE = typer.Option("", "--negative", help="Negative prompt (the unconditional branch).")
_SIZE = typer.Option(None, "--size", help="Image size in pixels (default: the base's native size).")


@app.command()
def generate(
    prompt: str = typer.Argument(..., help="Prompt; compose with 'a :0.3 AND b :0.7'."),
    base: Optional[str] = _BASE, adapters: list[Path] = _ADAPTERS,
    n: int = typer.Option(4, "-n", help="Number of images (seeds seed, seed+1, ...)."),
    seed: int = typer.Option(0, "--seed", help="First seed."),
    output: Path = typer.Option(Path("runs/generated"), "--output", "-o", help="Output folder."),
    fmt: str = typer.Option("png", "--format", help="png | dicom (Secondary Capture marked synthetic)."),
    batch_size: int = typer.Option(4, "--batch-size", help="Images per U-Net call."),
    steps: int = _STEPS, guidance: float = _GUIDANCE, scheduler: str = _SCHEDULER, negative: str = _NEGATIVE,
    size: Optional[int] = _SIZE,
) -> None:
    """Generate images; each PNG carries the parameters that regenerate it."""
    from lowbudget.sampling.outputs import record, save_dicom, save_png
    from lowbudget.sampling.sampler import SampleRequest, sample

    if fmt not in ("png", "dicom"):
        raise LowbudgetError(f"--format {fmt!r} is not known; expected png or dicom")
    pipe, base_info, adapter_info = _pipeline(base, adapters)
    seeds = list(range(seed, seed + n))
    req = SampleRequest(prompt=prompt, seeds=seeds, batch_size=batch_size,
                        **_sampling_options(steps, guidance, scheduler, negative, size))
    images = sample(pipe, req)
    for s, image in zip(seeds, images):
        rec = record(req, s, base_info, adapter_info)
        path = output / f"seed-{s:06d}.{'dcm' if fmt == 'dicom' else 'png'}"
        (save_dicom if fmt == "dicom" else save_png)(image, path, rec)
    _grid(images[:, None], [f"seed {s}" for s in seeds], prompt, output / "grid.png")
    _info(f"wrote {len(seeds)} image(s) and grid.png to {output}")


@app.command()
def compose(
    adapters: list[Path] = _ADAPTERS, base: Optional[str] = _BASE,
    interpolate: Optional[list[str]] = typer.Option(None, "--interpolate", help="Two components A B (give twice).",
                                                    show_default=False),
    combine: Optional[list[str]] = typer.Option(None, "--combine", help="Components to combine (repeatable)."),
    weights: Optional[str] = typer.Option(None, "--weights", help="Comma-separated weight per --combine component."),
    n_weights: int = typer.Option(5, "--weight-steps", help="Interpolation: number of weights from A to B."),
    method: str = typer.Option("and", "--method", help="and (prompt-level, the paper's) | lerp | slerp (embedding-level)"),
    template: str = typer.Option("{}", "--template", help="Prompt around each component, e.g. 'a chest x-ray with {}'."),
    seeds: str = _SEEDS,
    output: Path = typer.Option(Path("runs/compose.png"), "--output", "-o", help="Output PNG (strip or grid)."),
    steps: int = _STEPS, guidance: float = _GUIDANCE, scheduler: str = _SCHEDULER, negative: str = _NEGATIVE,
    size: Optional[int] = _SIZE,
) -> None:
    """Interpolate between two components (a strip) or combine several (a grid)."""
    from lowbudget.sampling import compose as comp
    from lowbudget.sampling.sampler import SampleRequest

    if bool(interpolate) == bool(combine):
        raise LowbudgetError("give either --interpolate A --interpolate B or --combine A --combine B ...")
    pipe, _, _ = _pipeline(base, adapters)
    req = SampleRequest(prompt="", seeds=list(_seeds(seeds)), **_sampling_options(steps, guidance, scheduler, negative, size))
    if interpolate:
        if len(interpolate) != 2:
            raise LowbudgetError(f"--interpolate takes exactly two components, got {len(interpolate)}")
        ws, images, prompts = comp.interpolation(pipe, *interpolate, steps=n_weights, method=method, template=template, request=req)
        title = f"{method}: {interpolate[0]} -> {interpolate[1]}, weights " + ", ".join(f"{w:.2f}" for w in ws)
    else:
        ws = [float(w) for w in weights.split(",")] if weights else [1.0] * len(combine)
        images, prompts = comp.combination(pipe, combine, ws, template=template, request=req)
        title = " | ".join(prompts)
    _grid(images, [f"seed {s}" for s in req.seeds], title, output)
    _info(f"wrote {output} ({images.shape[0]} rows x {images.shape[1]} columns)")


@app.command()
def inpaint(
    image: Path = typer.Argument(..., help="Input image (PNG/JPEG/TIFF or DICOM)."),
    prompt: str = typer.Option(..., "--prompt", help="What to paint inside the mask; may compose with AND."),
    mask: Optional[Path] = typer.Option(None, "--mask", help="Mask PNG (white = repaint)."),
    box: Optional[str] = typer.Option(None, "--box", help="Or a box x0,y0,x1,y1 in pixels of the working size."),
    base: Optional[str] = _BASE, adapters: list[Path] = _ADAPTERS,
    feather_px: int = typer.Option(8, "--feather", help="Soft edge width in pixels."),
    strength: float = typer.Option(1.0, "--strength", help="1 = repaint from noise; lower keeps more of the input."),
    paste_back: bool = typer.Option(False, "--paste-back", help="Pixels outside the feathered mask stay the input's exactly."),
    seed: int = typer.Option(0, "--seed"),
    output: Path = typer.Option(Path("runs/inpainted.png"), "--output", "-o"),
    steps: int = _STEPS, guidance: float = _GUIDANCE, scheduler: str = _SCHEDULER, negative: str = _NEGATIVE,
    size: Optional[int] = _SIZE,
) -> None:
    """Inpaint a finding into a region of an image (any base; SD inpainting checkpoints natively)."""
    from lowbudget.sampling.masks import box_mask, load_input_image, png_mask
    from lowbudget.sampling.outputs import record, save_png
    from lowbudget.sampling.sampler import Inpainting, SampleRequest, native_size, sample

    if (mask is None) == (box is None):
        raise LowbudgetError("give exactly one of --mask PNG or --box x0,y0,x1,y1")
    if not 0 < strength <= 1:
        raise LowbudgetError(f"--strength {strength} must be in (0, 1]")
    pipe, base_info, adapter_info = _pipeline(base, adapters)
    work = size or native_size(pipe)
    region = box_mask(box, work) if box else png_mask(mask, work)
    job = Inpainting(image=load_input_image(image, work), mask=region, feather=feather_px, strength=strength,
                     paste_back=paste_back)
    req = SampleRequest(prompt=prompt, seeds=[seed], inpaint=job, **_sampling_options(steps, guidance, scheduler, negative, work))
    result = sample(pipe, req)[0]
    rec = record(req, seed, base_info, adapter_info, inpaint={"image": image.name, "box": box, "feather": feather_px,
                                                                "strength": strength, "paste_back": paste_back})
    save_png(result, output, rec)
    _info(f"wrote {output}")


def _pipeline(base: Optional[str], adapters: list[Path]):
    from lowbudget.sampling.outputs import open_pipeline

    _quiet_libraries()
    return open_pipeline(base, adapters, warn=_info)


def _grid(images, row_labels: list[str], title: str, path: Path) -> None:
    from lowbudget.sampling.outputs import save_grid

    save_grid(images, [f"{label}: {title}" for label in row_labels], path)


@app.command()
def inspect(
    files: list[Path] = typer.Argument(..., help="Adapter files: embeddings (any layout) or LoRA .safetensors."),
    base: Optional[str] = typer.Option(None, "--base", help="Also check whether each file fits this base model."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of text."),
) -> None:
    """Show an adapter file's metadata, shapes, norms, size and sha256 (and fit to a base)."""
    from lowbudget.adapters.inspect import describe, format_report, to_json

    loaded = None
    if base is not None:
        from lowbudget.models import load_base

        _quiet_libraries()
        loaded = load_base(base)
    reports = [describe(path, loaded) for path in files]
    typer.echo(to_json(reports) if as_json else "\n\n".join(format_report(r) for r in reports))
    if any(not r.get("fits_base", {"ok": True})["ok"] for r in reports):
        raise typer.Exit(1)


@app.command()
def convert(
    file: Path = typer.Argument(..., help="Embedding file in any layout (diffusers, A1111 .pt, kohya, SDXL)."),
    to: str = typer.Option(..., "--to", help="diffusers | a1111 | kohya | comfyui"),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Output file (default: beside FILE)."),
    token: Optional[str] = typer.Option(None, "--token", help="Token name to store (default: the file's own)."),
    width: Optional[int] = typer.Option(None, "--width", help="SDXL files: keep the part of this width (768 or 1280)."),
) -> None:
    """Convert an embedding between the layouts of diffusers, A1111, kohya and ComfyUI."""
    from lowbudget.adapters.formats import default_output, read_embedding, write_embedding

    emb = read_embedding(file, token)
    if width is not None:
        emb.parts = {emb.token: emb.vectors(width)}
    target = output or default_output(emb, to)
    if target.exists():
        raise LowbudgetError(f"'{target}' already exists; choose another --output")
    write_embedding(emb, to, target)
    _info(f"wrote {target} ({to} layout, token {emb.token})")
    if to == "comfyui":
        _info(f"in ComfyUI: copy it to models/embeddings/ and write embedding:{target.name.split('.')[0]} in a prompt")


@app.command("check-recipe")
def check_recipe(recipes: list[Path] = typer.Argument(..., help="Recipe files to validate.")) -> None:
    """Validate recipes and print each one resolved (every default filled in)."""
    from lowbudget.recipe import load_recipe

    for path in recipes:
        resolved = load_recipe(path)
        typer.echo(f"# {path}: ok\n{resolved.to_toml()}")


@app.command("make-base")
def make_base(
    output: Path = typer.Argument(..., help="Folder to write the diffusers model into (must not exist)."),
    shape: str = typer.Option("tiny", "--shape", help="tiny | sd15 | sd21 (random weights, real shapes)."),
    seed: int = typer.Option(0, "--seed"),
) -> None:
    """Write a random-weight Stable Diffusion folder (for tests and speed benchmarks)."""
    from lowbudget.models.architectures import get_shape, write_base_folder

    if output.exists():
        raise LowbudgetError(f"'{output}' already exists; make-base writes a new folder only")
    write_base_folder(output, get_shape(shape), seed=seed)
    _info(f"wrote {shape} base with random weights to {output}")


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
    seed: int = typer.Option(0, "--seed"),
) -> None:
    """Write phantom images with metadata.jsonl captions (never naming a finding) and labels.csv."""
    from lowbudget.phantoms import write_phantoms

    paths = write_phantoms(output, modality, finding, n=n, size=size, fmt=fmt, seed=seed, prevalence=prevalence)
    _info(f"wrote {len(paths)} {modality} phantoms, metadata.jsonl and labels.csv to {output}")


@app.command()
def report(
    adapter: Path = typer.Argument(..., help="A token trained on phantoms of one finding (.safetensors)."),
    finding: str = typer.Option(..., "--finding", help="The finding it was trained on, e.g. effusion."),
    output: Path = typer.Option(Path("runs/report"), "--output", "-o", help="Folder for report.md and PNGs."),
    library: Path = typer.Option(Path("embeddings"), "--library", help="Shared embeddings to combine with."),
    n: int = typer.Option(16, "-n", help="Images per prompt for the fidelity figure."),
    steps: int = typer.Option(25, "--steps", help="Sampler steps."),
) -> None:
    """Report on a phantom token: before/after grids, fidelity, interpolation, combination, inpainting."""
    from lowbudget.phantoms.fidelity import INIT_WORDS, Sampling
    from lowbudget.phantoms.report import demo_report

    if finding not in INIT_WORDS:
        raise LowbudgetError(f"--finding {finding!r} is not a phantom finding; expected one of {', '.join(INIT_WORDS)}")
    if not adapter.is_file():
        raise LowbudgetError(f"adapter '{adapter}' does not exist")
    _quiet_libraries()
    path = demo_report(adapter, finding, output, library=library, n=n, sampling=Sampling(steps=steps), log=_info)
    _info(f"wrote {path}")


@app.command("pretrain-base")
def pretrain_base(
    output: Path = typer.Option(Path("runs/phantom-base"), "--output", "-o", help="Run folder (resumes if it has a checkpoint)."),
    overrides: list[str] = typer.Option([], "--set", help="Override a pretraining setting: --set unet_steps=2000 (repeatable)."),
) -> None:
    """Pretrain the phantom base model from scratch (about an hour on 2 CPU cores)."""
    from lowbudget.phantoms.pretrain import PretrainConfig, pretrain

    cfg = PretrainConfig(**dict(_pretrain_override(o) for o in overrides))
    packed = pretrain(output, cfg, log=_info)
    _info(f"wrote {output / 'base'} (diffusers folder) and {packed} ({packed.stat().st_size / 1e6:.1f} MB, fp16)")


def _pretrain_override(text: str) -> tuple[str, float]:
    from dataclasses import fields

    from lowbudget.phantoms.pretrain import PretrainConfig

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
) -> None:
    """The paper in miniature on the phantom world: fidelity, sweep, downstream, diversity, methods."""
    from dataclasses import replace

    from lowbudget.phantoms.benchmark import BenchmarkConfig, run_benchmark

    cfg = BenchmarkConfig.quick() if quick else BenchmarkConfig()
    if findings:
        chosen = tuple(findings.split(","))
        cfg = replace(cfg, findings=chosen, sweep_finding=chosen[0])
    _quiet_libraries()
    path = run_benchmark(output, cfg, sections=None if sections == "all" else tuple(sections.split(",")), log=_info)
    typer.echo(path.read_text())


@library_app.command("add")
def library_add(
    file: Path = typer.Argument(..., help="Embedding file to add."),
    library: Path = typer.Option(Path("embeddings"), "--library", help="Library folder."),
    base: str = typer.Option("embedded", "--base", help="The base it was trained on ('embedded' or a model name/path)."),
    description: str = typer.Option("", "--description", help="One line (default: the file's own)."),
) -> None:
    """Copy an embedding into the library and add it to index.json."""
    from lowbudget.library import add_to_library

    entry = add_to_library(library, file, base=base, description=description)
    _info(f"added {entry.file} ({entry.token}, {entry.n_vectors} vectors, sha256 {entry.sha256[:12]})")


@library_app.command("verify")
def library_verify(library: Path = typer.Option(Path("embeddings"), "--library", help="Library folder.")) -> None:
    """Check every checksum in index.json and that every file loads on its base."""
    from lowbudget.library import read_index, verify_library

    _quiet_libraries()
    problems = verify_library(library)
    for problem in problems:
        typer.echo(problem)
    if problems:
        raise LowbudgetError(f"{len(problems)} problem(s) in the library '{library}'")
    _info(f"{len(read_index(library))} entries in '{library}': all checksums match and all files load")


_OUT = typer.Option(Path("runs/evaluation"), "--output", "-o", help="Folder for <part>.json, <part>.md and PNGs.")
_EXTRACTOR = typer.Option(None, "--extractor", help="Feature extractor: TorchScript file, or .safetensors with --architecture.")
_ARCH = typer.Option(None, "--architecture", help="Network of a .safetensors extractor: resnet18.")
_INPUT = typer.Option(299, "--input-size", help="Extractor input size in pixels (299 for InceptionV3, 224 for DenseNet).")


@evaluate_app.command("diversity")
def evaluate_diversity(
    generated: Path = typer.Option(..., "--generated", help="Generated images (grouped by stored prompt, else 4 at a time)."),
    real: Optional[Path] = typer.Option(None, "--real", help="Real images for the reference score."),
    size: int = typer.Option(256, "--size", help="Images are compared at this size (grayscale)."),
    output: Path = _OUT,
) -> None:
    """Within-prompt MS-SSIM (4 images, 6 pairs, grayscale, data range 1.0) of generated vs real."""
    from lowbudget.evaluate.diversity import diversity

    _report(output, "diversity", diversity(generated, real, size=size, progress=True))


@evaluate_app.command("realism")
def evaluate_realism(
    real: Path = typer.Option(..., "--real"), generated: Path = typer.Option(..., "--generated"),
    extractor: Optional[Path] = _EXTRACTOR, architecture: Optional[str] = _ARCH, input_size: int = _INPUT,
    output: Path = _OUT,
) -> None:
    """FID and KID between real and generated images, with your feature extractor."""
    from lowbudget.evaluate.realism import load_extractor, realism

    net = load_extractor(extractor, architecture=architecture, input_size=input_size)
    _report(output, "realism", realism(real, generated, net, size=input_size, progress=True))


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
    output: Path = _OUT,
) -> None:
    """Train a ResNet-18 on real / real+synthetic / synthetic; test AUC mean +- std over seeds."""
    from lowbudget.evaluate.classifier import ClassifierConfig, downstream
    from lowbudget.evaluate.images import labelled_images

    real_set = labelled_images(real, labels)
    syn = labelled_images(synthetic, classes=real_set.classes) if synthetic else None
    test_set = labelled_images(test, classes=real_set.classes) if test else None
    cfg = ClassifierConfig(size=size, steps=steps, seeds=_seeds(seeds), width=width, init=str(init) if init else None)
    _report(output, "classifier", downstream(real_set, syn, test_set, cfg, log=_info, progress=True))


@evaluate_app.command("memorisation")
def evaluate_memorisation(
    generated: Path = typer.Option(..., "--generated"),
    training: Path = typer.Option(..., "--training", help="The images the adapter was trained on."),
    extractor: Optional[Path] = _EXTRACTOR, architecture: Optional[str] = _ARCH, input_size: int = _INPUT,
    percentile: float = typer.Option(1.0, "--percentile", help="Flag below this percentile of real-to-real distances."),
    output: Path = _OUT,
) -> None:
    """Nearest training image of each generated image; flagged near-copies and their fraction."""
    from lowbudget.evaluate.memorisation import memorisation
    from lowbudget.evaluate.realism import load_extractor

    net = load_extractor(extractor, architecture=architecture, input_size=input_size) if extractor else None
    _report(output, "memorisation", memorisation(generated, training, extractor=net, percentile=percentile, progress=True))


@evaluate_app.command("all")
def evaluate_all(
    real: Path = typer.Option(..., "--real", help="Real images (the training images, for the memorisation audit)."),
    generated: Path = typer.Option(..., "--generated", help="Generated images."),
    extractor: Optional[Path] = _EXTRACTOR, architecture: Optional[str] = _ARCH, input_size: int = _INPUT,
    steps: int = typer.Option(2000, "--steps", help="Classifier step budget."),
    output: Path = _OUT,
) -> None:
    """All four parts. The classifier part runs when both folders have one sub-folder per class."""
    from lowbudget.errors import DataError
    from lowbudget.evaluate.classifier import ClassifierConfig, downstream
    from lowbudget.evaluate.diversity import diversity
    from lowbudget.evaluate.images import labelled_images
    from lowbudget.evaluate.memorisation import memorisation
    from lowbudget.evaluate.realism import load_extractor, realism

    net = load_extractor(extractor, architecture=architecture, input_size=input_size)  # fail before any work
    _report(output, "diversity", diversity(generated, real, progress=True))
    _report(output, "realism", realism(real, generated, net, size=input_size, progress=True))
    _report(output, "memorisation", memorisation(generated, real, extractor=net, progress=True))
    try:
        real_set = labelled_images(real)
        syn_set = labelled_images(generated, classes=real_set.classes)
    except DataError as exc:
        _info(f"classifier part skipped: {exc}")
        return
    _report(output, "classifier", downstream(real_set, syn_set, cfg=ClassifierConfig(steps=steps), log=_info, progress=True))


def _seeds(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(s) for s in text.split(","))
    except ValueError:
        raise LowbudgetError(f"--seeds {text!r} must be comma-separated integers, e.g. 0,1,2") from None


def _report(output: Path, part: str, result: dict) -> None:
    from lowbudget.evaluate.report import write_report

    for path in write_report(output, part, result):
        _info(f"wrote {path}")
    typer.echo((output / f"{part}.md").read_text())


def _info(message: str) -> None:
    typer.echo(message, err=True)


def _quiet_libraries() -> None:
    """diffusers/transformers log loader chatter that means nothing to our users."""
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    import diffusers
    import transformers

    diffusers.utils.logging.set_verbosity_error()
    diffusers.utils.logging.disable_progress_bar()
    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()


def main() -> None:
    """Entry point: the one error boundary of the CLI.

    Click handles its own usage errors (exit code 2); the project's errors become one line
    on stderr and exit code 1. Anything else is a bug and keeps its traceback.
    """
    try:
        app()
    except LowbudgetError as exc:
        if _state["debug"]:
            raise
        typer.echo(f"error: {exc}", err=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
