"""Evaluation metrics, each checked against an independent computation on tiny data."""

import itertools
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, PngImagePlugin

from lowbudget.errors import LowbudgetError
from lowbudget.evaluate.classifier import ClassifierConfig, auc, downstream
from lowbudget.evaluate.diversity import BETAS, diversity, ms_ssim, n_scales
from lowbudget.evaluate.images import labelled_images
from lowbudget.evaluate.memorisation import memorisation
from lowbudget.evaluate.realism import FeatureExtractor, load_extractor, realism

from helpers import assert_one_line_error, run


def save_gray(path: Path, arr: np.ndarray, prompt: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    info = None
    if prompt is not None:
        info = PngImagePlugin.PngInfo()
        info.add_text("lowbudget", json.dumps({"prompt": prompt}))
    Image.fromarray((np.clip(arr, 0, 1) * 255).astype(np.uint8)).save(path, pnginfo=info)
    return path


def blobs(n: int, seed: int, size: int = 48, bright: float = 0.5) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size]
    out = []
    for _ in range(n):
        cy, cx, r = rng.uniform(12, size - 12, 2).tolist() + [rng.uniform(5, 10)]
        img = 0.2 + bright * (((y - cy) ** 2 + (x - cx) ** 2) < r**2) + rng.normal(0, 0.03, (size, size))
        out.append(img)
    return out


# ---------------------------------------------------------------- MS-SSIM, independently


