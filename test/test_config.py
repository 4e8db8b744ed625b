"""featmap_ros.config: typed YAML loading, overrides, errors naming the file and dotted field."""
from dataclasses import dataclass, field
from typing import Literal, Optional

import pytest

from featmap_ros import config
from featmap_ros.errors import InputError


@dataclass
class Optim:
    lr: float = 1e-3
    steps: int = 100
    betas: tuple[float, float] = (0.9, 0.999)


@dataclass
class Cfg:
    name: str = "ape"
    backbone: Literal["vgg16", "resnet18"] = "resnet18"
    mapping: bool = True
    crop: Optional[int] = None
    optim: Optim = field(default_factory=Optim)
    objects: list[int] = field(default_factory=lambda: [1, 5])


def test_defaults_and_yaml(tmp_path):
    assert config.load(Cfg) == Cfg()
    p = tmp_path / "c.yaml"
    p.write_text("name: cat\noptim:\n  lr: 0.01\n  betas: [0.5, 0.9]\nobjects: [6]\ncrop: 128\n")
    c = config.load(Cfg, p)
    assert (c.name, c.optim.lr, c.optim.betas, c.objects, c.crop, c.optim.steps) == ("cat", 0.01, (0.5, 0.9), [6], 128, 100)


def test_overrides_are_typed(tmp_path):
    c = config.load(Cfg, None, ["optim.steps=7", "mapping=false", "backbone=vgg16"])
    assert c.optim.steps == 7 and c.mapping is False and c.backbone == "vgg16"
    with pytest.raises(InputError, match=r"Cfg\.optim\.steps: expected an integer"):
        config.load(Cfg, None, ["optim.steps=many"])
    with pytest.raises(InputError, match="KEY=VALUE"):
        config.load(Cfg, None, ["optim.steps"])


def test_unknown_key_names_file_and_dotted_path(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("optim:\n  lr: 0.1\n  momentum: 0.9\n")
    with pytest.raises(InputError) as e:
        config.load(Cfg, p)
    msg = str(e.value)
    assert str(p) in msg and "optim" in msg and "momentum" in msg and "valid keys" in msg


@pytest.mark.parametrize(
    "text, where",
    [
        ("optim:\n  lr: fast\n", ".optim.lr: expected a number"),
        ("mapping: maybe\n", ".mapping: expected true/false"),
        ("backbone: alexnet\n", ".backbone: must be one of"),
        ("objects: [1, two]\n", ".objects[1]: expected an integer"),
        ("optim:\n  betas: [0.9]\n", ".optim.betas: expected 2 values"),
        ("optim: 3\n", ".optim: expected a mapping"),
        ("name: 5\n", ".name: expected a string"),
        ("optim:\n  steps: true\n", ".optim.steps: expected an integer"),
    ],
)
def test_wrong_types_named(tmp_path, text, where):
    p = tmp_path / "c.yaml"
    p.write_text(text)
    with pytest.raises(InputError) as e:
        config.load(Cfg, p)
    assert str(p) + where in str(e.value)


def test_bad_files(tmp_path):
    with pytest.raises(InputError, match="not found"):
        config.load(Cfg, tmp_path / "missing.yaml")
    p = tmp_path / "broken.yaml"
    p.write_text("a: [1, 2\n")
    with pytest.raises(InputError, match="invalid YAML"):
        config.load(Cfg, p)
    p.write_text("- 1\n- 2\n")
    with pytest.raises(InputError, match="top level must be a mapping"):
        config.load(Cfg, p)


def test_to_dict_round_trip():
    c = config.load(Cfg, None, ["optim.lr=0.5"])
    assert config.from_dict(Cfg, config.to_dict(c)) == c


def test_empty_value_of_a_string_field_is_the_empty_string(tmp_path):
    from featmap_ros.training.config import TrainConfig

    p = tmp_path / "c.yaml"
    p.write_text("data:\n  domain_preset: harsh\n  backgrounds:\n")
    c = config.load(TrainConfig, p, ["data.domain_preset="])
    assert c.data.domain_preset == "" and c.data.backgrounds == ""
    with pytest.raises(InputError, match="data.max_real"):
        config.load(TrainConfig, p, ["data.max_real="])  # an empty value is still no integer
