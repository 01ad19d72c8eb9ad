"""Federated rounds over Flower: the checks on updates, a site's round against a local run, and
a server with three site processes on the loopback (one sends NaN, one dies mid-round)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from flwr.common import Code, FitRes, Status, ndarrays_to_parameters, parameters_to_ndarrays
from safetensors import safe_open
from safetensors.torch import load_file

from helpers import ROOT, tiny_recipe
from lowbudget.errors import FederationError
from lowbudget.federation import FederationConfig, serve
from lowbudget.federation.simulate import free_port
from lowbudget.federation.site import Site
from lowbudget.federation.strategy import Ledger, make_strategy
from lowbudget.federation.tensors import layout_json, update_problem
from lowbudget.training import train

LAYOUT = [("a", (2, 3)), ("b", (4,))]
PROBE = ROOT / "tests" / "federation_probe.py"
TIMEOUT = 240  # seconds any one federation process may take; measured ~40 s for the whole federation


def _arrays(value: float) -> list[np.ndarray]:
    return [np.full(shape, value, np.float32) for _, shape in LAYOUT]


def test_an_update_must_match_the_layout_and_be_finite():
    assert update_problem(_arrays(1.0), LAYOUT) == ""
    assert update_problem(_arrays(1.0)[:1], LAYOUT) == "1 tensors, expected 2"
    assert update_problem([np.zeros((3, 2), np.float32), _arrays(1)[1]], LAYOUT) == "tensor 'a' has shape (3, 2), expected (2, 3)"
    assert update_problem([np.zeros((2, 3), np.float64), _arrays(1)[1]], LAYOUT) == "tensor 'a' is float64, expected float32"
    bad = _arrays(1.0)
    bad[1][2], bad[1][3] = np.nan, np.inf
    assert update_problem(bad, LAYOUT) == "tensor 'b' has 2 non-finite values (NaN or inf)"


@pytest.mark.parametrize("field,value,message", [
    ("rounds", 0, "--rounds = 0 must be >= 1"), ("aggregation", "median", "--aggregation 'median' is not known"),
    ("local_steps", float("nan"), "--local-steps = nan must be a finite number"),
])
def test_federation_settings_are_checked(field, value, message):
    with pytest.raises(FederationError, match=message.replace("(", r"\(").replace(")", r"\)")):
        FederationConfig(**{field: value})


def _result(value: float, images: int, site: str = "", fingerprint: str = "fp", arrays=None) -> tuple:
    res = FitRes(Status(Code.OK, ""), ndarrays_to_parameters(arrays or _arrays(value)), images,
                 {"site": site, "loss": 0.1, "fingerprint": fingerprint})
    return SimpleNamespace(cid=site or f"cid-{value}"), res


def _strategy(aggregation: str = "fedavg", min_sites: int = 2, first_round: int = 1, moments=None, start=None):
    lines, saved = [], []
    cfg = FederationConfig(rounds=5, local_steps=2, min_sites=min_sites, aggregation=aggregation, server_lr=0.1)
    strategy = make_strategy(cfg, layout=LAYOUT, start=start or _arrays(0.0), fingerprint="fp", ledger=Ledger(),
                             first_round=first_round, moments=moments, on_round=lambda r, a, s: saved.append((r, a)),
                             log=lines.append)
    return strategy, lines, saved


def test_fedavg_weights_sites_by_images_and_leaves_out_what_it_rejects():
    strategy, lines, saved = _strategy()
    nan = _arrays(5.0)
    nan[0][0, 0] = np.nan
    results = [_result(1.0, 30, "north"), _result(3.0, 10, "south"), _result(5.0, 99, "east", arrays=nan),
               _result(7.0, 99, "west", fingerprint="other")]
    params, _ = strategy.aggregate_fit(1, results, [RuntimeError("connection reset")])
    out = parameters_to_ndarrays(params)
    assert np.allclose(out[0], (1.0 * 30 + 3.0 * 10) / 40) and np.allclose(out[1], 1.5)  # 40 images, east/west out
    assert "round 1: rejected the update of east: tensor 'a' has 1 non-finite values (NaN or inf)" in lines
    assert any(line.startswith("round 1: rejected the update of west: it trained on another base") for line in lines)
    assert "round 1: a site dropped out (RuntimeError: connection reset)" in lines
    assert saved[0][0] == 1 and np.allclose(saved[0][1][0], 1.5)  # the checkpoint hook got the new tensors
    assert [(s["site"], s["images"], s["rounds"]) for s in strategy.ledger.sites] == [
        ("north", 30, 1), ("south", 10, 1), ("east", 0, 0), ("west", 0, 0)]


def test_a_round_with_too_few_usable_updates_keeps_the_global_tensors():
    strategy, lines, saved = _strategy(min_sites=2, first_round=4)
    waited = []
    sites = SimpleNamespace(num_available=lambda: 2, wait_for=lambda n, timeout: waited.append(n) or True,
                            sample=lambda num_clients, min_num_clients: [])
    strategy.configure_fit(1, ndarrays_to_parameters(_arrays(0.5)), sites)
    params, _ = strategy.aggregate_fit(1, [_result(1.0, 10, "north")], [])
    assert params is None  # Flower keeps the previous global tensors
    assert saved[0][0] == 4 and np.allclose(saved[0][1][0], 0.5)  # and the round is checkpointed as done
    assert lines[-1] == "round 4: 1 usable update, fewer than --min-sites 2; the global adapter stays as it was"
    assert lines[0] == "round 4 of 5: waiting for 2 sites (2 connected)" and waited == [2]


def test_fedadam_resumed_with_its_moments_takes_the_unbroken_step():
    rounds = [[_result(1, 10, "north"), _result(2, 10, "south")], [_result(2, 10, "north"), _result(3, 10, "south")]]
    unbroken, _, _ = _strategy("fedadam")
    for r, results in enumerate(rounds, 1):
        params, _ = unbroken.aggregate_fit(r, results, [])
    first, _, saved = _strategy("fedadam")
    first.aggregate_fit(1, rounds[0], [])
    # what the server's state file holds after round 1: the global tensors and Adam's moments
    resumed, _, _ = _strategy("fedadam", first_round=2, start=saved[0][1], moments=(first.m_t, first.v_t))
    again, _ = resumed.aggregate_fit(1, rounds[1], [])
    assert all(np.allclose(a, b) for a, b in zip(parameters_to_ndarrays(again), parameters_to_ndarrays(params)))
    assert not np.allclose(parameters_to_ndarrays(params)[0], 2.5)  # Adam's step, not the plain mean
    forgetful, _, _ = _strategy("fedadam", first_round=2, start=saved[0][1])  # without the moments: another step
    other, _ = forgetful.aggregate_fit(1, rounds[1], [])
    assert not np.allclose(parameters_to_ndarrays(other)[0], parameters_to_ndarrays(params)[0])


def test_a_sites_round_is_the_local_training_loop(tiny_base, mixed_folder, tmp_path):
    """One round of E local steps from the starting tensors trains exactly what a local run of E steps trains."""
    recipe = tiny_recipe(mixed_folder, tmp_path / "local", tiny_base, "ti", steps=3)
    train(recipe, progress=False, log=lambda m: None)
    site = Site(replace(recipe, output=replace(recipe.output, dir=str(tmp_path / "site"))), name="", progress=False,
                log=lambda m: None)
    from lowbudget.models import load_base
    from lowbudget.training.setup import attach_adapters

    base = load_base(str(tiny_base))
    fingerprint = base.fingerprint
    start = attach_adapters(base, recipe.method, recipe.optim.seed)[2]["tokens"].detach().numpy().copy()
    layout = [("tokens", start.shape)]
    config = {"round": 1, "rounds": 1, "local_steps": 3, "layout": layout_json(layout), "fingerprint": fingerprint}
    arrays, images, metrics = site.fit([start], config)
    local = load_file(tmp_path / "local" / "effusion.safetensors")["<effusion>"]
    assert images == 8 and metrics["fingerprint"] == fingerprint
    assert torch.allclose(torch.from_numpy(arrays[0]), local, rtol=0, atol=1e-6)
    with pytest.raises(FederationError, match="this site's base .* is not the server's"):
        site.fit([start], {**config, "fingerprint": "0" * 64})


def _lowbudget(*args, probe: str = "") -> subprocess.Popen:
    command = [sys.executable, str(PROBE), probe] if probe else [sys.executable, "-m", "lowbudget", "federate"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([*command, *map(str, args)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=env, cwd=ROOT)


def test_a_federation_survives_a_nan_update_and_a_site_that_dies_mid_round(tiny_base, mixed_folder, tmp_path):
    address = f"127.0.0.1:{free_port()}"
    common = ["recipes/phantom/chest-ti.toml", "--base", tiny_base, "--set", "data.resolution=32",
              "--set", "optim.batch_size=2"]
    server = _lowbudget("server", *common, "--rounds", 3, "--local-steps", 2, "--min-sites", 2, "--wait-for", 3,
                        "--address", address,
                        "--output", tmp_path / "fed")
    sites = [_lowbudget("site", *common, "--data", mixed_folder, "--server", address, "--name", "steady", "-q"),
             _lowbudget(*["site", *common, "--data", mixed_folder, "--server", address, "--name", "noisy", "-q"], probe="nan"),
             _lowbudget(*["site", *common, "--data", mixed_folder, "--server", address, "-q"], probe="die")]
    try:
        out, _ = server.communicate(timeout=TIMEOUT)
        site_out = [s.communicate(timeout=60)[0] for s in sites]
    finally:
        for p in (server, *sites):
            p.kill()
    assert server.returncode == 0, out[-3000:]
    assert "round 1: rejected the update of noisy: tensor 'tokens' has 1 non-finite values (NaN or inf)" in out
    assert "round 2: a site dropped out" in out, out[-3000:]  # the killed site; the round went on with two
    assert "round 3 of 3: aggregated 2 sites" in out and sites[2].returncode == -9
    path = tmp_path / "fed" / "effusion.safetensors"
    with safe_open(str(path), framework="pt") as f:
        record = json.loads(f.metadata()["lowbudget_federation"])
        header = f.metadata()
    assert record["rounds"] == 3 and record["local_steps"] == 2 and record["aggregation"] == "fedavg"
    assert sorted((s["site"], s["rounds"]) for s in record["sites"]) == [("noisy", 2), ("site 1", 1), ("steady", 3)]
    assert header["n_images"] == "24" and header["steps"] == "6"  # 3 sites x 8 images; 3 rounds x 2 steps
    assert str(mixed_folder) not in json.dumps(header)  # no site path leaves in the file
    assert "the federation ended; this site trained 3 rounds" in site_out[0]
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(str(tiny_base), safety_checker=None, local_files_only=True)
    pipe.load_textual_inversion(str(path), token="<effusion>")  # plain diffusers reads it
    row = pipe.text_encoder.get_input_embeddings().weight[pipe.tokenizer.convert_tokens_to_ids("<effusion>")]
    assert torch.equal(row, load_file(path)["<effusion>"][0])


def _simulate(tiny_base, folders, out, *args) -> subprocess.CompletedProcess:
    sites = [a for folder in folders for a in ("--site", folder)]
    return subprocess.run([sys.executable, "-m", "lowbudget", "federate", "simulate", "recipes/phantom/chest-ti.toml",
                           "--base", tiny_base, "--set", "data.resolution=32", "--set", "optim.batch_size=2",
                           *sites, "--local-steps", "2", "--output", out, *map(str, args)],
                          capture_output=True, text=True, timeout=TIMEOUT, cwd=ROOT)


def test_a_resumed_federation_ends_where_the_unbroken_one_ends(tiny_base, mixed_folder, tmp_path):
    """The server's state after round 2 plus one more round equals three rounds in one go."""
    from lowbudget.phantoms import write_chest_phantoms

    other = tmp_path / "other"
    write_chest_phantoms(other, n=6, size=48, seed=5)
    unbroken = _simulate(tiny_base, [mixed_folder, other], tmp_path / "unbroken", "--rounds", 3)
    assert unbroken.returncode == 0, unbroken.stdout[-3000:] + unbroken.stderr[-2000:]
    assert "[site 2] round 3: trained 2 steps on 6 images" in unbroken.stdout
    assert _simulate(tiny_base, [mixed_folder, other], tmp_path / "broken", "--rounds", 2).returncode == 0
    with pytest.raises(FederationError, match="already holds a federation; pass --resume"):
        serve(tiny_recipe(mixed_folder, tmp_path / "broken", tiny_base), FederationConfig(rounds=3, local_steps=2))
    resumed = _simulate(tiny_base, [mixed_folder, other], tmp_path / "broken", "--rounds", 3, "--resume")
    assert resumed.returncode == 0 and "resuming after round 2 of 3" in resumed.stdout, resumed.stdout[-3000:]
    assert "[site 1] round 3: trained" in resumed.stdout and "round 2: trained" not in resumed.stdout
    a, b = (load_file(tmp_path / name / "effusion.safetensors")["<effusion>"] for name in ("unbroken", "broken"))
    assert torch.allclose(a, b, rtol=0, atol=1e-6), (a - b).abs().max()
    with safe_open(str(tmp_path / "broken" / "effusion.safetensors"), framework="pt") as f:
        record = json.loads(f.metadata()["lowbudget_federation"])
    assert record["rounds"] == 3 and [(s["site"], s["images"], s["rounds"]) for s in record["sites"]] in (
        [("site 1", 8, 3), ("site 2", 6, 3)], [("site 2", 6, 3), ("site 1", 8, 3)])


