"""Patch features: fast and naive reading agree, equal timm on the same pixels, outputs, failures, weights."""

from __future__ import annotations

import re
from pathlib import Path

import cv2
import h5py
import numpy as np
import openslide
import pandas as pd
import pytest
import tifffile
import timm
import torch
from safetensors.torch import save_file
from torchvision.transforms import v2

from workflow.demo import tissue
from workflow.demo.design import item_rng
from workflow.demo.svs import write_aperio_svs
from workflow.device import claim_device
from workflow.features import extract as extract_module
from workflow.features.batches import plan_batches, write_batch_record
from workflow.features.clam import import_clam, write_clam_pt
from workflow.features.encoders import WeightsError, encoder_spec, load_encoder
from workflow.features.extract import FeatureError, FeatureSettings, SlideTask, extract_slides
from workflow.features.features_file import read_features
from workflow.features.reading import PatchReadError, SlideReader, plan_blocks, preprocess
from workflow.features.summary import summary
from workflow.tiling.coords import PatchGeometry, read_coords
from workflow.tiling.params import tiling_params
from workflow.tiling.tile import TileOutputs, tile_slide

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def encoder():
    return load_encoder(encoder_spec("resnet50_trunc"), "random")


def make_tiled_slide(tmp_path, mpp=0.25, downsamples=(1, 4, 16), name="s", key=0):
    """A small synthetic slide and its tiling output; returns (slide path, coords path)."""
    rng = item_rng(31, key)
    layout = tissue.random_layout(rng)
    slide = tmp_path / f"{name}.svs"
    tissue.write_slide(slide, layout, tissue.appearance(layout, 0.5, rng), mpp, round(10 / mpp), downsamples)
    out = TileOutputs(*(str(tmp_path / f"{name}.{e}") for e in ("coords.h5", "geojson", "mask.jpg", "grid.jpg")))
    tile_slide(name, slide, tiling_params({}), out)
    return str(slide), out.coords


@pytest.fixture(scope="module")
def slide40(tmp_path_factory):
    return make_tiled_slide(tmp_path_factory.mktemp("s40"))


def run(slide, coords, out, encoder, **settings):
    """One slide through the job-level extraction; its file attributes."""
    task = SlideTask("s", slide, coords, str(out))
    return extract_slides([task], encoder, FeatureSettings(**settings), CPU, threads=2)[0].attrs


def test_block_and_per_patch_reading_give_the_same_features(slide40, encoder, tmp_path):
    slide, coords = slide40
    run(slide, coords, tmp_path / "fast.h5", encoder, block=4)
    run(slide, coords, tmp_path / "naive.h5", encoder, block=1)
    fast, fast_xy, _ = read_features(tmp_path / "fast.h5")
    naive, naive_xy, _ = read_features(tmp_path / "naive.h5")
    assert fast.shape == (len(fast_xy), 1024) and np.array_equal(fast_xy, naive_xy)
    assert np.abs(fast - naive).max() <= 1e-5


def clam_reads(slide, xy, level, size):
    """Patches read as CLAM's extraction reads them: read_region(coord, patch_level, (patch_size, patch_size)), RGB."""
    with openslide.OpenSlide(slide) as wsi:
        return np.stack(
            [np.array(wsi.read_region((int(x), int(y)), level, (size, size)).convert("RGB")) for x, y in xy]
        )


def reference_features(pixels, attrs):
    """An independent path to the random-weight features: timm features_only + mean pool."""
    torch.manual_seed(0)
    full = timm.create_model("resnet50.tv_in1k", pretrained=False)
    trunk = timm.create_model("resnet50.tv_in1k", pretrained=False, features_only=True, out_indices=(3,))
    trunk.load_state_dict({k: v for k, v in full.state_dict().items() if not k.startswith(("layer4", "fc"))})
    trunk.eval()
    with torch.inference_mode():
        x = preprocess(torch.from_numpy(pixels), 224, attrs["mean"], attrs["std"])
        return trunk(x)[0].mean(dim=(2, 3)).numpy()


