import os
import stat

import pytest

from lowbudget.io import atomic_write, atomic_write_text


def test_atomic_write_is_0644_and_leaves_no_temp(tmp_path):
    path = atomic_write_text(tmp_path / "a" / "f.txt", "hello")
    assert path.read_text() == "hello"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o644
    assert [p.name for p in path.parent.iterdir()] == ["f.txt"]


def test_failed_write_keeps_the_old_file(tmp_path):
    target = atomic_write_text(tmp_path / "f.txt", "old")

    def crash(tmp):
        tmp.write_text("half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        atomic_write(target, crash)
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["f.txt"]
