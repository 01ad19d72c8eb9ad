"""Commands that make and check adapters: train, recipes, bases, adapter files."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from lowbudget.cli.common import Overwrite, Quiet, info, quiet_libraries, recipe_from
from lowbudget.errors import LowbudgetError


commands = typer.Typer()


@commands.command()
def train(
    recipe: Annotated[Path, typer.Argument(help="Training recipe (TOML), e.g. recipes/chest-xray/sd15-ti.toml.")],
    base: Annotated[Optional[str], typer.Option("--base",
        help="Base model: diffusers folder, .safetensors file, embedded or embedded-xl (default: the recipe's model.base).")] = None,
    data: Annotated[Optional[str], typer.Option("--data", help="Folder of training images.")] = None,
    output: Annotated[Optional[str], typer.Option("--output", "-o", help="Output folder.")] = None,
    max_steps: Annotated[Optional[int], typer.Option("--max-steps", help="Override optim.max_steps.")] = None,
    resume: Annotated[bool, typer.Option("--resume",
        help="Continue the run in --output from its last checkpoint.")] = False,
    overrides: Annotated[list[str], typer.Option("--set", metavar="KEY=VALUE",
        help="Override any recipe value: --set optim.lr_ti=0.01 (repeatable).")] = [],
    quiet: Quiet = False,
    overwrite: Overwrite = False,
) -> None:
    """Train a textual-inversion embedding, a LoRA, or both, as the recipe says."""
    from lowbudget.progress import plural
    from lowbudget.training import train as run_training

    loaded = recipe_from(recipe, overrides, **{"model.base": base, "data.path": data, "output.dir": output,
                                              "optim.max_steps": max_steps})
    quiet_libraries()
    result = run_training(loaded, resume=resume, overwrite=overwrite, progress=not quiet, log=info)
    if not result.main_process:  # another process of a multi-process launch: the main one reports
        return
    info(f"trained {plural(result.steps, 'step')}; median {result.seconds_per_step:.3f} s/step; "
          f"start-up {result.startup_seconds:.1f} s; final loss {result.losses[-1]:.4f}")
    for path in result.files:
        info(f"wrote {path} ({path.stat().st_size / 1024:.1f} KiB)")


@commands.command()
def preview(
    data: Annotated[Path, typer.Argument(help="Folder of training images.")],
    recipe: Annotated[Optional[Path], typer.Option("--recipe",
        help="Read the images as this recipe does (default: the recipe defaults).")] = None,
    overrides: Annotated[list[str], typer.Option("--set", metavar="KEY=VALUE",
        help="Override a recipe value: --set data.intensity=dtype (repeatable).")] = [],
    output: Annotated[Path, typer.Option("--output", "-o", help="Contact sheet PNG.")] = Path("runs/preview.png"),
    overwrite: Overwrite = False,
) -> None:
    """Show what training will see: a contact sheet of the images as read, with captions and warnings."""
    from lowbudget.data.preview import preview as read_preview
    from lowbudget.models.embedded import is_embedded
    from lowbudget.io import output_file
    from lowbudget.progress import plural
    from lowbudget.recipe import DataConfig, build_config, load_recipe, parse_override

    values = {**dict(parse_override(o) for o in overrides), "data.path": str(data), "data.phantoms": ""}
    if recipe:
        loaded = load_recipe(recipe, values)
        cfg, base, tokens = loaded.data, loaded.model.base, [t.name for t in loaded.method.tokens]
    else:
        stray = [k for k in values if not k.startswith("data.")]
        if stray:
            raise LowbudgetError(f"--set {stray[0]}: without --recipe only data.* values apply to a preview")
        cfg, base, tokens = build_config(DataConfig, {k[5:]: v for k, v in values.items()}), "", []
    output_file(output, overwrite=overwrite)
    seen = read_preview(cfg, gray_base=is_embedded(base), token=" ".join(tokens))
    for f in seen.files:
        typer.echo(f"{f.path.relative_to(seen.images.folder)}\t{f.size}\t{f.read_as}\t{f.caption}")
    for warning in seen.warnings:
        info(f"warning: {warning}")
    seen.sheet(output)
    info(f"{plural(len(seen.files), 'image')} read at {cfg.resolution} px, "
         f"{plural(len(seen.warnings), 'warning')}; contact sheet: {output}")


@commands.command()
def inspect(
    files: Annotated[list[Path], typer.Argument(metavar="FILES...", help="Adapter files: embeddings (any layout) or LoRA .safetensors.")],
    base: Annotated[Optional[str], typer.Option("--base",
        help="Also check whether each file fits this base: a folder, .safetensors, embedded or embedded-xl.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")] = False,
    trust: Annotated[Optional[Path], typer.Option("--trust",
        help="Also check signatures against this folder of public keys.")] = None,
) -> None:
    """Show an adapter file's metadata, shapes, norms, size and sha256 (and fit to a base)."""
    from lowbudget.adapters.inspect import describe, format_report, to_json

    loaded = None
    if base is not None:
        from lowbudget.models import load_base

        quiet_libraries()
        loaded = load_base(base)
    reports = [describe(path, loaded, trust) for path in files]
    typer.echo(to_json(reports) if as_json else "\n\n".join(format_report(r) for r in reports))
    if any(r.get("problems") or not r.get("fits_base", {"ok": True})["ok"] or r["signature"].get("verified") is False
           for r in reports):
        raise typer.Exit(1)


