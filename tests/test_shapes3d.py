"""3D Shapes: factor grid, procedural renderer, the real-file loader and the few-shot view."""

from __future__ import annotations

import hashlib
import pickle
import random

import numpy as np
import pytest
import torch

from metasparse.data import (
    FACTOR_NAMES,
    FACTOR_SIZES,
    NUM_IMAGES,
    Shapes3D,
    Shapes3DFewShot,
    Shapes3DRenderer,
    all_factor_values,
    factor_indices_to_flat,
    factor_indices_to_values,
    factor_values,
    factor_values_to_indices,
    flat_to_factor_indices,
    flat_to_factor_values,
    render,
    shapes3d,
    split_classes,
)
from metasparse.data.visualize import traversal_indices

# sha256 of the rendered images at flat indices 0, 123456, 479999 and of all coverage maps; they change
# only with RENDERER_VERSION (and then the cache file name changes with them).
GOLDEN_IMAGES_SHA256 = "eeaff41e9bcb2f2943f717e4c6060a067f6581b4055c8cefde909a58dae50772"
GOLDEN_MAPS_SHA256 = "35c1160c540b1d54df841de1faa707041e29a2d010f7ac4bacea415f8b2274c6"


def sha256(tensor: torch.Tensor) -> str:
    return hashlib.sha256(tensor.cpu().numpy().tobytes()).hexdigest()


def distinct(images: torch.Tensor) -> int:
    return len({image.numpy().tobytes() for image in images})


@pytest.fixture(scope="module")
def rendered() -> Shapes3D:
    return Shapes3D()


@pytest.fixture(scope="module")
def coverage(rendered: Shapes3D) -> torch.Tensor:
    return rendered._renderer.coverage_maps


# ---- factor grid ----

def test_factor_grid_is_the_real_files():
    assert FACTOR_NAMES == ("floor_hue", "wall_hue", "object_hue", "scale", "shape", "orientation")
    assert FACTOR_SIZES == (10, 10, 10, 8, 4, 15) and NUM_IMAGES == 480_000
    for name in ("floor_hue", "wall_hue", "object_hue"):
        np.testing.assert_array_equal(factor_values(name).numpy(), np.linspace(0, 0.9, 10))
    np.testing.assert_array_equal(factor_values("scale").numpy(), np.linspace(0.75, 1.25, 8))
    np.testing.assert_array_equal(factor_values("shape").numpy(), [0, 1, 2, 3])
    np.testing.assert_array_equal(factor_values("orientation").numpy(), np.linspace(-30, 30, 15))
    with pytest.raises(ValueError, match="name must be one of"):
        factor_values("colour")


def test_flat_index_order_matches_c_order_with_orientation_fastest():
    flat = torch.arange(NUM_IMAGES)
    factor_indices = flat_to_factor_indices(flat)
    expected = np.stack(np.unravel_index(flat.numpy(), FACTOR_SIZES), axis=-1)
    np.testing.assert_array_equal(factor_indices.numpy(), expected)
    assert flat_to_factor_indices(1).tolist() == [0, 0, 0, 0, 0, 1]
    assert flat_to_factor_indices(15).tolist() == [0, 0, 0, 0, 1, 0]


def test_round_trips_on_the_whole_grid():
    flat = torch.arange(NUM_IMAGES)
    factor_indices = flat_to_factor_indices(flat)
    assert torch.equal(factor_indices_to_flat(factor_indices), flat)
    values = factor_indices_to_values(factor_indices)
    assert torch.equal(values, all_factor_values())
    assert torch.equal(values, flat_to_factor_values(flat))
    assert torch.equal(factor_values_to_indices(values), factor_indices)
    assert torch.equal(factor_values_to_indices(values + 5e-7), factor_indices)  # float32-level noise


