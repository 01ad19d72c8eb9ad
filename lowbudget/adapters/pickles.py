"""Reading someone else's ``.pt`` file, with the work it can make us do bounded.

``torch.load(weights_only=True)`` already refuses code; what it does not refuse is work. Before
torch builds anything:

- size: an embedding is kilobytes (SDXL, 75 vectors: 0.6 MB), so a file, or the archive inside
  it once unpacked, over :data:`MAX_BYTES` is refused (a 0.7 MB zip of zeros otherwise unpacks
  to gigabytes in memory);
- shape: the pickle's opcodes are walked without building anything. A container nested more
  than :data:`MAX_DEPTH` deep is refused (Python recursion errors otherwise), and so is one
  container referred to from two places: that is how a 2 KB pickle holds 10**26 strings
  ("billion laughs"), which ``str()`` -- or hashing, when it is a dict key -- never finishes.
  Tensors and strings may be shared; a file of weights never shares anything else.

After loading, only the fields an embedding needs are read, each checked for its type first,
and nothing else of the file is ever turned into text. ``nn.ParameterDict`` is the one class
admitted beyond tensors and plain containers: the original textual-inversion code stored
``string_to_param`` in one.
"""

from __future__ import annotations

import io
import pickle
import pickletools
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from lowbudget.errors import AdapterError, quote

MAX_BYTES = 64 << 20
MAX_TEXT = 100_000  # characters of one metadata string (a stored recipe is ~1,300)
MAX_OPS = 200_000  # a 64-vector A1111 file is ~100 pickle opcodes
MAX_DEPTH = 64  # containers inside containers; an embedding file nests about 6 deep
TENSOR_BUILDERS = {"torch._utils._rebuild_tensor_v2", "torch._utils._rebuild_parameter",
                   "torch._utils._rebuild_tensor", "torch._utils._rebuild_device_tensor_from_numpy"}
_MUTATORS = {"APPEND", "APPENDS", "SETITEM", "SETITEMS", "ADDITEMS", "BUILD"}
_CALLS = {"REDUCE", "NEWOBJ", "NEWOBJ_EX", "OBJ", "INST"}
_FORBIDDEN_GLOBAL = re.compile(r"GLOBAL ([\w.]+)")


def load_pt(path: Path) -> dict:
    """The dict a ``.pt`` file holds: tensors, plain containers and, for the original TI layout,
    ``nn.ParameterDict``; anything else, or too much of anything, is an AdapterError."""
    _check_size(path)
    _check_pickle_shape(path)
    try:
        with torch.serialization.safe_globals([torch.nn.ParameterDict]):
            data = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        named = _FORBIDDEN_GLOBAL.search(str(exc))
        what = f"'{named.group(1)}'" if named else quote(exc, 80)
        raise AdapterError(
            f"refusing '{path}': the pickle asks for {what}, more than tensors and plain containers "
            f"(possibly code), and lowbudget only loads weights"
        ) from None
    except RecursionError:
        raise AdapterError(f"refusing '{path}': its pickle nests deeper than any embedding file") from None
    except Exception as exc:
        raise AdapterError(f"cannot read '{path}' as a PyTorch file: {quote(exc)}") from None
    if not isinstance(data, dict):
        raise AdapterError(f"'{path}' holds a {type(data).__name__}, not an embedding dict")
    return data


def _check_size(path: Path) -> None:
    size = path.stat().st_size
    if size > MAX_BYTES:
        raise AdapterError(f"refusing '{path}': {_mib(size)} is far more than an embedding file "
                           f"(at most {_mib(MAX_BYTES)} is read)")
    if not zipfile.is_zipfile(path):
        return  # a legacy (pre-1.6) torch file: not compressed, so its size is the bound
    try:
        with zipfile.ZipFile(path) as archive:
            unpacked = sum(entry.file_size for entry in archive.infolist())
    except (zipfile.BadZipFile, OSError) as exc:
        raise AdapterError(f"cannot read '{path}' as a PyTorch file: {quote(exc)}") from None
    if unpacked > MAX_BYTES:
        raise AdapterError(f"refusing '{path}': its archive unpacks to {_mib(unpacked)} from {_mib(size)} "
                           f"(an embedding file unpacks to at most {_mib(MAX_BYTES)})")


@dataclass(frozen=True)
class _Item:
    """What the scan knows of one value on the pickle machine's stack."""

    depth: int = 0  # containers below it
    shareable: bool = True  # strings, numbers, globals, tensors: safe to reference twice
    text: str | None = None  # a string's value (STACK_GLOBAL names its callable with two)


