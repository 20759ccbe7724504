"""WiSE-FT's pickled whole-module checkpoints load as plain tensors, and nothing in such a file ever runs.

The files are made here the way WiSE-FT made them: look-alike classes installed at WiSE-FT's module path
(`src.models.modeling`) and, for an OpenAI-CLIP tower, open_clip's modules re-homed at `clip.model`; then the
classifier is saved whole and those modules are removed again, so no class the file names exists on load.
"""

import contextlib
import json
import pickle
import re
import sys
import types
import zipfile
from pathlib import Path

import numpy as np
import open_clip
import pytest
import torch
import torch.nn.functional as F
from tiny import TINY_CFG
from torchvision import transforms

from precompute.__main__ import build_parser, execute
from vrf_core.legacy_checkpoint import (
    classifier_state_dict,
    is_wiseft_checkpoint,
    load_wiseft_classifier,
    read_wiseft,
)
from vrf_core.models import ImageClassifier, ModelError, load_classifier_weights, load_clip, load_weights

ARCH = "legacytiny"
FORMATS = ("pickle", "zip", "legacy")  # WiSE-FT's torch_save (pickle.dump); torch.save; torch.save before 1.6


class ImageEncoder(torch.nn.Module):  # WiSE-FT's: the CLIP model without its text transformer
    def __init__(self, model: torch.nn.Module, preprocess):
        super().__init__()
        self.model, self.train_preprocess, self.val_preprocess = model, preprocess, preprocess
        self.cache_dir = None
        delattr(self.model, "transformer")

    def forward(self, images):
        return self.model.encode_image(images)


class ClassificationHead(torch.nn.Linear):  # WiSE-FT's: normalise, then weight (C, D) and bias
    def __init__(self, normalize: bool, weights: torch.Tensor, biases: torch.Tensor):
        super().__init__(weights.shape[1], weights.shape[0])
        self.normalize = normalize
        self.weight, self.bias = torch.nn.Parameter(weights.clone()), torch.nn.Parameter(biases.clone())

    def forward(self, inputs):
        return super().forward(F.normalize(inputs, dim=-1) if self.normalize else inputs)


class WiseftImageClassifier(torch.nn.Module):
    def __init__(self, image_encoder, classification_head):
        super().__init__()
        self.image_encoder, self.classification_head = image_encoder, classification_head
        self.process_images = True
        self.train_preprocess = self.val_preprocess = image_encoder.train_preprocess

    def forward(self, inputs):
        return self.classification_head(self.image_encoder(inputs))


def _convert_image_to_rgb(image):
    return image.convert("RGB")


def installed(modules: dict[str, dict]) -> list[str]:
    """Put look-alike modules into sys.modules; returns their names, for `removed`."""
    for name, members in modules.items():
        module = sys.modules[name] = types.ModuleType(name)
        for attr, value in members.items():
            value.__module__, value.__qualname__ = name, attr
            setattr(module, attr, value)
    return list(modules)


def removed(names: list[str]) -> None:
    for name in names:
        del sys.modules[name]


@pytest.fixture(scope="module")
def arch(tmp_path_factory):
    cfg = tmp_path_factory.mktemp("arch") / f"{ARCH}.json"
    cfg.write_text(json.dumps(TINY_CFG))
    open_clip.add_model_config(cfg)
    return ARCH


def as_openai_clip(model: torch.nn.Module) -> list[str]:
    """Re-home open_clip's module classes at OpenAI CLIP's `clip.model` (same attribute layout for a ViT)."""
    homes = {}
    for module in model.modules():
        kind = type(module)
        if kind.__module__.startswith("open_clip"):
            homes.setdefault(kind.__name__, type(kind.__name__, (kind,), {}))
            module.__class__ = homes[kind.__name__]
    return installed({"clip": {}, "clip.model": homes, "clip.clip": {"_convert_image_to_rgb": _convert_image_to_rgb}})


