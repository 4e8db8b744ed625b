"""Tests of featmap_ros.training.loop: a run killed mid-way and resumed equals an uninterrupted run;
checkpoint checks; the mapping losses."""
from featmap_ros.render.renderer import preload_torch_compiler

preload_torch_compiler()  # at collection, before any test renders (Mesa then triton segfaults)

import numpy as np
import pytest
import torch

from featmap_ros.errors import InputError
from featmap_ros.nets import ModelConfig
from featmap_ros.training.sources import TensorSource
from featmap_ros.training.config import TrainConfig
from featmap_ros.checkpoint import load_checkpoint, model_from_checkpoint, save_checkpoint
from featmap_ros.training.augment import photometric_augment
from featmap_ros.training.loop import train


def tiny_cfg(**kw):
    model = ModelConfig(task="object", backbone="small", input_size=16, feature_dim=16, small_channels=[4, 8], pretrained=False)
    base = dict(model=model, seed=3, batch_size=8, pair_batch_size=4, steps_stage1=4, steps_stage2=4, lr=1e-2,
                checkpoint_every=0, log_every=2, tensorboard=False, augment="strong", augment_real=True)
    base.update(kw)
    return TrainConfig(**base)


def sources(seed=0):
    g = torch.Generator().manual_seed(seed)
    synth = TensorSource({"image": torch.rand(32, 3, 16, 16, generator=g), "corners_n": torch.rand(32, 8, 2, generator=g) * 2 - 1}, seed=1, stream=0)
    real = torch.rand(12, 3, 16, 16, generator=g)
    pairs = TensorSource({"real": real, "synth": (real * 0.5 + 0.2), "corners_n": torch.rand(12, 8, 2, generator=g)}, seed=1, stream=1)
    return synth, pairs


def test_resume_after_kill_reaches_same_weights(tmp_path):
    cfg = tiny_cfg()
    s, p = sources()
    full = train(cfg, s, p, tmp_path / "full", progress=False, device="cpu")
    s, p = sources()
    part = train(cfg, s, p, tmp_path / "cut", stop_after=5, progress=False, device="cpu")  # killed inside stage 2
    assert load_checkpoint(part.checkpoint)["step"] == 5
    s, p = sources()
    resumed = train(cfg, s, p, tmp_path / "cut", progress=False, device="cpu")
    a, b = full.model.state_dict(), resumed.model.state_dict()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    # and the run really trained: the mapping changed g from its identity start
    assert b["g.0.fc2.weight"].abs().sum() > 0


def test_baseline_leaves_g_untouched_and_lambda_is_used(tmp_path):
    s, p = sources()
    base = train(tiny_cfg(mapping=False), s, p, tmp_path / "b", progress=False, device="cpu")
    assert base.model.g[0].fc2.weight.abs().sum() == 0
    hist = base.metrics["history"]
    assert "feature_match" not in hist[-1] and "pose_real" in hist[-1]
    s, p = sources()
    m = train(tiny_cfg(lambda_map=5.0), s, p, tmp_path / "m", progress=False, device="cpu")
    last = m.metrics["history"][-1]
    assert last["weighted_match"] == pytest.approx(5.0 * last["feature_match"], rel=1e-5)


def test_checkpoint_mismatch_names_field(tmp_path):
    s, p = sources()
    r = train(tiny_cfg(steps_stage2=0), s, None, tmp_path / "o", progress=False, device="cpu")
    with pytest.raises(InputError, match="model.task"):
        load_checkpoint(r.checkpoint, task="hand")
    other = ModelConfig(task="object", backbone="small", input_size=16, feature_dim=32, small_channels=[4, 8], pretrained=False)
    with pytest.raises(InputError, match="model.feature_dim"):
        load_checkpoint(r.checkpoint, model_cfg=other)
    with pytest.raises(InputError, match="not found"):
        load_checkpoint(tmp_path / "nope.pt")
    save_checkpoint(tmp_path / "bad.pt", {"format": "something else"})
    with pytest.raises(InputError, match="format"):
        load_checkpoint(tmp_path / "bad.pt")
    m = model_from_checkpoint(load_checkpoint(r.checkpoint))
    x = torch.rand(2, 3, 16, 16)
    assert torch.allclose(m.eval()(x), r.model.eval()(x))


