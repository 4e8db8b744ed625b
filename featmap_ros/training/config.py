"""Typed training config (:class:`TrainConfig`, :class:`DataConfig`), loaded from
``config/*.yaml`` with ``KEY=VALUE`` overrides and saved, resolved, in every checkpoint."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from featmap_ros.nets import LocaliserConfig, ModelConfig


@dataclass
class DataConfig:
    """Where training data comes from.

    Attributes:
        dataset: dataset spec name (``lm``, ``lmo`` for objects; ``nyu`` for hands).
        object_ids: objects of the colour model, in head order.
        models_root: BOP ``models/`` folder holding the meshes (objects); ``toy`` = the project's own mesh.
        mesh: a user's own mesh (.ply/.obj) instead of ``models_root`` (one object).
        mesh_units: unit of ``mesh`` coordinates (``mm`` or ``m``).
        real_root: real training frames (BOP dataset root for objects, NYU-layout folder for
            hands) used as pairs in stage 2; empty = no real frames (no mapping possible).
        real_split: split folder of ``real_root``.
        max_real: cap on real training frames (0 = all).
        real_im_ids: keep only these image ids of ``real_root`` (e.g. 5 of 10 frames, the others
            held out); empty = all. A listed id without an image is an error naming the file.
        synthetic_count: size of the pre-rendered synthetic set (rendered once to
            ``cache_dir``, reused across runs); 0 renders online in DataLoader workers.
        render_seed: seed of that pre-rendered set; -1 = ``seed``. Set it to continue a stage 1
            with another ``seed`` (other batches, augmentation, pair jitter) on the same crops.
        cache_dir: where pre-rendered sets are kept ('' = none).
        backgrounds: backgrounds of synthetic renders: a folder of images, ``photos`` = the
            photographs that installed packages ship (scikit-image, matplotlib, scikit-learn; see
            ``featmap_ros.data.backgrounds``), '' = procedural. A folder named ``photos`` is ``./photos``.
        occluder_prob: probability that a synthetic object crop gets an occluder rendered in
            front of it: another object of ``object_ids``, or a random box/cylinder/sphere when
            there is one object (0 = none, as before; sim-to-real for LM-O's occlusions).
        cutout_prob: probability that a synthetic object crop gets one or two rectangles of
            photo, noise or flat colour pasted over the object's edge (random erasing; 0 = none).
        truncation_prob: probability that a synthetic object crop is cut by the frame's edge: a
            black band (what a crop past the image border holds) over one side of the object
            (``data.object_samples.add_truncation``; 0 = none).
        domain_preset: the ablation's real-like domain: '' = the default real-like domain;
            ``harsh`` = a far domain (``render.real_like.harsh_crop_domain`` /
            ``render.depth_sensor.harsh_crop_depth``) on the real-like crops, used by the ablation
            configs only.
        hand_domain: hands: the synthetic training hands (``render.depth_sensor.HAND_DOMAINS``:
            ``v1`` the capsule hand and base poses as before, ``kinect`` the anatomic hand with poses
            fitted to real labels); the clean renders of that domain's hands are the synthetic crops.
        hand_centre: hands: crop centre, ``palm`` (the palm-centre joint, as before) or ``com``
            (DeepPrior++'s refined centre of mass, ``hand_localiser.refined_com_m``; the estimator
            then uses it at run time too, with no learned refiner).
        hand_cube_mm: hands: crop cube side, mm (DeepPrior++: 250).
        num_workers: DataLoader workers for online rendering.
        val_count: real-like validation crops of the ablation/demo caches (never trained on).
        test_count: real-like test crops of the ablation/demo caches (never trained on).
    """

    dataset: str = "lm"
    object_ids: list[int] = field(default_factory=lambda: [1])
    models_root: str = ""
    mesh: str = ""
    mesh_units: Literal["mm", "m"] = "mm"
    real_root: str = ""
    real_split: str = "train"
    max_real: int = 0
    real_im_ids: list[int] = field(default_factory=list)
    synthetic_count: int = 0
    render_seed: int = -1
    cache_dir: str = ""
    backgrounds: str = ""
    occluder_prob: float = 0.0
    cutout_prob: float = 0.0
    truncation_prob: float = 0.0
    num_workers: int = 2
    val_count: int = 200
    test_count: int = 500
    domain_preset: str = ""
    hand_domain: str = "v1"
    hand_centre: Literal["palm", "com"] = "palm"
    hand_cube_mm: float = 300.0


@dataclass
class TrainConfig:
    """Everything one training run needs (saved, resolved, in each checkpoint).

    Attributes:
        model: architecture (see :class:`featmap_ros.nets.ModelConfig`).
        data: data sources.
        localiser: the object localiser's architecture (objects only).
        localiser_steps: training steps of the localiser (0 = none).
        localiser_frames: synthetic frames rendered for a ``heatmap`` localiser (0 = twice its steps).
        localiser_batch_size: frames per step of a ``heatmap`` localiser.
        seed: seed of everything (weights, batches, augmentation).
        batch_size: synthetic crops per step.
        pair_batch_size: real/synthetic pairs per step in stage 2.
        steps_stage1: steps on synthetic crops only.
        steps_stage2: steps with pairs.
        lr: Adam learning rate.
        weight_decay: AdamW weight decay.
        lr_min_frac: cosine decay to lr * lr_min_frac at the last step.
        mapping: train g with the matching loss (False = the paper's baseline).
        lambda_map: weight of the feature-matching loss.
        detach_synth_features: stop the matching loss's gradient into f(x_s).
        feature_match_norm: divide the matching term by the mean squared synthetic feature
            (a relative error), so that it cannot be lowered by shrinking all features.
        feature_match_centered: with ``feature_match_norm``, divide by the synthetic features'
            batch variance instead of their mean square, so that the term cannot be lowered by
            growing a constant feature component either (seen at lambda >= 1 on the hand
            ablation: the mean-square version let f collapse to a near-constant).
        match_target: the synthetic features the real ones are mapped onto: ``current`` = f(x_s)
            of the f being trained (the paper's joint loss); ``stage1`` = a frozen copy of f as it
            was at the end of stage 1 (a fixed synthetic feature space the matching cannot move;
            kept in checkpoints as ``teacher_f``).
        match_grad: what the matching term trains: ``f_and_g`` (the paper) or ``g`` only (f
            then learns from the pose losses alone).
        baseline_pair_synth: without mapping, also give the pairs' synthetic halves (control).
        augment: photometric augmentation of synthetic (and real) crops:
            none|photometric|strong|simreal (``simreal``: strong's colour changes plus Gaussian
            blur, stronger noise and JPEG re-compression, see ``training.augment``).
        augment_real: also augment the real crops.
        amp: mixed precision on GPU.
        checkpoint_every: steps between checkpoints (0 = only at the end).
        log_every: steps between logged scalars.
        tensorboard: write TensorBoard scalars under ``out/tb``.
        eval_every: steps between validation passes when a validation source is given (0 = end only).
    """

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    localiser: LocaliserConfig = field(default_factory=LocaliserConfig)
    localiser_steps: int = 0
    localiser_frames: int = 0
    localiser_batch_size: int = 16
    seed: int = 0
    batch_size: int = 64
    pair_batch_size: int = 32
    steps_stage1: int = 20000
    steps_stage2: int = 20000
    lr: float = 1e-3
    weight_decay: float = 1e-4
    lr_min_frac: float = 0.05
    mapping: bool = True
    lambda_map: float = 10.0
    detach_synth_features: bool = True
    feature_match_norm: bool = True
    feature_match_centered: bool = False
    match_target: Literal["current", "stage1"] = "current"
    match_grad: Literal["f_and_g", "g"] = "f_and_g"
    baseline_pair_synth: bool = False
    augment: Literal["none", "photometric", "strong", "simreal"] = "photometric"
    augment_real: bool = False
    amp: bool = True
    checkpoint_every: int = 1000
    log_every: int = 50
    tensorboard: bool = True
    eval_every: int = 0
