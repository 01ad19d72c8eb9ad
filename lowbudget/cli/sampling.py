"""Commands that sample: generate, compose, inpaint (one sampling loop behind all three)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from lowbudget.cli.common import Overwrite, Quiet, info, parse_seeds, parse_weights, quiet_libraries
from lowbudget.errors import LowbudgetError


commands = typer.Typer()


_Base = Annotated[Optional[str], typer.Option("--base", help="Base model: diffusers folder, .safetensors, embedded (the default) or embedded-xl.")]
_Adapters = Annotated[list[Path], typer.Option("--adapter", metavar="FILE", help="Embedding or LoRA file to load (repeatable).")]
_Seeds = Annotated[str, typer.Option("--seeds", help="Comma-separated seeds: one image (or row) per seed.")]
_Steps = Annotated[int, typer.Option("--steps", help="Sampler steps.")]
_Guidance = Annotated[float, typer.Option("--guidance", help="Classifier-free guidance scale.")]
_GuidanceFrom = Annotated[float, typer.Option(
    "--guidance-from", help="Share of the steps, from the noisiest, run without guidance (0-1): high --guidance "
                            "early pulls images towards one middle picture (a finding on both sides).")]
_Scheduler = Annotated[str, typer.Option("--scheduler", help="ddim | dpm++ | euler | pndm")]
_Negative = Annotated[str, typer.Option("--negative", help="Negative prompt (the unconditional branch).")]
_Size = Annotated[Optional[int], typer.Option("--size", help="Image size in pixels (default: the base's native size).")]
_Trust = Annotated[Optional[Path], typer.Option("--trust", help="Folder of trusted public keys (<site>.pub): signed adapters must verify.")]
_Require = Annotated[bool, typer.Option("--require-signature", help="Refuse adapters not signed by a key in --trust.")]


def _sampling_options(steps: int, guidance: float, guidance_from: float, scheduler: str, negative: str,
                      size: Optional[int]) -> dict:
    return {"steps": steps, "guidance": guidance, "guidance_from": guidance_from, "scheduler": scheduler,
            "negative_prompt": negative, "size": size}


@commands.command()
def generate(
    prompt: Annotated[str, typer.Argument(help="Prompt; compose with 'a :0.3 AND b :0.7'.")],
    base: _Base = None,
    adapters: _Adapters = [],
    trust: _Trust = None,
    require_signature: _Require = False,
    n: Annotated[int, typer.Option("-n", help="Number of images (seeds seed, seed+1, ...).")] = 4,
    seed: Annotated[int, typer.Option("--seed", help="First seed.")] = 0,
    output: Annotated[Path, typer.Option("--output", "-o", help="Output folder.")] = Path("runs/generated"),
    fmt: Annotated[str, typer.Option("--format", help="png | dicom (Secondary Capture marked synthetic).")] = "png",
    batch_size: Annotated[int, typer.Option("--batch-size", help="Images per U-Net call.")] = 4,
    steps: _Steps = 30,
    guidance: _Guidance = 7.5,
    guidance_from: _GuidanceFrom = 0.0,
    scheduler: _Scheduler = "ddim",
    negative: _Negative = "",
    size: _Size = None,
    overwrite: Overwrite = False,
    quiet: Quiet = False,
) -> None:
    """Generate images; each PNG carries the parameters that regenerate it."""
    from lowbudget.io import output_folder
    from lowbudget.progress import plural
    from lowbudget.sampling.outputs import record, save_dicom, save_png, save_seed_grid
    from lowbudget.sampling.prompts import check_tokens_known
    from lowbudget.sampling.sampler import SampleRequest, sample_with_progress

    if fmt not in ("png", "dicom"):
        raise LowbudgetError(f"--format {fmt!r} is not known; expected png or dicom")
    if n < 1:
        raise LowbudgetError(f"-n {n} must be at least 1")
    seeds = list(range(seed, seed + n))
    req = SampleRequest(prompt=prompt, seeds=seeds, batch_size=batch_size,
                        **_sampling_options(steps, guidance, guidance_from, scheduler, negative, size))  # checks the values
    pipe, base_info, adapter_info = _pipeline(base, adapters, trust, require_signature)
    check_tokens_known(pipe, [prompt, negative])  # before a folder is made
    output_folder(output, overwrite=overwrite, command="generate")
    images = sample_with_progress(pipe, req, "generate", enabled=not quiet)  # (n, 3, H, W)
    for s, image in zip(seeds, images):
        rec = record(req, s, base_info, adapter_info)
        path = output / f"seed-{s:06d}.{'dcm' if fmt == 'dicom' else 'png'}"
        (save_dicom if fmt == "dicom" else save_png)(image, path, rec)
    save_seed_grid(images, seeds, prompt, output / "grid.png")
    info(f"wrote {plural(len(seeds), 'image')} and grid.png to {output}")


@commands.command()
def compose(
    adapters: _Adapters = [],
    base: _Base = None,
    trust: _Trust = None,
    require_signature: _Require = False,
    interpolate: Annotated[Optional[list[str]], typer.Option("--interpolate", metavar="TEXT",
        help="Two components A B (give twice).", show_default=False)] = None,
    combine: Annotated[Optional[list[str]], typer.Option("--combine", metavar="TEXT",
        help="Components to combine (repeatable).")] = None,
    weights: Annotated[Optional[str], typer.Option("--weights",
        help="Comma-separated weight per --combine component.")] = None,
    n_weights: Annotated[int, typer.Option("--weight-steps", help="Interpolation: number of weights from A to B.")] = 5,
    method: Annotated[str, typer.Option("--method",
        help="and (prompt-level, the paper's) | lerp | slerp (embedding-level)")] = "and",
    template: Annotated[str, typer.Option("--template",
        help="Prompt around each component, e.g. 'a chest x-ray with {}'.")] = "{}",
    seeds: _Seeds = "0,1,2,3",
    output: Annotated[Path, typer.Option("--output", "-o",
        help="Output PNG (strip or grid).")] = Path("runs/compose.png"),
    steps: _Steps = 30,
    guidance: _Guidance = 7.5,
    guidance_from: _GuidanceFrom = 0.0,
    scheduler: _Scheduler = "ddim",
    negative: _Negative = "",
    size: _Size = None,
    overwrite: Overwrite = False,
    quiet: Quiet = False,
) -> None:
    """Interpolate between two components (a strip) or combine several (a grid)."""
    from lowbudget.io import output_file
    from lowbudget.progress import Progress
    from lowbudget.sampling import compose as comp
    from lowbudget.sampling.outputs import save_grid
    from lowbudget.sampling.sampler import SampleRequest, unet_calls

    if bool(interpolate) == bool(combine):
        raise LowbudgetError("give either --interpolate A --interpolate B or --combine A --combine B ...")
    req = SampleRequest(prompt="", seeds=list(parse_seeds(seeds)),
                        **_sampling_options(steps, guidance, guidance_from, scheduler, negative, size))
    ws = parse_weights(weights) if weights else [1.0] * len(combine or [])
    output_file(output, overwrite=overwrite)
    if interpolate and len(interpolate) != 2:
        raise LowbudgetError(f"--interpolate takes exactly two components, got {len(interpolate)}")
    pipe, _, _ = _pipeline(base, adapters, trust, require_signature)
    columns = n_weights if interpolate else len(combine) + 1
    with Progress(columns * unet_calls(req), "compose", enabled=not quiet) as bar:
        if interpolate:
            ws, images, prompts = comp.interpolation(pipe, *interpolate, steps=n_weights, method=method,
                                                     template=template, request=req, watch=lambda w, _: bar.update())
            title = f"{'prompt-level (AND)' if method == 'and' else method} interpolation from {interpolate[0]} (weight 0) to {interpolate[1]} (weight 1)"
            heads = [f"weight {w:.2f}" for w in ws]
        else:
            images, prompts = comp.combination(pipe, combine, ws, template=template, request=req,
                                               watch=lambda _: bar.update())
            title, heads = f"combination: {prompts[-1]}", [*prompts[:-1], "together"]
    save_grid(images, [f"seed {s}" for s in req.seeds], output, column_labels=heads, title=title)
    info(f"wrote {output} ({images.shape[0]} rows x {images.shape[1]} columns)")


@commands.command()
def inpaint(
    image: Annotated[Path, typer.Argument(help="Input image (PNG/JPEG/TIFF or DICOM).")],
    prompt: Annotated[str, typer.Option("--prompt", help="What to paint inside the mask; may compose with AND.")],
    mask: Annotated[Optional[Path], typer.Option("--mask", help="Mask PNG (white = repaint).")] = None,
    box: Annotated[Optional[str], typer.Option("--box",
        help="Or a box x0,y0,x1,y1 in pixels of the working size.")] = None,
    base: _Base = None,
    adapters: _Adapters = [],
    trust: _Trust = None,
    require_signature: _Require = False,
    feather_px: Annotated[int, typer.Option("--feather", help="Soft edge width in pixels.")] = 8,
    strength: Annotated[float, typer.Option("--strength",
        help="1 = repaint from noise; lower keeps more of the input.")] = 1.0,
    paste_back: Annotated[bool, typer.Option("--paste-back",
        help="Pixels outside the feathered mask stay the input's exactly.")] = False,
    seed: Annotated[int, typer.Option("--seed")] = 0,
    output: Annotated[Path, typer.Option("--output", "-o")] = Path("runs/inpainted.png"),
    steps: _Steps = 30,
    guidance: _Guidance = 7.5,
    guidance_from: _GuidanceFrom = 0.0,
    scheduler: _Scheduler = "ddim",
    negative: _Negative = "",
    size: _Size = None,
    overwrite: Overwrite = False,
    quiet: Quiet = False,
) -> None:
    """Inpaint a finding into a region of an image (any base; SD inpainting checkpoints natively)."""
    from lowbudget.io import output_file
    from lowbudget.sampling.masks import box_mask, load_input_image, png_mask
    from lowbudget.sampling.outputs import record, save_png
    from lowbudget.sampling.sampler import Inpainting, SampleRequest, native_size, sample_with_progress

    if (mask is None) == (box is None):
        raise LowbudgetError("give exactly one of --mask PNG or --box x0,y0,x1,y1")
    output_file(output, overwrite=overwrite, source=image)
    pipe, base_info, adapter_info = _pipeline(base, adapters, trust, require_signature)
    work = size or native_size(pipe)
    pixels, shape = load_input_image(image, work)
    region = box_mask(box, work) if box else png_mask(mask, work, shape)
    job = Inpainting(image=pixels, mask=region, feather=feather_px, strength=strength, paste_back=paste_back)
    req = SampleRequest(prompt=prompt, seeds=[seed], inpaint=job,
                        **_sampling_options(steps, guidance, guidance_from, scheduler, negative, work))
    result = sample_with_progress(pipe, req, "inpaint", enabled=not quiet)[0]  # (3, H, W)
    rec = record(req, seed, base_info, adapter_info, inpaint={"image": image.name, "box": box, "feather": feather_px,
                                                                "strength": strength, "paste_back": paste_back})
    save_png(result, output, rec)
    info(f"wrote {output}")


def _pipeline(base: Optional[str], adapters: list[Path], trust: Optional[Path], require_signature: bool):
    from lowbudget.sampling.outputs import open_pipeline

    quiet_libraries()
    return open_pipeline(base, adapters, warn=info, trust=trust, require_signature=require_signature)