def test_augment_does_not_mutate_and_stays_in_range():
    x = torch.rand(4, 3, 8, 8)
    x0 = x.clone()
    y = photometric_augment(x, torch.Generator().manual_seed(0), "strong")
    assert torch.equal(x, x0) and not torch.equal(x, y)
    assert y.min() >= 0 and y.max() <= 1


def test_train_command_bad_input_names_field_or_file(tmp_path, capsys):
    from featmap_ros.cli import main

    cfg = tmp_path / "c.yaml"
    cfg.write_text("model:\n  task: object\n  backbon: small\n")
    assert main(["train", "object", "--config", str(cfg), "--out", str(tmp_path / "o")]) == 2
    assert "backbon" in capsys.readouterr().err
    cfg.write_text("model:\n  task: object\n  backbone: small\n")
    assert main(["train", "object", "--config", str(cfg), "--mesh", str(tmp_path / "missing.ply"), "--out", str(tmp_path / "o")]) == 2
    assert "missing.ply" in capsys.readouterr().err
    assert main(["train", "hand", "--config", str(cfg), "--out", str(tmp_path / "o")]) == 2
    assert "model.task" in capsys.readouterr().err
    assert main(["train", "object", "--config", str(cfg), "steps_stage1=abc", "--out", str(tmp_path / "o")]) == 2
    assert "steps_stage1" in capsys.readouterr().err


def test_localiser_training_learns_a_fixed_target():
    from featmap_ros.nets import LocaliserConfig
    from featmap_ros.training.localiser import train_localiser

    g = torch.Generator().manual_seed(0)
    img = torch.rand(16, 3, 32, 48, generator=g)
    tgt = torch.tensor([[0.3, 0.6, -1.5, 1.0]]).repeat(16, 1, 1)
    src = TensorSource({"image": img, "target": tgt}, 0, 0)
    loc, m = train_localiser(LocaliserConfig(input_width=48, input_height=32, channels=[4, 8], n_objects=1), src, 60, batch_size=8, lr=1e-2, progress=False, device="cpu")
    with torch.no_grad():
        out = loc(img[:2])
    assert torch.allclose(out[..., :3], tgt[:2, :, :3], atol=0.1) and (out[..., 3] > 0).all()


def test_paired_bootstrap_and_variants():
    import numpy as np

    from featmap_ros.evaluation.ablation import AblationPlan, paired_bootstrap, variant_configs

    a = np.array([1.0, 1, 1, 0, 1, 0, 1, 1])
    b = np.array([0.0, 1, 0, 0, 1, 0, 0, 1])
    mean, lo, hi = paired_bootstrap(a, b, n_boot=4000)
    assert mean == pytest.approx(3 / 8) and 0 <= lo < mean < hi <= 0.75
    assert paired_bootstrap(a, a) == (0.0, 0.0, 0.0)
    v = variant_configs(tiny_cfg(), AblationPlan(lambdas=[1.0, 10.0]))
    assert set(v) == {"no_mapping", "no_mapping_pair_synth", "no_mapping_strong_aug", "mapping_lambda0", "mapping_lambda1", "mapping_lambda10"}
    assert not v["no_mapping"].mapping and v["no_mapping_pair_synth"].baseline_pair_synth
    assert v["mapping_lambda0"].mapping and v["mapping_lambda0"].lambda_map == 0.0 and v["mapping_lambda10"].lambda_map == 10.0
    assert v["no_mapping_strong_aug"].augment == "strong"


