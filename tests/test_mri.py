"""MRI ROI crops: the tumour inside a fixed grid, other grids resampled, every bad input named."""

from __future__ import annotations

import h5py
import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from model.data import read_mri
from workflow.demo.design import LIVER_SEQUENCES, DemoSpec, truth_table
from workflow.demo.make import make_mri
from workflow.mri import MRIError, ROISettings, crop_patient, excluded_picture, qc_picture, roi_settings
from workflow.roi_file import (
    SEQUENCES,
    gather_rois,
    read_excluded_rois,
    read_rois,
    write_excluded_roi,
    write_patient_roi,
)

SEQ = list(LIVER_SEQUENCES)


@pytest.fixture(scope="module")
def patient(tmp_path_factory):
    folder = tmp_path_factory.mktemp("mri")
    spec = DemoSpec(kind="liver", seed=8, n_patients=3)
    make_mri(spec, truth_table(spec), "DL-0001", folder)
    return folder


def images(folder):
    return {s: str(folder / f"{s}.nii.gz") for s in SEQ}


def tumour_points(mask_path):
    mask = sitk.ReadImage(str(mask_path))
    idx = np.argwhere(sitk.GetArrayFromImage(mask) > 0)
    return np.asarray([mask.TransformIndexToPhysicalPoint([int(v) for v in p[::-1]]) for p in idx])


def inside_box(roi, points, slack=1e-6):
    direction = roi.direction.reshape(3, 3)
    local = (points - roi.box_mm[0]) @ direction
    extent = (roi.box_mm[1] - roi.box_mm[0]) @ direction
    return ((local >= -slack) & (local <= extent + slack)).all()


def test_crop_shape_box_and_normalisation(patient):
    roi = crop_patient(
        "DL-0001", images(patient), str(patient / "tumour_mask.nii.gz"), SEQ, ROISettings(roi_shape=(32, 40, 48))
    )
    assert roi.channels.shape == (5, 32, 40, 48) and roi.mask.shape == (32, 40, 48) and roi.present.all()
    assert inside_box(roi, tumour_points(patient / "tumour_mask.nii.gz"))
    tumour = roi.mask.astype(bool)
    for channel in roi.channels:
        assert abs(channel[tumour].mean()) < 1e-4 and abs(channel[tumour].std() - 1) < 1e-3
    # The margin: no tumour on the ROI's faces.
    assert not roi.mask[0].any() and not roi.mask[-1].any() and not roi.mask[:, :, 0].any()