def save_wiseft(path: Path, fmt: str, tower: str, bias: float = 0.0, seed: int = 0, roll: int = 0) -> dict:
    """A WiSE-FT ImageClassifier saved whole; returns what it was made from and its logits on `images`.
    roll: the head's rows rolled by that many classes (a second classifier with a known relation)."""
    torch.manual_seed(seed)
    clip = open_clip.create_model(ARCH)
    visual = {k: v.clone() for k, v in clip.visual.state_dict().items()}
    head = torch.roll(torch.randn(4, TINY_CFG["embed_dim"]) * 10, roll, 0)
    names = as_openai_clip(clip) if tower == "openai" else installed({"clip": {}, "clip.clip": {
        "_convert_image_to_rgb": _convert_image_to_rgb}})
    preprocess = transforms.Compose([transforms.Resize(32, interpolation=transforms.InterpolationMode.BICUBIC),
                                     transforms.CenterCrop(32), _convert_image_to_rgb, transforms.ToTensor(),
                                     transforms.Normalize((0.48, 0.46, 0.41), (0.27, 0.26, 0.28))])
    names += installed({"src": {}, "src.models": {}, "src.models.modeling": {
        "ImageEncoder": ImageEncoder, "ClassificationHead": ClassificationHead,
        "ImageClassifier": WiseftImageClassifier}})
    try:
        wiseft = WiseftImageClassifier(ImageEncoder(clip, preprocess),
                                       ClassificationHead(True, head, torch.full((4,), bias))).eval()
        images = torch.randn(3, 3, 32, 32)
        with torch.no_grad():
            logits = wiseft(images)
        if fmt == "pickle":
            path.write_bytes(pickle.dumps(wiseft))
        else:
            torch.save(wiseft, path, _use_new_zipfile_serialization=fmt == "zip")
    finally:
        removed(names)
    return {"visual": visual, "head": head, "images": images, "logits": logits}


def our_classifier(visual: dict, head: torch.Tensor) -> ImageClassifier:
    model = open_clip.create_model(ARCH)
    model.visual.load_state_dict(visual)
    return ImageClassifier(model.visual, head).eval()


@pytest.mark.filterwarnings("ignore:Couldn't retrieve source code")
@pytest.mark.parametrize("tower", ["openai", "open_clip"])
@pytest.mark.parametrize("fmt", FORMATS)
def test_a_wiseft_classifier_gives_the_logits_of_the_state_dict_it_was_made_from(arch, tmp_path, fmt, tower):
    path = tmp_path / "zeroshot.pt"
    made = save_wiseft(path, fmt, tower)
    assert "src.models" not in sys.modules and "clip.model" not in sys.modules
    assert is_wiseft_checkpoint(path)
    visual, head = load_wiseft_classifier(path)
    assert visual.keys() == made["visual"].keys()
    assert all(torch.equal(visual[k], made["visual"][k]) for k in visual) and torch.equal(head, made["head"])
    with torch.no_grad():
        loaded = our_classifier(visual, head)(made["images"])[1]
        reference = our_classifier(made["visual"], made["head"])(made["images"])[1]
    torch.testing.assert_close(loaded, reference, rtol=0, atol=0)
    torch.testing.assert_close(loaded, made["logits"], rtol=1e-5, atol=1e-5)  # WiSE-FT's own forward


@pytest.mark.filterwarnings("ignore:Couldn't retrieve source code")
def test_a_config_reads_both_files_through_the_usual_loaders(arch, tmp_path):
    """[model] pretrained = zeroshot.pt (tower + stored head), [finetune] checkpoint = finetuned.pt."""
    zs, ft = save_wiseft(tmp_path / "zeroshot.pt", "pickle", "openai"), save_wiseft(
        tmp_path / "finetuned.pt", "zip", "openai", seed=1)
    clip = load_clip(ARCH, str(tmp_path / "zeroshot.pt"))
    assert torch.equal(clip.zero_shot_head, zs["head"])
    assert all(torch.equal(v, zs["visual"][k]) for k, v in clip.model.visual.state_dict().items())
    finetuned = ImageClassifier(clip.model.visual, clip.zero_shot_head)
    load_classifier_weights(finetuned, tmp_path / "finetuned.pt")
    with torch.no_grad():
        torch.testing.assert_close(finetuned.eval()(ft["images"])[1], ft["logits"], rtol=1e-5, atol=1e-5)
    assert load_weights(tmp_path / "finetuned.pt").keys() == finetuned.state_dict().keys()
    with pytest.raises(ModelError, match=r"zeroshot.pt: its image tower does not match model 'ViT-B-32'"):
        load_clip("ViT-B-32", str(tmp_path / "zeroshot.pt"))


