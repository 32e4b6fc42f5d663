"""The one series reader (models/series.py): the viewer and the models see the same slices in the
same order, whatever the order of the files, so that a heatmap slice lies on its image."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest

from models.inference import ModelRunError, read_ct
from models.phantoms import ct_series, head_phantom, uid
from models.series import SeriesError, SliceKey, read_series, slice_order
from readingroom.errors import ReadingRoomError
from workstation.viewer import ViewerError, heatmap_layer, load_volume


def _write(tmp_path, datasets, order=None):
    """Save the datasets as files named in ``order`` (a permutation): file order != slice order."""
    order = list(range(len(datasets))) if order is None else list(order)
    paths = []
    for n, k in enumerate(order):
        path = tmp_path / f"f{n:03d}-{uid('name', k)[-6:]}.dcm"
        datasets[k].save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def _agree(paths):
    """Read with both callers; assert the same order and pixels; return (viewer volume, CT volume)."""
    vol = load_volume("s", paths)
    ct = read_ct(paths)
    file_uids = [str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID) for p in paths]
    assert vol.sop_uids == [file_uids[i] for i in ct.order]
    assert sorted(ct.order) == list(range(len(paths)))
    if not (ct.flip_rows or ct.flip_cols):
        assert np.array_equal(vol.pixels, ct.hu)
    return vol, ct


def _z(path) -> float:
    return float(pydicom.dcmread(path, stop_before_pixels=True).ImagePositionPatient[2])


@pytest.mark.parametrize("arrangement", ["in order", "reversed", "shuffled"])
def test_viewer_and_inference_read_the_same_slice_order(tmp_path, arrangement):
    datasets = ct_series(head_phantom(7, size=32, seed=2), key=f"agree-{arrangement}")
    order = {"in order": range(7), "reversed": range(6, -1, -1),
             "shuffled": np.random.default_rng(5).permutation(7)}[arrangement]
    paths = _write(tmp_path, datasets, order)
    vol, ct = _agree(paths)
    # inferior to superior: the positions of the volume's slices rise
    z = [_z(paths[i]) for i in ct.order]
    assert z == sorted(z) and len(set(z)) == 7
    expected = np.stack([datasets[k].pixel_array.astype(np.float32) - 1024 for k in range(7)])
    assert np.array_equal(vol.pixels, expected)


def test_the_position_wins_over_the_instance_number(tmp_path):
    """Instance numbers that run against the positions (or are scrambled) do not change the order."""
    datasets = ct_series(head_phantom(6, size=32, seed=3), key="instance-vs-position")
    for ds, number in zip(datasets, [4, 6, 1, 2, 5, 3]):
        ds.InstanceNumber = number
    paths = _write(tmp_path, datasets, [3, 0, 5, 1, 4, 2])
    vol, ct = _agree(paths)
    assert [_z(paths[i]) for i in ct.order] == [k * 5.0 for k in range(6)]


def test_without_positions_the_instance_number_orders(tmp_path):
    datasets = ct_series(head_phantom(5, size=32, seed=4), key="no-position")
    for ds, number in zip(datasets, [3, 1, 5, 2, 4]):
        del ds.ImagePositionPatient
        ds.InstanceNumber = number
    paths = _write(tmp_path, datasets, [4, 2, 0, 3, 1])
    vol, ct = _agree(paths)
    numbers = [int(pydicom.dcmread(paths[i], stop_before_pixels=True).InstanceNumber) for i in ct.order]
    assert numbers == [1, 2, 3, 4, 5]


def test_a_flipped_orientation_keeps_the_order_and_only_the_models_flip(tmp_path):
    datasets = ct_series(head_phantom(4, size=32, seed=5), key="flipped")
    for ds in datasets:
        ds.ImageOrientationPatient = [-1, 0, 0, 0, -1, 0]
    paths = _write(tmp_path, datasets, [2, 0, 3, 1])
    vol, ct = _agree(paths)
    assert ct.flip_rows and ct.flip_cols
    assert np.array_equal(ct.hu, vol.pixels[:, ::-1, ::-1])


def test_real_sample_files_in_shuffled_order(tmp_path, samples):
    """The pydicom-data head CT in three transfer syntaxes (explicit VR, JPEG 2000 lossless),
    made into one series whose file order, instance numbers and positions all disagree."""
    names = ["693_UNCI.dcm", "693_J2KR.dcm", "693_UNCR.dcm"]
    datasets = []
    for k, (name, z, number) in enumerate(zip(names, [57.0, 47.0, 52.0], [1, 3, 2])):
        ds = pydicom.dcmread(samples / name)
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = uid("real-series", k)
        ds.ImagePositionPatient = [-122.5, -112.4, z]
        ds.InstanceNumber = number
        datasets.append(ds)
    paths = _write(tmp_path, datasets, [2, 0, 1])
    vol, ct = _agree(paths)
    assert [_z(paths[i]) for i in ct.order] == [47.0, 52.0, 57.0]
    assert ct.thickness_mm == pytest.approx(float(datasets[0].SliceThickness or 5.0))


def test_a_heatmap_in_file_order_lands_on_its_viewer_slice(tmp_path):
    """run_ct hands the heatmap back in the series' file order (with their SOP UIDs); the viewer
    finds each slice's map by UID: the map computed on model slice j is shown on viewer slice j."""
    datasets = ct_series(head_phantom(6, size=32, seed=6), key="heat")
    paths = _write(tmp_path, datasets, np.random.default_rng(8).permutation(6))
    vol, ct = _agree(paths)
    model_heat = np.stack([np.full((4, 4), j / 10, np.float32) for j in range(6)])   # per model slice
    in_files = np.empty_like(model_heat)
    in_files[ct.order] = model_heat                                                  # as run_ct does
    file_uids = [str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID) for p in paths]
    for j in range(6):
        assert heatmap_layer(in_files, vol, j, file_uids)[0, 0] == pytest.approx(j / 10)


def test_slice_order_rule():
    keys = [SliceKey(10.0, 1, 0), SliceKey(-5.0, 2, 1), SliceKey(10.0, 0, 2), SliceKey(0.0, None, 3)]
    assert slice_order(keys) == [1, 3, 2, 0]                 # position, then instance number
    keys[3] = SliceKey(None, 9, 3)                            # one image without a position: instance numbers
    assert slice_order(keys) == [2, 0, 1, 3]
    frames = [SliceKey(None, None, 0, 1), SliceKey(None, None, 0, 0), SliceKey(None, 1, 1)]
    assert slice_order(frames) == [2, 1, 0]                  # numbered first, then file and frame order
    assert slice_order([]) == []


def test_errors_are_readingroom_errors_and_say_why(tmp_path):
    assert issubclass(ViewerError, ReadingRoomError) and issubclass(ModelRunError, ReadingRoomError)
    assert issubclass(SeriesError, ReadingRoomError)
    paths = _write(tmp_path, ct_series(head_phantom(3, size=32), key="one-bad"))
    paths[1].write_bytes(b"not dicom")
    with pytest.raises(ModelRunError, match="cannot decode image 2"):
        read_ct(paths)                                        # the models: strict
    vol = load_volume("s", paths)                             # the viewer: shows what it can
    assert vol.slices == 2
    lenient = read_series(paths, strict=False)
    assert len(lenient.problems) == 1 and list(lenient.files) == [0, 2]
    with pytest.raises(ViewerError, match="no stored images"):
        load_volume("none", [])
