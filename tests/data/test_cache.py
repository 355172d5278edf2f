import cv2
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


def _labels_csv(folder, rows):
    lines = ["path,class,patient,split"] + [",".join(row) for row in rows]
    (folder / "labels.csv").write_text("\n".join(lines) + "\n")
    return folder / "labels.csv"


def _site(tmp_path, count=8):
    site = tmp_path / "site"
    site.mkdir()
    for i in range(count):
        cv2.imwrite(str(site / f"x{i}.png"), xray_like(i))
    return site


def test_edited_labels_and_roles_are_read_fresh_over_a_warm_cache(tmp_path):
    site = _site(tmp_path)
    rows = [[f"x{i}.png", "normal", f"p{i}", "train"] for i in range(8)]
    first = prepare_folder(_labels_csv(site, rows), size=32, cache_dir=tmp_path / "cache")
    assert first.data.labels.tolist() == [0] * 8 and set(first.data.splits) == {"train"}
    # Relabel three images viral, move two to test and give one another patient: nothing is decoded again,
    # and every edit is seen.
    for i in (0, 1, 2):
        rows[i][1] = "viral"
    rows[6][3] = rows[7][3] = "test"
    rows[5][2] = "someone-else"
    again = prepare_folder(_labels_csv(site, rows), size=32, cache_dir=tmp_path / "cache")
    assert (again.decoded, again.reused) == (0, 8)
    assert again.data.labels.tolist() == [2, 2, 2, 0, 0, 0, 0, 0]
    assert again.data.splits.tolist() == ["train"] * 6 + ["test"] * 2
    assert again.data.patients[5] == "someone-else"
    np.testing.assert_array_equal(first.data.images, again.data.images)


def test_edited_image_bytes_give_the_new_pixels(tmp_path):
    site = _site(tmp_path)
    csv_path = _labels_csv(site, [[f"x{i}.png", "normal", f"p{i}", "train"] for i in range(8)])
    prepare_folder(csv_path, size=32, cache_dir=tmp_path / "cache")
    cv2.imwrite(str(site / "x3.png"), 255 - xray_like(3))
    result = prepare_folder(csv_path, size=32, cache_dir=tmp_path / "cache")
    assert (result.decoded, result.reused) == (1, 7)
    expected = cv2.resize(255 - xray_like(3), (32, 32), interpolation=cv2.INTER_AREA)
    np.testing.assert_array_equal(result.data.images[3], expected)


@pytest.mark.parametrize("damage", ["flip-pixels", "truncate", "garbage-index", "garbage-key"])
def test_a_damaged_cache_is_rebuilt_not_trusted(tmp_path, damage):
    src = write_archive(tmp_path / "chest_xray")
    first = prepare_folder(src, size=32, cache_dir=tmp_path / "cache")
    expected = np.array(first.data.images)
    folder = first.folder
    images = folder / "images.npy"
    if damage == "flip-pixels":  # same size, other pixels: only the recorded hash can tell
        raw = bytearray(images.read_bytes())
        raw[-100:] = bytes(255 - b for b in raw[-100:])
        images.write_bytes(bytes(raw))
    elif damage == "truncate":
        images.write_bytes(images.read_bytes()[:1000])
    elif damage == "garbage-index":
        (folder / "index.csv").write_text("nonsense\n\x00\x01")
    else:
        (folder / "key.json").write_text("{not json")
    again = prepare_folder(src, size=32, cache_dir=tmp_path / "cache")
    assert (again.decoded, again.reused) == (12, 0)
    np.testing.assert_array_equal(again.data.images, expected)


def test_a_labels_csv_split_column_wins_over_paths_outside_its_folder(tmp_path):
    site = _site(tmp_path)
    elsewhere = tmp_path / "csvs"
    elsewhere.mkdir()
    rows = [[str(site / f"x{i}.png"), "normal" if i < 4 else "bacterial", f"p{i}", "test"] for i in range(8)]
    result = prepare_folder(_labels_csv(elsewhere, rows), size=32, cache_dir=tmp_path / "cache")
    assert [p.reason.split(":")[0] for p in result.problems] == ["no images of Viral Pneumonia"]
    assert len(result.data) == 8 and set(result.data.splits) == {"test"}
