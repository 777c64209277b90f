from pathlib import Path

import pytest

from coffer.atomic import atomic_file


def test_the_file_appears_whole_and_private(tmp_path: Path) -> None:
    path = tmp_path / "out.bin"
    path.write_bytes(b"old")
    with atomic_file(path) as f:
        f.write(b"new")
        assert path.read_bytes() == b"old"
    assert path.read_bytes() == b"new"
    assert path.stat().st_mode & 0o777 == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["out.bin"]


@pytest.mark.parametrize("error", [OSError, KeyboardInterrupt])
def test_a_failure_leaves_the_old_file_and_no_temp(
    tmp_path: Path, error: type[BaseException]
) -> None:
    path = tmp_path / "out.bin"
    path.write_bytes(b"old")

    def write_half() -> None:
        with atomic_file(path) as f:
            f.write(b"half")
            raise error

    with pytest.raises(error):
        write_half()
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.bin"]