def test_sequence_on_another_grid_is_resampled_into_register(patient, tmp_path):
    """t2w stored at half resolution with a shifted field of view still lines up with the mask."""
    image = sitk.ReadImage(str(patient / "t2w.nii.gz"))
    coarse = sitk.Resample(
        image,
        [s // 2 for s in image.GetSize()],
        sitk.Transform(),
        sitk.sitkLinear,
        image.GetOrigin(),
        [2 * s for s in image.GetSpacing()],
        image.GetDirection(),
    )
    sitk.WriteImage(coarse, str(tmp_path / "t2w.nii.gz"))
    paths = images(patient) | {"t2w": str(tmp_path / "t2w.nii.gz")}
    settings = ROISettings(normalise="none")
    fine = crop_patient("DL-0001", images(patient), str(patient / "tumour_mask.nii.gz"), SEQ, settings)
    mixed = crop_patient("DL-0001", paths, str(patient / "tumour_mask.nii.gz"), SEQ, settings)
    tumour = fine.mask.astype(bool)
    assert np.corrcoef(fine.channels[4].ravel(), mixed.channels[4].ravel())[0, 1] > 0.8
    assert (
        abs(mixed.channels[4][tumour].mean() - fine.channels[4][tumour].mean()) < 0.1 * fine.channels[4][tumour].mean()
    )


def test_missing_sequence(patient):
    paths = images(patient)
    del paths["delay"]
    with pytest.raises(MRIError, match=r"patient DL-0001: sequence 'delay' missing.*missing_sequence: zero"):
        crop_patient("DL-0001", paths, str(patient / "tumour_mask.nii.gz"), SEQ, ROISettings())
    roi = crop_patient(
        "DL-0001",
        paths,
        str(patient / "tumour_mask.nii.gz"),
        SEQ,
        ROISettings(missing_sequence="zero", roi_shape=(16, 16, 16)),
    )
    assert roi.present.tolist() == [True, False, True, True, True] and not roi.channels[1].any()


def test_empty_mask_nonfinite_and_misregistered_images(patient, tmp_path):
    mask = nib.load(patient / "tumour_mask.nii.gz")
    nib.save(nib.Nifti1Image(np.zeros(mask.shape, np.uint8), mask.affine), tmp_path / "empty.nii.gz")
    with pytest.raises(MRIError, match=r"patient P: tumour mask .*empty.nii.gz is empty"):
        crop_patient("P", images(patient), str(tmp_path / "empty.nii.gz"), SEQ, ROISettings())
    arterial = nib.load(patient / "arterial.nii.gz")
    data = arterial.get_fdata().astype(np.float32)
    data[3, 3, 3] = np.nan
    nib.save(nib.Nifti1Image(data, arterial.affine), tmp_path / "nan.nii.gz")
    with pytest.raises(MRIError, match=r"patient P: sequence 'arterial' .*nan.nii.gz has non-finite voxels"):
        crop_patient(
            "P",
            images(patient) | {"arterial": str(tmp_path / "nan.nii.gz")},
            str(patient / "tumour_mask.nii.gz"),
            SEQ,
            ROISettings(),
        )
    shifted = arterial.affine.copy()
    shifted[:3, 3] += 500.0
    nib.save(nib.Nifti1Image(arterial.get_fdata().astype(np.float32), shifted), tmp_path / "far.nii.gz")
    with pytest.raises(
        MRIError, match=r"patient P: sequence 'arterial' .*far.nii.gz\) does not cover the tumour.*registered"
    ):
        crop_patient(
            "P",
            images(patient) | {"arterial": str(tmp_path / "far.nii.gz")},
            str(patient / "tumour_mask.nii.gz"),
            SEQ,
            ROISettings(),
        )
    with pytest.raises(MRIError, match=r"patient P: mask file nowhere\.nii\.gz not found"):
        crop_patient("P", images(patient), "nowhere.nii.gz", SEQ, ROISettings())


RECOPY = "re-copy it and compare checksums (sha256sum) with the source"


def image_bytes(path):
    image = nib.load(path)
    return int(np.prod(image.shape)) * image.get_data_dtype().itemsize


def empty(source, path):
    path.write_bytes(b"")
    return f"an empty file (0 bytes); {RECOPY}"


def cut_gzip(source, path):
    path.write_bytes(source.read_bytes()[: source.stat().st_size // 2])
    return f"truncated: the file ends before the end of its image data ({image_bytes(source):,} bytes); {RECOPY}"


def cut_nii(source, path):
    nib.save(nib.load(source), path)
    path.write_bytes(path.read_bytes()[:-500])
    return f"truncated: the file ends before the end of its image data ({image_bytes(source):,} bytes); {RECOPY}"


def not_gzipped(source, path):
    nib.save(nib.load(source), path.with_suffix(""))
    path.with_suffix("").rename(path)
    return "not gzip-compressed although its name ends in .gz; rename it to end in .nii"


@pytest.mark.parametrize(
    ("name", "damage"),
    [("x.nii.gz", empty), ("x.nii.gz", cut_gzip), ("x.nii", cut_nii), ("x.nii.gz", not_gzipped)],
)
def test_empty_or_truncated_image_or_mask_is_named_with_patient_and_sequence(patient, tmp_path, name, damage):
    """SimpleITK reads a truncated NIfTI without a word: nibabel's full read names it."""
    bad = tmp_path / name
    what = damage(patient / "arterial.nii.gz", bad)
    mask = str(patient / "tumour_mask.nii.gz")
    with pytest.raises(MRIError) as refused:
        crop_patient("DL-0001", images(patient) | {"arterial": str(bad)}, mask, SEQ, ROISettings())
    assert str(refused.value) == f"patient DL-0001: sequence 'arterial' file {bad} is {what}"
    what = damage(patient / "tumour_mask.nii.gz", bad)
    with pytest.raises(MRIError) as refused:
        crop_patient("DL-0001", images(patient), str(bad), SEQ, ROISettings())
    assert str(refused.value) == f"patient DL-0001: mask file {bad} is {what}"


def test_patient_files_gather_into_one_cohort_file(patient, tmp_path):
    settings = roi_settings({"roi_shape": [8, 8, 8], "margin_mm": 5})
    paths = []
    for name in ("A", "B"):
        roi = crop_patient(name, images(patient), str(patient / "tumour_mask.nii.gz"), SEQ, settings)
        write_patient_roi(tmp_path / f"{name}.h5", name, roi, SEQ)
        paths.append(tmp_path / f"{name}.h5")
    qc_picture(tmp_path / "qc.png", "A", roi, SEQ)
    assert (tmp_path / "qc.png").stat().st_size > 5000
    assert gather_rois(paths, tmp_path / "roi.h5", {"cohort": "c"}) == 2
    patients, channels, masks = read_rois(tmp_path / "roi.h5")
    assert patients == ["A", "B"] and channels.shape == (2, 5, 8, 8, 8) and masks.shape == (2, 8, 8, 8)
    with h5py.File(tmp_path / "roi.h5") as h5:
        assert list(h5.attrs[SEQUENCES]) == SEQ and h5.attrs["cohort"] == "c"
        assert h5["spacing"].shape == (2, 3) and h5["present"][:].all()
    volumes, tumours = read_mri(tmp_path / "roi.h5", ["B", "A"])  # what training reads, in cohort order
    assert volumes.shape == (2, 5, 8, 8, 8) and tumours.dtype == bool and np.array_equal(tumours[1], masks[0] > 0)
    assert np.array_equal(volumes[1], channels[0])
    assert read_excluded_rois(tmp_path / "roi.h5") == {}


def test_an_excluded_patient_is_gathered_apart(patient, tmp_path):
    """mri_roi: on_error: exclude: the patient has no ROI, only the reason, wherever they come in the list."""
    settings = roi_settings({"roi_shape": [8, 8, 8], "margin_mm": 5})
    write_excluded_roi(tmp_path / "X.h5", "X", "patient X: tumour mask m.nii.gz is empty", SEQ)
    roi = crop_patient("A", images(patient), str(patient / "tumour_mask.nii.gz"), SEQ, settings)
    write_patient_roi(tmp_path / "A.h5", "A", roi, SEQ)
    assert gather_rois([tmp_path / "X.h5", tmp_path / "A.h5"], tmp_path / "roi.h5", {"cohort": "c"}) == 1
    patients, channels, _ = read_rois(tmp_path / "roi.h5")
    assert patients == ["A"] and channels.shape == (1, 5, 8, 8, 8)
    assert read_excluded_rois(tmp_path / "roi.h5") == {"X": "patient X: tumour mask m.nii.gz is empty"}
    with pytest.raises(ValueError, match=r"every patient's MRI was excluded: \{'X': 'patient X: tumour mask"):
        gather_rois([tmp_path / "X.h5"], tmp_path / "none.h5", {"cohort": "c"})
    excluded_picture(tmp_path / "qc.png", "X", "patient X: tumour mask m.nii.gz is empty")
    assert (tmp_path / "qc.png").stat().st_size > 2000


@pytest.mark.realdata
@pytest.mark.parametrize("case", ["brain1", "brain2", "breast1"])
def test_real_volumes_crop_around_every_label_voxel(shared_data, case, tmp_path):
    mri = shared_data / "mri"
    image, label = str(mri / f"{case}_image.nii.gz"), mri / f"{case}_label.nii.gz"
    roi = crop_patient(case, {"t1": image}, str(label), ["t1"], ROISettings(roi_shape=(32, 64, 64)))
    assert inside_box(roi, tumour_points(label))
    assert roi.mask.sum() > 0 and np.isfinite(roi.channels).all()
    qc_picture(tmp_path / "qc.png", case, roi, ["t1"])
    assert (tmp_path / "qc.png").stat().st_size > 5000