def _certificates(folder) -> dict[str, str]:
    """A CA and a server certificate for 127.0.0.1 signed by it (PEM files), as a site's IT would issue."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.timezone.utc)
    keys = {name: ec.generate_private_key(ec.SECP256R1()) for name in ("ca", "server")}

    def cert(name: str, issuer: str, **extensions):
        builder = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
                   .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
                   .public_key(keys[name].public_key()).serial_number(x509.random_serial_number())
                   .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1)))
        for extension, critical in extensions.values():
            builder = builder.add_extension(extension, critical=critical)
        return builder.sign(keys[issuer], hashes.SHA256())

    files = {"ca": cert("ca", "ca", basic=(x509.BasicConstraints(ca=True, path_length=None), True)),
             "cert": cert("server", "ca", san=(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                                             False))}
    out = {}
    for name, c in files.items():
        out[name] = str(folder / f"{name}.pem")
        (folder / f"{name}.pem").write_bytes(c.public_bytes(serialization.Encoding.PEM))
    out["key"] = str(folder / "key.pem")
    (folder / "key.pem").write_bytes(keys["server"].private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                                  serialization.NoEncryption()))
    return out


def test_a_federation_over_tls(tiny_base, mixed_folder, tmp_path):
    pem = _certificates(tmp_path)
    address = f"127.0.0.1:{free_port()}"
    common = ["recipes/phantom/chest-ti.toml", "--base", tiny_base, "--set", "data.resolution=32", "--set", "optim.batch_size=2"]
    server = _lowbudget("server", *common, "--rounds", 1, "--local-steps", 1, "--address", address, "--output", tmp_path / "fed",
                        "--tls-ca", pem["ca"], "--tls-cert", pem["cert"], "--tls-key", pem["key"])
    plain = _lowbudget("site", *common, "--data", mixed_folder, "--server", address, "-q")  # no --tls-ca: refused
    sites = [_lowbudget("site", *common, "--data", mixed_folder, "--server", address, "--tls-ca", pem["ca"], "-q")
             for _ in range(2)]
    try:
        refused = plain.communicate(timeout=TIMEOUT)[0]
        out = server.communicate(timeout=TIMEOUT)[0]
        [s.communicate(timeout=60) for s in sites]
    finally:
        for p in (server, plain, *sites):
            p.kill()
    assert server.returncode == 0 and "TLS" in out and "round 1 of 1: aggregated 2 sites" in out, out[-3000:]
    assert [s.returncode for s in sites] == [0, 0]
    assert plain.returncode == 1 and "if the server uses TLS give --tls-ca" in refused, refused[-2000:]


def test_the_server_state_keeps_tensors_sites_and_adam_moments(tmp_path):
    from lowbudget.federation.server import ServerState, _load_state, _save_state

    moments = (_arrays(0.25), _arrays(0.5))
    state = ServerState(3, _arrays(1.0), [{"site": "north", "named": True, "images": 30, "rounds": 3}],
                        {"local_steps": 2, "aggregation": "fedadam"}, moments)
    _save_state(tmp_path, state, LAYOUT)
    back = _load_state(tmp_path, LAYOUT)
    assert back.round == 3 and back.sites == state.sites and back.config == state.config
    assert all(np.array_equal(a, b) for a, b in zip(back.arrays, state.arrays))
    assert all(np.array_equal(a, b) for part in (0, 1) for a, b in zip(back.moments[part], moments[part]))
    with pytest.raises(FederationError, match="holds tensors \\['a', 'b'\\]"):
        _load_state(tmp_path, [("tokens", (2, 3))])
    (tmp_path / "federation" / "state.safetensors").write_bytes(b"not a state")
    with pytest.raises(FederationError, match="cannot be read as a federation state"):
        _load_state(tmp_path, LAYOUT)


def test_a_site_on_another_base_refuses_in_one_line_and_the_server_writes_nothing(tiny_base, mixed_folder, tmp_path):
    from lowbudget.models.architectures import write_base_folder

    other = write_base_folder(tmp_path / "other-base", "tiny", seed=1)
    address = f"127.0.0.1:{free_port()}"
    common = ["recipes/phantom/chest-ti.toml", "--set", "data.resolution=32", "--set", "optim.batch_size=2"]
    server = _lowbudget("server", *common, "--base", tiny_base, "--rounds", 1, "--local-steps", 1, "--min-sites", 1,
                        "--address", address, "--output", tmp_path / "fed")
    site = _lowbudget("site", *common, "--base", other, "--data", mixed_folder, "--server", address, "-q")
    try:
        said, out = site.communicate(timeout=TIMEOUT)[0], server.communicate(timeout=TIMEOUT)[0]
    finally:
        server.kill(), site.kill()
    assert site.returncode == 1 and "Traceback" not in said, said[-3000:]
    assert "error: this site's base (vocabulary fingerprint" in said and "every site trains on the same base" in said
    assert server.returncode == 1 and "error: no site's update was aggregated in 1 round; nothing to write" in out
    assert not list((tmp_path / "fed").glob("*.safetensors"))
