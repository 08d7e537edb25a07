import pytest

from workflow.io import atomic_path


def test_atomic_path_renames_on_success(tmp_path):
    final = tmp_path / "sub" / "out.nii.gz"
    with atomic_path(final) as tmp:
        assert tmp.name.endswith(".nii.gz") and tmp.parent == final.parent
        tmp.write_text("data")
    assert final.read_text() == "data"
    assert list(final.parent.iterdir()) == [final]


def test_atomic_path_leaves_nothing_on_failure(tmp_path):
    final = tmp_path / "out.h5"
    with pytest.raises(RuntimeError), atomic_path(final) as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed")
    assert not final.exists()
    assert list(tmp_path.iterdir()) == []
