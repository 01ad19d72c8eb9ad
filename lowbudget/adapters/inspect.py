"""``lowbudget inspect``: what an adapter file is, before anyone loads it.

For every file: layout, size, sha256 and header metadata; for embeddings the token, shape,
dtype and per-vector norms; for LoRA files the tensor count, parameters, ranks and targets.
With a base model: whether the file fits it (width, fingerprint, token clash).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from lowbudget.adapters.compat import check_embedding, check_lora, fingerprint_warnings
from lowbudget.adapters.own_files import AUDIT, FEDERATION, read_header
from lowbudget.adapters.foreign_layouts import embedding_problems, lora_problems, read_embedding, read_lora, triggers
from lowbudget.adapters.load import is_lora_file
from lowbudget.errors import AdapterError, SignatureError
from lowbudget.io import sha256_file
from lowbudget.adapters.signing import read_signature, verify_file

_BLOCK_LISTS = {"down_blocks", "up_blocks", "attentions", "transformer_blocks", "resnets", "layers",
                "downsamplers", "upsamplers"}
_SHOWN_METADATA = ("lowbudget_format", "base_model", "base_fingerprint", "init", "modality", "n_images", "steps",
                   "lowbudget_version", "created", "description", "license")


def describe(path: str | Path, base: Any = None, trust: str | Path | None = None) -> dict[str, Any]:
    """A JSON-serialisable report on one file; ``base`` is a BaseModel or None, ``trust`` a
    folder of public keys to check a signature against."""
    path = Path(path)
    if not path.is_file():
        raise AdapterError(f"'{path}' does not exist or is not a file")
    report: dict[str, Any] = {"path": str(path), "bytes": path.stat().st_size, "sha256": sha256_file(path)}
    if is_lora_file(path):
        report |= _describe_lora(path, base)
    else:
        report |= _describe_embedding(path, base)
    report["signature"] = _signature(path, trust)
    header = read_header(path) if path.suffix == ".safetensors" else {}
    for key, entry in (("audit", AUDIT), ("federation", FEDERATION)):
        if header.get(entry):
            report[key] = json.loads(header[entry])
    return report


def _signature(path: Path, trust: str | Path | None) -> dict[str, Any]:
    signed = read_signature(path) if path.suffix == ".safetensors" else None
    if signed is None:
        return {"signed": False}
    out = {"signed": True, "signer": signed.signer, "key_id": signed.key_id}
    if trust is not None:
        try:
            verify_file(path, trust)
            out["verified"] = True
        except SignatureError as exc:
            out |= {"verified": False, "reason": str(exc)}
    return out


def _describe_embedding(path: Path, base: Any) -> dict[str, Any]:
    emb = read_embedding(path, check=False)  # shown even when unusable, with the reasons
    parts = {
        name: {
            "shape": list(t.shape),
            "dtype": str(t.dtype).replace("torch.", ""),
            "norms": [round(float(v), 4) if math.isfinite(v) else None for v in t.float().norm(dim=-1).tolist()],
        }
        for name, t in emb.parts.items()
    }
    report = {"kind": "embedding", "layout": emb.layout, "token": emb.token, "triggers": triggers(emb), "parts": parts,
              "metadata": {k: emb.metadata[k] for k in _SHOWN_METADATA if emb.metadata.get(k)},
              "problems": embedding_problems(emb)}
    if base is not None and not report["problems"]:
        try:
            _, warnings = check_embedding(emb, base.text_encoders, base_name=base.source)
            report["fits_base"] = {"ok": True, "warnings": warnings}
        except AdapterError as exc:
            report["fits_base"] = {"ok": False, "reason": str(exc)}
    return report


def _describe_lora(path: Path, base: Any) -> dict[str, Any]:
    tensors, metadata = read_lora(path, check=False)  # shown even when unusable, with the reasons
    ranks = sorted({int(t.shape[0]) for k, t in tensors.items() if ("lora_A" in k or "lora_down" in k) and t.ndim})
    targets = sorted({lora_target(k) for k in tensors if ".lora" in k})
    report = {
        "kind": "lora",
        "layout": "diffusers" if any(k.startswith("unet.") for k in tensors) else "other",
        "tensors": len(tensors),
        "parameters": sum(t.numel() for t in tensors.values()),
        "ranks": ranks,
        "targets": targets,
        "text_encoder": any(k.startswith(("text_encoder.", "text_encoder_2.")) for k in tensors),
        "metadata": {k: metadata[k] for k in _SHOWN_METADATA if metadata.get(k)},
        "problems": lora_problems(tensors, path),
    }
    if base is not None and not report["problems"]:
        try:
            check_lora(tensors, base.unet, path=str(path), base_name=base.source, text_encoder=base.text_encoder,
                       text_encoder_2=base.text_encoder_2)
            warnings = fingerprint_warnings(metadata, base.text_encoders, base.source, str(path))
            report["fits_base"] = {"ok": True, "warnings": warnings}
        except AdapterError as exc:
            report["fits_base"] = {"ok": False, "reason": str(exc)}
    return report


def lora_target(key: str) -> str:
    """The module a LoRA tensor adapts, named whole below its numbered block.

    '...transformer_blocks.0.attn1.to_out.0.lora_A.weight' -> 'attn1.to_out.0' (not '0');
    '...layers.3.self_attn.q_proj.lora_B.weight' -> 'self_attn.q_proj': the names peft's
    ``target_modules`` match.
    """
    parts = key.split(".lora")[0].split(".")
    cut = max((i + 1 for i in range(1, len(parts)) if parts[i].isdigit() and parts[i - 1] in _BLOCK_LISTS), default=0)
    if cut == 0 and parts[0] in ("unet", "text_encoder"):
        cut = 1
    return ".".join(parts[cut:])


def format_report(report: dict[str, Any]) -> str:
    """Human-readable lines for one report."""
    lines = [report["path"], f"  kind              {report['kind']} ({report['layout']} layout)",
             f"  size              {report['bytes']:,} bytes", f"  sha256            {report['sha256']}"]
    if report["kind"] == "embedding":
        lines.append(f"  token             {report['token']}")
        lines += [f"  type in {tool:<9} {word}" for tool, word in report["triggers"].items()]
        for name, part in report["parts"].items():
            norms = [n for n in part["norms"] if n is not None]
            summary = (f"; vector norms min {min(norms):.3g} mean {sum(norms) / len(norms):.3g} max {max(norms):.3g}"
                       if norms else "")
            lines.append(f"  {name:<17} {part['shape'][0]} x {part['shape'][1]} {part['dtype']}{summary}")
    else:
        lines.append(f"  tensors           {report['tensors']} ({report['parameters']:,} parameters), rank {report['ranks']}")
        lines.append(f"  targets           {', '.join(report['targets'])}" + ("; text encoder too" if report["text_encoder"] else ""))
    for key, value in report["metadata"].items():
        lines.append(f"  {key:<17} {value}")
    lines.append(f"  signed by         {_signature_line(report.get('signature', {'signed': False}))}")
    if "audit" in report:
        a = report["audit"]
        lines.append(f"  release check     {a['flagged_fraction']:.1%} of {a['samples']} samples flagged as near-copies "
                     f"(threshold {a['threshold']:.0%}, {a['n_training']} training images), {a['date']}")
    if "federation" in report:
        lines.append(f"  federated         {_federation_line(report['federation'])}")
    for problem in report.get("problems", []):
        lines.append(f"  UNUSABLE          {problem}")
    if "fits_base" in report:
        fit = report["fits_base"]
        lines.append("  fits base         " + ("yes" if fit["ok"] else f"NO: {fit['reason']}"))
        lines += [f"  warning           {w}" for w in fit.get("warnings", [])]
    return "\n".join(lines)


def _federation_line(f: dict[str, Any]) -> str:
    sites = ", ".join(f"{s['site']} {s['images']} images" for s in f["sites"])
    return (f"{len(f['sites'])} sites ({sites}), {f['rounds']} rounds x {f['local_steps']} local steps, "
            f"{f['aggregation']}")


def _signature_line(sig: dict[str, Any]) -> str:
    if not sig["signed"]:
        return "nobody (unsigned)"
    checked = {True: "verified", False: f"NOT VERIFIED: {sig.get('reason')}"}.get(sig.get("verified"),
                                                                                  "not checked (--trust DIR)")
    return f"{sig['signer']} (key {sig['key_id']}), {checked}"


def to_json(reports: list[dict[str, Any]]) -> str:
    return json.dumps(reports, indent=2)