def test_factor_helpers_reject_bad_input_by_name():
    with pytest.raises(IndexError, match=r"flat must be in \[0, 480000\)"):
        flat_to_factor_indices([0, NUM_IMAGES])
    with pytest.raises(IndexError, match="flat"):
        flat_to_factor_indices(-1)
    with pytest.raises(TypeError, match="flat must hold integers"):
        flat_to_factor_indices(1.0)
    with pytest.raises(ValueError, match=r"factor_indices must have shape \(\.\.\., 6\)"):
        factor_indices_to_flat([0, 0, 0])
    with pytest.raises(IndexError, match=r"shape\) must be in \[0, 4\)"):
        factor_indices_to_flat([0, 0, 0, 0, 4, 0])
    with pytest.raises(ValueError, match=r"values\[\.\.\., 3\] \(scale\)"):
        factor_values_to_indices([0.0, 0.0, 0.0, 0.8, 0.0, 0.0])


# ---- renderer ----

def test_renderer_is_deterministic_across_calls_instances_and_batches(rendered: Shapes3D, coverage):
    indices = [0, 123456, 479999]
    assert sha256(coverage) == GOLDEN_MAPS_SHA256
    assert sha256(rendered.images(indices)) == GOLDEN_IMAGES_SHA256
    assert sha256(Shapes3DRenderer().images(torch.tensor(indices))) == GOLDEN_IMAGES_SHA256
    batch = rendered.images(torch.arange(300) * 1601)
    one_by_one = torch.stack([rendered.images([i * 1601])[0] for i in range(300)])
    assert torch.equal(batch, one_by_one)
    assert torch.equal(rendered.images(torch.arange(300) * 1601), batch)


def test_every_factor_changes_the_image_at_every_sampled_anchor(rendered: Shapes3D):
    generator = torch.Generator().manual_seed(0)
    for anchor in flat_to_factor_indices(torch.randint(NUM_IMAGES, (40,), generator=generator)):
        for factor, row in enumerate(traversal_indices(anchor.tolist())):
            assert distinct(rendered.images(row)) == FACTOR_SIZES[factor], FACTOR_NAMES[factor]


def test_distinct_factor_combinations_give_distinct_images(rendered: Shapes3D):
    geometries = torch.arange(render.NUM_GEOMETRIES)  # all scale x shape x orientation, hues 0, 0, 0
    assert distinct(rendered.images(geometries)) == render.NUM_GEOMETRIES
    hue_combinations = torch.arange(1000) * render.NUM_GEOMETRIES + 137  # all hues, one geometry
    assert distinct(rendered.images(hue_combinations)) == 1000
    sample = torch.randperm(NUM_IMAGES, generator=torch.Generator().manual_seed(1))[:6000]
    assert distinct(rendered.images(sample)) == 6000


def test_hue_factors_colour_floor_wall_and_object_where_they_are(rendered: Shapes3D, coverage):
    anchor = [2, 5, 8, 3, 1, 4]
    base = rendered.images(factor_indices_to_flat(anchor))[0]
    surfaces = coverage[factor_indices_to_flat(anchor) % render.NUM_GEOMETRIES] > 0  # (3, 64, 64)
    for factor, surface in enumerate(render.SURFACES):
        changed_factors = list(anchor)
        changed_factors[factor] = 0
        changed = (rendered.images(factor_indices_to_flat(changed_factors))[0] != base).any(-1)
        assert changed.any() and not (changed & ~surfaces[factor]).any(), surface
    assert surfaces[0, -1].all() and not surfaces[1, -1].any()  # bottom row: floor only
    assert surfaces[1, 0].all() and not surfaces[0, 0].any()    # top row: wall only


def test_object_stands_in_the_middle_and_grows_with_scale(coverage):
    maps = coverage.reshape(8, 4, 15, 3, 64, 64)
    object_area = (maps[:, :, :, 2] > 0).sum((-1, -2))
    assert (object_area[1:] > object_area[:-1]).all()  # strictly larger at every next scale
    columns = torch.arange(64, dtype=torch.float64)
    for geometry in coverage:
        on_object = geometry[2] > 0
        rows_with_object = on_object.any(1).nonzero().squeeze(1)
        centre = (on_object.sum(0) * columns).sum() / on_object.sum()
        assert abs(float(centre) - 31.5) < 4
        bottom = int(rows_with_object.max())
        assert 32 <= bottom < 63 and (geometry[0, bottom + 1] > 0).any()  # on the floor, lower half
    assert int(coverage.sum(1).min()) > 0 and int(coverage.sum(1).max()) <= 4096


