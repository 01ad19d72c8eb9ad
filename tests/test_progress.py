"""What a person waiting sees: progress with a time left, plain lines off a terminal, labelled
figures, the report as HTML."""

from __future__ import annotations

import io
import re

from PIL import Image

from helpers import ROOT, run
from lowbudget.progress import Progress, clock, plural
from lowbudget.viz import image_grid, write_html


def test_plain_lines_count_the_work_and_estimate_the_time_left(monkeypatch):
    now = [100.0]
    monkeypatch.setattr("lowbudget.progress.time.monotonic", lambda: now[0])
    out = io.StringIO()
    with Progress(10, "generate", stream=out, every=5) as bar:
        for _ in range(4):
            now[0] += 2.0  # 2 s a step
            bar.update()
        bar.doing("writing the grid")
    lines = out.getvalue().splitlines()
    # a line at most every 5 s: after step 3 (6 s); then what it is doing, and the end
    assert lines == ["generate: 3/10 steps (30%), 0:06 so far, about 0:14 left",
                     "generate: writing the grid", "generate: done, 0:08"]


def test_a_resumed_job_paces_only_the_work_of_this_run(monkeypatch):
    now = [0.0]
    monkeypatch.setattr("lowbudget.progress.time.monotonic", lambda: now[0])
    bar = Progress(100, "train", stream=io.StringIO(), every=0, initial=90)
    now[0] += 10.0
    bar.update(5)  # 5 steps in 10 s: 5 left take 10 s more
    assert bar.seconds_left() == 10.0
    assert "95/100 steps (95%)" in bar.status()


def test_weighted_work_shows_a_share_and_quiet_shows_nothing():
    out = io.StringIO()
    with Progress(200, "benchmark", unit=None, stream=out, every=0) as bar:
        bar.update(50)
    assert out.getvalue().splitlines()[0].startswith("benchmark: 25%, ")
    quiet = io.StringIO()
    with Progress(10, "train", stream=quiet, every=0, enabled=False) as bar:
        bar.update(3), bar.doing("validation")
    assert quiet.getvalue() == ""


def test_words():
    assert [plural(1, "step"), plural(2, "step"), plural(1, "entry"), plural(3, "entry"), plural(0, "day")] == \
        ["1 step", "2 steps", "1 entry", "3 entries", "0 days"]
    assert [clock(5), clock(125), clock(3725)] == ["0:05", "2:05", "1:02:05"]


def test_grids_enlarge_small_images_and_label_rows_columns_and_cells():
    cell = Image.new("L", (64, 64), 128)
    plain = image_grid([[cell] * 3] * 2)
    labelled = image_grid([[cell] * 3] * 2, ["seed 0", "seed 1"], column_labels=["weight 0.0", "weight 0.5", "weight 1.0"],
                          title="from A to B")
    assert plain.width >= 3 * 128  # 64 px cells drawn at 128 px, pixel for pixel
    assert labelled.width > plain.width and labelled.height > plain.height  # a margin for the row labels, a header
    # the header and the margin hold dark text pixels; the plain grid's top left corner is white
    gray = labelled.convert("L")
    assert min(gray.crop((0, 0, labelled.width, 20)).getdata()) < 100
    assert min(gray.crop((0, 40, 40, labelled.height)).getdata()) < 100
    assert min(plain.convert("L").crop((0, 0, 5, 5)).getdata()) == 255


def test_html_renders_the_reports_markdown(tmp_path):
    md = "# Title <x>\n\n| a | b |\n|---|---|\n| `c` | 1.00 |\n\n![fig](fig.png)\n\ntext & more\n"
    page = write_html(md, tmp_path / "r.html", title="t").read_text()
    assert "<h1>Title &lt;x&gt;</h1>" in page
    assert "<table><tr><th>a</th><th>b</th></tr><tr><td><code>c</code></td><td>1.00</td></tr></table>" in page
    assert "<img alt='fig' src='fig.png'>" in page and "<p>text &amp; more</p>" in page


def test_generate_shows_progress_and_a_grid_of_rows(monkeypatch, capsys, tmp_path):
    code, _, err = run(monkeypatch, capsys, "generate", "a chest x-ray", "-n", "6", "--steps", "2", "-o", tmp_path)
    assert code == 0, err
    assert re.search(r"^generate: done, \d+:\d\d$", err, re.M), err  # off a terminal: plain lines
    assert "wrote 6 images and grid.png" in err
    grid = Image.open(tmp_path / "grid.png")
    assert grid.width > grid.height > 2 * 128  # two rows of four, not one column of six
    code, _, err = run(monkeypatch, capsys, "generate", "a chest x-ray", "-n", "1", "--steps", "2", "-o", tmp_path / "q",
                       "--quiet")
    assert code == 0 and "generate:" not in err and "wrote 1 image and grid.png" in err


def test_the_report_says_what_it_is_doing_and_writes_html(monkeypatch, capsys, tmp_path):
    code, _, err = run(monkeypatch, capsys, "phantom", "report", ROOT / "embeddings" / "effusion.safetensors",
                       "--finding", "effusion", "-n", "2", "--steps", "2", "-o", tmp_path)
    assert code == 0, err
    for stage in ("sampling 2 images for each of 3 prompts", "the interpolation strip", "the combination", "the inpainting"):
        assert f"report: {stage}" in err
    page = (tmp_path / "report.html").read_text()
    for png in ("before", "after", "fidelity", "interpolation", "combination", "inpainting"):
        assert f"src='{png}.png'" in page and (tmp_path / f"{png}.png").is_file()
    assert "<table>" in page
    panel = Image.open(tmp_path / "inpainting.png").convert("RGB")
    reds = sum(1 for r, g, b in panel.getdata() if r > 200 and g < 60 and b < 60)
    assert reds > 100  # the mask row outlines the box in red