@commands.command()
def convert(
    file: Annotated[Path, typer.Argument(help="Embedding file in any layout (diffusers, A1111 .pt, kohya, SDXL).")],
    to: Annotated[str, typer.Option("--to", help="diffusers | a1111 | kohya | comfyui")],
    output: Annotated[Optional[Path], typer.Option("--output", "-o",
        help="Output file (default: beside FILE).")] = None,
    token: Annotated[Optional[str], typer.Option("--token",
        help="Token name to store (default: the file's own).")] = None,
    width: Annotated[Optional[int], typer.Option("--width",
        help="SDXL files: keep only the part of this width (768 or 1280); without it both parts are kept.")] = None,
    overwrite: Overwrite = False,
) -> None:
    """Convert an embedding between the layouts of diffusers, A1111, kohya and ComfyUI.

    The new file is named after the token's word (default: <layout>/<word>.pt|.safetensors beside
    FILE), because A1111, kohya and ComfyUI trigger an embedding by its file name.
    """
    from lowbudget.adapters.compat import check_not_a_word
    from lowbudget.adapters.foreign_layouts import default_output, naming_notes, read_embedding, triggers, write_embedding
    from lowbudget.io import output_file
    from lowbudget.models.tokenizer import clip_tokenizer

    emb = read_embedding(file, token)
    check_not_a_word(emb)
    if width is not None:
        emb.parts = {emb.token: emb.vectors(width)}
    target = output_file(output or default_output(emb, to), overwrite=overwrite, source=file)
    write_embedding(emb, to, target)
    info(f"wrote {target} ({to} layout, token {emb.token})")
    written = read_embedding(target)
    for tool, word in triggers(written).items():
        info(f"  type in {tool + ':':<10} {word}")
    for note in naming_notes(written, emb.token, clip_tokenizer().get_vocab()):
        info(f"note: {note}")


@commands.command("check-recipe")
def check_recipe(
    recipes: Annotated[list[Path], typer.Argument(metavar="RECIPES...", help="Recipe files to validate.")],
) -> None:
    """Validate recipes and print each one resolved: every default filled in, each key's meaning above it."""
    from lowbudget.recipe import explained_toml, load_recipe

    for path in recipes:
        resolved = load_recipe(path)
        typer.echo(f"# {path}: ok\n\n{explained_toml(resolved)}")


@commands.command("recipes")
def list_recipes(
    folder: Annotated[Optional[Path], typer.Argument(
        help="Folder of recipes (default: the recipes/ shipped beside lowbudget).")] = None,
) -> None:
    """List the recipes, one line each: the file, and what it is for."""
    from lowbudget.recipe import recipe_summary, shipped_recipes

    folder = folder or shipped_recipes()
    files = sorted(folder.rglob("*.toml")) if folder.is_dir() else []
    if not files:
        raise LowbudgetError(f"no recipes (*.toml) in '{folder}'")
    width = max(len(str(f)) for f in files)
    for file in files:
        typer.echo(f"{str(file):<{width}}  {recipe_summary(file)}")


@commands.command("base-path")
def base_path(
    name: Annotated[str, typer.Argument(help="embedded (SD architecture) or embedded-xl (SDXL architecture).")] = "embedded",
) -> None:
    """Print the folder of an embedded base (unpacked on first use): a diffusers folder that
    plain diffusers loads, e.g. StableDiffusionPipeline.from_pretrained(PATH)
    (StableDiffusionXLPipeline for embedded-xl)."""
    from lowbudget.models.embedded import embedded_base_path

    typer.echo(str(embedded_base_path(name)))


@commands.command("make-base")
def make_base(
    output: Annotated[Path, typer.Argument(help="Folder to write the diffusers model into (must not exist).")],
    shape: Annotated[str, typer.Option("--shape", help="tiny | tiny-xl | sd15 | sd21 | sdxl (random weights, real shapes).")] = "tiny",
    seed: Annotated[int, typer.Option("--seed")] = 0,
) -> None:
    """Write a random-weight Stable Diffusion (or SDXL) folder, for tests and speed benchmarks."""
    from lowbudget.io import output_folder
    from lowbudget.models.architectures import get_shape, write_base_folder

    if output.exists() or output.is_symlink():
        raise LowbudgetError(f"'{output}' already exists; make-base writes a new folder only")
    output_folder(output, command="make-base")  # also refuses a path under a file
    write_base_folder(output, get_shape(shape), seed=seed)
    info(f"wrote {shape} base with random weights to {output}")
