"""Captions: ``metadata.jsonl`` (Hugging Face imagefolder), a CSV, or templates.

A *raw caption* belongs to an image (from metadata.jsonl or a CSV) or is ``None`` (templates).
:func:`render_caption` turns it into the training text, with ``{token}`` replaced by the
learned token(s). Multi-vector expansion of tokens happens later, in the adapter.
"""

from __future__ import annotations

import csv
import io
import json
import random
from pathlib import Path

from lowbudget.errors import DataError
from lowbudget.recipe import DataConfig

METADATA_FILE = "metadata.jsonl"
PATIENT_COLUMNS = ("patient_id", "study_id")  # the first one present groups images by patient


def read_metadata_jsonl(path: Path) -> dict[str, str]:
    """``{"file_name": ..., "text": ...}`` per line -> {relative file name: caption}.

    UTF-8, with or without the byte-order mark some Windows editors write; both values must
    be strings (a ``null`` caption would otherwise train on the word "None").
    """
    captions: dict[str, str] = {}
    for number, row in _jsonl_rows(path):
        try:
            name, text = row["file_name"], row["text"]
        except KeyError:
            raise DataError(f"{path}:{number} is not a JSON object with 'file_name' and 'text' keys") from None
        for key, value in (("file_name", name), ("text", text)):
            if not isinstance(value, str):
                raise DataError(f"{path}:{number}: \"{key}\" is {json.dumps(value)}; expected a string")
        captions[_key(name)] = text
    return captions


def _jsonl_rows(path: Path) -> list[tuple[int, dict]]:
    """(line number, object) for every non-blank line of a JSON-lines file."""
    rows = []
    for number, line in enumerate(read_utf8(path).splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            row = None
        if not isinstance(row, dict):
            raise DataError(f"{path}:{number} is not a JSON object with 'file_name' and 'text' keys")
        rows.append((number, row))
    return rows


def read_utf8(path: Path) -> str:
    """A text file in UTF-8 (a leading byte-order mark is dropped), or a DataError naming the byte."""
    try:
        return path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DataError(f"'{path}' is not UTF-8 text (byte {exc.object[exc.start]:#04x} at offset {exc.start}); "
                        "save it as UTF-8") from None


def read_caption_csv(path: Path, file_column: str, text_column: str) -> dict[str, str]:
    if not path.is_file():
        raise DataError(f"caption CSV '{path}' does not exist")
    with io.StringIO(read_utf8(path), newline="") as fh:
        reader = csv.DictReader(fh)
        columns = reader.fieldnames or []
        missing = [c for c in (file_column, text_column) if c not in columns]
        if missing:
            raise DataError(
                f"caption CSV '{path}' lacks column(s) {', '.join(missing)}; it has {', '.join(columns) or 'none'}"
            )
        return {_key(row[file_column]): row[text_column] for row in reader}


def _key(file_name: str) -> str:
    return Path(str(file_name).replace("\\", "/")).as_posix().lstrip("./") if file_name else ""


def resolve_caption_source(folder: Path, cfg: DataConfig) -> tuple[str, dict[str, str] | None]:
    """Which source the recipe asks for, and its {file name: caption} map (None for templates)."""
    source = cfg.captions
    if source == "auto":
        source = "metadata" if (folder / METADATA_FILE).is_file() else ("csv" if cfg.captions_csv else "templates")
    if source == "metadata":
        meta = folder / METADATA_FILE
        if not meta.is_file():
            raise DataError(f"data.captions = 'metadata' but '{meta}' does not exist; write one (a line per image: "
                            '{"file_name": "a.png", "text": "..."}), or caption every image from data.templates with '
                            "--set data.captions=templates")
        return source, read_metadata_jsonl(meta)
    if source == "csv":
        if not cfg.captions_csv:
            raise DataError("data.captions = 'csv' needs data.captions_csv = '<file.csv>'")
        return source, read_caption_csv(_csv_path(folder, cfg), cfg.csv_file_column, cfg.csv_text_column)
    return "templates", None


def read_patient_ids(folder: Path, cfg: DataConfig) -> tuple[str | None, dict[str, str]]:
    """(column, {file name: patient}) from metadata.jsonl, else the captions CSV; (None, {}) when
    neither has a patient_id or study_id column. Values are kept as text ("7" and 7 are one patient).
    A column that some rows leave empty is refused: those images would pass for patients of their own."""
    source, rows = _metadata_rows(folder, cfg)
    for column in PATIENT_COLUMNS:
        if not any(column in row for row in rows):
            continue
        missing = [row.get("file_name", "?") for row in rows if row.get(column) in (None, "")]
        if missing:
            raise DataError(f"{source}: {column} is empty for {len(missing)} of {len(rows)} images (first: "
                            f"{missing[0]!r}); give every image its patient, or remove the column")
        return column, {_key(str(row.get("file_name", ""))): str(row[column]) for row in rows}
    return None, {}


def _csv_path(folder: Path, cfg: DataConfig) -> Path:
    """data.captions_csv as given, else relative to the data folder."""
    path = Path(cfg.captions_csv).expanduser()
    return path if path.is_absolute() or path.exists() else folder / path


def _metadata_rows(folder: Path, cfg: DataConfig) -> tuple[Path | None, list[dict]]:
    meta = folder / METADATA_FILE
    if meta.is_file():
        return meta, [row for _, row in _jsonl_rows(meta)]
    if cfg.captions_csv:
        csv_path = _csv_path(folder, cfg)
        if csv_path.is_file():
            with io.StringIO(read_utf8(csv_path), newline="") as fh:
                return csv_path, [{**row, "file_name": row.get(cfg.csv_file_column, "")} for row in csv.DictReader(fh)]
    return None, []


def caption_for(relative: str, captions: dict[str, str]) -> str | None:
    """Look an image up by its path relative to the data folder, then by its bare name."""
    return captions.get(relative, captions.get(Path(relative).name))


def render_caption(raw: str | None, cfg: DataConfig, token_text: str, rng: random.Random) -> str:
    """The training text for one image at one step.

    ``raw`` None draws a template; otherwise ``cfg.caption_format`` wraps the image's caption.
    ``{token}`` becomes ``token_text`` (the learned token names, space separated).
    """
    text = rng.choice(cfg.templates) if raw is None else cfg.caption_format.replace("{caption}", raw)
    return " ".join(text.replace("{token}", token_text).split())
