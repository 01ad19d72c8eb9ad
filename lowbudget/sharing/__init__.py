"""Sharing adapters between sites: the library, the release check, and libraries served over HTTP.
Keys and signatures are properties of an adapter file and live beside it, in
:mod:`lowbudget.adapters.keys` and :mod:`lowbudget.adapters.signing`.

  library.py   a folder of adapter files and its index.json (add, verify)
  release.py   the release check before sharing: memorisation audit, then sign
  remote.py    a library as static files (publish) and fetched from a URL or folder (pull)
"""
