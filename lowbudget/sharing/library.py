"""The shared adapter library: a folder of adapter files and an ``index.json`` describing them.

Each entry gives the file, its token, the base model it was trained on (``embedded`` or
``embedded-xl`` for the embedded bases, else a name users resolve to their own copy), modality, n_vectors, sha256 and
a one-line description. :func:`verify_library` checks every checksum and that every file
loads on its base; the test suite runs it on the project's ``embeddings/`` folder.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Callable

from lowbudget.adapters.compat import check_embedding, check_not_a_word
from lowbudget.adapters.foreign_layouts import read_embedding
from lowbudget.errors import AdapterError, SignatureError, quote
from lowbudget.io import atomic_write, atomic_write_text, output_folder, sha256_file
from lowbudget.models import load_base
from lowbudget.models.embedded import EMBEDDED, is_embedded
from lowbudget.adapters.signing import check_signature, read_signature, verify_file

INDEX = "index.json"


@dataclass
class LibraryEntry:
    file: str
    token: str
    base: str
    modality: str
    n_vectors: int
    sha256: str
    description: str
    signer: str = ""  # the site whose signature the file carries ('' = unsigned); checked by verify --trust


MAX_ENTRIES = 10_000  # a site's library holds tens; an index far larger is a mistake or an attack


def read_index(folder: str | Path) -> list[LibraryEntry]:
    path = Path(folder) / INDEX
    if not path.is_file():
        return []
    return parse_index(path.read_bytes(), str(path))


def parse_index(data: bytes, where: str) -> list[LibraryEntry]:
    """The entries of an index.json given as bytes (a file or a download), every field checked."""
    try:
        rows = json.loads(data.decode("utf-8-sig"))["embeddings"]
        if len(rows) > MAX_ENTRIES:
            raise AdapterError(f"'{where}' lists {len(rows):,} entries; at most {MAX_ENTRIES:,} are read")
        entries = [LibraryEntry(**row) for row in rows]
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as exc:
        raise AdapterError(f"'{where}' is not a valid library index ({quote(exc)})") from None
    for entry in entries:
        for f in fields(LibraryEntry):  # annotations are strings here: 'str' or 'int'
            value = getattr(entry, f.name)
            if type(value).__name__ != f.type:
                raise AdapterError(f"'{where}': entry {entry.file!r} has {f.name} = {value!r}; expected {f.type}")
        if Path(entry.file).name != entry.file or entry.file in ("", ".", ".."):
            raise AdapterError(f"'{where}': entry file {entry.file!r} must be a file name inside the library, not a path")
    for field_name in ("file", "token"):
        names = [getattr(e, field_name) for e in entries]
        if len(set(names)) != len(names):
            twice = next(n for n in names if names.count(n) > 1)
            raise AdapterError(f"'{where}' lists the {field_name} {twice!r} more than once")
    return entries


def add_to_library(folder: str | Path, file: str | Path, *, base: str = EMBEDDED, description: str = "",
                   trust: str | Path | None = None, require_signature: bool = False,
                   log: Callable[[str], None] = print) -> LibraryEntry:
    """Copy an embedding into the library and index it (an existing file is never replaced).

    ``base`` is loaded and the embedding must fit it; the index records the base's name (its
    folder or file name, or 'embedded'), never the local path, since the index is what other
    sites read. ``trust`` / ``require_signature`` check the signature first, as ``load_adapter``
    does.
    """
    folder, file = Path(folder), Path(file)
    note = check_signature(file, trust, require_signature)
    if note and (trust is not None or require_signature):
        log(note)
    emb = read_embedding(file)
    check_not_a_word(emb)
    loaded = load_base(base)
    name = (base or EMBEDDED) if is_embedded(base) else loaded.name
    check_embedding(emb, loaded.text_encoders, base_name=name)
    if not (folder / INDEX).is_file():  # not a library yet: new, empty, or a folder lowbudget made
        output_folder(folder, option="--library", command="library add")
    target = folder / file.name
    entries = read_index(folder)
    if target.exists() or any(e.file == file.name or e.token == emb.token for e in entries):
        raise AdapterError(f"the library '{folder}' already has {file.name} or the token {emb.token}")
    atomic_write(target, lambda tmp: shutil.copyfile(file, tmp))
    signed = read_signature(target) if target.suffix == ".safetensors" else None
    entry = LibraryEntry(file=file.name, token=emb.token, base=name, modality=emb.metadata.get("modality", ""),
                         n_vectors=emb.n_vectors, sha256=sha256_file(target),
                         description=description or emb.metadata.get("description", ""),
                         signer=signed.signer if signed else "")
    write_index(folder, entries + [entry])
    return entry


def _fit_problem(entry: LibraryEntry, path: Path, bases: dict[str, str | Path], loaded: dict, log) -> str | None:
    """Why the entry does not load on its base, if it does not; None when it does or when its
    base is not on this machine (said with ``log``). ``loaded`` caches bases by name."""
    local = bases.get(entry.base, entry.base)
    if not is_embedded(local) and not Path(local).expanduser().exists():
        log(f"{entry.file}: its base '{entry.base}' is not on this machine, so its fit was not checked "
            f"(give --base {entry.base}=PATH)")
        return None
    try:
        if entry.base not in loaded:
            loaded[entry.base] = load_base(local)
        base = loaded[entry.base]
        check_embedding(read_embedding(path), base.text_encoders, base_name=entry.base)
    except Exception as exc:  # report every entry, not just the first failure
        return f"{entry.file}: does not load on base '{entry.base}': {exc}"
    return None


def write_index(folder: Path, entries: list[LibraryEntry]) -> None:
    rows = [asdict(e) for e in sorted(entries, key=lambda e: e.file)]
    atomic_write_text(folder / INDEX, json.dumps({"embeddings": rows}, indent=2) + "\n")


def verify_library(folder: str | Path, trust: str | Path | None = None, bases: dict[str, str | Path] | None = None,
                   log: Callable[[str], None] = print) -> list[str]:
    """Every problem found, one line each: missing files, checksum mismatches, files that do not
    fit their base, and with ``trust`` (a folder of public keys) signatures that do not verify.

    An entry's base is found by its name: 'embedded', a name in ``bases`` (name -> local path),
    or (indexes written before names) a path on this machine; an entry whose base is none of
    these is not checked for fit, and ``log`` says so."""
    folder = Path(folder)
    if not (folder / INDEX).is_file():
        raise AdapterError(f"'{folder}' is not a library: it has no {INDEX}" if folder.is_dir()
                           else f"library folder '{folder}' does not exist")
    problems, loaded = [], {}
    for entry in read_index(folder):
        path = folder / entry.file
        if not path.is_file():
            problems.append(f"{entry.file}: listed in {INDEX} but missing")
            continue
        if sha256_file(path) != entry.sha256:
            problems.append(f"{entry.file}: sha256 differs from {INDEX}")
            continue
        unfit = _fit_problem(entry, path, bases or {}, loaded, log)
        if unfit:
            problems.append(unfit)
            continue
        if trust is not None:
            try:
                verify_file(path, trust)
            except SignatureError as exc:
                problems.append(f"{entry.file}: {exc}")
    return problems