def test_train_own_mesh_end_to_end(tmp_path):
    """featmap train object --mesh: synthetic-only (no real frames), localiser, node config."""
    import yaml

    from featmap_ros.cli import main
    from featmap_ros.data import bop
    from featmap_ros.estimators import ObjectPoseEstimator
    from featmap_ros.render.toy_object import make_toy_object

    mesh, _ = make_toy_object(1)
    ply = tmp_path / "my_part.ply"
    bop.save_mesh(ply, mesh, units="mm")
    out = tmp_path / "run"
    rc = main(["train", "object", "--config", "config/demo_object.yaml", "--mesh", str(ply), "--mesh-units", "mm", "--out", str(out),
               "--device", "cpu", "data.synthetic_count=8", f"data.cache_dir={tmp_path / 'cache'}", "steps_stage1=2", "steps_stage2=1",
               "localiser_steps=2", "batch_size=4", "tensorboard=false"])
    assert rc == 0
    node = yaml.safe_load((out / "object_node.yaml").read_text())
    assert node["object_names"] == ["my_part"] and node["mesh"] == str(ply.resolve())
    est = ObjectPoseEstimator.from_checkpoint(node["checkpoint"], device="cpu")
    assert est.object_names == ["my_part"] and not est.use_mapping and est.localiser is not None
    assert np.allclose(np.ptp(est.corners_m[0], axis=0), np.ptp(mesh.vertices_m, axis=0), atol=1e-6)


def test_centered_feature_match_divides_by_the_variance(tmp_path):
    # same weights and batches up to the first stage-2 step: the two relative losses differ only by
    # their denominators, and the batch variance is below the mean square (features have a mean)
    runs = {}
    for centered in (False, True):
        s, p = sources()
        r = train(tiny_cfg(log_every=1, feature_match_centered=centered), s, p, tmp_path / str(centered), progress=False, device="cpu")
        runs[centered] = [h for h in r.metrics["history"] if "feature_match" in h][0]
    assert runs[True]["pose_synth"] == pytest.approx(runs[False]["pose_synth"], rel=1e-5)
    assert runs[True]["feature_match"] > 1.05 * runs[False]["feature_match"]


@pytest.mark.parametrize("level", ["fc", "conv"])
def test_stage1_teacher_resume_and_fixed_target(tmp_path, level):
    # match_target stage1: the target extractor is f as it was at the end of stage 1; it is kept in
    # the checkpoint, so a run killed inside stage 2 resumes to the uninterrupted run's weights
    model = ModelConfig(task="object", backbone="small", input_size=16, feature_dim=16, small_channels=[4, 8], pretrained=False, map_level=level)
    cfg = tiny_cfg(model=model, match_target="stage1")
    s, p = sources()
    full = train(cfg, s, p, tmp_path / "full", progress=False, device="cpu")
    s, p = sources()
    train(cfg, s, p, tmp_path / "cut", stop_after=6, progress=False, device="cpu")
    s, p = sources()
    resumed = train(cfg, s, p, tmp_path / "cut", progress=False, device="cpu")
    a, b = full.model.state_dict(), resumed.model.state_dict()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    # the teacher is the stage-1 f: equal to f of a run stopped at the end of stage 1, not to the final f
    s, p = sources()
    s1 = train(cfg, s, p, tmp_path / "s1", stop_after=cfg.steps_stage1, progress=False, device="cpu")
    teacher = load_checkpoint(full.checkpoint)["teacher_f"]
    f1 = {k[2:]: v for k, v in s1.model.state_dict().items() if k.startswith("f.")}
    assert all(torch.equal(teacher[k], f1[k]) for k in teacher)
    assert any(not torch.equal(teacher[k], v) for k, v in full.model.f.state_dict().items())
    assert load_checkpoint(s1.checkpoint)["teacher_f"] is None


def test_match_grad_g_keeps_the_matching_term_out_of_f(tmp_path):
    # with match_grad g, the matching term's weight cannot change f: after a stage-2 step, f is the
    # same for lambda 0 and lambda 50 while g differs
    out = {}
    for lam in (0.0, 50.0):
        s, p = sources()
        out[lam] = train(tiny_cfg(lambda_map=lam, match_grad="g", steps_stage2=1, augment="none", augment_real=False),
                         s, p, tmp_path / str(lam), progress=False, device="cpu").model.state_dict()
    f_keys = [k for k in out[0.0] if k.startswith("f.") and "running" not in k and "num_batches" not in k]
    assert all(torch.equal(out[0.0][k], out[50.0][k]) for k in f_keys)
    assert not torch.equal(out[0.0]["g.0.fc2.weight"], out[50.0]["g.0.fc2.weight"])  # fc2 (zero at init) gets the first gradients


