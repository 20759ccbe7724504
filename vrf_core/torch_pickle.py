"""Pickled torch modules (whole `torch.save(module)` / `pickle.dump(module)` files) read as trees of inert
stand-ins, without running anything from the file: the reader behind vrf_core/legacy_checkpoint.py.

WiSE-FT's `torch_save` pickle.dumps a `src.models.modeling.ImageClassifier` (each storage then a nested legacy
torch.save blob, `torch.storage._load_from_bytes`); torch.save of a module writes a zip (data.pkl + data/<key>)
or, before torch 1.6, the legacy format. All three are read with AllowListUnpickler: each class named maps to
an inert stand-in that keeps its state, our code rebuilds tensors from the storage bytes, and the module tree
is walked into a flat state dict. Nothing from the file is imported or called.
"""

from __future__ import annotations

import io
import struct
import zipfile
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import torch

from vrf_core.models import ModelError
from vrf_core.safe_unpickle import AllowListUnpickler, SafeUnpickleError, printable_name

WISEFT_MODULE = "src.models.modeling"
LEGACY_MAGIC, LEGACY_PROTOCOL = 0x1950A86A20F9469CFC6C, 1001  # torch's pre-zip torch.save header

STORAGE_DTYPES = {f"{name}Storage": dtype for name, dtype in {
    "Float": torch.float32, "Half": torch.float16, "BFloat16": torch.bfloat16, "Double": torch.float64,
    "Long": torch.int64, "Int": torch.int32, "Short": torch.int16, "Char": torch.int8, "Byte": torch.uint8,
    "Bool": torch.bool}.items()}
MODULE_CLASSES = {  # every nn.Module class WiSE-FT's classifiers hold (OpenAI CLIP or open_clip inside)
    WISEFT_MODULE: ("ImageClassifier", "ImageEncoder", "ClassificationHead"),
    "clip.model": ("CLIP", "VisionTransformer", "Transformer", "ResidualAttentionBlock", "LayerNorm", "QuickGELU",
                   "ModifiedResNet", "Bottleneck", "AttentionPool2d"),
    "open_clip.model": ("CLIP", "CustomTextCLIP"), "clip.clip": ("_convert_image_to_rgb",),
    "open_clip.transformer": ("VisionTransformer", "TextTransformer", "Transformer", "ResidualAttentionBlock",
                              "CustomResidualAttentionBlock", "Attention", "AttentionalPooler", "LayerNorm",
                              "LayerNormFp32", "QuickGELU", "LayerScale", "PatchDropout"),
    "open_clip.modified_resnet": ("ModifiedResNet", "Bottleneck", "AttentionPool2d"),
    "torch.nn.modules.linear": ("Linear", "Identity", "NonDynamicallyQuantizableLinear", "_LinearWithBias"),
    "torch.nn.modules.conv": ("Conv2d",), "torch.nn.modules.batchnorm": ("BatchNorm2d",),
    "torch.nn.modules.normalization": ("LayerNorm", "GroupNorm"), "torch.nn.modules.dropout": ("Dropout",),
    "torch.nn.modules.container": ("Sequential", "ModuleList", "ModuleDict"), "torch.nn.modules.sparse": ("Embedding",),
    "torch.nn.modules.activation": ("MultiheadAttention", "GELU", "ReLU", "SiLU", "Tanh", "Sigmoid"),
    "torch.nn.modules.pooling": ("AvgPool2d", "AdaptiveAvgPool2d", "MaxPool2d"),
    # the preprocessing WiSE-FT keeps on its modules: kept as inert values, never used
    "torchvision.transforms.transforms": ("Compose", "Resize", "CenterCrop", "ToTensor", "Normalize",
                                          "RandomResizedCrop", "RandomHorizontalFlip"),
    "torchvision.transforms.functional": ("InterpolationMode",), "PIL.Image": ("Resampling",),
}


class Inert:
    """Stands in for a class the pickle names: keeps the arguments and state it is given, does nothing else."""

    def __new__(cls, *args: object, **kwargs: object) -> Inert:
        self = object.__new__(cls)
        self.args, self.state = args, {}
        return self

    def __setstate__(self, state: object) -> None:
        self.state = state[0] if isinstance(state, tuple) and state and isinstance(state[0], dict) else state


@dataclass
class Stored:
    """A tensor rebuilt by our code from the file's storage bytes; the pickle can only pass it around."""

    tensor: torch.Tensor

    def __setstate__(self, state: object) -> None:
        raise SafeUnpickleError("the pickle tries to set the state of a tensor, which no torch file does")


