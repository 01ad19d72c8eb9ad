"""A library as static files any web server can host, and pulled from a URL or a folder.

``publish`` writes ``index.json``, the adapter files and ``keys/<site>.pub`` (the public keys
of the sites that signed them) into a folder; serve that folder with any web server. ``pull``
reads the index, downloads every entry into a temporary staging folder, and
checks each file (size, sha256 against the index, the signature against the local trust
folder, the text width against the local base) before anything is moved in. Any failure
leaves the local library exactly as it was. Keys published beside a library are never
trusted by being there: a site copies a key into its trust folder deliberately.
"""

from __future__ import annotations

import http.client
import shutil
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from lowbudget.adapters.compat import check_embedding, fits
from lowbudget.adapters.foreign_layouts import read_embedding
from lowbudget.errors import AdapterError, LowbudgetError
from lowbudget.io import atomic_write, check_output_folder, output_folder, sha256_file
from lowbudget.models.base import BaseModel
from lowbudget.adapters.keys import load_public_key
from lowbudget.sharing.library import INDEX, parse_index, read_index, verify_library, write_index
from lowbudget.adapters.signing import verify_file

KEYS = "keys"
MAX_INDEX_BYTES = 16 * 1024 * 1024
MAX_FILE_BYTES = 256 * 1024 * 1024  # an embedding is KB, a LoRA a few MB


class PullError(LowbudgetError):
    """A remote library could not be fetched or did not check out; nothing was changed."""


@dataclass
class PullResult:
    added: list[str] = field(default_factory=list)
    present: list[str] = field(default_factory=list)  # already in the local library, same sha256
    skipped: list[str] = field(default_factory=list)  # reasons, e.g. another model family


def publish(library: str | Path, output: str | Path, *, keys: str | Path | None = None,
            overwrite: bool = False) -> Path:
    """Copy a verified library and the public keys of its signers into ``output``, ready to serve."""
    library, out = Path(library), Path(output)
    problems = verify_library(library, trust=keys)
    if problems:
        raise AdapterError(f"the library '{library}' does not verify, so it is not published: {problems[0]}")
    entries = read_index(library)
    output_folder(out, overwrite=overwrite, command="library publish")
    for entry in entries:
        atomic_write(out / entry.file, lambda tmp, src=library / entry.file: shutil.copyfile(src, tmp))
    if keys is not None:
        for site in sorted({e.signer for e in entries if e.signer}):
            key = Path(keys) / f"{site}.pub"
            if key.is_file():
                load_public_key(key)  # only keys that parse are published
                atomic_write(out / KEYS / key.name, lambda tmp, src=key: shutil.copyfile(src, tmp))
    write_index(out, entries)
    return out / INDEX


def pull(source: str, into: str | Path, *, base: BaseModel, trust: str | Path | None = None,
         timeout: float = 30.0, log: Callable[[str], None] = print) -> PullResult:
    """Fetch the library at ``source`` (http(s) URL or folder) into the library folder ``into``."""
    into = Path(into)
    fetch = _Fetcher(source, timeout)
    remote = parse_index(fetch(INDEX, MAX_INDEX_BYTES), fetch.where(INDEX))
    local = {e.file: e for e in read_index(into)}
    result, incoming = PullResult(), []
    width = " + ".join(map(str, base.text_widths))
    new_library = not (into / INDEX).is_file()
    if new_library:  # not a library yet: new, empty, or a folder lowbudget made (made once all is checked)
        check_output_folder(into, option="--into")
    with tempfile.TemporaryDirectory(prefix="lowbudget-pull-") as staging:
        for entry in remote:
            if entry.file in local and local[entry.file].sha256 == entry.sha256:
                result.present.append(entry.file)
                continue
            if entry.file in local:
                raise PullError(f"'{into / entry.file}' exists with other content than {fetch.where(entry.file)}; "
                                "nothing was changed (remove or rename one of them)")
            path = Path(staging) / entry.file
            path.write_bytes(fetch(entry.file, MAX_FILE_BYTES))
            if sha256_file(path) != entry.sha256:
                raise PullError(f"{fetch.where(entry.file)}: sha256 differs from its index (corrupt or truncated "
                                "download); nothing was changed")
            if trust is not None:
                verify_file(path, trust)
            emb = read_embedding(path)
            if not fits(emb, base.text_encoders):
                result.skipped.append(f"{entry.file}: text width {emb.widths} does not fit the local base ({width})")
                continue
            check_embedding(emb, base.text_encoders, base_name=base.name)
            incoming.append((path, entry))
        if new_library:
            output_folder(into, option="--into", command="library pull")
        for path, entry in incoming:  # every file checked: now move them in, then the index
            atomic_write(into / entry.file, lambda tmp, src=path: shutil.copyfile(src, tmp))
            result.added.append(entry.file)
    write_index(into, list(local.values()) + [e for _, e in incoming])
    for reason in result.skipped:
        log(f"skipped {reason}")
    if trust is None and result.added:
        log("note: pulled without --trust, so no signature was checked (sha256 against the index only)")
    return result


class _Fetcher:
    """Bytes of a file next to the index, from an http(s) URL or a local folder, size-capped."""

    def __init__(self, source: str, timeout: float) -> None:
        self.source, self.timeout = source, timeout
        self.remote = urllib.parse.urlparse(source).scheme in ("http", "https")
        if not self.remote and not Path(source).is_dir():
            raise PullError(f"'{source}' is neither an http(s) URL nor a folder")

    def where(self, name: str) -> str:
        if self.remote:
            return self.source.rstrip("/") + "/" + urllib.parse.quote(name)
        return str(Path(self.source) / name)

    def __call__(self, name: str, limit: int) -> bytes:
        where = self.where(name)
        if not self.remote:
            path = Path(where)
            if not path.is_file():
                raise PullError(f"'{where}' does not exist")
            if path.stat().st_size > limit:
                raise PullError(f"'{where}' is {path.stat().st_size:,} bytes; at most {limit:,} are read")
            return path.read_bytes()
        try:
            with urllib.request.urlopen(where, timeout=self.timeout) as response:  # noqa: S310 (http(s) only)
                expected = response.headers.get("Content-Length")
                data = response.read(limit + 1)
        except http.client.IncompleteRead as exc:
            raise PullError(f"{where}: the download was cut short ({len(exc.partial):,} of "
                            f"{len(exc.partial) + (exc.expected or 0):,} bytes); nothing was changed") from None
        except urllib.error.HTTPError as exc:
            raise PullError(f"{where}: the server answered {exc.code} {exc.reason}; nothing was changed") from None
        except (urllib.error.URLError, http.client.HTTPException, TimeoutError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise PullError(f"{where}: no answer ({reason}; timeout {self.timeout:g} s); nothing was changed") from None
        if len(data) > limit:
            raise PullError(f"{where} is larger than {limit:,} bytes; nothing was changed")
        if expected is not None and expected.isdigit() and int(expected) != len(data):
            raise PullError(f"{where}: the download was cut short ({len(data):,} of {int(expected):,} bytes); "
                            "nothing was changed")
        return data