def test_disk_cache_is_written_atomically_and_reused(tmp_path, monkeypatch, coverage):
    first = Shapes3D(cache=tmp_path)
    images = first.images([5, 400_000])
    files = list(tmp_path.iterdir())
    assert [f.suffix for f in files] == [".npy"] and files[0].name.startswith("shapes3d-coverage-v1-")

    def no_build(device):
        raise AssertionError("the cache file should have been used")

    monkeypatch.setattr(render, "build_coverage_maps", no_build)
    assert torch.equal(Shapes3D(cache=tmp_path).images([5, 400_000]), images)
    assert torch.equal(Shapes3D(cache=tmp_path)._renderer.coverage_maps, coverage)

    monkeypatch.undo()
    files[0].write_bytes(b"truncated")
    assert torch.equal(Shapes3D(cache=tmp_path).images([5, 400_000]), images)  # rebuilt and rewritten
    assert np.load(files[0]).shape == (480, 3, 64, 64)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert Shapes3DRenderer(cache=True).cache_file.parent == tmp_path / "xdg" / "metasparse"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_gpu_renders_the_same_bits_as_cpu(rendered: Shapes3D):
    on_gpu = Shapes3D(device="cuda")
    assert torch.equal(on_gpu._renderer.coverage_maps.cpu(), rendered._renderer.coverage_maps)
    indices = torch.randint(NUM_IMAGES, (2048,))
    images = on_gpu.images(indices)
    assert images.is_cuda and torch.equal(images.cpu(), rendered.images(indices))


# ---- the dataset interface ----

def test_dataset_interface(rendered: Shapes3D):
    assert len(rendered) == NUM_IMAGES and rendered.path is None
    assert rendered.factor_names == FACTOR_NAMES and rendered.factor_sizes == FACTOR_SIZES
    assert rendered.factors.shape == (NUM_IMAGES, 6) and rendered.factors.dtype == torch.float64
    assert rendered.factors[-1].tolist() == [0.9, 0.9, 0.9, 1.25, 3.0, 30.0]
    image, factors = rendered[123456]
    assert image.shape == (3, 64, 64) and image.dtype == torch.float32
    assert 0 <= float(image.min()) and float(image.max()) <= 1
    assert torch.equal(image, rendered.images([123456])[0].permute(2, 0, 1) / 255)
    assert torch.equal(factors, rendered.factors[123456])
    assert torch.equal(rendered[-1][0], rendered[NUM_IMAGES - 1][0])
    batch = rendered.images(np.array([3, 1, 3]))
    assert batch.shape == (3, 64, 64, 3) and batch.dtype == torch.uint8 and torch.equal(batch[0], batch[2])
    assert rendered.images(range(2)).shape == (2, 64, 64, 3) and rendered.images([]).shape == (0, 64, 64, 3)
    threads = torch.get_num_threads()
    rendered.images(torch.arange(200))  # renders single-threaded, then restores the setting
    assert torch.get_num_threads() == threads
    assert repr(rendered) == "Shapes3D(renderer, device='cpu')"


def test_dataset_rejects_bad_indices_and_arguments(rendered: Shapes3D, tmp_path):
    with pytest.raises(IndexError, match=r"indices must be in \[0, 480000\), got values in \[-1, 2\]"):
        rendered.images([2, -1])
    with pytest.raises(IndexError, match="indices must be in"):
        rendered.images(torch.tensor([NUM_IMAGES]))
    with pytest.raises(TypeError, match="indices must hold integers"):
        rendered.images([0.5])
    with pytest.raises(IndexError, match="index must be in"):
        rendered[NUM_IMAGES]
    with pytest.raises(TypeError, match="index must be an int"):
        rendered[0:2]
    with pytest.raises(ValueError, match="in_memory=True needs path="):
        Shapes3D(in_memory=True)
    with pytest.raises(TypeError, match="cache must be a bool or a directory path"):
        Shapes3D(cache=3)


# ---- the real file ----