@pytest.mark.filterwarnings("ignore:Couldn't retrieve source code")
def test_the_converter_writes_the_same_state_dict_as_safetensors(arch, tmp_path, capsys):
    src, dst = tmp_path / "finetuned.pt", tmp_path / "finetuned.safetensors"
    save_wiseft(src, "pickle", "openai")
    assert execute(build_parser().parse_args(["convert", str(src), str(dst)])) == 0
    assert "head 4 classes x 32 features" in capsys.readouterr().err
    expected, written = classifier_state_dict(src), load_weights(dst)
    assert written.keys() == expected.keys() and all(torch.equal(written[k], expected[k]) for k in written)


@pytest.mark.filterwarnings("ignore:Couldn't retrieve source code")
def test_a_trained_head_bias_is_loaded_into_the_fine_tuned_model_and_refused_as_a_zero_shot_head(arch, tmp_path):
    made = save_wiseft(tmp_path / "finetuned.pt", "zip", "openai", bias=0.5)
    assert torch.equal(read_wiseft(tmp_path / "finetuned.pt").head_bias, torch.full((4,), 0.5))
    model = our_classifier(made["visual"], made["head"])
    load_classifier_weights(model, tmp_path / "finetuned.pt")
    assert torch.equal(model.head.bias, torch.full((4,), 0.5))
    with torch.no_grad():
        torch.testing.assert_close(model(made["images"])[1], made["logits"], rtol=1e-5, atol=1e-5)
    with pytest.raises(ModelError, match=r"finetuned.pt: its head has a non-zero bias \(max \|b\| = 0.5\): a "
                                         r"fine-tuned file, not a zero-shot one"):
        load_wiseft_classifier(tmp_path / "finetuned.pt")


def payloads(marker: Path) -> dict[str, bytes]:
    """Pickles that start like a WiSE-FT file, then would touch `marker`; keyed by the global they name."""
    start = b"(csrc.models.modeling\nImageClassifier\n"
    nested = f"cposix\nsystem\n(Vtouch {marker}\ntR.".encode()  # as a storage's legacy torch.save blob
    return {"posix.system": start + f"cposix\nsystem\n(Vtouch {marker}\ntRt.".encode(),
            "builtins.eval": start + f"cbuiltins\neval\n(V__import__('os').system('touch {marker}')\ntRt.".encode(),
            "subprocess.run": start + f"csubprocess\nrun\n((Vtouch\nV{marker}\nltRt.".encode(),
            "__main__.RunsWhenRebuilt": start + f"c__main__\nRunsWhenRebuilt\n)\x81(dVmarker\nV{marker}\nsbt.".encode(),
            "nested posix.system": start + b"ctorch.storage\n_load_from_bytes\n(C" + bytes([len(nested)]) + nested
            + b"tRt."}


@pytest.mark.parametrize("name", ["posix.system", "builtins.eval", "subprocess.run", "nested posix.system"])
def test_the_payloads_run_when_unpickled(tmp_path, name):
    """Check of the check: with WiSE-FT's module importable, plain unpickling runs each payload."""
    names = installed({"src": {}, "src.models": {}, "src.models.modeling": {"ImageClassifier": WiseftImageClassifier}})
    try:
        with pytest.raises(Exception) if name.startswith("nested") else contextlib.nullcontext():
            pickle.loads(payloads(tmp_path / "ran")[name])  # torch.load of the blob runs it, then fails
    finally:
        removed(names)
    assert (tmp_path / "ran").exists()


def with_data_pkl(zip_path: Path, data_pkl: bytes, out: Path) -> Path:
    """A copy of a torch.save zip whose data.pkl is replaced."""
    with zipfile.ZipFile(zip_path) as src, zipfile.ZipFile(out, "w") as dst:
        for info in src.infolist():
            dst.writestr(info, data_pkl if info.filename.endswith("/data.pkl") else src.read(info))
    return out


