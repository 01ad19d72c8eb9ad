"""Sharing adapters between sites: the library, keys and signatures, the release check, and
libraries served over HTTP.

  library.py   a folder of adapter files and its index.json (add, verify)
  keys.py      ed25519 keys of a site, and the folder of keys a site trusts
  signing.py   signatures in the safetensors header: sign, verify, read
  release.py   the release check before sharing: memorisation audit, then sign
  remote.py    a library as static files (publish) and fetched from a URL or folder (pull)
"""
