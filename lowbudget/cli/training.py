"""Commands that make and check adapters: train, recipes, bases, adapter files, the library."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from lowbudget.cli.app import app, info, library_app, quiet_libraries
from lowbudget.errors import LowbudgetError


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
    quiet_libraries()
    result = run_training(loaded, resume=resume, progress=not quiet, log=info)
    info(f"trained {result.steps} steps; median {result.seconds_per_step:.3f} s/step; "
          f"start-up {result.startup_seconds:.1f} s; final loss {result.losses[-1]:.4f}")
    for path in result.files:
        info(f"wrote {path} ({path.stat().st_size / 1024:.1f} KiB)")


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

        quiet_libraries()
        loaded = load_base(base)
    reports = [describe(path, loaded) for path in files]
    typer.echo(to_json(reports) if as_json else "\n\n".join(format_report(r) for r in reports))
    if any(r.get("problems") or not r.get("fits_base", {"ok": True})["ok"] for r in reports):
        raise typer.Exit(1)


@app.command()
def convert(
    file: Path = typer.Argument(..., help="Embedding file in any layout (diffusers, A1111 .pt, kohya, SDXL)."),
    to: str = typer.Option(..., "--to", help="diffusers | a1111 | kohya | comfyui"),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Output file (default: beside FILE)."),
    token: Optional[str] = typer.Option(None, "--token", help="Token name to store (default: the file's own)."),
    width: Optional[int] = typer.Option(None, "--width", help="SDXL files: keep the part of this width (768 or 1280)."),
) -> None:
    """Convert an embedding between the layouts of diffusers, A1111, kohya and ComfyUI.

    The new file is named after the token's word (default: <layout>/<word>.pt|.safetensors beside
    FILE), because A1111, kohya and ComfyUI trigger an embedding by its file name.
    """
    from lowbudget.adapters.formats import default_output, naming_notes, read_embedding, triggers, write_embedding
    from lowbudget.models.tokenizer import clip_tokenizer

    emb = read_embedding(file, token)
    if width is not None:
        emb.parts = {emb.token: emb.vectors(width)}
    target = output or default_output(emb, to)
    if target.exists():
        raise LowbudgetError(f"'{target}' already exists; choose another --output")
    write_embedding(emb, to, target)
    info(f"wrote {target} ({to} layout, token {emb.token})")
    written = read_embedding(target)
    for tool, word in triggers(written).items():
        info(f"  type in {tool + ':':<10} {word}")
    for note in naming_notes(written, emb.token, clip_tokenizer().get_vocab()):
        info(f"note: {note}")


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
    info(f"wrote {shape} base with random weights to {output}")


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
    info(f"added {entry.file} ({entry.token}, {entry.n_vectors} vectors, sha256 {entry.sha256[:12]})")


@library_app.command("verify")
def library_verify(library: Path = typer.Option(Path("embeddings"), "--library", help="Library folder.")) -> None:
    """Check every checksum in index.json and that every file loads on its base."""
    from lowbudget.library import read_index, verify_library

    quiet_libraries()
    problems = verify_library(library)
    for problem in problems:
        typer.echo(problem)
    if problems:
        raise LowbudgetError(f"{len(problems)} problem(s) in the library '{library}'")
    info(f"{len(read_index(library))} entries in '{library}': all checksums match and all files load")