@pytest.mark.filterwarnings("ignore:Couldn't retrieve source code")
@pytest.mark.parametrize("container", ["zip", "pickle"])
def test_code_in_a_checkpoint_is_refused_and_never_runs(arch, tmp_path, container):
    good = tmp_path / "good.pt"
    save_wiseft(good, "zip", "openai")
    marker = tmp_path / "pwned"
    for name, payload in payloads(marker).items():
        path = tmp_path / f"evil-{name}.pt"
        if container == "zip":
            with_data_pkl(good, payload, path)
        else:
            path.write_bytes(payload)
        assert is_wiseft_checkpoint(path) == (container == "zip")  # a protocol-0 pickle is no WiSE-FT file
        refusal = rf"^{re.escape(str(path))}: refusing global {re.escape(name.split()[-1])}, "
        for load in (load_wiseft_classifier, classifier_state_dict):
            with pytest.raises(ModelError, match=refusal) as caught:
                load(path)
            assert "\n" not in str(caught.value)
        assert not marker.exists()


@pytest.mark.filterwarnings("ignore:Couldn't retrieve source code")
def test_a_refused_file_goes_through_load_weights_too(arch, tmp_path):
    good, marker = tmp_path / "good.pt", tmp_path / "pwned"
    save_wiseft(good, "zip", "openai")
    path = with_data_pkl(good, payloads(marker)["subprocess.run"], tmp_path / "evil.pt")
    with pytest.raises(ModelError, match=r"evil.pt: refusing global subprocess.run, which is not in this file's"):
        load_weights(path)
    assert not marker.exists()


@pytest.mark.filterwarnings("ignore:Couldn't retrieve source code")
@pytest.mark.parametrize("fmt", FORMATS)
def test_a_truncated_file_is_one_line(arch, tmp_path, fmt):
    path = tmp_path / "zeroshot.pt"
    save_wiseft(path, fmt, "openai")
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(ModelError, match=rf"^{re.escape(str(path))}: .*truncated") as caught:
        load_wiseft_classifier(path)
    assert "\n" not in str(caught.value)


def test_a_file_that_is_no_checkpoint_is_one_line(tmp_path):
    path = tmp_path / "notes.pt"
    path.write_bytes(b"not a pickle at all")
    with pytest.raises(ModelError, match=rf"^{re.escape(str(path))}: not a complete pickled checkpoint"):
        load_wiseft_classifier(path)
    assert not is_wiseft_checkpoint(path)


@pytest.mark.filterwarnings("ignore:Couldn't retrieve source code")
def test_a_run_starts_from_the_two_wiseft_files(arch, tmp_path):
    """`precompute run` with [model] pretrained = zeroshot.pt and [finetune] checkpoint = finetuned.pt. The
    fine-tuned file is the zero-shot one with its head rolled by one class and a trained bias of 0.25, so the
    bundle's fine-tuned logits must be its zero-shot logits rolled by one column plus 0.25: both files, the
    stored zero-shot head and the bias were used (and the WSE models interpolate with a zero bias)."""
    from tiny import tiny_config

    from precompute.config import load_config
    from precompute.pipeline import run

    save_wiseft(tmp_path / "zeroshot.pt", "zip", "openai")
    save_wiseft(tmp_path / "finetuned.pt", "pickle", "openai", roll=1, bias=0.25)
    cfg_path = tiny_config(tmp_path, tmp_path / "unused")
    text = re.sub(r'\[model\]\nname = "[^"]*"', f'[model]\nname = "{arch}"\npretrained = "zeroshot.pt"',
                  cfg_path.read_text())
    text = re.sub(r"\[finetune\]\n(?:.*\n)*?\n", '[finetune]\nmode = "none"\ncheckpoint = "finetuned.pt"\n\n', text)
    cfg_path.write_text(text)
    bundle = run(load_config(cfg_path))
    assert bundle.manifest["schema_version"] == 2
    for split in ("val", "test", "sketch"):
        zs, ft = (np.asarray(bundle.array(split, f"logits_{m}")) for m in ("zs", "ft"))
        np.testing.assert_allclose(ft, np.roll(zs, 1, axis=1) + 0.25, rtol=1e-5, atol=1e-4)  # + its head bias
