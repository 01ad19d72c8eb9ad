"""Signatures that travel inside a ``.safetensors`` adapter file.

The signature lives in the file's own header, beside the provenance, as three string entries:
``lowbudget_signer`` (the site), ``lowbudget_key_id`` and ``lowbudget_signature`` (base64
ed25519). In the header, not in a sidecar, because a sidecar is lost the first time a file is
copied alone; and the loaders users have (diffusers, ComfyUI, A1111, kohya) read the tensors
through ``safetensors`` and ignore header entries they do not know, so a signed file loads in
them unchanged.

What is signed: every header entry but the signature itself, and for every tensor its name,
dtype, shape and the sha256 of its bytes as they lie in the file. Changing any byte of a
tensor or any metadata field, adding or removing either, breaks the signature.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import struct
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from safetensors.torch import load_file, save_file

from lowbudget.errors import SignatureError
from lowbudget.io import atomic_path
from lowbudget.adapters.keys import key_id, load_private_key, trusted_keys

SIGNER, KEY_ID, SIGNATURE = "lowbudget_signer", "lowbudget_key_id", "lowbudget_signature"
_DOMAIN = b"lowbudget adapter signature v1\n"  # a signature for this purpose only
MAX_HEADER = 100_000_000  # safetensors' own limit on the header's size


@dataclass(frozen=True)
class Signed:
    signer: str
    key_id: str
    trusted: bool  # verified against a trust folder (False: only read, not checked)


def read_signature(path: str | Path) -> Signed | None:
    """The signer a file names, without checking anything (for ``inspect``); None if unsigned."""
    metadata = _header(_safetensors(path))[0]
    if SIGNATURE not in metadata:
        return None
    return Signed(metadata.get(SIGNER, "?"), metadata.get(KEY_ID, "?"), trusted=False)


def sign_file(path: str | Path, key_path: str | Path, output: str | Path | None = None, *,
              add: dict[str, str] | None = None) -> Signed:
    """Sign ``path`` with the key at ``key_path``; write the signed file to ``output`` (default:
    in place). ``add`` puts more header entries in first, under the same signature."""
    path = _safetensors(path)
    site, key = load_private_key(key_path)
    metadata, _ = _header(path)
    tensors = load_file(str(path))  # the same bytes save_file writes back
    metadata = {k: v for k, v in metadata.items() if k not in (SIGNER, KEY_ID, SIGNATURE)}
    metadata |= (add or {}) | {SIGNER: site, KEY_ID: key_id(key.public_key())}
    target = Path(output) if output is not None else path
    with atomic_path(target) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)  # first unsigned, to read back what lies on disk
        signature = key.sign(_message(tmp))
        save_file(tensors, str(tmp), metadata=metadata | {SIGNATURE: base64.b64encode(signature).decode()})
        key.public_key().verify(signature, _message(tmp))  # the file as written verifies, or nothing is replaced
    return Signed(site, metadata[KEY_ID], trusted=True)


def verify_file(path: str | Path, trust: str | Path) -> Signed:
    """The signer of ``path`` if its signature is by a key in ``trust`` and matches; else SignatureError."""
    path = _safetensors(path)
    metadata = _header(path)[0]
    if SIGNATURE not in metadata:
        raise SignatureError(f"'{path}' is not signed; ask its maker for a signed copy (lowbudget sign)")
    keys = trusted_keys(trust)
    kid = metadata.get(KEY_ID, "")
    if kid not in keys:
        raise SignatureError(f"'{path}' is signed by '{metadata.get(SIGNER, '?')}' with key {kid or '?'}, which is not "
                             f"in the trust folder '{trust}'")
    try:
        signature = base64.b64decode(metadata[SIGNATURE], validate=True)
    except (binascii.Error, ValueError):
        raise SignatureError(f"'{path}': its signature is malformed (not base64)") from None
    try:
        keys[kid].public.verify(signature, _message(path))
    except InvalidSignature:
        raise SignatureError(f"'{path}' does not match its signature by '{keys[kid].site}': it was changed after "
                             "signing, or the signature is not this file's") from None
    return Signed(keys[kid].site, kid, trusted=True)


def check_signature(path: str | Path, trust: str | Path | None, required: bool) -> str | None:
    """Verify ``path`` as the options ask; return a note for the user, or raise SignatureError."""
    if required and trust is None:
        raise SignatureError("--require-signature needs --trust DIR, the folder of public keys you trust")
    if not Path(path).is_file():
        return None  # the reader says what is missing
    signed = read_signature(path) if Path(path).suffix == ".safetensors" else None
    if signed is None:
        if required:
            raise SignatureError(f"'{path}' is not signed and a signature is required")
        return f"'{Path(path).name}' is not signed: nothing shows who made it or whether it was changed"
    if trust is None:
        return f"'{Path(path).name}' says it is signed by '{signed.signer}' (key {signed.key_id}); not checked: give --trust DIR"
    verified = verify_file(path, trust)
    return f"'{Path(path).name}': signature by '{verified.signer}' (key {verified.key_id}) verified"


def _safetensors(path: str | Path) -> Path:
    path = Path(path)
    if path.suffix != ".safetensors" or not path.is_file():
        raise SignatureError(f"'{path}' is not a .safetensors file; signatures live in a safetensors header "
                             "(convert an A1111 .pt first: lowbudget convert FILE --to diffusers)")
    return path


def _message(path: Path) -> bytes:
    """What a signature covers: the header without the signature, and a digest of every tensor."""
    metadata, tensors = _header(path)
    unsigned = {k: v for k, v in metadata.items() if k != SIGNATURE}
    body = json.dumps({"metadata": unsigned, "tensors": tensors}, sort_keys=True, separators=(",", ":"))
    return _DOMAIN + body.encode()


def _header(path: Path) -> tuple[dict[str, str], dict[str, list]]:
    """(metadata, {tensor: [dtype, shape, sha256]}) read straight from the file's bytes."""
    size = path.stat().st_size
    with open(path, "rb") as fh:
        head = fh.read(8)
        (n,) = struct.unpack("<Q", head) if len(head) == 8 else (size,)
        if n > min(MAX_HEADER, size - 8):
            raise SignatureError(f"'{path}' is not a valid safetensors file (header of {n:,} bytes)")
        try:
            header = json.loads(fh.read(n))
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise SignatureError(f"'{path}' is not a valid safetensors file (its header is not JSON)") from None
        start = 8 + n
        metadata = header.pop("__metadata__", None) or {}
        tensors = {}
        for name, entry in sorted(header.items()):
            try:
                begin, end = (int(v) for v in entry["data_offsets"])
                kind = [entry["dtype"], entry["shape"]]
            except (KeyError, TypeError, ValueError):
                raise SignatureError(f"'{path}': tensor {name!r} has no valid dtype, shape and offsets") from None
            if not 0 <= begin <= end <= size - start:
                raise SignatureError(f"'{path}': tensor {name} lies outside the file (truncated?)")
            fh.seek(start + begin)
            tensors[name] = [*kind, _sha256(fh, end - begin)]
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise SignatureError(f"'{path}' is not a valid safetensors file (its metadata is not string to string)")
    return metadata, tensors


def _sha256(fh, length: int, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    while length > 0:
        block = fh.read(min(chunk, length))
        if not block:
            break
        digest.update(block)
        length -= len(block)
    return digest.hexdigest()