@dataclass(frozen=True)
class StorageType:  # what torch.FloatStorage etc. stand for: the dtype of a storage's elements
    dtype: torch.dtype


def _stored(value: object, what: str) -> Stored:  # torch puts a tensor there; a crafted pickle may not
    if not isinstance(value, Stored):
        raise SafeUnpickleError(f"{what} is a {type(value).__name__}, not a tensor storage")
    return value


def _rebuild_tensor(storage: object, offset: int, size: tuple, stride: tuple, *_: object) -> Stored:
    """torch._utils._rebuild_tensor_v2, with the view checked to lie inside its storage."""
    flat = _stored(storage, "a tensor's storage").tensor
    dims = (offset, *size, *stride)
    if len(size) != len(stride) or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in dims):
        raise SafeUnpickleError(f"tensor view offset {offset}, size {size}, stride {stride} is not valid")
    last = offset + sum((n - 1) * s for n, s in zip(size, stride)) if all(size) else -1
    if last >= flat.numel():
        raise SafeUnpickleError(f"tensor view of size {tuple(size)} reaches past its storage of {flat.numel()}")
    return Stored(flat.as_strided(tuple(size), tuple(stride), offset))


def _rebuild_parameter(data: object, *_: object) -> Stored:
    return _stored(data, "a parameter's data")