def _gauss_filter(img: np.ndarray, size=11, sigma=1.5) -> np.ndarray:
    g = np.exp(-((np.arange(size) - size // 2) ** 2) / (2 * sigma**2))
    g /= g.sum()
    rows = np.array([np.convolve(r, g, mode="valid") for r in img])
    return np.array([np.convolve(c, g, mode="valid") for c in rows.T]).T


def _ms_ssim_reference(a: np.ndarray, b: np.ndarray, k: int) -> float:
    c1, c2 = 0.01**2, 0.03**2
    betas = np.array(BETAS[:k]) / sum(BETAS[:k])
    value = 1.0
    for j in range(k):
        mx, my = _gauss_filter(a), _gauss_filter(b)
        sxx, syy, sxy = _gauss_filter(a * a) - mx**2, _gauss_filter(b * b) - my**2, _gauss_filter(a * b) - mx * my
        cs = np.mean((2 * sxy + c2) / (sxx + syy + c2))
        if j == k - 1:
            ssim = np.mean((2 * mx * my + c1) * (2 * sxy + c2) / ((mx**2 + my**2 + c1) * (sxx + syy + c2)))
            value *= max(ssim, 0) ** betas[j]
        else:
            value *= max(cs, 0) ** betas[j]
            a = a.reshape(a.shape[0] // 2, 2, a.shape[1] // 2, 2).mean(axis=(1, 3))
            b = b.reshape(b.shape[0] // 2, 2, b.shape[1] // 2, 2).mean(axis=(1, 3))
    return float(value)


@pytest.mark.parametrize("size", [48, 64, 192])
def test_ms_ssim_matches_a_direct_computation(size):
    rng = np.random.default_rng(size)
    a = rng.random((size, size))
    b = np.clip(a + rng.normal(0, 0.1, a.shape), 0, 1)  # related images: all terms positive
    got = float(ms_ssim(torch.tensor(a)[None, None], torch.tensor(b)[None, None]))
    assert got == pytest.approx(_ms_ssim_reference(a, b, n_scales(size)), rel=1e-4)
    assert n_scales(192) == 5 and n_scales(64) == 3 and float(ms_ssim(torch.tensor(a)[None, None], torch.tensor(a)[None, None])) == pytest.approx(1.0)


def test_within_prompt_diversity_groups_by_stored_prompt(tmp_path):
    same = blobs(1, 0)[0]
    for i in range(4):  # prompt A: four identical images -> MS-SSIM 1
        save_gray(tmp_path / "gen" / f"a{i}.png", same, prompt="A")
    for i, img in enumerate(blobs(4, 1)):  # prompt B: four different images
        save_gray(tmp_path / "gen" / f"b{i}.png", img, prompt="B")
    for i, img in enumerate(blobs(8, 2)):
        save_gray(tmp_path / "real" / f"r{i}.png", img)
    result = diversity(tmp_path / "gen", tmp_path / "real", size=48)
    assert result["grouping"] == "prompt" and result["n_groups"] == 2 and result["n_pairs"] == 12
    assert sorted(result["group_scores"])[1] == pytest.approx(1.0)
    low = sorted(result["group_scores"])[0]
    assert low < 0.9 and result["ms_ssim_mean"] == pytest.approx((1.0 + low) / 2)
    assert 0 < result["reference_ms_ssim_mean"] < 0.9


# ---------------------------------------------------------------- FID and KID, independently


@pytest.fixture(scope="module")
def extractor_file(tmp_path_factory):
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 5, 2), torch.nn.ReLU(), torch.nn.Conv2d(8, 16, 5, 2),
                              torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(2), torch.nn.Flatten())  # 64 features
    path = tmp_path_factory.mktemp("x") / "tiny-extractor.pt"
    torch.jit.trace(net.eval(), torch.rand(1, 3, 32, 32)).save(str(path))
    return path


def _fid_direct(f1: np.ndarray, f2: np.ndarray) -> float:
    mu1, mu2 = f1.mean(0), f2.mean(0)
    s1, s2 = np.cov(f1, rowvar=False), np.cov(f2, rowvar=False)
    eig = np.linalg.eigvals(s1 @ s2)  # tr sqrt(S1 S2) = sum of sqrt of its (non-negative) eigenvalues
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.sqrt(np.clip(eig.real, 0, None)).sum())


def _kid_direct(f1: np.ndarray, f2: np.ndarray) -> float:
    d = f1.shape[1]
    k = lambda a, b: (a @ b.T / d + 1) ** 3  # noqa: E731 -- the polynomial kernel of KID
    m = len(f1)
    kxx, kyy, kxy = k(f1, f1), k(f2, f2), k(f1, f2)
    return float((kxx.sum() - np.trace(kxx)) / (m * (m - 1)) + (kyy.sum() - np.trace(kyy)) / (m * (m - 1)) - 2 * kxy.mean())


def test_fid_and_kid_match_direct_computations(tmp_path, extractor_file):
    for i, img in enumerate(blobs(40, 3)):
        save_gray(tmp_path / "real" / f"{i:02d}.png", img)
    for i, img in enumerate(blobs(40, 4, bright=0.3)):
        save_gray(tmp_path / "gen" / f"{i:02d}.png", img)
    net = load_extractor(extractor_file, input_size=32)
    result = realism(tmp_path / "real", tmp_path / "gen", net, size=48, batch_size=16, kid_subsets=1, kid_subset_size=40)
    from lowbudget.evaluate.images import iter_batches, list_images

    feats = [np.concatenate([net(b).double().numpy() for b, _ in iter_batches(list_images(tmp_path / d), 48, 16)])
             for d in ("real", "gen")]
    assert result["fid"] == pytest.approx(_fid_direct(*feats), rel=1e-3)
    assert result["kid"] == pytest.approx(_kid_direct(*feats), rel=2e-3)  # torchmetrics sums in float32
    assert result["features"] == 64 and result["fid"] > 0


def test_extractor_errors_say_how_to_supply_one(tmp_path):
    with pytest.raises(LowbudgetError, match="realism needs a feature extractor; give --extractor FILE"):
        load_extractor(None)
    (tmp_path / "w.safetensors").write_bytes(b"")
    with pytest.raises(LowbudgetError, match="--architecture resnet18"):
        load_extractor(tmp_path / "w.safetensors")
    (tmp_path / "junk.pt").write_bytes(b"junk")
    with pytest.raises(LowbudgetError, match="is not a TorchScript module"):
        load_extractor(tmp_path / "junk.pt")


def test_resnet18_safetensors_extractor(tmp_path):
    from safetensors.torch import save_file

    from lowbudget.evaluate.networks import ResNet18

    net = ResNet18(width=8)
    save_file(net.state_dict(), tmp_path / "r.safetensors")
    ext = load_extractor(tmp_path / "r.safetensors", architecture="resnet18", input_size=32)
    assert isinstance(ext, FeatureExtractor) and ext.num_features == 64
    standard = sum(p.numel() for p in ResNet18(num_classes=1000).parameters())
    assert standard == 11_689_512  # the published ResNet-18 parameter count


# ---------------------------------------------------------------- classifier


def test_auc_matches_pairwise_counting():
    rng = np.random.default_rng(0)
    scores = np.round(rng.random(60), 1)  # many ties
    labels = rng.integers(0, 2, 60)
    pos, neg = scores[labels == 1], scores[labels == 0]
    brute = np.mean([1.0 if p > n else 0.5 if p == n else 0.0 for p, n in itertools.product(pos, neg)])
    assert auc(torch.tensor(scores), torch.tensor(labels)) == pytest.approx(brute)
    probs = torch.softmax(torch.tensor(rng.normal(size=(60, 3))), -1)
    three = torch.tensor(rng.integers(0, 3, 60))
    ovr = [auc(probs[:, k], (three == k).long()) for k in range(3)]
    assert auc(probs, three) == pytest.approx(sum(ovr) / 3)


def test_downstream_protocol_on_separable_classes(tmp_path):
    for k, (cls, bright) in enumerate((("benign", 0.0), ("malignant", 0.7))):  # no blob vs a bright blob
        for i, img in enumerate(blobs(20, 10 + k, size=32, bright=bright)):
            save_gray(tmp_path / "real" / cls / f"{i}.png", img)
        for i, img in enumerate(blobs(20, 20 + k, size=32, bright=bright)):
            save_gray(tmp_path / "syn" / cls / f"{i}.png", img)
    real = labelled_images(tmp_path / "real")
    syn = labelled_images(tmp_path / "syn", classes=real.classes)
    cfg = ClassifierConfig(size=32, steps=80, batch_size=16, eval_every=10, seeds=(0, 1), width=8)
    result = downstream(real, syn, cfg=cfg, log=lambda m: None)
    assert set(result["settings"]) == {"real", "real+synthetic", "synthetic"}
    assert result["settings"]["real+synthetic"]["n_train"] == result["settings"]["real"]["n_train"] + 40
    assert result["n_test"] == 8 and result["auc_mean"] > 0.9  # brightness separates the classes


# ---------------------------------------------------------------- memorisation


def test_memorisation_flags_copies_of_training_images(tmp_path, extractor_file):
    train = blobs(20, 5)
    for i, img in enumerate(train):
        save_gray(tmp_path / "train" / f"t{i:02d}.png", img)
    save_gray(tmp_path / "gen" / "copy-a.png", train[3])
    save_gray(tmp_path / "gen" / "copy-b.png", train[11])
    for i, img in enumerate(blobs(6, 6)):
        save_gray(tmp_path / "gen" / f"new-{i}.png", img)
    result = memorisation(tmp_path / "gen", tmp_path / "train", size=48, percentile=5)
    # the same by brute force: RMS pixel distances, leave-one-out real-to-real reference, p5 threshold
    load = lambda p: np.asarray(Image.open(p), dtype=np.float64) / 255  # noqa: E731
    train_px = np.stack([load(p) for p in sorted((tmp_path / "train").iterdir())])
    gen_paths = sorted((tmp_path / "gen").iterdir())
    rms = lambda a, b: np.sqrt(((a - b) ** 2).mean(axis=(-2, -1)))  # noqa: E731
    ref = [np.delete(rms(train_px, t), i).min() for i, t in enumerate(train_px)]
    threshold = np.quantile(ref, 0.05)
    nn = {p.name: rms(train_px, load(p)) for p in gen_paths}
    expected = sorted(name for name, d in nn.items() if d.min() < threshold)
    assert {"copy-a.png", "copy-b.png"} <= set(expected)
    assert sorted(Path(p).name for p in result["flagged"]) == expected
    assert result["flagged_fraction"] == pytest.approx(len(expected) / 8)
    assert result["spaces"]["pixel"]["threshold"] == pytest.approx(threshold, rel=1e-4)
    nearest = {Path(n["generated"]).name: n for n in result["spaces"]["pixel"]["nearest"]}
    for name, d in nn.items():
        assert nearest[name]["distance"] == pytest.approx(d.min(), rel=1e-4, abs=1e-6)
        assert Path(nearest[name]["training"]).name == f"t{d.argmin():02d}.png"

    net = load_extractor(extractor_file, input_size=32)  # feature space: copies are at distance 0 there too
    feat = memorisation(tmp_path / "gen", tmp_path / "train", extractor=net, size=48, percentile=5)
    by_name = {Path(n["generated"]).name: n for n in feat["spaces"]["feature"]["nearest"]}
    assert by_name["copy-b.png"]["distance"] < 1e-5 and Path(by_name["copy-b.png"]["training"]).name == "t11.png"


# ---------------------------------------------------------------- CLI


def test_evaluate_commands_write_json_markdown_and_charts(monkeypatch, capsys, tmp_path, extractor_file):
    for i, img in enumerate(blobs(8, 8)):
        save_gray(tmp_path / "real" / f"{i}.png", img)
        save_gray(tmp_path / "gen" / f"{i}.png", img + 0.05)
    out = tmp_path / "eval"
    ext = ["--extractor", extractor_file, "--input-size", 32]
    for args, key in ((["diversity", "--generated", tmp_path / "gen", "--real", tmp_path / "real", "--size", 48], "ms_ssim_mean"),
                      (["realism", "--real", tmp_path / "real", "--generated", tmp_path / "gen", *ext], "fid"),
                      (["memorisation", "--generated", tmp_path / "gen", "--training", tmp_path / "real", *ext], "flagged_fraction")):
        code, stdout, err = run(monkeypatch, capsys, "evaluate", *args, "--output", out)
        assert code == 0, err
        part = args[0]
        assert key in json.loads((out / f"{part}.json").read_text()) and (out / f"{part}.md").is_file()
        charts = [p.name for p in out.iterdir() if p.suffix == ".png" and p.name.startswith(part)]
        assert charts
        page = (out / f"{part}.html").read_text()  # the same report for a browser, its charts shown
        assert "<table>" in page and all(f"src='{c}'" in page for c in charts)
    code, _, err = run(monkeypatch, capsys, "evaluate", "realism", "--real", tmp_path / "real", "--generated", tmp_path / "gen")
    assert_one_line_error(code, err, r"realism needs a feature extractor; give --extractor FILE")
    code, _, err = run(monkeypatch, capsys, "evaluate", "classifier", "--real", tmp_path / "real")
    assert_one_line_error(code, err, r"put each image in a sub-folder named by its class")


def test_evaluate_all_runs_every_part(monkeypatch, capsys, tmp_path, extractor_file):
    for k, cls in enumerate(("a", "b")):
        for i, img in enumerate(blobs(6, 30 + k, bright=0.2 + 0.5 * k)):
            save_gray(tmp_path / "real" / cls / f"{i}.png", img)
            save_gray(tmp_path / "gen" / cls / f"{i}.png", np.clip(img + 0.02, 0, 1))
    out = tmp_path / "eval"
    code, _, err = run(monkeypatch, capsys, "evaluate", "all", "--real", tmp_path / "real", "--generated", tmp_path / "gen",
                       "--extractor", extractor_file, "--input-size", 32, "--steps", 4, "--output", out)
    assert code == 0, err
    for part, key in (("diversity", "ms_ssim_mean"), ("realism", "kid"), ("memorisation", "flagged_fraction"),
                      ("classifier", "auc_std")):
        assert key in json.loads((out / f"{part}.json").read_text()), part