def _check_pickle_shape(path: Path) -> None:
    """Walk the pickle's opcodes without building anything: refuse a file that nests containers
    deeper than :data:`MAX_DEPTH` or refers to one container from two places (the seed of an
    exponential expansion), before torch builds and hashes it."""
    for data, n_pickles in _pickles_of(path):
        start = 0
        try:
            for _ in range(n_pickles):
                start = _scan(data, start)
                if start >= len(data):
                    break
        except _Shape as why:
            raise AdapterError(f"refusing '{path}': its pickle {why}; an embedding file never does") from None
        except (ValueError, IndexError, KeyError) as exc:
            raise AdapterError(f"refusing '{path}': its pickle is malformed ({quote(exc, 80)})") from None


class _Shape(Exception):
    pass


def _pickles_of(path: Path) -> list[tuple[bytes, int]]:
    """(bytes, how many pickles follow one another in them): a zip's data.pkl holds one; a legacy
    torch file five (magic number, protocol, system info, the object, storage keys), then raw data."""
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            return [(archive.read(n), 1) for n in archive.namelist() if n.endswith(".pkl")]
    return [(path.read_bytes(), 5)]


def _scan(data: bytes, start: int) -> int:
    """Scan the pickle that begins at ``start``; return where it ends."""
    stack: list[_Item] = []
    marks: list[int] = []
    memo: dict[int, _Item] = {}
    for count, (op, arg, pos) in enumerate(pickletools.genops(io.BytesIO(data[start:]))):
        if count > MAX_OPS:
            raise _Shape(f"has more than {MAX_OPS:,} operations")
        name = op.name
        if name == "STOP":
            return start + pos + 1
        if name == "MARK":
            marks.append(len(stack))
        elif name in ("PUT", "BINPUT", "LONG_BINPUT", "MEMOIZE"):
            memo[arg if name != "MEMOIZE" else len(memo)] = stack[-1]
        elif name in ("GET", "BINGET", "LONG_BINGET"):
            if not memo[arg].shareable:
                raise _Shape("refers to one container from two places")
            stack.append(memo[arg])
        else:
            taken = _pop(op, stack, marks)
            if name == "DUP":
                stack += taken * 2
            elif op.stack_after:
                stack.append(_result(name, op, arg, taken))
                if stack[-1].depth > MAX_DEPTH:
                    raise _Shape(f"nests containers more than {MAX_DEPTH} deep")
    raise ValueError("no STOP")


def _pop(op: pickletools.OpcodeInfo, stack: list[_Item], marks: list[int]) -> list[_Item]:
    """The items ``op`` takes from the stack, in stack order (what lies below a mark first)."""
    before = op.stack_before
    if pickletools.markobject in before:
        start = marks.pop()
        sliced = stack[start:]
        del stack[start:]
        fixed = before.index(pickletools.markobject)
        below = stack[len(stack) - fixed:] if fixed else []
        del stack[len(stack) - fixed:]
        return below + sliced
    taken = stack[len(stack) - len(before):] if before else []
    del stack[len(stack) - len(before):]
    return taken


def _result(name: str, op: pickletools.OpcodeInfo, arg: Any, taken: list[_Item]) -> _Item:
    if name in ("GLOBAL", "STACK_GLOBAL"):
        text = arg.replace(" ", ".") if name == "GLOBAL" else ".".join(t.text or "?" for t in taken)
        return _Item(text=text)
    if name in _MUTATORS:
        container, items = taken[0], taken[1:]
        return _Item(max([container.depth] + [i.depth + 1 for i in items]), container.shareable, container.text)
    if name in _CALLS:
        if taken and taken[0].text in TENSOR_BUILDERS:
            return _Item()  # a tensor: a leaf, and torch may share one between two places
        return _Item(1 + max((i.depth for i in taken), default=0), shareable=False)
    if name == "BINPERSID":
        return _Item()  # a storage reference
    if op.stack_after[0].name in ("list", "dict", "set", "frozenset", "tuple") and name != "EMPTY_TUPLE":
        return _Item(1 + max((i.depth for i in taken), default=0), shareable=False)
    return _Item(text=arg if isinstance(arg, str) else None)


def text_field(path: Path, data: dict, key: str) -> str | None:
    """``data[key]`` if it is a string (of at most :data:`MAX_TEXT` characters); None if absent;
    never ``str()`` of anything else."""
    value = data.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > MAX_TEXT:
        raise AdapterError(f"'{path}': field '{key}' is a {type(value).__name__}"
                           f"{' of ' + str(len(value)) + ' characters' if isinstance(value, str) else ''}; "
                           f"expected a string of at most {MAX_TEXT:,} characters")
    return value


def text_dict(path: Path, data: Any, key: str) -> dict[str, str]:
    """A dict of strings (the provenance a lowbudget A1111 file carries); other entries are refused."""
    if not isinstance(data, dict):
        raise AdapterError(f"'{path}': field '{key}' is a {type(data).__name__}; expected a dict of strings")
    return {k: text_field(path, data, k) or "" for k in data if isinstance(k, str)}


def _mib(n: int) -> str:
    return f"{n / 2**20:,.1f} MiB"
