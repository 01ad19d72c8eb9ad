"""Commands that share adapters between sites: keys, sign, verify, share, and the library."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from lowbudget.cli.common import Overwrite, Quiet, info, quiet_libraries
from lowbudget.errors import LowbudgetError
from lowbudget.progress import plural


commands = typer.Typer()
keys_app = typer.Typer(help="Your site's signing keys.", no_args_is_help=True)
library_app = typer.Typer(help="The shared adapter library (embeddings/ and its index.json).", no_args_is_help=True)

_Trust = Annotated[Optional[Path], typer.Option("--trust", help="Folder of trusted public keys (<site>.pub).")]


@keys_app.command("new")
def keys_new(
    site: Annotated[str, typer.Option("--site", help="Your site's name, e.g. hospital-a (names the key files).")],
    output: Annotated[Path, typer.Option("--output", "-o",
        help="Folder for <site>.key (private, 0600) and <site>.pub.")],
) -> None:
    """Make an ed25519 key pair: keep <site>.key, hand <site>.pub to the sites you share with."""
    from lowbudget.adapters.keys import load_public_key, new_keys

    private, public = new_keys(site, output)
    info(f"wrote {private} (private: keep it, mode 0600) and {public} (public: share it); "
         f"key id {load_public_key(public).key_id}")


@commands.command()
def sign(
    file: Annotated[Path, typer.Argument(help="Adapter .safetensors file (an embedding, or a LoRA's weights file).")],
    key: Annotated[Path, typer.Option("--key", help="Your private key (<site>.key from `lowbudget keys new`).")],
    output: Annotated[Optional[Path], typer.Option("--output", "-o",
        help="Write the signed file here (default: in place).")] = None,
    overwrite: Overwrite = False,
) -> None:
    """Sign an adapter file: the signature in its header covers every tensor and metadata field."""
    from lowbudget.adapters.own_files import read_header
    from lowbudget.io import output_file
    from lowbudget.adapters.signing import sign_file

    if output is None and not overwrite and "lowbudget_format" not in read_header(file):
        raise LowbudgetError(f"'{file}' was not written by lowbudget, so it is not changed in place; "
                             "give --output for the signed copy, or --overwrite")
    if output is not None:
        output_file(output, overwrite=overwrite, source=file)
    signed = sign_file(file, key, output)
    info(f"signed {output or file} as '{signed.signer}' (key {signed.key_id})")


@commands.command()
def verify(
    files: Annotated[list[Path], typer.Argument(metavar="FILES...", help="Signed adapter files.")],
    trust: Annotated[Path, typer.Option("--trust", help="Folder of trusted public keys (<site>.pub).")],
) -> None:
    """Check that each file is signed by a trusted key and unchanged since."""
    from lowbudget.adapters.signing import verify_file

    for file in files:
        signed = verify_file(file, trust)
        typer.echo(f"{file}: signed by '{signed.signer}' (key {signed.key_id}), unchanged")


@commands.command()
def share(
    adapter: Annotated[Path, typer.Argument(help="The adapter to release: an embedding, or a LoRA folder or file.")],
    training: Annotated[Path, typer.Option("--training",
        help="The images it was trained on (for the memorisation audit).")],
    key: Annotated[Path, typer.Option("--key", help="Your private key (<site>.key).")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Folder for the signed adapter and the audit report.")],
    base: Annotated[Optional[str], typer.Option("--base",
        help="The base it was trained on (default: the embedded base).")] = None,
    prompt: Annotated[Optional[str], typer.Option("--prompt",
        help="What to sample (default: its recipe's first caption template).")] = None,
    samples: Annotated[int, typer.Option("--samples", help="Images sampled for the audit.")] = 64,
    threshold: Annotated[float, typer.Option("--threshold",
        help="Largest fraction of near-copies that is released.")] = 0.05,
    steps: Annotated[int, typer.Option("--steps", help="Sampler steps per image.")] = 25,
    overwrite: Overwrite = False,
    quiet: Quiet = False,
) -> None:
    """Release check: sample, audit against the training images, and sign only what passes."""
    from lowbudget.models import load_base
    from lowbudget.sharing.release import ReleaseCheck, share as release

    check = ReleaseCheck(samples=samples, threshold=threshold, steps=steps)
    quiet_libraries()
    audit = release(adapter, training, key, output, base=load_base(base), prompt=prompt, check=check,
                    overwrite=overwrite, log=info, progress=not quiet)
    info(f"released {audit['file']}: {audit['flagged_fraction']:.1%} of {audit['samples']} samples flagged as "
         f"near-copies (threshold {audit['threshold']:.0%}); signed; audit in {output / 'memorisation.md'}")


@library_app.command("add")
def library_add(
    file: Annotated[Path, typer.Argument(help="Embedding file to add.")],
    library: Annotated[Path, typer.Option("--library", help="Library folder.")] = Path("embeddings"),
    base: Annotated[str, typer.Option("--base",
        help="The base it was trained on: 'embedded', 'embedded-xl', or a local diffusers folder or .safetensors (checked; "
             "the index keeps its name, not the path).")] = "embedded",
    description: Annotated[str, typer.Option("--description", help="One line (default: the file's own).")] = "",
    trust: _Trust = None,
    require_signature: Annotated[bool, typer.Option("--require-signature",
        help="Refuse a file not signed by a key in --trust.")] = False,
) -> None:
    """Copy an embedding into the library and add it to index.json."""
    from lowbudget.sharing.library import add_to_library

    entry = add_to_library(library, file, base=base, description=description, trust=trust,
                           require_signature=require_signature, log=info)
    signer = f", signed by '{entry.signer}'" if entry.signer else ", unsigned"
    info(f"added {entry.file} ({entry.token}, {entry.n_vectors} vectors, sha256 {entry.sha256[:12]}{signer})")


@library_app.command("verify")
def library_verify(
    library: Annotated[Path, typer.Option("--library", help="Library folder.")] = Path("embeddings"),
    trust: _Trust = None,
    bases: Annotated[list[str], typer.Option("--base", metavar="NAME=PATH",
        help="Where a base named in the index is here: NAME=PATH, e.g. sd15=/models/sd15 (repeatable).")] = [],
) -> None:
    """Check every checksum in index.json, that every file loads on its base, and with --trust every signature."""
    from lowbudget.sharing.library import read_index, verify_library

    located = {}
    for text in bases:
        name, sep, path = text.partition("=")
        if not sep or not name or not path:
            raise LowbudgetError(f"--base {text!r} must look like NAME=PATH, e.g. --base sd15=/models/sd15")
        located[name] = path
    quiet_libraries()
    problems = verify_library(library, trust=trust, bases=located, log=info)
    for problem in problems:
        typer.echo(problem)
    if problems:
        raise LowbudgetError(f"{plural(len(problems), 'problem')} in the library '{library}'")
    signed = " and signatures by trusted keys" if trust else ""
    info(f"{plural(len(read_index(library)), 'entry')} in '{library}': all checksums match{signed}, and all files load")


@library_app.command("publish")
def library_publish(
    library: Annotated[Path, typer.Argument(help="Library folder to publish.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Folder to serve (index.json, adapters, keys/).")],
    keys: Annotated[Optional[Path], typer.Option("--keys",
        help="Folder with the signers' <site>.pub; every entry must verify.")] = None,
    overwrite: Overwrite = False,
) -> None:
    """Lay out a library as static files any web server can host."""
    from lowbudget.sharing.remote import publish

    quiet_libraries()
    index = publish(library, output, keys=keys, overwrite=overwrite)
    info(f"wrote {index}; serve '{output}' with any web server (e.g. python -m http.server -d {output})")


@library_app.command("pull")
def library_pull(
    source: Annotated[str, typer.Argument(help="URL (http/https) or folder of a published library.")],
    into: Annotated[Path, typer.Option("--into", help="Local library folder (created if missing).")],
    trust: _Trust = None,
    base: Annotated[Optional[str], typer.Option("--base",
        help="Local base: entries of another text width are skipped.")] = None,
    timeout: Annotated[float, typer.Option("--timeout", help="Seconds to wait for the server, per request.")] = 30.0,
) -> None:
    """Fetch a published library: sha256, signatures (--trust) and fit are checked before anything lands."""
    from lowbudget.models import load_base
    from lowbudget.sharing.remote import pull

    quiet_libraries()
    result = pull(source, into, base=load_base(base), trust=trust, timeout=timeout, log=info)
    info(f"pulled {plural(len(result.added), 'new file')} into '{into}' ({len(result.present)} already there, "
         f"{len(result.skipped)} skipped)")
