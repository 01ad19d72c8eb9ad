"""Files and folders lowbudget writes: atomic writes, checksums, and the one rule for outputs.

Every file lowbudget writes goes through :func:`atomic_write` so that a crash or a full disk
never leaves a half-written file under its final name, and nothing the user already had is
replaced by a broken copy. A write killed outright (``kill -9``) leaves its temporary file
behind; the next write to the same name removes it.

The rule for outputs (:func:`output_folder`, :func:`output_file`): a command never replaces or
mixes into what lowbudget did not write, unless the user passes ``--overwrite``. A folder is
lowbudget's when it is new, empty, or carries the :data:`MARKER` file a command left there; a
file is lowbudget's when it lies in such a folder or is a PNG that carries lowbudget's record.
"""

from __future__ import annotations

import contextlib
import errno
import glob
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable, Iterator

from PIL import Image

from lowbudget.version import __version__
from lowbudget.errors import OutputError, quote

MARKER = ".lowbudget-output"  # in every folder a command made; hidden, so data readers skip it


# --------------------------------------------------------------------------- atomic writes


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, mode: int = 0o644) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success rename it over ``path``.

    The temporary file lives in the same directory so that ``os.replace`` is an atomic rename
    on the same file system. Its name carries our process id, so that the leftovers of a killed
    writer (whose process is gone) can be told from a live writer's and removed. Permissions
    end as ``mode`` (0644 unless a private key asks for 0600).
    """
    final = Path(path)
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise OutputError(f"cannot write '{final}': a part of '{final.parent}' is a file, not a folder") from None
    remove_stale_temporaries(final)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{final.name}.{os.getpid()}.", suffix=".tmp", dir=final.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        with open(tmp, "rb+") as fh:  # data reaches the disk before the rename makes it visible
            os.fsync(fh.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, final)
    except Exception as exc:  # torch reports a full disk as RuntimeError, safetensors as SafetensorError
        reason = write_failure(exc, final.parent)
        if reason is None:
            raise
        kept = "the previous file is unchanged" if final.exists() else "no partial file was left"
        raise OutputError(f"could not write '{final}': {reason}; {kept}") from exc
    finally:
        if tmp.exists():
            tmp.unlink()


_ERRNO_REASONS = {
    errno.ENOSPC: "no space left on the device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EFBIG: "file too large (the file system's or this process's file-size limit)",
    errno.EROFS: "the file system is read-only",
    errno.EACCES: "permission denied",
    errno.EPERM: "permission denied",
}


def write_failure(exc: BaseException, folder: Path) -> str | None:
    """Why a write failed, in words, if it failed for a reason of the disk; else None (a bug)."""
    if isinstance(exc, OSError) and exc.errno in _ERRNO_REASONS:
        return _ERRNO_REASONS[exc.errno]
    text = str(exc).lower()
    if isinstance(exc, OSError) or any(w in text for w in ("write failed", "no space", "file too large", "quota")):
        with contextlib.suppress(OSError):
            if shutil.disk_usage(folder).free < (1 << 20):
                return "no space left on the device"
        return quote(exc)
    return None


def remove_stale_temporaries(final: Path) -> list[Path]:
    """Remove ``.<name>.<pid>.*.tmp`` files beside ``final`` whose writing process is gone."""
    removed = []
    for tmp in final.parent.glob(f".{glob.escape(final.name)}.*.tmp"):
        pid = tmp.name[len(final.name) + 2 :].split(".", 1)[0]
        if pid.isdigit() and not _process_alive(int(pid)):
            with contextlib.suppress(OSError):
                tmp.unlink()
                removed.append(tmp)
    return removed


def _process_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def atomic_write(path: str | os.PathLike, write: Callable[[Path], object], mode: int = 0o644) -> Path:
    """Call ``write(tmp_path)`` and atomically move the result to ``path``."""
    with atomic_path(path, mode) as tmp:
        write(tmp)
    return Path(path)


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


# --------------------------------------------------------------------------- the rule for outputs


def output_folder(folder: str | os.PathLike, *, overwrite: bool = False, command: str = "",
                  option: str = "--output") -> Path:
    """Make ``folder`` ready for a command's files, or say in one line why it cannot be.

    A new or empty folder is created and marked as lowbudget's; a marked folder is reused; a
    folder holding anything else is refused unless ``overwrite``. A file, or a path under a
    file, is refused whatever ``overwrite`` says.
    """
    folder = check_output_folder(folder, overwrite=overwrite, option=option)
    folder.mkdir(parents=True, exist_ok=True)
    if not (folder / MARKER).is_file():
        atomic_write_text(folder / MARKER, json.dumps({"written_by": f"lowbudget {__version__}",
                                                       "command": command}) + "\n")
    return folder


def check_output_folder(folder: str | os.PathLike, *, overwrite: bool = False, option: str = "--output") -> Path:
    """:func:`output_folder`'s checks alone: nothing is created (for a command that checks its
    output before long work and writes it at the end)."""
    folder = Path(folder).expanduser()
    _check_ancestors(folder, option)
    if folder.exists() and not folder.is_dir():
        raise OutputError(f"{option} '{folder}' is a file; expected a folder (new, empty, or written by lowbudget)")
    if folder.is_dir() and not (folder / MARKER).is_file() and not overwrite:
        foreign = sorted(p.name for p in folder.iterdir())
        if foreign:
            raise OutputError(
                f"{option} '{folder}' already holds {len(foreign)} item(s) lowbudget did not write "
                f"(e.g. '{foreign[0]}'); choose a new or empty folder, or pass --overwrite to write into it anyway"
            )
    return folder


def output_file(path: str | os.PathLike, *, overwrite: bool = False, option: str = "--output",
                source: str | os.PathLike | None = None) -> Path:
    """Check that ``path`` may be written: not a folder, not under a file, not the input
    ``source``, and, if it exists, written by lowbudget (or ``overwrite`` given)."""
    path = Path(path).expanduser()
    _check_ancestors(path, option)
    if path.is_dir():
        raise OutputError(f"{option} '{path}' is a folder; expected a file name, e.g. '{path / 'out.png'}'")
    if source is not None and path.exists() and path.resolve() == Path(source).resolve() and not overwrite:
        raise OutputError(f"{option} '{path}' is the input itself; choose another file, or pass --overwrite to replace it")
    if path.exists() and not overwrite and not written_by_lowbudget(path):
        raise OutputError(f"{option} '{path}' already exists and lowbudget did not write it; choose another "
                          "file, or pass --overwrite to replace it")
    return path


def written_by_lowbudget(path: Path) -> bool:
    """A file in a folder a command marked, or a PNG carrying lowbudget's text chunk."""
    if (path.parent / MARKER).is_file():
        return True
    try:
        with Image.open(path) as img:
            return img.format == "PNG" and ("lowbudget" in img.info or str(img.info.get("Software", "")).startswith("lowbudget"))
    except Exception:  # not an image at all: not ours
        return False


def _check_ancestors(path: Path, option: str) -> None:
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise OutputError(f"{option} '{path}' lies under '{parent}', which is a file, not a folder")
            return