def test_convert_map_level_keeps_the_function_and_resumes(tmp_path):
    from featmap_ros.evaluation.ablation import AblationPlan, variant_configs
    from featmap_ros.checkpoint import convert_map_level

    model = ModelConfig(task="object", backbone="small", input_size=16, feature_dim=16, small_channels=[4, 8], pretrained=False, map_level="conv")
    cfg = tiny_cfg(model=model, match_target="stage1")
    s, p = sources()
    s1 = train(cfg, s, p, tmp_path / "s1", stop_after=cfg.steps_stage1, progress=False, device="cpu")
    convert_map_level(s1.checkpoint, tmp_path / "fc" / "last.pt", "fc")
    fc = model_from_checkpoint(load_checkpoint(tmp_path / "fc" / "last.pt")).eval()
    x = torch.rand(5, 3, 16, 16)
    with torch.no_grad():
        assert torch.allclose(fc(x), s1.model.eval()(x), atol=1e-6)
    # the converted checkpoint resumes stage 2 at the fc level (optimiser moments carried over)
    v = variant_configs(cfg, AblationPlan(lambdas=[1.0]))
    assert v["mapping_fc_level"].model.map_level == "fc" and v["mapping_joint_target"].match_target == "current"
    assert cfg.model.map_level == "conv"  # the base config is not modified
    s, p = sources()
    r = train(v["mapping_fc_level"], s, p, tmp_path / "fc", progress=False, device="cpu")
    assert load_checkpoint(r.checkpoint)["step"] == cfg.steps_stage1 + cfg.steps_stage2
    with pytest.raises(InputError, match="map_level"):
        load_checkpoint(tmp_path / "fc" / "last.pt", model_cfg=cfg.model)


