import os
import stat

from attnseg.io.atomic import atomic_path, atomic_write, atomic_write_text


def test_atomic_files_get_ordinary_permissions(tmp_path):
    mask = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "a.txt", "hello")
        with atomic_write(tmp_path / "b.bin") as handle:
            handle.write(b"x")
        with atomic_path(tmp_path / "c.nii.gz") as tmp:
            tmp.write_bytes(b"y")
    finally:
        os.umask(mask)
    for name in ("a.txt", "b.bin", "c.nii.gz"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o644
    assert (tmp_path / "a.txt").read_text() == "hello"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt", "b.bin", "c.nii.gz"]  # no temporaries left