def test_features_equal_timm_on_the_same_pixels(slide40, encoder, tmp_path):
    """An independent path: per-patch read_region, torchvision resize, timm features_only + mean pool."""
    slide, coords = slide40
    run(slide, coords, tmp_path / "f.h5", encoder)
    ours, xy, attrs = read_features(tmp_path / "f.h5")
    with h5py.File(coords) as h5:
        size, level = int(h5["coords"].attrs["read_size"]), int(h5["coords"].attrs["read_level"])
    reference = reference_features(clam_reads(slide, xy[:8], level, size), attrs)
    assert np.abs(reference - ours[:8]).max() <= 1e-5


def write_clam_patches(path, xy, patch_level, patch_size, slide):
    """A coordinates file as CLAM's create_patches_fp writes it: 1-row chunks, CLAM's attributes only."""
    with openslide.OpenSlide(slide) as wsi:
        (w0, h0), (w, h) = wsi.level_dimensions[0], wsi.level_dimensions[patch_level]
    with h5py.File(path, "w") as h5:
        dataset = h5.create_dataset("coords", data=np.asarray(xy, np.int64), maxshape=(None, 2), chunks=(1, 2))
        clam_attrs = {
            "patch_size": patch_size,
            "patch_level": patch_level,
            "downsample": (w0 / w, h0 / h),
            "downsampled_level_dim": (w, h),
            "level_dim": (w, h),
            "name": "s",
            "save_path": str(path.parent),
        }
        dataset.attrs.update(clam_attrs)


def test_clam_patch_files_are_read_as_clam_reads_them(tmp_path, encoder):
    """CLAM's coordinates at a level whose downsample is fractional (2.0013): patch by patch, as CLAM reads."""
    texture = np.random.default_rng(3).integers(0, 256, (1281, 1537, 3), dtype=np.uint8)
    slide = tmp_path / "odd.svs"
    write_aperio_svs(slide, cv2.GaussianBlur(texture, (0, 0), 2), mpp=0.25, app_mag=40, downsamples=(1, 2, 8))
    xy = [(x, y) for y in (0, 512) for x in (0, 512, 1024)]
    write_clam_patches(tmp_path / "clam.h5", xy, 1, 256, slide)
    tiles = read_coords(tmp_path / "clam.h5")
    assert tiles.clam_compatible and tiles.status == "ok" and tiles.name == "s"
    assert tiles.geometry == PatchGeometry(1, 256, 512, (1537 / 768, 1281 / 640))
    per_patch = clam_reads(slide, xy, 1, 256)
    # Why: OpenSlide interpolates at the fractional level position, so a block read cut into patches differs.
    block, _, _ = SlideReader(str(slide), tiles.geometry).read_block(tiles.xy)
    assert not np.array_equal(block, per_patch)
    attrs = run(str(slide), str(tmp_path / "clam.h5"), tmp_path / "f.h5", encoder, block=4)
    ours, kept, _ = read_features(tmp_path / "f.h5")
    assert np.array_equal(kept, xy)
    assert np.abs(reference_features(per_patch, attrs) - ours).max() <= 1e-5