def write_shapes3d_file(path, rows: dict[int, np.ndarray], labels: np.ndarray | None = None,
                        images_shape: tuple = shapes3d.IMAGES_SHAPE, contiguous: bool = False) -> None:
    """An HDF5 file with the real file's structure; only ``rows`` of the images are stored."""
    import h5py

    with h5py.File(path, "w") as file:
        layout = {} if contiguous else {"chunks": (1, *images_shape[1:]), "compression": "gzip"}
        images = file.create_dataset("images", shape=images_shape, dtype=np.uint8, **layout)
        for row, image in rows.items():
            images[row] = image
        file.create_dataset("labels", data=all_factor_values().numpy() if labels is None else labels,
                            chunks=(4800, 6), compression="gzip")


@pytest.fixture(scope="module")
def real_file(tmp_path_factory, rendered: Shapes3D):
    path = tmp_path_factory.mktemp("h5") / "3dshapes.h5"
    rows = [0, 1, 77_777, 479_999]
    write_shapes3d_file(path, dict(zip(rows, rendered.images(rows).numpy(), strict=True)))
    return path, rows


def test_loader_reads_a_file_with_the_real_structure(real_file, rendered: Shapes3D):
    path, rows = real_file
    ds = Shapes3D(path=str(path))
    assert len(ds) == NUM_IMAGES and ds.path == path and not ds._file.memory_mapped
    assert torch.equal(ds.factors, all_factor_values())
    order = [*reversed(rows), rows[0]]  # unsorted, with a repeat
    assert torch.equal(ds.images(order), rendered.images(order))
    assert not ds.images([5]).any()  # never written: the fill value
    image, factors = ds[77_777]
    assert torch.equal(image, rendered[77_777][0]) and torch.equal(factors, rendered.factors[77_777])
    assert ds.images([]).shape == (0, 64, 64, 3)
    worker_copy = pickle.loads(pickle.dumps(ds))  # as DataLoader workers with spawn get it
    assert torch.equal(worker_copy.images(order), ds.images(order))


@pytest.mark.parametrize("mode", ["memory_mapped", "in_memory"])
def test_loader_memory_map_and_full_load(tmp_path, monkeypatch, mode):
    # The real images are 5.9 GB; only the pixel count is shrunk here, rows and labels are real-sized.
    monkeypatch.setattr(shapes3d, "IMAGES_SHAPE", (NUM_IMAGES, 2, 2, 3))
    rows = {0: np.full((2, 2, 3), 7), 479_999: np.arange(12).reshape(2, 2, 3)}
    write_shapes3d_file(tmp_path / "contiguous.h5", rows, images_shape=(NUM_IMAGES, 2, 2, 3), contiguous=True)
    ds = Shapes3D(path=tmp_path / "contiguous.h5", in_memory=mode == "in_memory")
    assert ds._file.memory_mapped == (mode == "memory_mapped")
    images = ds.images([479_999, 3, 0])
    np.testing.assert_array_equal(images.numpy(), [rows[479_999], np.zeros((2, 2, 3)), rows[0]])
    assert torch.equal(pickle.loads(pickle.dumps(ds)).images([479_999]), images[:1])


def test_loader_errors_name_the_path_and_the_problem(tmp_path):
    missing = tmp_path / "nowhere" / "3dshapes.h5"
    with pytest.raises(FileNotFoundError, match=r"nowhere/3dshapes\.h5.*no such file"):
        Shapes3D(path=missing)
    not_hdf5 = tmp_path / "text.h5"
    not_hdf5.write_text("not an HDF5 file")
    with pytest.raises(ValueError, match=r"text\.h5.*not a readable HDF5 file"):
        Shapes3D(path=not_hdf5)

    import h5py

    small = tmp_path / "small.h5"
    with h5py.File(small, "w") as file:
        file.create_dataset("images", shape=(10, 64, 64, 3), dtype=np.uint8)
    with pytest.raises(ValueError, match=r"small.h5.*structure of 3dshapes.h5.*images \(10, 64, 64, 3\) "
                                         r"uint8, no labels"):
        Shapes3D(path=small)

    shuffled_labels = all_factor_values().numpy()[::-1].copy()
    shuffled = tmp_path / "shuffled.h5"
    write_shapes3d_file(shuffled, {}, labels=shuffled_labels)
    with pytest.raises(ValueError, match=r"shuffled.h5.*labels\[0, 0\] = 0.9.*orientation fastest"):
        Shapes3D(path=shuffled)
    with pytest.raises(ValueError, match="cache= applies to the renderer only"):
        Shapes3D(path=shuffled, cache=True)