def _tensor_globals() -> dict:
    """What torch's pickles of tensors and modules name besides module classes."""
    allowed = {("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
               ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
               ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
               ("collections", "OrderedDict"): OrderedDict, ("torch", "Size"): torch.Size}
    # protocol 2 (torch.save's) names builtins as Python 2 did
    allowed |= {(module, kind.__name__): kind for module in ("builtins", "__builtin__") for kind in (set, frozenset)}
    allowed |= {("torch", name): StorageType(dtype) for name, dtype in STORAGE_DTYPES.items()}
    allowed |= {("torch", str(dtype).removeprefix("torch.")): dtype for dtype in STORAGE_DTYPES.values()}
    return allowed


def _module_globals(source: str) -> dict:
    stand_ins = {(module, name): type(name, (Inert,), {"origin": f"{module}.{name}"})
                 for module, names in MODULE_CLASSES.items() for name in names}
    # a storage saved by plain pickle is a nested legacy torch.save blob, read by the same rules
    return {**_tensor_globals(), **stand_ins,
            ("torch.storage", "_load_from_bytes"): lambda blob: _read_legacy(io.BytesIO(blob), source, {})}


def _storage_id(pid: object, source: str) -> tuple[torch.dtype, str, int]:
    """('storage', storage type, key, location, numel[, view]) -> (dtype, key, numel)."""
    if not (isinstance(pid, tuple) and len(pid) in (5, 6) and pid[0] == "storage" and isinstance(pid[1], StorageType)
            and isinstance(pid[2], str) and isinstance(pid[4], int) and pid[4] >= 0 and pid[5:] in ((), (None,))):
        raise SafeUnpickleError(f"{source}: refusing persistent id {str(pid)[:200]}: not a tensor storage")
    return pid[1].dtype, pid[2], pid[4]


def _read_zip(path: Path) -> object:
    """torch.save's zip: data.pkl, whose persistent ids name the raw records data/<key>."""
    source = str(path)
    with zipfile.ZipFile(path) as archive:
        pickles = [n for n in archive.namelist() if n.endswith("/data.pkl")]
        if len(pickles) != 1:
            raise SafeUnpickleError(f"{source}: a zip, but not a torch.save file (no single */data.pkl)")
        root, loaded = pickles[0].removesuffix("data.pkl"), {}

        def storage(pid: object) -> Stored:
            dtype, key, numel = _storage_id(pid, source)
            if key in loaded:  # tensors that share a storage name it once each
                return loaded[key]
            size = torch.empty((), dtype=dtype).element_size() * numel
            try:
                info = archive.getinfo(f"{root}data/{key}")
            except KeyError:
                raise SafeUnpickleError(f"{source}: storage record data/{printable_name(key)} is missing") from None
            if info.file_size != size or info.compress_type != zipfile.ZIP_STORED:  # what torch.save writes
                raise SafeUnpickleError(f"{source}: storage {printable_name(key)} is not {size} bytes stored "
                                        "uncompressed")
            loaded[key] = Stored(_from_bytes(archive.read(info), dtype))
            return loaded[key]

        with archive.open(pickles[0]) as data_pkl:
            return AllowListUnpickler(data_pkl, _module_globals(source), source, storage).load()


def _read_legacy(file: io.BytesIO, source: str, allowed: dict) -> object:
    """torch's pre-zip format: magic, protocol, sys info, the object, its storage keys, then each storage's bytes."""
    blob_size, pending = len(file.getbuffer()), {}
    stand_ins = {value for value in allowed.values() if isinstance(value, type) and issubclass(value, Inert)}

    def storage(pid: object) -> object:
        if isinstance(pid, tuple) and len(pid) == 4 and pid[0] == "module" and pid[1] in stand_ins:
            return pid[1]  # old torch.save(module) names each module class this way; ours is a stand-in
        dtype, key, numel = _storage_id(pid, source)
        if key not in pending:
            if numel * torch.empty((), dtype=dtype).element_size() > blob_size:
                raise SafeUnpickleError(f"{source}: storage {printable_name(key)} is larger than the file: it is "
                                        "truncated")
            pending[key] = torch.empty(numel, dtype=dtype)  # filled below, once the pickle has been read
        return Stored(pending[key])

    def load(persistent=None) -> object:
        return AllowListUnpickler(file, {**_tensor_globals(), **allowed}, source, persistent).load()

    if load() != LEGACY_MAGIC or load() != LEGACY_PROTOCOL:
        raise SafeUnpickleError(f"{source}: not a torch file (no legacy torch.save header)")
    if not isinstance(sys_info := load(), dict) or sys_info.get("little_endian") is not True:
        raise SafeUnpickleError(f"{source}: a big-endian torch file, which this reader does not convert")
    obj, keys = load(storage), load()
    if not isinstance(keys, list) or sorted(keys) != sorted(pending):
        raise SafeUnpickleError(f"{source}: its storage list does not match the storages its tensors name")
    for key in keys:
        flat = pending[key]
        count = struct.unpack("<q", file.read(8) or b"\0" * 8)[0]
        raw = file.read(count * flat.element_size()) if count == flat.numel() else b""
        if count != flat.numel() or len(raw) != flat.numel() * flat.element_size():
            raise SafeUnpickleError(f"{source}: storage {printable_name(key)} is truncated or of the wrong size")
        flat.copy_(_from_bytes(raw, flat.dtype))
    return obj


def _from_bytes(raw: bytes, dtype: torch.dtype) -> torch.Tensor:  # frombuffer refuses an empty buffer
    return torch.frombuffer(bytearray(raw), dtype=dtype) if raw else torch.empty(0, dtype=dtype)


def read_module_tree(path: str | Path) -> object:
    """The pickled object of a torch or plain-pickle file, every module an Inert stand-in, every tensor Stored."""
    path, source = Path(path), str(path)
    if not path.is_file():
        raise ModelError(f"{source}: no such checkpoint file")
    try:
        if zipfile.is_zipfile(path):
            return _read_zip(path)
        with path.open("rb") as file:
            if file.read(2) == b"PK":
                raise SafeUnpickleError(f"{source}: a zip without its directory at the end: the file is truncated")
            file.seek(0)
            first = AllowListUnpickler(file, _module_globals(source), source).load()
            if first != LEGACY_MAGIC:
                return first  # a plain pickle.dump of the module, as WiSE-FT's own torch_save writes
            file.seek(0)
            return _read_legacy(io.BytesIO(file.read()), source, _module_globals(source))
    except SafeUnpickleError as exc:
        raise ModelError(str(exc) if str(exc).startswith(source) else f"{source}: {exc}") from None
    except Exception as exc:  # a truncated or malformed file fails in many ways; only our callables ever ran
        reason = " ".join(str(exc).split())[:200] or type(exc).__name__
        raise ModelError(f"{source}: not a complete pickled checkpoint ({type(exc).__name__}: {reason}); "
                         "is the file truncated?") from None


def module_state_dict(node: object, prefix: str = "") -> dict[str, torch.Tensor]:
    """The state dict of a stand-in module tree: `_parameters`, persistent `_buffers`, `_modules` recursively."""
    state = getattr(node, "state", None)
    if not isinstance(node, Inert) or not isinstance(state, dict):
        raise ModelError(f"{prefix or 'the checkpoint'} is not a pickled torch module")
    skip = state.get("_non_persistent_buffers_set") or set()
    tensors = {**state.get("_parameters", {}), **{k: v for k, v in state.get("_buffers", {}).items() if k not in skip}}
    out = {f"{prefix}{name}": _stored(v, f"{prefix}{name}").tensor.clone() for name, v in tensors.items()
           if v is not None}
    for name, child in state.get("_modules", {}).items():
        if child is not None:
            out |= module_state_dict(child, f"{prefix}{name}.")
    return out
