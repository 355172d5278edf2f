import numpy as np
import pytest

from pneumo.data.archive import load_records
from pneumo.data.cache import prepare, prepare_folder
from tests.conftest import jpeg_bytes, write_archive, xray_like


def test_prepare_then_reuse(tmp_path):
    src = write_archive(tmp_path / "chest_xray")
    first = prepare_folder(src, size=32, cache_dir=tmp_path / "cache")
    assert (first.decoded, first.reused) == (12, 0)
    assert first.data.images.shape == (12, 32, 32) and first.data.images.dtype == np.uint8
    again = prepare_folder(src, size=32, cache_dir=tmp_path / "cache")
    assert (again.decoded, again.reused) == (0, 12)
    assert isinstance(again.data.images, np.memmap)  # memory-mapped, not read
    np.testing.assert_array_equal(first.data.images, again.data.images)


def test_changed_file_rebuilds_only_that_file(tmp_path):
    src = write_archive(tmp_path / "chest_xray")
    prepare_folder(src, size=32, cache_dir=tmp_path / "cache")
    changed = src / "train" / "NORMAL" / "IM-0000-0000.jpeg"
    changed.write_bytes(jpeg_bytes(255 - xray_like(0)))
    result = prepare_folder(src, size=32, cache_dir=tmp_path / "cache")
    assert (result.decoded, result.reused) == (1, 11)


def test_changed_size_is_a_separate_cache(tmp_path):
    src = write_archive(tmp_path / "chest_xray")
    prepare_folder(src, size=32, cache_dir=tmp_path / "cache")
    result = prepare_folder(src, size=48, cache_dir=tmp_path / "cache")
    assert result.decoded == 12 and result.data.size == 48


def test_bad_file_is_reported_and_the_rest_prepared(tmp_path):
    src = write_archive(tmp_path / "chest_xray")
    records, _ = load_records(src)
    # Break one file after it was scanned: the cache must report it and carry on.
    (src / records[0].path).write_bytes(jpeg_bytes(xray_like(0))[:500])
    result = prepare(records, src, size=32, cache_dir=tmp_path / "cache", workers=1)
    assert len(result.data) == 11
    assert [p.reason for p in result.problems] == ["truncated JPEG (the end-of-image marker is missing)"]
    assert records[0].path in result.problems[0].source


def test_size_out_of_range(tmp_path):
    with pytest.raises(ValueError, match="The 'size' of prepare must be between 16 and 1024 pixels. Got 8 instead."):
        prepare([], tmp_path, size=8, cache_dir=tmp_path)