# ---- few-shot view ----

@pytest.fixture(scope="module")
def fewshot_splits(rendered: Shapes3D) -> dict[str, Shapes3DFewShot]:
    return {split: Shapes3DFewShot(split, source=rendered) for split in ("train", "validation", "test")}


def test_fewshot_splits_are_disjoint_fixed_and_complete(fewshot_splits):
    ids = {name: set(split.class_ids.tolist()) for name, split in fewshot_splits.items()}
    assert [len(ids[name]) for name in ("train", "validation", "test")] == [192, 64, 64]
    assert set.union(*ids.values()) == set(range(320)) and sum(map(len, ids.values())) == 320
    assert {name: set(split.tolist()) for name, split in split_classes(320, seed=0).items()} == ids
    assert set(split_classes(320, seed=1)["test"].tolist()) != ids["test"]
    covered = torch.cat([split.flat_indices for split in fewshot_splits.values()])
    assert torch.equal(covered.sort().values, torch.arange(NUM_IMAGES))


def test_fewshot_classes_fix_object_factors_and_let_the_others_vary(fewshot_splits):
    split = fewshot_splits["validation"]
    assert len(split) == 64 * 1500 and split.num_classes == 64
    columns = [FACTOR_NAMES.index(name) for name in split.class_factors]
    for label in (0, 31, 63):
        items = torch.tensor(split.labels_to_indices[label])
        assert (split.labels[items] == label).all() and len(items) == 1500
        factor_indices = flat_to_factor_indices(split.flat_indices[items])
        assert (factor_indices[:, columns] == split.class_factor_indices[label]).all()
        for free in ("floor_hue", "wall_hue", "orientation"):
            k = FACTOR_NAMES.index(free)
            assert factor_indices[:, k].unique().numel() == FACTOR_SIZES[k]
    image, label = split[1500]
    assert label == 1 and isinstance(label, int) and image.shape == (3, 64, 64)
    assert torch.equal(image, split.source[int(split.flat_indices[1500])][0])
    assert torch.equal(split.images([1500])[0], split.source.images([int(split.flat_indices[1500])])[0])


def test_fewshot_tasks_sample_through_learn2learn(fewshot_splits):
    from metasparse.tasks import classification_taskset, sample_episodes

    split = fewshot_splits["train"]
    taskset = classification_taskset(split, n_way=5, n_shot=2, n_query=3,
                                     labels_to_indices=split.labels_to_indices)
    random.seed(0)
    episode = sample_episodes(taskset, batch_size=2, n_way=5, n_shot=2)
    assert episode.support.shape == (2, 10, 3, 64, 64) and episode.query.shape == (2, 15, 3, 64, 64)
    for b in range(2):
        assert torch.equal(torch.bincount(episode.support_labels[b]), torch.full((5,), 2))
    random.seed(0)
    again = sample_episodes(taskset, batch_size=2, n_way=5, n_shot=2)
    assert torch.equal(again.support, episode.support)


def test_fewshot_custom_classes_and_bad_arguments(rendered: Shapes3D):
    by_shape = Shapes3DFewShot("test", source=rendered, class_factors=("shape",))
    assert by_shape.num_classes == 1 and len(by_shape) == NUM_IMAGES // 4
    with pytest.raises(ValueError, match="split must be one of"):
        Shapes3DFewShot("val", source=rendered)
    with pytest.raises(ValueError, match="class_factors must be distinct names"):
        Shapes3DFewShot("train", source=rendered, class_factors=("shape", "shape"))
    with pytest.raises(IndexError, match="indices must be in"):
        by_shape.images([len(by_shape)])
    with pytest.raises(ValueError, match="num_classes must be at least 3"):
        split_classes(2)
