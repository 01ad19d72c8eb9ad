"""A site's ed25519 keys, and the folder of public keys a site trusts.

``keys new`` writes ``<site>.key`` (the private key, PKCS#8 PEM, mode 0600, never printed)
and ``<site>.pub`` (the public key, PEM) into one folder. The public key is what a site hands
to others; they put it into their *trust folder*, a folder of ``*.pub`` files. A key is
named by its *key id*: the first 16 hex digits of the sha256 of its 32 raw bytes.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from lowbudget.errors import SignatureError
from lowbudget.io import atomic_write

_SITE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
MAX_KEY_BYTES = 64 * 1024  # a PEM ed25519 key is ~120 bytes; anything large is not a key


@dataclass(frozen=True)
class SiteKey:
    site: str
    key_id: str
    public: Ed25519PublicKey


def key_id(public: Ed25519PublicKey) -> str:
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def new_keys(site: str, folder: str | Path) -> tuple[Path, Path]:
    """Write ``<site>.key`` (0600) and ``<site>.pub`` into ``folder``; never replaces a key."""
    if not _SITE.fullmatch(site):
        raise SignatureError(f"--site {site!r} must be 1-64 letters, digits, '.', '_' or '-', e.g. 'hospital-a'")
    folder = Path(folder)
    private_path, public_path = folder / f"{site}.key", folder / f"{site}.pub"
    for path in (private_path, public_path):
        if path.exists():
            raise SignatureError(f"'{path}' already exists; a key is never replaced (choose another --output)")
    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    public = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    atomic_write(private_path, lambda tmp: tmp.write_bytes(private), mode=0o600)
    atomic_write(public_path, lambda tmp: tmp.write_bytes(public))
    return private_path, public_path


def load_private_key(path: str | Path) -> tuple[str, Ed25519PrivateKey]:
    """(site, key) from a ``<site>.key`` file."""
    path = Path(path)
    data = _read_small(path, "private key")
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise SignatureError(f"'{path}' is not an unencrypted PEM private key (make one with `lowbudget keys new`)") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise SignatureError(f"'{path}' holds a {type(key).__name__.removeprefix('_')}; expected an ed25519 key")
    return path.stem, key


def load_public_key(path: str | Path) -> SiteKey:
    path = Path(path)
    data = _read_small(path, "public key")
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise SignatureError(f"'{path}' is not a PEM public key") from None
    if not isinstance(key, Ed25519PublicKey):
        raise SignatureError(f"'{path}' holds a {type(key).__name__.removeprefix('_')}; expected an ed25519 key")
    return SiteKey(path.stem, key_id(key), key)


def trusted_keys(folder: str | Path) -> dict[str, SiteKey]:
    """{key id: key} of every ``*.pub`` file in the trust folder."""
    folder = Path(folder)
    if not folder.is_dir():
        raise SignatureError(f"trust folder '{folder}' does not exist; expected a folder of <site>.pub files")
    keys = {k.key_id: k for k in map(load_public_key, sorted(folder.glob("*.pub")))}
    if not keys:
        raise SignatureError(f"trust folder '{folder}' holds no <site>.pub file")
    return keys


def _read_small(path: Path, what: str) -> bytes:
    if not path.is_file():
        raise SignatureError(f"{what} '{path}' does not exist")
    if path.stat().st_size > MAX_KEY_BYTES:
        raise SignatureError(f"'{path}' is {path.stat().st_size:,} bytes; a {what} file is a few hundred")
    return path.read_bytes()