def test_run_ablation_end_to_end_on_a_tiny_hand_cache(tmp_path):
    # every variant (incl. the re-labelled fc-level stage 1) trains, is scored, and the report
    # chooses lambda on validation and compares it with the baseline
    from featmap_ros.evaluation.ablation import AblationPlan, format_table, run_ablation
    from featmap_ros.evaluation.ablation_data import TaskCache

    g = torch.Generator().manual_seed(0)

    def split(n):
        joints = torch.rand(n, 14, 3, generator=g) * 0.1
        return {"real": torch.rand(n, 1, 16, 16, generator=g) * 2 - 1, "joints_n": joints / 0.15,
                "center_c_m": torch.zeros(n, 3), "joints_c_m": joints}

    pairs = split(12)
    pairs["synth"] = pairs["real"] * 0.5
    cache = TaskCache("hand", {"depth": torch.rand(24, 1, 16, 16, generator=g) * 2 - 1, "joints_n": torch.rand(24, 14, 3, generator=g)},
                      pairs, split(6), split(8), {"cube_mm": 300.0}, {"size": 16})
    model = ModelConfig(task="hand", backbone="small", input_size=16, feature_dim=16, small_channels=[4, 8], pretrained=False, map_level="conv")
    base = tiny_cfg(model=model, match_target="stage1", augment="photometric", augment_real=False)
    rep = run_ablation(cache, base, AblationPlan(seeds=[0, 1], lambdas=[1.0, 3.0]), tmp_path)
    assert set(rep["table"]) == {"synthetic_only", "no_mapping", "no_mapping_pair_synth", "no_mapping_strong_aug", "mapping_lambda0",
                                 "mapping_lambda1", "mapping_lambda3", "mapping_joint_target", "mapping_fc_level"}
    assert rep["chosen_lambda_variant"] in ("mapping_lambda1", "mapping_lambda3")
    assert rep["seeds_done"] == [0, 1] and rep["comparison"]["primary"] == "mean_mm"
    assert load_checkpoint(tmp_path / "seed0" / "mapping_fc_level" / "last.pt")["model_config"]["map_level"] == "fc"
    assert "mapping_fc_level" in format_table(rep)
    from featmap_ros.evaluation.ablation import format_markdown
    from featmap_ros.evaluation.plots import plot_report

    md = format_markdown(rep)
    assert md.count("\n| `") == 9 and "(λ chosen on validation)" in md and "per seed" in md
    png = plot_report(rep, tmp_path / "ablation.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_export_bundled_is_float16_portable_and_predicts_as_float32(tmp_path):
    """``featmap train object --export F --export-bundled`` (checkpoint.export_checkpoint(bundled=True)): the form of
    featmap_ros/weights/lmo.pt: float16 weights, meshes by file name, no local paths; same poses within float16 rounding."""
    from featmap_ros.checkpoint import bundled_weights, export_checkpoint
    from featmap_ros.estimators import ObjectPoseEstimator

    src = tmp_path / "src.pt"
    ck = load_checkpoint(bundled_weights("object"))
    ck["meta"]["mesh_paths"] = ["/home/me/lmo/models/obj_000001.ply"]
    ck["config"]["data"]["models_root"] = "/home/me/lmo/models"
    ck["config"]["data"]["real_root"] = "/home/me/lmo"
    save_checkpoint(src, ck)
    export_checkpoint(src, tmp_path / "b.pt", bundled=True)
    b = load_checkpoint(tmp_path / "b.pt")
    assert b["weights_dtype"] == "float16" and all(v.dtype == torch.float16 for v in b["model"].values() if torch.is_floating_point(v))
    assert b["meta"]["mesh_paths"] == ["obj_000001.ply"]
    assert b["config"]["data"]["models_root"] == "<models>" and b["config"]["data"]["real_root"] == "<lmo>"
    assert "/home/me" not in repr({k: v for k, v in b.items() if k != "model"})
    assert (tmp_path / "b.pt").stat().st_size < 0.6 * src.stat().st_size
    e32 = ObjectPoseEstimator.from_checkpoint(src, device="cpu")
    e16 = ObjectPoseEstimator.from_checkpoint(tmp_path / "b.pt", device="cpu")
    x = torch.rand(4, 3, e32.input_size, e32.input_size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        y32, y16 = e32.model(x, real=True), e16.model(x, real=True)
    assert next(e16.model.parameters()).dtype == torch.float32
    assert torch.allclose(y32, y16, atol=2e-2) and not torch.equal(y32, y16)


def test_train_object_with_a_heatmap_localiser_and_real_frames(tmp_path):
    """featmap train object with localiser.kind=heatmap and real frames: the localiser reads every
    instance of the real frames (data.real_root) and lands in the checkpoint."""
    from featmap_ros.checkpoint import load_checkpoint
    from featmap_ros.cli import main
    from featmap_ros.estimators import ObjectPoseEstimator

    real = tmp_path / "real"
    assert main(["render", "object", "--toy", "--count", "2", "--domain", "real-like", "--out", str(real), "--split", "train", "--seed", "5"]) == 0
    out = tmp_path / "run"
    rc = main(["train", "object", "--config", "config/demo_object.yaml", "--real", str(real), "--out", str(out), "--device", "cpu",
               "data.synthetic_count=8", f"data.cache_dir={tmp_path / 'cache'}", "steps_stage1=2", "steps_stage2=1", "batch_size=4",
               "pair_batch_size=2", "tensorboard=false", "localiser.kind=heatmap", "localiser.backbone=small", "localiser.input_width=64",
               "localiser.input_height=48", "localiser_steps=2", "localiser_frames=4", "localiser_batch_size=4"])
    assert rc == 0
    est = ObjectPoseEstimator.from_checkpoint(out / "last.pt", device="cpu")
    assert est.localiser.cfg.kind == "heatmap"
    m = load_checkpoint(out / "last.pt")["localiser"]["metrics"]
    assert m["real_frames"] == 2 and m["synthetic_frames"] == 4
