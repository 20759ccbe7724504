"""webdataset tar shards and Hugging Face datasets (save_to_disk folders, parquet) as dataset sources:
the same labels and pixels as the image folder they were packed from, stable refs, fingerprints keyed
by the shards' content, one-line errors, and the config types registered."""

import io
import json
import os
import tarfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from tiny import CLASSES, draw, image_folder_tree, tiny_config, tiny_local_dir

from precompute.config import ConfigError, DatasetSection, load_config
from precompute.config_checks import check_dataset
from precompute.pipeline import run
from precompute.report import report
from precompute.sources import dataset_types, folder_dataset
from vrf_core.data import DatasetError, image_folder
from vrf_core.datasets.hf import hf_dataset
from vrf_core.datasets.webdataset import expand_braces, webdataset_shards
from vrf_core.image_scan import scan_images

FOLDERS = [c.replace(" ", "_") for c in CLASSES]
IMAGE_TYPE = pa.struct([("bytes", pa.binary()), ("path", pa.string())])


def hf_features(names: list[str] | None = CLASSES) -> dict:
    label = {"names": names, "_type": "ClassLabel"} if names else {"dtype": "int64", "_type": "Value"}
    return {"image": {"_type": "Image"}, "label": label}


def add_member(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mtime = len(data), 0
    tar.addfile(info, io.BytesIO(data))


def write_shards(folder: Path, samples: list[tuple[bytes, int]], per_shard: int) -> list[Path]:
    """webdataset layout: shard 0 labels by .cls, the others by .json {"label": ...}."""
    folder.mkdir(parents=True, exist_ok=True)
    shards = []
    for s, start in enumerate(range(0, len(samples), per_shard)):
        shards.append(folder / f"train-{s:06d}.tar")
        with tarfile.open(shards[-1], "w") as tar:
            for i, (png, label) in enumerate(samples[start:start + per_shard], start=start):
                add_member(tar, f"{i:06d}.png", png)
                if s == 0:
                    add_member(tar, f"{i:06d}.cls", str(label).encode())
                else:
                    add_member(tar, f"{i:06d}.json", json.dumps({"label": label, "size": 32}).encode())
    return shards


def hf_table(samples: list[tuple[bytes, int]], features: dict) -> pa.Table:
    images = pa.array([{"bytes": png, "path": None} for png, _ in samples], IMAGE_TYPE)
    labels = pa.array([label for _, label in samples], pa.int64())
    meta = {b"huggingface": json.dumps({"info": {"features": features}}).encode()}
    return pa.table({"image": images, "label": labels}).replace_schema_metadata(meta)


def write_parquet(folder: Path, samples: list[tuple[bytes, int]], files: int, features: dict | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    per_file = -(-len(samples) // files)
    for f in range(files):
        table = hf_table(samples[f * per_file:(f + 1) * per_file], features or hf_features())
        pq.write_table(table, folder / f"train-{f:05d}-of-{files:05d}.parquet", row_group_size=2)
    return folder


def write_save_to_disk(folder: Path, samples: list[tuple[bytes, int]], features: dict | None = None) -> Path:
    """What `datasets.Dataset.save_to_disk` writes: an Arrow IPC stream, dataset_info.json, state.json."""
    folder.mkdir(parents=True, exist_ok=True)
    table = hf_table(samples, features or hf_features())
    with pa.ipc.new_stream(folder / "data-00000-of-00001.arrow", table.schema) as writer:
        writer.write_table(table, max_chunksize=3)
    (folder / "dataset_info.json").write_text(json.dumps({"features": features or hf_features()}))
    (folder / "state.json").write_text(json.dumps({"_data_files": [{"filename": "data-00000-of-00001.arrow"}],
                                                   "_fingerprint": "0", "_format_type": None}))
    return folder


@pytest.fixture(scope="module")
def packed(tmp_path_factory):
    """An image folder (3 images per class) and the same samples as 2 tar shards, 2 parquet files, save_to_disk."""
    tmp = tmp_path_factory.mktemp("sources")
    reference = image_folder("folder", image_folder_tree(tmp / "folder", 3, seed=5), CLASSES, FOLDERS)
    samples = [((tmp / "folder" / ref).read_bytes(), int(y)) for ref, y in zip(reference.refs, reference.labels)]
    write_shards(tmp / "wds", samples, per_shard=7)
    write_parquet(tmp / "parquet", samples, files=2)
    write_save_to_disk(tmp / "arrow", samples)
    return tmp, reference, samples


def assert_same_samples(ds, reference) -> None:
    assert len(ds) == len(reference)
    assert np.array_equal(ds.labels, reference.labels) and ds.classnames == reference.classnames
    for i in range(len(ds)):
        assert np.array_equal(np.asarray(ds.load(i)), np.asarray(reference.load(i))), ds.refs[i]


def test_webdataset_shards_equal_the_image_folder(packed):
    tmp, reference, _ = packed
    ds = webdataset_shards("wds", tmp / "wds/train-{000000..000001}.tar", CLASSES)
    assert_same_samples(ds, reference)
    assert ds.refs[0] == "train-000000.tar#000000" and ds.refs[-1] == "train-000001.tar#000011"
    assert ds.root == str(tmp / "wds") and ds.projection is None
    for path in (tmp / "wds", tmp / "wds/train-*.tar", tmp / "wds/train-{000000,000001}.tar"):
        assert webdataset_shards("wds", path, CLASSES).refs == ds.refs


@pytest.mark.parametrize("layout", ["parquet", "parquet/*.parquet", "arrow", "arrow/data-00000-of-00001.arrow"])
def test_hf_datasets_equal_the_image_folder(packed, layout):
    tmp, reference, _ = packed
    ds = hf_dataset("hf", tmp / layout, CLASSES)
    assert_same_samples(ds, reference)
    first = "data-00000-of-00001.arrow#0" if layout.startswith("arrow") else "train-00000-of-00002.parquet#0"
    assert ds.refs[0] == first


def test_classlabel_names_map_onto_the_config_classes_by_name(packed, tmp_path):
    _, reference, samples = packed
    renamed = [CLASSES[3], CLASSES[1].replace(" ", "_"), CLASSES[0].upper(), CLASSES[2]]
    order = {name: j for j, name in enumerate([CLASSES[3], CLASSES[1], CLASSES[0], CLASSES[2]])}
    shuffled = [(png, order[CLASSES[y]]) for png, y in samples]
    ds = hf_dataset("hf", write_save_to_disk(tmp_path / "renamed", shuffled, hf_features(renamed)), CLASSES)
    assert np.array_equal(ds.labels, reference.labels)
    subset = [(png, [0, 2, 3].index(y)) for png, y in samples if y != 1]
    names = [CLASSES[0], CLASSES[2], CLASSES[3]]
    ds = hf_dataset("hf", write_parquet(tmp_path / "subset", subset, 1, hf_features(names)), CLASSES)
    assert ds.projection.groups == ((0,), (2,), (3,)) and ds.classnames == names
    assert ds.labels.tolist() == [y for _, y in subset]


def test_refs_and_fingerprints_are_stable_and_keyed_by_shard_content(packed, tmp_path):
    tmp, _, samples = packed
    for build, files, pattern in [(webdataset_shards, write_shards(tmp_path / "wds", samples, 7), "*.tar"),
                                  (hf_dataset, [write_save_to_disk(tmp_path / "hf", samples) /
                                                "data-00000-of-00001.arrow"], "")]:
        folder = files[0].parent
        first, again = build("a", folder, CLASSES), build("b", folder / pattern if pattern else folder, CLASSES)
        assert first.refs == again.refs and first.fingerprint() == again.fingerprint()
        held_out = first.subset([1, 4])
        assert held_out.fingerprint() == again.subset([1, 4]).fingerprint()
        st = files[-1].stat()
        os.utime(files[-1], ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # the shard edited, same names
        touched = build("c", folder, CLASSES)
        assert touched.refs == first.refs and touched.fingerprint() != first.fingerprint()
        assert touched.subset([1, 4]).files_key() != held_out.files_key()
        assert touched.without([first.refs[0]]).files_key() != first.without([first.refs[0]]).files_key()


def test_brace_patterns_expand_like_webdataset():
    assert expand_braces("s-{000..002}.tar") == ["s-000.tar", "s-001.tar", "s-002.tar"]
    assert expand_braces("{a,b}-{8..10}") == ["a-8", "a-9", "a-10", "b-8", "b-9", "b-10"]
    assert expand_braces("{00..10}")[:2] == ["00", "01"] and expand_braces("{0..10}")[-2:] == ["9", "10"]
    assert expand_braces("plain.tar") == ["plain.tar"]


def one_line_error(build, *args, **kwargs) -> str:
    with pytest.raises(DatasetError) as info:
        build(*args, **kwargs)
    assert "\n" not in str(info.value)
    return str(info.value)


def test_errors_name_the_file_the_field_and_the_fix(packed, tmp_path):
    tmp, _, samples = packed
    message = one_line_error(webdataset_shards, "wds", tmp / "wds/train-{000000..000002}.tar", CLASSES)
    assert "train-000002.tar" in message and "does not exist" in message and "shard range" in message
    with tarfile.open(tmp_path / "no-image.tar", "w") as tar:
        add_member(tar, "a.png", samples[0][0])
        add_member(tar, "a.cls", b"0")
        add_member(tar, "b.cls", b"1")
    message = one_line_error(webdataset_shards, "wds", tmp_path / "no-image.tar", CLASSES)
    assert "no-image.tar" in message and "'b'" in message and "no image member" in message
    with tarfile.open(tmp_path / "bad-label.tar", "w") as tar:
        add_member(tar, "a.png", samples[0][0])
        add_member(tar, "a.json", json.dumps({"target": 7}).encode())
    message = one_line_error(webdataset_shards, "wds", tmp_path / "bad-label.tar", CLASSES)
    assert "bad-label.tar#a" in message and "label_key" in message
    message = one_line_error(webdataset_shards, "wds", tmp_path / "bad-label.tar", CLASSES, label_key="target")
    assert "bad-label.tar#a" in message and "7 is outside the class list (0..3)" in message
    pq.write_table(pa.table({"image": hf_table(samples[:2], hf_features()).column("image"), "target": [0, 1]}),
                   tmp_path / "nolabel.parquet")
    message = one_line_error(hf_dataset, "hf", tmp_path / "nolabel.parquet", CLASSES)
    assert "nolabel.parquet" in message and "'label'" in message and "options.label_column" in message
    assert len(hf_dataset("hf", tmp_path / "nolabel.parquet", CLASSES, label_column="target")) == 2
    bad = write_parquet(tmp_path / "outside", [(samples[0][0], 9)], 1, hf_features(None))
    message = one_line_error(hf_dataset, "hf", bad, CLASSES)
    assert "train-00000-of-00001.parquet" in message and "9 is outside the class list" in message
    unknown = write_save_to_disk(tmp_path / "unknown", samples[:1], hf_features(["red square", "purple dot"]))
    message = one_line_error(hf_dataset, "hf", unknown, CLASSES)
    assert "'purple dot'" in message and "[classes]" in message
    message = one_line_error(hf_dataset, "hf", tmp / "parquet", CLASSES, image_column="img")
    assert "no image column 'img'" in message and "options.image_column" in message


def test_labels_as_class_names_and_layout_errors(packed, tmp_path):
    tmp, reference, samples = packed
    with tarfile.open(tmp_path / "named.tar", "w") as tar:
        for i, (png, y) in enumerate(samples):
            add_member(tar, f"s{i}.png", png)
            add_member(tar, f"s{i}.json", json.dumps({"class": CLASSES[y].replace(" ", "_")}).encode())
    assert np.array_equal(webdataset_shards("wds", tmp_path / "named.tar", CLASSES, label_key="class").labels,
                          reference.labels)
    table = pa.table({"image": hf_table(samples, hf_features()).column("image"),
                      "label": [CLASSES[y].upper() for _, y in samples]})
    pq.write_table(table, tmp_path / "names.parquet")
    assert np.array_equal(hf_dataset("hf", tmp_path / "names.parquet", CLASSES).labels, reference.labels)
    dataset_dict = tmp_path / "dict"
    write_save_to_disk(dataset_dict / "train", samples)
    (dataset_dict / "dataset_dict.json").write_text(json.dumps({"splits": ["train"]}))
    assert str(dataset_dict / "train") in one_line_error(hf_dataset, "hf", dataset_dict, CLASSES)
    with tarfile.open(tmp_path / "zipped.tar", "w:gz") as tar:
        add_member(tar, "a.png", samples[0][0])
    assert "decompress" in one_line_error(webdataset_shards, "wds", tmp_path / "zipped.tar", CLASSES)
    assert "matches no webdataset shard" in one_line_error(webdataset_shards, "wds", tmp / "wds/*.tgz", CLASSES)


def test_forked_loader_workers_read_the_same_pixels(packed):
    import torch.utils.data

    tmp, reference, _ = packed
    for ds in (webdataset_shards("wds", tmp / "wds", CLASSES), hf_dataset("hf", tmp / "parquet", CLASSES),
               hf_dataset("hf", tmp / "arrow", CLASSES)):
        ds.load(0)  # opened and cached in this process before the workers fork
        pixels = _Pixels(ds)
        loader = torch.utils.data.DataLoader(pixels, batch_size=4, num_workers=2, multiprocessing_context="fork")
        got = np.concatenate([batch.numpy() for batch in loader])
        assert np.array_equal(got, np.stack([np.asarray(reference.load(i)) for i in range(len(reference))]))


class _Pixels:
    def __init__(self, images):
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> np.ndarray:
        return np.asarray(self.images.load(i))


def test_unreadable_samples_are_reported_with_their_refs(packed, tmp_path):
    _, _, samples = packed
    good = io.BytesIO()
    draw(0, np.random.default_rng(0)).save(good, format="PNG")
    with tarfile.open(tmp_path / "shard.tar", "w") as tar:
        for key, data in (("ok", good.getvalue()), ("broken", good.getvalue()[:40])):
            add_member(tar, f"{key}.png", data)
            add_member(tar, f"{key}.cls", b"0")
    bad = scan_images(webdataset_shards("wds", tmp_path / "shard.tar", CLASSES), workers=1)
    assert [ref for ref, _ in bad] == ["shard.tar#broken"]
    rows = [(good.getvalue(), 0), (good.getvalue()[:40], 1)]
    bad = scan_images(hf_dataset("hf", write_save_to_disk(tmp_path / "hf", rows), CLASSES), workers=1)
    assert [ref for ref, _ in bad] == ["data-00000-of-00001.arrow#1"]


def test_config_types_and_options_are_registered_and_checked():
    types = dataset_types()
    assert types["webdataset"] == ("label_key",) and types["hf"] == ("image_column", "label_column")
    check_dataset("run.toml", "data.train", DatasetSection(type="hf", path="d", options={"label_column": "y"}))
    with pytest.raises(ConfigError, match="did you mean 'label_column'"):
        check_dataset("run.toml", "data.train", DatasetSection(type="hf", path="d", options={"label_colum": "y"}))
    with pytest.raises(ConfigError, match='did you mean "webdataset"'):
        check_dataset("run.toml", "data.train", DatasetSection(type="webdatset", path="d"))


def pack_folder_source(tmp: Path, split: str) -> tuple[list[tuple[bytes, int]], list[str]]:
    """(image bytes, label) of data/<split> in the order the folder source reads it, and its class names."""
    ds = folder_dataset(split, tmp / "data" / split, CLASSES, DatasetSection())
    return [((tmp / "data" / split / ref).read_bytes(), int(y)) for ref, y in zip(ds.refs, ds.labels)], ds.classnames


def test_precompute_run_on_shards_reports_what_the_image_folder_run_reports(tmp_path):
    folder_config = tiny_config(tmp_path, tiny_local_dir(tmp_path / "model"))
    text = folder_config.read_text()
    wds_text, hf_text = text.replace('out = "bundle"', 'out = "bundle-wds"'), text.replace('out = "bundle"',
                                                                                          'out = "bundle-hf"')
    for split in ("train", "test", "sketch", "subset"):
        samples, names = pack_folder_source(tmp_path, split)
        write_parquet(tmp_path / "hf" / split, samples, 2, hf_features(names))
        hf_text = hf_text.replace(f'type = "folder"\npath = "data/{split}"', f'type = "hf"\npath = "hf/{split}"')
        if split != "subset":  # webdataset labels are config class indices: no subset projection to declare
            last = len(write_shards(tmp_path / "wds" / split, samples, per_shard=16)) - 1
            wds_text = wds_text.replace(f'type = "folder"\npath = "data/{split}"',
                                        f'type = "webdataset"\npath = "wds/{split}/train-{{000000..{last:06d}}}.tar"')
    assert wds_text.count('"webdataset"') == 3 and hf_text.count('"hf"') == 4
    (tmp_path / "wds.toml").write_text(wds_text)
    (tmp_path / "hf.toml").write_text(hf_text)
    expected = report(run(load_config(folder_config)))
    expected.pop("bundle")  # the output folder, the one entry that differs
    for config, bundle in (("wds.toml", "bundle-wds"), ("hf.toml", "bundle-hf")):
        got = report(run(load_config(tmp_path / config)))
        assert got.pop("bundle") == str(tmp_path / bundle) and got == expected
