"""The named few-shot benchmarks: tiny files in each dataset's real on-disk format, read back through
`benchmark_dataset`; missing and malformed files; no download; MetaOptNet's transforms; shapes3d-fs."""

from __future__ import annotations

import hashlib
import io
import pickle
import re
import socket
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from metasparse.data import (
    BENCHMARKS,
    FACTOR_NAMES,
    Shapes3DFewShot,
    benchmark_dataset,
    benchmark_info,
    image_shape,
    metaoptnet_augmentation,
    metaoptnet_normalization,
)
from metasparse.data.factors import flat_to_factor_indices

l2l = pytest.importorskip("learn2learn")
import torchvision  # noqa: E402  (learn2learn imports it anyway)

# MetaOptNet's data/mini_imagenet.py and data/CIFAR_FS.py, in pixel units.
IMAGENET_MEAN = [120.39586422, 115.59361427, 104.54012653]
IMAGENET_STD = [70.68188272, 68.27635443, 72.54505529]
CIFAR_MEAN = [129.37731888, 124.10583864, 112.47758569]
CIFAR_STD = [68.20947949, 65.43124043, 70.45866994]
REAL = [name for name in BENCHMARKS if name != "shapes3d-fs"]
FILE_SPLIT = {"train": "train", "validation": "val", "test": "test"}
CLASSES = {"train": 3, "validation": 2, "test": 2}
PER_CLASS = 4


