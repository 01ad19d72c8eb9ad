"""The shared adapter library: a folder of adapter files and an ``index.json`` describing them.

Each entry gives the file, its token, the base model it was trained on (``embedded`` for the
embedded base, else a name users resolve to their own copy), modality, n_vectors, sha256 and
a one-line description. :func:`verify_library` checks every checksum and that every file
loads on its base; the test suite runs it on the project's ``embeddings/`` folder.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

from lowbudget.errors import AdapterError, quote
from lowbudget.io import atomic_write, atomic_write_text, sha256_file

INDEX = "index.json"
EMBEDDED = "embedded"


@dataclass
class LibraryEntry:
    file: str
    token: str
    base: str
    modality: str
    n_vectors: int
    sha256: str
    description: str


def read_index(folder: str | Path) -> list[LibraryEntry]:
    path = Path(folder) / INDEX
    if not path.is_file():
        return []
    try:
        rows = json.loads(path.read_text())["embeddings"]
        return [LibraryEntry(**row) for row in rows]
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise AdapterError(f"'{path}' is not a valid library index ({quote(exc)})") from None


def add_to_library(folder: str | Path, file: str | Path, *, base: str = EMBEDDED, description: str = "") -> LibraryEntry:
    """Copy an embedding into the library and index it (an existing file is never replaced)."""
    from lowbudget.adapters.formats import read_embedding

    folder, file = Path(folder), Path(file)
    emb = read_embedding(file)
    target = folder / file.name
    entries = read_index(folder)
    if target.exists() or any(e.file == file.name or e.token == emb.token for e in entries):
        raise AdapterError(f"the library '{folder}' already has {file.name} or the token {emb.token}")
    atomic_write(target, lambda tmp: shutil.copyfile(file, tmp))
    entry = LibraryEntry(file=file.name, token=emb.token, base=base, modality=emb.metadata.get("modality", ""),
                         n_vectors=int(emb.vectors().shape[0]), sha256=sha256_file(target),
                         description=description or emb.metadata.get("description", ""))
    _write_index(folder, entries + [entry])
    return entry


def _write_index(folder: Path, entries: list[LibraryEntry]) -> None:
    rows = [asdict(e) for e in sorted(entries, key=lambda e: e.file)]
    atomic_write_text(folder / INDEX, json.dumps({"embeddings": rows}, indent=2) + "\n")


def verify_library(folder: str | Path) -> list[str]:
    """Every problem found, one line each: missing files, checksum mismatches, files that do not fit their base."""
    from lowbudget.adapters.compat import check_embedding
    from lowbudget.adapters.formats import read_embedding
    from lowbudget.models import load_base

    folder = Path(folder)
    problems, bases = [], {}
    for entry in read_index(folder):
        path = folder / entry.file
        if not path.is_file():
            problems.append(f"{entry.file}: listed in {INDEX} but missing")
            continue
        if sha256_file(path) != entry.sha256:
            problems.append(f"{entry.file}: sha256 differs from {INDEX}")
            continue
        try:
            if entry.base not in bases:
                bases[entry.base] = load_base("" if entry.base == EMBEDDED else entry.base)
            base = bases[entry.base]
            check_embedding(read_embedding(path), base.tokenizer, base.text_encoder, base_name=entry.base)
        except Exception as exc:  # report every entry, not just the first failure
            problems.append(f"{entry.file}: does not load on base '{entry.base}': {exc}")
    return problems
