"""Tests of featmap_ros.nets: shapes, g starts as identity, PCA prior, bad configs."""
from featmap_ros.render.renderer import preload_torch_compiler

preload_torch_compiler()  # at collection, before any test renders (Mesa then triton segfaults)

import pytest
import torch

from featmap_ros.config import from_dict
from featmap_ros.errors import InputError
from featmap_ros.nets import Localiser, LocaliserConfig, ModelConfig, build_model


def small_object(**kw):
    return ModelConfig(**{"task": "object", "backbone": "small", "input_size": 32, "feature_dim": 64,
                          "small_channels": [8, 16], "n_objects": 2, "pretrained": False, **kw})


def test_object_shapes_and_g_identity_at_init():
    torch.manual_seed(0)
    m = build_model(small_object()).eval()
    x = torch.rand(3, 3, 32, 32)
    y = m(x)
    assert y.shape == (3, 2, 8, 2)
    # g is initialised to the identity, so real and synthetic paths agree before training
    assert torch.allclose(m(x, real=True), y, atol=1e-6)
    ps, pr, fs, fr, fraw = m(torch.cat([x, x]), n_synth=3)
    assert ps.shape == pr.shape == (3, 2, 8, 2) and fs.shape == fr.shape == fraw.shape == (3, 64)
    assert torch.allclose(fr, fraw, atol=1e-6)  # g = identity at init


def test_hand_deepprior_shapes_and_pca_prior():
    torch.manual_seed(0)
    cfg = ModelConfig(task="hand", backbone="deepprior", input_size=32, feature_dim=32,
                      deepprior_widths=[8, 16], deepprior_blocks=[1, 2], pca_dim=5, pretrained=False)
    m = build_model(cfg).eval()
    y = m(torch.rand(2, 1, 32, 32) * 2 - 1)
    assert y.shape == (2, 14, 3)
    # targets in a 5-D subspace: the prior spans it, every output lies in mean + span
    basis = torch.linalg.qr(torch.randn(42, 5))[0].T
    targets = torch.randn(100, 5) @ basis + 0.3
    m.h.set_pca(targets)
    out = m(torch.rand(4, 1, 32, 32)).reshape(4, 42) - targets.mean(0)
    resid = out - (out @ basis.T) @ basis
    assert resid.abs().max() < 1e-4


@pytest.mark.parametrize("backbone,size", [("resnet18", 64), ("vgg16", 32)])
def test_torchvision_trunks_build_without_weights(backbone, size):
    m = build_model(ModelConfig(backbone=backbone, input_size=size, feature_dim=16, pretrained=False)).eval()
    with torch.no_grad():
        assert m(torch.rand(1, 3, size, size)).shape == (1, 1, 8, 2)


def test_localiser_shape():
    loc = Localiser(LocaliserConfig(input_width=64, input_height=48, channels=[8, 8, 8], n_objects=3)).eval()
    assert loc(torch.rand(2, 3, 48, 64)).shape == (2, 3, 4)


def test_bad_configs_name_the_field():
    with pytest.raises(InputError, match="backbone"):
        build_model(ModelConfig(task="hand", backbone="resnet18"))
    with pytest.raises(InputError, match="input_size"):
        build_model(small_object(input_size=30))
    with pytest.raises(InputError, match="pca_dim"):
        build_model(small_object(pca_dim=30))
    with pytest.raises(InputError, match="backbon"):
        from_dict(ModelConfig, {"backbon": "small"}, "model")
    with pytest.raises(InputError, match="backbone"):
        from_dict(ModelConfig, {"backbone": "vgg19"}, "model")


def test_conv_level_mapping_shapes_and_same_function_as_fc_level():
    # map_level conv: f = conv trunk (feature maps), g = residual conv blocks (identity at init),
    # h = the FC layers + head; the network computes what the fc-level one computes with the same weights
    torch.manual_seed(0)
    conv = build_model(small_object(map_level="conv")).eval()
    fc = build_model(small_object()).eval()
    renamed = {k.replace("h.pre.", "f.fc."): v for k, v in conv.state_dict().items() if not k.startswith("g.")}
    renamed.update({k: v for k, v in fc.state_dict().items() if k.startswith("g.")})
    fc.load_state_dict(renamed)
    x = torch.rand(3, 3, 32, 32)
    assert conv.f(x).shape == (3, 16, 8, 8)
    assert torch.allclose(conv(x), fc(x), atol=1e-6)
    assert torch.allclose(conv(x, real=True), conv(x), atol=1e-6)
    ps, pr, fs, fr, fraw = conv(torch.cat([x, x]), n_synth=3)
    assert fs.shape == fr.shape == (3, 16, 8, 8) and pr.shape == (3, 2, 8, 2)