@pytest.fixture(autouse=True)
def downloads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """learn2learn's download helpers, torchvision's Omniglot download and sockets raise; calls are kept."""
    calls: list[str] = []

    def refuse(*args: object, **kwargs: object) -> None:
        calls.append(str(args[:2]))
        raise ConnectionError("downloads are disabled in tests")

    modules = [l2l.data.utils] + [getattr(l2l.vision.datasets, module) for module in
                                  ("mini_imagenet", "tiered_imagenet", "cifarfs", "fc100")]
    for module in modules:
        for helper in ("download_file", "download_file_from_google_drive"):
            monkeypatch.setattr(module, helper, refuse)
    monkeypatch.setattr(torchvision.datasets.omniglot, "download_and_extract_archive", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    return calls


def pixels(seed: int, count: int, size: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(count, size, size, 3), dtype=np.uint8)


def normalized(images: np.ndarray, mean: list[float], std: list[float]) -> torch.Tensor:
    """The MetaOptNet test-time image, computed with numpy: (pixels - mean) / std, channels first."""
    values = (images.astype(np.float64) - np.array(mean)) / np.array(std)
    return torch.from_numpy(values.transpose(0, 3, 1, 2)).float()


def png(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


def write_mini_imagenet(root: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """mini-imagenet-cache-<split>.pkl with classes interleaved; returns the images and each row's class."""
    count = CLASSES[split] * PER_CLASS
    images = pixels(len(split), count, 84)
    classes = np.arange(count) % CLASSES[split]
    class_dict = {f"n0{len(split)}{k:05d}": np.flatnonzero(classes == k).tolist()
                  for k in range(CLASSES[split])}
    with open(root / f"mini-imagenet-cache-{split}.pkl", "wb") as file:
        pickle.dump({"image_data": images, "class_dict": class_dict}, file)
    return images, classes


def write_tiered_imagenet(root: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    folder = root / "tiered-imagenet"
    folder.mkdir(exist_ok=True)
    count = CLASSES[split] * PER_CLASS
    images = pixels(10 + len(split), count, 84)
    classes = np.random.default_rng(len(split)).permutation(np.arange(count) % CLASSES[split])
    encoded = [np.frombuffer(png(image), dtype=np.uint8) for image in images]  # as the real pickles hold them
    with open(folder / f"{FILE_SPLIT[split]}_images_png.pkl", "wb") as file:
        pickle.dump(encoded, file)
    labels = {"label_specific": classes, "label_general": classes // 2,
              "label_specific_str": [f"class{k}" for k in classes], "label_general_str": ["group"] * count}
    with open(folder / f"{FILE_SPLIT[split]}_labels.pkl", "wb") as file:
        pickle.dump(labels, file)
    return images, classes


def write_fc100(root: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """FC100_<split>.pickle with CIFAR-100 class ids (not 0..K-1), as the real files have them."""
    count = CLASSES[split] * PER_CLASS
    images = pixels(20 + len(split), count, 32)
    cifar_ids = np.array([97, 5, 41])[: CLASSES[split]] + len(split)
    classes = np.tile(cifar_ids, PER_CLASS)
    with open(root / f"FC100_{FILE_SPLIT[split]}.pickle", "wb") as file:
        pickle.dump({"data": images, "labels": classes.tolist()}, file, protocol=2)
    return images, classes


def write_cifarfs(root: Path) -> dict[str, dict[str, np.ndarray]]:
    """cifarfs/cifar100/{data/<class>/*.png, splits/bertinetto/*.txt}; returns {split: {class: images}}."""
    raw = root / "cifarfs" / "cifar100"
    (raw / "splits" / "bertinetto").mkdir(parents=True)
    written: dict[str, dict[str, np.ndarray]] = {}
    for code, split in enumerate(CLASSES):
        names = [f"{'zyx'[k]}_class{code}" for k in range(CLASSES[split])]  # listed in unsorted order
        (raw / "splits" / "bertinetto" / f"{FILE_SPLIT[split]}.txt").write_text("\n".join(names) + "\n")
        written[split] = {}
        for k, name in enumerate(names):
            (raw / "data" / name).mkdir(parents=True)
            images = pixels(30 + 10 * code + k, PER_CLASS, 32)
            for i, image in enumerate(images):
                (raw / "data" / name / f"{name}_{i}.png").write_bytes(png(image))
            written[split][name] = images
    return written


OMNIGLOT_CHARACTERS = {"images_background": {"Alpha": 2, "Beta": 1}, "images_evaluation": {"Gamma": 3}}


def omniglot_drawing(character: int) -> Image.Image:
    """105x105 grayscale like Omniglot's; character c is a black band 15 (c + 1) pixels wide on the left."""
    image = np.full((105, 105), 255, dtype=np.uint8)
    image[:, : 15 * (character + 1)] = 0
    return Image.fromarray(image, mode="L")


def write_omniglot(root: Path, monkeypatch: pytest.MonkeyPatch) -> int:
    """The two zips torchvision's Omniglot reads (not extracted); their md5 stands in for the real ones."""
    folder = root / "omniglot-py"
    folder.mkdir()
    digests, character = {}, 0
    for part, alphabets in OMNIGLOT_CHARACTERS.items():
        with zipfile.ZipFile(folder / f"{part}.zip", "w") as archive:
            for alphabet, count in alphabets.items():
                for k in range(count):
                    for drawing in range(2):
                        buffer = io.BytesIO()
                        omniglot_drawing(character).save(buffer, format="PNG")
                        member = f"{part}/{alphabet}/character{k + 1:02d}/{character:04d}_{drawing:02d}.png"
                        archive.writestr(member, buffer.getvalue())
                    character += 1
        digests[part] = hashlib.md5((folder / f"{part}.zip").read_bytes()).hexdigest()
    monkeypatch.setattr(torchvision.datasets.Omniglot, "zips_md5", digests)
    return character


def check_labels(dataset: torch.utils.data.Dataset, num_classes: int) -> None:
    """labels in [0, num_classes), labels_to_indices the exact inverse of the items' labels."""
    assert dataset.num_classes == num_classes
    labels = [dataset[i][1] for i in range(len(dataset))]
    assert all(isinstance(label, int) for label in labels)
    assert sorted(set(labels)) == list(range(num_classes))
    assert dataset.labels_to_indices == {k: [i for i, label in enumerate(labels) if label == k]
                                         for k in range(num_classes)}


@pytest.mark.parametrize("split", ["train", "validation", "test"])
def test_mini_imagenet_reads_the_cache_pickles(tmp_path: Path, split: str) -> None:
    images, classes = write_mini_imagenet(tmp_path, split)
    dataset = benchmark_dataset("mini-imagenet", split, data_root=tmp_path)
    assert len(dataset) == len(images) and dataset.split == split
    check_labels(dataset, CLASSES[split])
    assert [dataset[i][1] for i in range(len(dataset))] == classes.tolist()  # class_dict order
    loaded, labels = dataset.load_items(range(len(dataset)))
    assert loaded.dtype == torch.float32 and loaded.shape == (len(images), 3, 84, 84)
    torch.testing.assert_close(loaded, normalized(images, IMAGENET_MEAN, IMAGENET_STD), atol=1e-5, rtol=0)
    assert labels.tolist() == classes.tolist()


def test_tiered_imagenet_reads_png_pickles(tmp_path: Path) -> None:
    images, classes = write_tiered_imagenet(tmp_path, "validation")
    dataset = benchmark_dataset("tiered-imagenet", "validation", data_root=tmp_path)
    check_labels(dataset, CLASSES["validation"])
    assert [dataset[i][1] for i in range(len(dataset))] == classes.tolist()
    torch.testing.assert_close(dataset.load_items(range(len(dataset)))[0],
                               normalized(images, IMAGENET_MEAN, IMAGENET_STD), atol=1e-5, rtol=0)


def test_fc100_maps_cifar_class_ids_to_split_labels(tmp_path: Path) -> None:
    images, classes = write_fc100(tmp_path, "train")
    dataset = benchmark_dataset("fc100", "train", data_root=tmp_path)
    check_labels(dataset, CLASSES["train"])
    ranks = {cifar_id: rank for rank, cifar_id in enumerate(sorted(set(classes.tolist())))}
    assert [dataset[i][1] for i in range(len(dataset))] == [ranks[c] for c in classes.tolist()]
    torch.testing.assert_close(dataset.load_items(range(len(dataset)))[0],
                               normalized(images, CIFAR_MEAN, CIFAR_STD), atol=1e-5, rtol=0)


def test_cifarfs_builds_its_splits_from_the_raw_folders_then_reads_them(tmp_path: Path) -> None:
    written = write_cifarfs(tmp_path)
    for split in ("test", "train"):  # the first call copies all splits into cifarfs/processed
        dataset = benchmark_dataset("cifarfs", split, data_root=tmp_path)
        check_labels(dataset, CLASSES[split])
        for label, name in enumerate(sorted(written[split])):  # ImageFolder numbers classes by sorted name
            loaded, labels = dataset.load_items(dataset.labels_to_indices[label])
            assert labels.tolist() == [label] * PER_CLASS
            torch.testing.assert_close(loaded, normalized(written[split][name], CIFAR_MEAN, CIFAR_STD),
                                       atol=1e-5, rtol=0)
    assert sorted(p.name for p in (tmp_path / "cifarfs" / "processed").iterdir()) == ["test", "train", "val"]


def test_omniglot_splits_characters_and_turns_them_into_classes(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    num_characters = write_omniglot(tmp_path, monkeypatch)
    seen: dict[str, set[int]] = {}
    for split in ("train", "validation", "test"):
        dataset = benchmark_dataset("omniglot", split, data_root=tmp_path)
        n_characters = len(dataset.character_ids)
        check_labels(dataset, 4 * n_characters)
        assert dataset.image_shape == (1, 28, 28) == image_shape("omniglot")
        images, labels = dataset.load_items(range(len(dataset)))
        assert images.shape == (len(dataset), 1, 28, 28) and images.min() >= 0 and images.max() <= 1
        upright = dataset.quarter_turns == 0
        # drawing of character c: strokes (1 after inverting) on the 4 (c + 1) leftmost of 28 columns
        drawn = (images[upright].mean(dim=(1, 2, 3)) * 28 / 4 - 1).round().long()
        assert len(set(zip(labels[upright].tolist(), drawn.tolist(), strict=True))) == n_characters
        seen[split] = set(drawn.tolist())
        for index in range(len(dataset)):
            turns = int(dataset.quarter_turns[index])
            assert int(labels[index]) // n_characters == turns
            same_drawing = (dataset.source_indices == dataset.source_indices[index]) & upright
            upright_index = int(same_drawing.nonzero()[0])
            torch.testing.assert_close(images[index], torch.rot90(images[upright_index], turns, dims=(1, 2)))
            assert int(labels[index]) % n_characters == int(labels[upright_index])
    assert set().union(*seen.values()) == set(range(num_characters))
    assert sum(len(characters) for characters in seen.values()) == num_characters  # disjoint splits
    assert [len(characters) for characters in seen.values()] == [4, 1, 1]


def test_metadataset_uses_labels_to_indices_without_loading_images(tmp_path: Path) -> None:
    from metasparse.tasks import classification_taskset

    write_mini_imagenet(tmp_path, "train")
    dataset = benchmark_dataset("mini-imagenet", "train", data_root=tmp_path)
    loads: list[int] = []
    image_of = dataset._image
    dataset._image = lambda index: loads.append(index) or image_of(index)
    meta = l2l.data.MetaDataset(dataset, labels_to_indices=dataset.labels_to_indices)
    assert loads == [] and meta.labels_to_indices == dataset.labels_to_indices
    data, labels = classification_taskset(dataset, n_way=3, n_shot=1, n_query=2,
                                          labels_to_indices=dataset.labels_to_indices).sample()
    assert data.shape == (9, 3, 84, 84) and sorted(labels.tolist()) == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert len(loads) == 9


EXPECTED_FILE = {
    "omniglot": "omniglot-py/images_background.zip",
    "mini-imagenet": "mini-imagenet-cache-test.pkl",
    "tiered-imagenet": "tiered-imagenet/test_images_png.pkl",
    "cifarfs": "cifarfs/cifar100/splits/bertinetto/test.txt",
    "fc100": "FC100_test.pickle",
}


@pytest.mark.parametrize("name", REAL)
def test_missing_files_name_the_path_the_layout_and_the_flags(tmp_path: Path, name: str,
                                                              downloads: list[str]) -> None:
    root = tmp_path / "data"
    root.mkdir()
    with pytest.raises(FileNotFoundError) as raised:
        benchmark_dataset(name, "test", data_root=root)
    message = str(raised.value)
    assert str(root / EXPECTED_FILE[name]) in message
    assert benchmark_info(name).layout in message and "--download" in message and "--data-root" in message
    assert list(root.iterdir()) == [] and downloads == []  # nothing created, nothing fetched


def test_data_root_defaults_to_home_data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path / "data" / "FC100_test.pickle"))):
        benchmark_dataset("fc100", "test")


@pytest.mark.parametrize("name", REAL)
def test_download_true_asks_learn2learn_to_download_and_reports_the_failure(tmp_path: Path, name: str,
                                                                          downloads: list[str]) -> None:
    root = tmp_path / "new" / "root"
    with pytest.raises(FileNotFoundError, match=r"download=True failed .*ConnectionError") as raised:
        benchmark_dataset(name, "test", data_root=root, download=True)
    assert downloads and str(root / EXPECTED_FILE[name].split("/")[0]) in str(raised.value)


def test_download_true_reads_files_that_are_present_without_fetching(tmp_path: Path,
                                                                      downloads: list[str]) -> None:
    write_fc100(tmp_path, "test")
    write_fc100(tmp_path, "train")  # learn2learn checks for FC100_train.pickle before it downloads
    assert len(benchmark_dataset("fc100", "test", data_root=tmp_path, download=True)) == 8
    assert downloads == []


def write_pickle(path: Path, content: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as file:
        pickle.dump(content, file)


@pytest.mark.parametrize(("name", "relative", "content", "problem"), [
    ("mini-imagenet", "mini-imagenet-cache-train.pkl", b"not a pickle", "could not read it"),
    ("mini-imagenet", "mini-imagenet-cache-train.pkl", {"image_data": np.zeros((2, 84, 84, 3), np.uint8)},
     "KeyError: 'class_dict'"),
    ("mini-imagenet", "mini-imagenet-cache-train.pkl",
     {"image_data": np.zeros((2, 32, 32, 3), np.uint8), "class_dict": {"a": [0, 1]}}, r"\(N, 84, 84, 3\)"),
    ("mini-imagenet", "mini-imagenet-cache-train.pkl",
     {"image_data": np.zeros((3, 84, 84, 3), np.uint8), "class_dict": {"a": [0, 1]}}, "exactly once"),
    ("fc100", "FC100_train.pickle", {"data": np.zeros((2, 32, 32, 3), np.float32), "labels": [1, 2]},
     "float32 array"),
    ("fc100", "FC100_train.pickle", {"data": np.zeros((2, 32, 32, 3), np.uint8), "labels": [1]},
     "expected 2 integer class ids"),
])
def test_malformed_pickles_name_the_file_and_the_format(tmp_path: Path, name: str, relative: str,
                                                        content: object, problem: str) -> None:
    path = tmp_path / relative
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        write_pickle(path, content)
    with pytest.raises(ValueError, match=problem) as raised:
        benchmark_dataset(name, "train", data_root=tmp_path)
    assert f"{path} is malformed" in str(raised.value) and benchmark_info(name).layout in str(raised.value)
    error = raised.value  # no learn2learn traceback comes with it
    assert error.__cause__ is None and (error.__context__ is None or error.__suppress_context__)


def test_malformed_tiered_imagenet_labels_and_images(tmp_path: Path) -> None:
    write_tiered_imagenet(tmp_path, "test")
    labels_path = tmp_path / "tiered-imagenet" / "test_labels.pkl"
    write_pickle(labels_path, {"label_specific": np.arange(3)})
    expected = re.escape(f"{labels_path} is malformed: expected 8 integer class ids")
    with pytest.raises(ValueError, match=expected):
        benchmark_dataset("tiered-imagenet", "test", data_root=tmp_path)
    write_pickle(labels_path, {"label_specific": np.zeros(8, dtype=np.int64)})
    images_path = tmp_path / "tiered-imagenet" / "test_images_png.pkl"
    write_pickle(images_path, [np.frombuffer(png(pixels(0, 1, 32)[0]), np.uint8)] * 8)
    with pytest.raises(ValueError, match="first image is 32x32, expected 84x84"):
        benchmark_dataset("tiered-imagenet", "test", data_root=tmp_path)


def test_cifarfs_split_listing_a_missing_class_fails_before_learn2learn_copies(tmp_path: Path) -> None:
    write_cifarfs(tmp_path)
    split_file = tmp_path / "cifarfs" / "cifar100" / "splits" / "bertinetto" / "val.txt"
    split_file.write_text(split_file.read_text() + "no_such_class\n")
    with pytest.raises(ValueError, match=re.escape(f"{split_file} is malformed: ") + ".*no_such_class"):
        benchmark_dataset("cifarfs", "train", data_root=tmp_path)
    assert not (tmp_path / "cifarfs" / "processed").exists()


def test_cifarfs_incomplete_processed_folder_says_how_to_rebuild(tmp_path: Path) -> None:
    (tmp_path / "cifarfs" / "processed" / "train").mkdir(parents=True)
    with pytest.raises(ValueError, match="has no test/ folder; delete"):
        benchmark_dataset("cifarfs", "test", data_root=tmp_path)


def test_omniglot_zip_that_is_not_torchvisions_is_malformed(tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    write_omniglot(tmp_path, monkeypatch)
    monkeypatch.undo()  # back to the real md5 of torchvision's zips
    with pytest.raises(ValueError, match=r"images_background\.zip is malformed: its md5"):
        benchmark_dataset("omniglot", "train", data_root=tmp_path)


@pytest.fixture
def cifarfs_root(tmp_path: Path) -> Path:
    write_cifarfs(tmp_path)
    return tmp_path


def test_augmentation_is_repeatable_under_a_seed_and_only_on_the_training_split(cifarfs_root: Path) -> None:
    plain = benchmark_dataset("cifarfs", "train", data_root=cifarfs_root)
    augmented = benchmark_dataset("cifarfs", "train", data_root=cifarfs_root, augment=True)
    draws = []
    for seed in (0, 0, 1):
        torch.manual_seed(seed)
        draws.append(augmented.load_items([0, 5])[0])
    assert draws[0].shape == (2, 3, 32, 32)
    torch.testing.assert_close(draws[0], draws[1], rtol=0, atol=0)
    assert not torch.equal(draws[0], draws[2]) and not torch.equal(draws[0], plain.load_items([0, 5])[0])
    for split in ("validation", "test"):
        torch.testing.assert_close(
            benchmark_dataset("cifarfs", split, data_root=cifarfs_root, augment=True).load_items([0, 1])[0],
            benchmark_dataset("cifarfs", split, data_root=cifarfs_root).load_items([0, 1])[0], rtol=0, atol=0)


def test_image_size_resizes_and_scales_the_crop_padding(cifarfs_root: Path) -> None:
    dataset = benchmark_dataset("cifarfs", "train", data_root=cifarfs_root, augment=True, image_size=16)
    assert dataset.load_items([0])[0].shape == (1, 3, 16, 16) == (1, *image_shape("cifarfs", 16))
    crop = next(step for step in dataset.transform.transforms if hasattr(step, "transforms")).transforms[0]
    assert (crop.size, crop.padding) == ((16, 16), 2)


def test_metaoptnet_crop_pads_with_zeros_and_keeps_the_image_size() -> None:
    augment = metaoptnet_augmentation(image_size=32, padding=4)
    grey = torch.full((3, 32, 32), 0.5)
    shifted = 0
    for seed in range(8):
        torch.manual_seed(seed)
        image = augment(grey)
        assert image.shape == (3, 32, 32)
        inner = torch.isclose(image, image[:, 16:17, 16:17]).all(0)  # the image region, jittered uniformly
        rows, cols = inner.any(1).nonzero().squeeze(1), inner.any(0).nonzero().squeeze(1)
        height, width = len(rows), len(cols)
        assert int(inner.sum()) == height * width and height >= 28 and width >= 28  # a rectangle, shift <= 4
        shifted += (height, width) != (32, 32)
    assert shifted >= 4


def test_metaoptnet_normalization_matches_the_reference_statistics() -> None:
    image = torch.rand(3, 4, 4, dtype=torch.float64)
    for name, (mean, std) in {"mini-imagenet": (IMAGENET_MEAN, IMAGENET_STD),
                              "tiered-imagenet": (IMAGENET_MEAN, IMAGENET_STD),
                              "cifarfs": (CIFAR_MEAN, CIFAR_STD), "fc100": (CIFAR_MEAN, CIFAR_STD)}.items():
        expected = (image * 255 - torch.tensor(mean)[:, None, None]) / torch.tensor(std)[:, None, None]
        torch.testing.assert_close(metaoptnet_normalization(name)(image), expected)


@pytest.mark.parametrize("name", ["omniglot", "shapes3d-fs"])
def test_augment_is_refused_where_it_would_change_the_classes(name: str) -> None:
    with pytest.raises(ValueError, match="augment=True is not available"):
        benchmark_dataset(name, "train", augment=True)


def test_arguments_are_checked() -> None:
    with pytest.raises(ValueError, match="name must be one of"):
        benchmark_dataset("imagenet", "train")
    with pytest.raises(ValueError, match="split must be one of"):
        benchmark_dataset("fc100", "val")
    with pytest.raises(ValueError, match="image_size must be a positive int"):
        benchmark_dataset("fc100", "train", image_size=0)
    with pytest.raises(ValueError, match="at most 64 for shapes3d-fs"):
        benchmark_dataset("shapes3d-fs", "train", image_size=65)


def test_benchmark_info_gives_the_backbone_input() -> None:
    assert {name: image_shape(name) for name in BENCHMARKS} == {
        "shapes3d-fs": (3, 64, 64), "omniglot": (1, 28, 28), "mini-imagenet": (3, 84, 84),
        "tiered-imagenet": (3, 84, 84), "cifarfs": (3, 32, 32), "fc100": (3, 32, 32)}
    assert benchmark_info("omniglot").num_classes == (4400, 400, 1692)
    assert [benchmark_info(name).augmentable for name in BENCHMARKS] == [False, False, True, True, True, True]


@pytest.fixture(scope="module")
def shapes3d_test() -> tuple:
    dataset = benchmark_dataset("shapes3d-fs", "test", image_size=32)
    return Shapes3DFewShot("test", source=dataset.few_shot.source), dataset


def test_shapes3d_items_are_the_few_shot_view_downsampled(shapes3d_test: tuple) -> None:
    few_shot, dataset = shapes3d_test
    assert dataset.labels_to_indices == few_shot.labels_to_indices
    assert torch.equal(dataset.labels, few_shot.labels)
    indices = [5, len(dataset) - 1, 5, 70000]
    images, labels = dataset.load_items(indices)
    full = torch.stack([few_shot[i][0] for i in indices])
    torch.testing.assert_close(images, torch.nn.functional.avg_pool2d(full, 2))  # 2x2 block means
    assert labels.tolist() == [few_shot[i][1] for i in indices]
    image, label = dataset[70000]
    torch.testing.assert_close(image, images[3], rtol=0, atol=0)
    assert label == int(labels[3]) and dataset.load_items([])[0].shape == (0, 3, 32, 32)


def test_shapes3d_data_root_without_the_file_renders_and_a_missing_file_is_an_error(tmp_path: Path) -> None:
    assert benchmark_dataset("shapes3d-fs", "validation", data_root=tmp_path).few_shot.source.path is None
    with pytest.raises(FileNotFoundError, match=r"3dshapes\.h5"):
        benchmark_dataset("shapes3d-fs", "validation", data_root=tmp_path / "3dshapes.h5")


def test_shapes3d_class_factors_define_the_classes_and_are_refused_elsewhere() -> None:
    dataset = benchmark_dataset("shapes3d-fs", "train", image_size=16, class_factors=("scale", "orientation"))
    assert dataset.few_shot.class_factors == ("scale", "orientation")
    assert dataset.num_classes == round(0.6 * 8 * 15)
    factors = flat_to_factor_indices(dataset.few_shot.flat_indices[dataset.labels_to_indices[0]])
    scale, orientation = FACTOR_NAMES.index("scale"), FACTOR_NAMES.index("orientation")
    assert len(set(factors[:, scale].tolist())) == 1 and len(set(factors[:, orientation].tolist())) == 1
    assert len(set(factors[:, FACTOR_NAMES.index("shape")].tolist())) > 1  # shape varies within a class
    default = benchmark_dataset("shapes3d-fs", "train", image_size=16)
    assert default.few_shot.class_factors == ("shape", "object_hue", "scale")
    with pytest.raises(ValueError, match="class_factors"):
        benchmark_dataset("shapes3d-fs", "train", class_factors=("colour",))
    with pytest.raises(ValueError, match="class_factors is a shapes3d-fs option"):
        benchmark_dataset("cifarfs", "train", data_root="/no/such/root", class_factors=("shape",))