def test_preprocessing_matches_torchvision():
    """Resize and normalisation equal torchvision's on uint8 tensors (bilinear, antialiased)."""
    image = torch.randint(0, 256, (512, 512, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    transform = v2.Compose(
        [
            v2.Resize(224, interpolation=v2.InterpolationMode.BILINEAR, antialias=True),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(mean, std),
        ]
    )
    assert (preprocess(image[None], 224, mean, std)[0] - transform(image.permute(2, 0, 1))).abs().max() <= 1e-5


def test_level_with_integer_downsample_reads_identically(tmp_path, encoder):
    """A 40x scan with a 20x level: 256 px read at level 1, block and per-patch reads still agree."""
    slide, coords = make_tiled_slide(tmp_path, downsamples=(1, 2, 8))
    with h5py.File(coords) as h5:
        assert h5["coords"].attrs["read_level"] == 1 and h5["coords"].attrs["read_size"] == 256
    run(slide, coords, tmp_path / "a.h5", encoder, block=4)
    run(slide, coords, tmp_path / "b.h5", encoder, block=1)
    assert np.abs(read_features(tmp_path / "a.h5")[0] - read_features(tmp_path / "b.h5")[0]).max() <= 1e-5


def test_output_layout_and_attributes(slide40, encoder, tmp_path):
    slide, coords = slide40
    run(slide, coords, tmp_path / "f.h5", encoder, dtype="float16")
    with h5py.File(tmp_path / "f.h5") as h5, h5py.File(coords) as tiles:
        assert h5["features"].dtype == np.float16 and h5["features"].shape[1] == 1024
        assert np.array_equal(h5["coords"][:], tiles["coords"][:])
        assert h5["coords"].attrs["patch_size_level0"] == tiles["coords"].attrs["patch_size_level0"]
        assert h5["coords"].attrs["patch_level"] == 0 and h5["coords"].attrs["patch_size"] == 512
        attrs = dict(h5.attrs)
    assert attrs["encoder"] == "resnet50_trunc" and attrs["timm_name"] == "resnet50.tv_in1k"
    assert attrs["weights_source"].startswith("random") and len(attrs["weights_sha256"]) == 64
    assert attrs["input_size"] == 224 and attrs["dtype"] == "float16" and attrs["status"] == "ok"
    assert attrs["n_failed"] == 0 and attrs["n_patches"] == len(read_features(tmp_path / "f.h5")[0])


def test_plan_blocks_covers_every_patch_once():
    coords = np.array([[x, y] for y in range(0, 2560, 256) for x in range(0, 2560, 256)])
    blocks = plan_blocks(coords, 256, 4)
    assert sorted(np.concatenate(blocks).tolist()) == list(range(len(coords)))
    assert max(len(b) for b in blocks) == 16 and len(plan_blocks(coords, 256, 1)) == len(coords)


def test_a_killed_run_leaves_nothing_and_a_rerun_completes(slide40, encoder, tmp_path, monkeypatch):
    slide, coords = slide40
    calls = {"n": 0}
    real = extract_module.encode

    def dies_on_second_batch(*args):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt("killed")
        return real(*args)

    monkeypatch.setattr(extract_module, "encode", dies_on_second_batch)
    with pytest.raises(KeyboardInterrupt):
        run(slide, coords, tmp_path / "f.h5", encoder, batch_size=8)
    assert list(tmp_path.iterdir()) == []
    monkeypatch.setattr(extract_module, "encode", real)
    run(slide, coords, tmp_path / "f.h5", encoder, batch_size=8)
    assert read_features(tmp_path / "f.h5")[2]["status"] == "ok"


@pytest.fixture(scope="module")
def two_slides(tmp_path_factory):
    """Two different small slides (one 40x, one 20x) and their tiling outputs."""
    folder = tmp_path_factory.mktemp("two")
    return [make_tiled_slide(folder, 0.25, name="a", key=1), make_tiled_slide(folder, 0.5, name="b", key=2)]


def test_one_job_encodes_several_slides_as_separate_jobs_would(two_slides, encoder, tmp_path):
    tasks = [SlideTask(n, s, c, str(tmp_path / f"{n}.h5")) for n, (s, c) in zip("ab", two_slides, strict=True)]
    results = extract_slides(tasks, encoder, FeatureSettings(batch_size=8), CPU, threads=2)
    assert [r.reused for r in results] == [False, False]
    for task, result in zip(tasks, results, strict=True):
        alone = run(task.slide_path, task.coords_path, tmp_path / f"alone_{task.slide_id}.h5", encoder, batch_size=8)
        together, xy, attrs = read_features(task.out_path)
        single, single_xy, _ = read_features(tmp_path / f"alone_{task.slide_id}.h5")
        assert attrs["slide_id"] == task.slide_id == result.attrs["slide_id"]
        assert attrs["n_patches"] == alone["n_patches"] == len(xy) and np.array_equal(xy, single_xy)
        assert np.abs(together - single).max() <= 1e-5
    write_batch_record(tmp_path / "record.tsv", [t.out_path for t in tasks], results)
    record = pd.read_csv(tmp_path / "record.tsv", sep="\t")
    assert list(record["slide_id"]) == ["a", "b"] and (record["status"] == "ok").all()
    assert list(record["n_patches"]) == [r.attrs["n_patches"] for r in results]


def test_a_killed_job_redoes_only_the_slides_it_had_not_finished(two_slides, encoder, tmp_path, monkeypatch):
    tasks = [SlideTask(n, s, c, str(tmp_path / f"{n}.h5")) for n, (s, c) in zip("ab", two_slides, strict=True)]
    settings = FeatureSettings(batch_size=8)
    finished_a = {"slides": 0}
    real_write = extract_module.ff.write_features

    def killed_after_first_slide(*args, **kwargs):
        if finished_a["slides"] == 1:
            raise KeyboardInterrupt("killed")
        real_write(*args, **kwargs)
        finished_a["slides"] += 1

    monkeypatch.setattr(extract_module.ff, "write_features", killed_after_first_slide)
    with pytest.raises(KeyboardInterrupt):
        extract_slides(tasks, encoder, settings, CPU, threads=2)
    monkeypatch.setattr(extract_module.ff, "write_features", real_write)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.h5"]  # nothing half-written of b
    first = (tmp_path / "a.h5").stat().st_mtime_ns
    results = extract_slides(tasks, encoder, settings, CPU, threads=2)
    assert [r.reused for r in results] == [True, False]
    assert (tmp_path / "a.h5").stat().st_mtime_ns == first
    assert all(read_features(t.out_path)[2]["status"] == "ok" for t in tasks)
    # other settings or other coordinates make the kept file stale: it is encoded again
    assert [r.reused for r in extract_slides(tasks, encoder, FeatureSettings(batch_size=4), CPU)] == [False, False]
    tasks[1] = SlideTask("b", tasks[1].slide_path, tasks[0].coords_path, tasks[1].out_path)
    assert [r.reused for r in extract_slides(tasks, encoder, FeatureSettings(batch_size=4), CPU)] == [True, False]


def test_batches_keep_the_sheet_order_and_cover_every_slide_once():
    slides = [f"s{i}" for i in range(10)]
    assert plan_batches(slides, 4) == [slides[:4], slides[4:8], slides[8:]]
    assert plan_batches(slides, 1) == [[s] for s in slides] and plan_batches([], 3) == []
    with pytest.raises(ValueError, match="slides_per_job must be at least 1"):
        plan_batches(slides, 0)


def corrupt_tile(path, level, x_px, y_px):
    """Overwrite one JPEG tile of a level with garbage, as a damaged scan would have."""
    with tifffile.TiffFile(path) as tif:
        page = tif.pages[level]
        across = -(-page.imagewidth // page.tilewidth)
        index = (y_px // page.tilelength) * across + x_px // page.tilewidth
        offset, count = page.dataoffsets[index], page.databytecounts[index]
    with open(path, "r+b") as fh:
        fh.seek(offset + count // 3)
        fh.write(b"\x00\xff" * (count // 3))


def test_corrupt_region_is_dropped_and_reported(tmp_path, encoder):
    slide, coords = make_tiled_slide(tmp_path)
    with h5py.File(coords) as h5:
        xy = h5["coords"][:]
    x, y = (int(v) for v in xy[len(xy) // 2])
    corrupt_tile(slide, 0, x + 300, y + 300)
    attrs = run(slide, coords, tmp_path / "f.h5", encoder, max_failed_fraction=0.2)
    assert attrs["n_failed"] >= 1
    _, kept, _ = read_features(tmp_path / "f.h5")
    with h5py.File(tmp_path / "f.h5") as h5:
        failed = h5["failed_coords"][:]
    assert [x, y] in failed.tolist() and [x, y] not in kept.tolist()
    assert len(kept) + len(failed) == len(xy)
    with pytest.raises(FeatureError, match=r"slide s: \d+ of \d+ patches could not be read.*max_failed_fraction"):
        run(slide, coords, tmp_path / "g.h5", encoder, max_failed_fraction=0.0)
    assert not (tmp_path / "g.h5").exists()


def test_excluded_slide_gives_an_empty_marked_file(tmp_path, encoder):
    coords = tmp_path / "c.h5"
    with h5py.File(coords, "w") as h5:
        dataset = h5.create_dataset("coords", data=np.empty((0, 2), np.int64))
        dataset.attrs["status"], dataset.attrs["reason"] = "excluded", "no tissue found"
    attrs = run("missing.svs", str(coords), tmp_path / "f.h5", encoder)
    features, xy, file_attrs = read_features(tmp_path / "f.h5")
    assert attrs["status"] == file_attrs["status"] == "excluded" and features.shape == (0, 1024) and len(xy) == 0


def test_offline_hub_weights_error_says_how_to_provide_them(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    with pytest.raises(
        WeightsError,
        match=r"(?s)no weights for encoder 'resnet50_trunc'.*weights: /path/to/weights.safetensors.*HF_HOME.*weights: random",
    ):
        load_encoder(encoder_spec("resnet50_trunc"), "hub")
    with pytest.raises(WeightsError, match="no public hub weights"):
        load_encoder(encoder_spec("uni_v1"), "hub")


def test_local_weights_file_changes_the_features(slide40, encoder, tmp_path):
    torch.manual_seed(123)
    state = timm.create_model("resnet50.tv_in1k", pretrained=False).state_dict()
    save_file({k: v.contiguous() for k, v in state.items()}, tmp_path / "w.safetensors")
    torch.save(state, tmp_path / "w.pth")
    from_file = load_encoder(encoder_spec("resnet50_trunc"), str(tmp_path / "w.safetensors"))
    assert from_file.weights_source.startswith("file:") and from_file.weights_sha256 != encoder.weights_sha256
    assert (
        load_encoder(encoder_spec("resnet50_trunc"), str(tmp_path / "w.pth")).weights_sha256 == from_file.weights_sha256
    )
    slide, coords = slide40
    run(slide, coords, tmp_path / "random.h5", encoder)
    run(slide, coords, tmp_path / "file.h5", from_file)
    assert np.abs(read_features(tmp_path / "random.h5")[0] - read_features(tmp_path / "file.h5")[0]).max() > 1e-2
    save_file({"conv1.weight": torch.zeros(1)}, tmp_path / "bad.safetensors")
    with pytest.raises(WeightsError, match=r"does not fit timm 'resnet50\.tv_in1k'"):
        load_encoder(encoder_spec("resnet50_trunc"), str(tmp_path / "bad.safetensors"))


def test_other_timm_models_by_name():
    spec = encoder_spec("resnet18.a1_in1k")
    assert spec.input_size == 224 and spec.truncate_after is None
    loaded = load_encoder(spec, "random")
    assert loaded.dim == 512
    assert encoder_spec("resnet50_trunc", input_size=256).input_size == 256
    with pytest.raises(WeightsError, match="neither in the registry"):
        encoder_spec("not_a_model_xyz")


def test_clam_pt_export_and_import(slide40, encoder, tmp_path):
    slide, coords = slide40
    run(slide, coords, tmp_path / "f.h5", encoder)
    write_clam_pt(tmp_path / "f.h5", tmp_path / "s.pt")
    features, xy, _ = read_features(tmp_path / "f.h5")
    pt = torch.load(tmp_path / "s.pt", weights_only=True)
    assert pt.dtype == torch.float32 and np.array_equal(pt.numpy(), features)
    write_clam_pt(tmp_path / "f.h5", tmp_path / "again.pt")  # the same bytes: no temporary name inside
    assert (tmp_path / "again.pt").read_bytes() == (tmp_path / "s.pt").read_bytes()
    import_clam("s", tmp_path / "s.pt", coords, tmp_path / "from_pt.h5", "resnet50_trunc")
    imported, imported_xy, attrs = read_features(tmp_path / "from_pt.h5")
    assert (
        np.array_equal(imported, features)
        and np.array_equal(imported_xy, xy)
        and attrs["weights_source"].startswith("imported from CLAM")
    )
    with h5py.File(tmp_path / "clam.h5", "w") as h5:  # CLAM's h5_files layout: features + int32 coords, no attributes
        h5["features"], h5["coords"] = features[:5], xy[:5].astype(np.int32)
    import_clam("s", tmp_path / "clam.h5", coords, tmp_path / "from_h5.h5", "resnet50_trunc")
    assert len(read_features(tmp_path / "from_h5.h5")[0]) == 5
    torch.save(pt[:3].clone(), tmp_path / "short.pt")
    with pytest.raises(FeatureError, match=r"slide s: .*short.pt has 3 patches but this workflow's tiling has \d+"):
        import_clam("s", tmp_path / "short.pt", coords, tmp_path / "x.h5", "resnet50_trunc")


def test_device_is_the_cpu_without_a_gpu():
    if torch.cuda.is_available():
        pytest.skip("a GPU is visible; see test_gpu_claims_are_exclusive")
    with claim_device() as device:
        assert device.type == "cpu"


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_gpu_claims_are_exclusive_and_amp_matches_fp32(slide40, encoder, tmp_path, monkeypatch):
    monkeypatch.setattr("workflow.device.LOCK_DIR", tmp_path / "locks")
    with claim_device() as first:
        assert first.type == "cuda"
        if torch.cuda.device_count() == 1:
            with (
                pytest.raises(RuntimeError, match="GPUs stayed busy"),
                claim_device(wait_seconds=0.2, poll_seconds=0.1),
            ):
                pass
        slide, coords = slide40
        task = SlideTask("s", slide, coords, str(tmp_path / "gpu.h5"))
        extract_slides([task], encoder, FeatureSettings(), first, threads=4)
    run(slide, coords, tmp_path / "cpu.h5", load_encoder(encoder_spec("resnet50_trunc"), "random"))
    gpu, cpu = read_features(tmp_path / "gpu.h5")[0], read_features(tmp_path / "cpu.h5")[0]
    assert np.abs(gpu - cpu).max() / np.abs(cpu).max() < 0.02


def damaged_copy(slide, folder, name):
    """A copy of ``slide`` to damage, so the module's slide stays whole."""
    copy = folder / f"{name}.svs"
    copy.write_bytes(Path(slide).read_bytes())
    return str(copy)


def first_block_patch(coords):
    tiles = read_coords(coords)
    return tiles.xy[plan_blocks(tiles.xy, tiles.geometry.size_level0, FeatureSettings().block)[0][0]], len(tiles.xy)


def test_unreadable_slide_is_excluded_and_the_job_goes_on(slide40, encoder, tmp_path):
    """A corrupt tile over the budget: that slide is written excluded, naming the patch and OpenSlide's error."""
    slide, coords = slide40
    bad = damaged_copy(slide, tmp_path, "bad")
    xy = read_coords(coords).xy
    x, y = (int(v) for v in xy[len(xy) // 2])
    corrupt_tile(bad, 0, x + 300, y + 300)
    run(bad, coords, tmp_path / "lenient.h5", encoder, max_failed_fraction=1.0)
    with h5py.File(tmp_path / "lenient.h5") as h5:
        failed = h5["failed_coords"][:].tolist()
    tasks = [
        SlideTask("bad", bad, coords, str(tmp_path / "bad.h5")),
        SlideTask("s", slide, coords, str(tmp_path / "s.h5")),
    ]
    settings = FeatureSettings(max_failed_fraction=0.0)
    results = extract_slides(tasks, encoder, settings, CPU, threads=2, on_error="exclude")
    excluded, kept = (r.attrs for r in results)
    match = re.fullmatch(
        rf"slide bad: {len(failed)} of {len(xy)} patches could not be read from {re.escape(bad)}; "
        r"the first at level-0 \((\d+), (\d+)\): (Corrupt JPEG data.*)",
        excluded["status"] == "excluded" and excluded["reason"],
    )
    assert match and [int(match[1]), int(match[2])] in failed, excluded["reason"]
    assert (excluded["n_patches"], excluded["n_failed"]) == (0, len(failed))
    features, _, attrs = read_features(tasks[0].out_path)
    assert features.shape == (0, 1024) and attrs["reason"] == excluded["reason"]
    assert kept["status"] == "ok" and kept["n_patches"] == len(xy)
    table = summary([t.out_path for t in tasks]).set_index("slide_id")
    assert table.loc["bad", "status"] == "excluded" and table.loc["bad", "reason"] == excluded["reason"]
    # on_error decides what a failure does, not what the features are: switching it re-extracts nothing
    again = extract_slides(tasks, encoder, settings, CPU, on_error="fail")
    assert [r.reused for r in again] == [True, True] and again[0].attrs["status"] == "excluded"

    with pytest.raises(FeatureError) as stopped:
        extract_slides([SlideTask("bad", bad, coords, str(tmp_path / "f.h5"))], encoder, settings, CPU, on_error="fail")
    assert str(stopped.value) == (
        f"{excluded['reason']}. That is more than features: max_failed_fraction = 0.0: the slide file is damaged; "
        "re-copy it and compare checksums (sha256sum) with the source (or re-export or re-scan it). To go on "
        "without this slide set tiling: on_error: exclude; to keep its readable patches raise features: "
        "max_failed_fraction"
    )
    assert not (tmp_path / "f.h5").exists()


def test_slide_truncated_after_tiling_is_excluded_as_truncated(slide40, encoder, tmp_path):
    slide, coords = slide40
    cut = damaged_copy(slide, tmp_path, "cut")
    size = Path(cut).stat().st_size // 2
    Path(cut).write_bytes(Path(cut).read_bytes()[:size])
    (x, y), n = first_block_patch(coords)
    attrs = extract_slides(
        [SlideTask("cut", cut, coords, str(tmp_path / "f.h5"))], encoder, FeatureSettings(), CPU, on_error="exclude"
    )[0].attrs
    assert attrs["status"] == "excluded"
    assert re.fullmatch(
        rf"slide cut: {n} of {n} patches could not be read from {re.escape(cut)}; the first at level-0 \({x}, {y}\): "
        rf"Unsupported or missing image file; the file is truncated: the file ends at byte {size:,}, before the end "
        r"of its image data \(byte [\d,]+\); re-copy it and compare checksums \(sha256sum\) with the source",
        attrs["reason"],
    ), attrs["reason"]


def test_an_unforeseen_read_error_in_a_worker_names_the_slide_and_patches(slide40, encoder, tmp_path, monkeypatch):
    slide, coords = slide40
    (x, y), _ = first_block_patch(coords)

    def breaks(self, coords):
        raise ValueError("boom")

    monkeypatch.setattr(SlideReader, "read_block", breaks)
    with pytest.raises(
        PatchReadError,
        match=rf"slide s \({re.escape(slide)}\): reading \d+ patches from level-0 \({x}, {y}\) failed: ValueError: boom",
    ):
        run(slide, coords, tmp_path / "f.h5", encoder)  # threads=2: one DataLoader worker process
    with pytest.raises(ValueError, match=r"tiling: on_error must be one of \('fail', 'exclude'\), not 'skip'"):
        extract_slides([], encoder, FeatureSettings(), CPU, on_error="skip")
