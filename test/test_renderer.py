"""Renderer: silhouettes agree with geometry projections (full frames and crops), depth, compositing."""
import numpy as np
import pytest
from matplotlib.path import Path as MPath
from scipy.spatial import ConvexHull
from scipy.spatial.transform import Rotation

from featmap_ros import geometry
from featmap_ros import crops
from featmap_ros.errors import InputError
from featmap_ros.render.renderer import Lighting, MeshRenderer, composite, crop_intrinsics, random_lighting
from featmap_ros.render.toy_object import box_mesh, make_toy_object

K = np.array([[572.4114, 0.0, 325.2611], [0.0, 573.57043, 242.04899], [0.0, 0.0, 1.0]])
W, H = 320, 240
K_SMALL = K.copy()
K_SMALL[:2] /= 2.0  # same camera at half resolution


@pytest.fixture(scope="module")
def renderer():
    r = MeshRenderer(W, H)
    yield r
    r.close()


def _hull_mask(uv, w, h):
    hull = uv[ConvexHull(uv).vertices]
    yy, xx = np.mgrid[0:h, 0:w]
    return MPath(hull).contains_points(np.stack([xx.ravel(), yy.ravel()], 1)).reshape(h, w)


def test_box_silhouette_matches_projected_corners(renderer):
    mesh = box_mesh([-0.02, -0.03, -0.04], [0.04, 0.06, 0.08])
    assert "egl" in renderer.backend or renderer.backend
    for seed in range(3):
        R = Rotation.random(random_state=seed).as_matrix()
        t = np.array([0.03 * seed - 0.03, 0.02, 0.5])
        out = renderer.render(mesh, R, t, K_SMALL)
        uv = geometry.project_model_points(mesh.vertices_m, R, t, K_SMALL)
        ys, xs = np.nonzero(out.mask)
        # extremes of the silhouette within ~1 px of the extreme projected corners (a pixel is
        # drawn when its centre is covered, and near a sharp corner the first covered centre
        # can lie a little more than 1 px inside: the exact check is the hull test below)
        tol = 1.5
        assert abs(xs.min() - uv[:, 0].min()) <= tol and abs(xs.max() - uv[:, 0].max()) <= tol
        assert abs(ys.min() - uv[:, 1].min()) <= tol and abs(ys.max() - uv[:, 1].max()) <= tol
        # the whole silhouette: pixel centres inside the projected hull, same centroid within 0.1 px
        ref = _hull_mask(uv, W, H)
        yi, xi = np.nonzero(ref)
        assert abs(xs.mean() - xi.mean()) < 0.1 and abs(ys.mean() - yi.mean()) < 0.1
        assert (ref ^ out.mask).sum() < 0.03 * ref.sum()
        # depth: nearest rendered point = nearest corner (a box's nearest point is a corner)
        z = (mesh.vertices_m @ R.T + t)[:, 2]
        assert out.depth_m[out.mask].min() == pytest.approx(z.min(), abs=2e-3)
        assert np.all(out.depth_m[~out.mask] == 0)
        assert np.all(out.rgb[out.alpha == 0] == 0)


def test_crop_render_equals_crop_of_full_render(renderer):
    mesh = box_mesh([-0.02, -0.03, -0.04], [0.04, 0.06, 0.08])
    R = Rotation.random(random_state=7).as_matrix()
    t = np.array([0.01, -0.02, 0.45])
    uv = geometry.project_model_points(mesh.vertices_m, R, t, K_SMALL)
    win = crops.window_from_points(uv, scale=1.3)
    size = 48
    crop = renderer.render_crop(mesh, R, t, K_SMALL, win, size)
    assert crop.rgb.shape == (size, size, 3)
    uv_c = geometry.project_points(mesh.vertices_m @ R.T + t, crop_intrinsics(K_SMALL, win, size))
    uv_a = uv @ win.affine_to_crop(size)[:, :2].T + win.affine_to_crop(size)[:, 2]
    np.testing.assert_allclose(uv_c, uv_a, atol=1e-9)
    ref = _hull_mask(uv_c, size, size)
    ys, xs = np.nonzero(crop.mask)
    yi, xi = np.nonzero(ref)
    assert abs(xs.mean() - xi.mean()) < 0.15 and abs(ys.mean() - yi.mean()) < 0.15
    full = renderer.render(mesh, R, t, K_SMALL)
    fc = crops.crop_image(full.alpha, win, size) > 0.5
    assert (fc & crop.mask).sum() / (fc | crop.mask).sum() > 0.9
    # normalised corners of the crop agree with crops.image_to_crop_normalised
    n = crops.image_to_crop_normalised(uv, win)
    np.testing.assert_allclose((n + 1) * size / 2 - 0.5, uv_c, atol=1e-9)


def test_several_meshes_and_repeats(renderer):
    toy, _ = make_toy_object()
    box = box_mesh([-0.01] * 3, [0.02] * 3)
    R = np.stack([np.eye(3)] * 3)
    t = np.array([[-0.08, 0, 0.6], [0.08, 0, 0.6], [0.0, 0.06, 0.6]])
    out = renderer.render([toy, box, box], R, t, K_SMALL)
    uv = geometry.project_points(t, K_SMALL)
    for u, v in uv:
        assert out.mask[int(round(v)), int(round(u))]
    alone = renderer.render(box, R[1], t[1], K_SMALL)
    assert alone.mask.sum() < out.mask.sum() / 2
    # repeated meshes' temporary nodes are gone afterwards
    again = renderer.render(box, R[2], t[2], K_SMALL)
    assert not again.mask[int(round(uv[1, 1])), int(round(uv[1, 0]))]
    with pytest.raises(InputError):
        renderer.render([toy, box], R, t, K_SMALL)


def test_lighting_changes_shading_not_silhouette(renderer):
    toy, _ = make_toy_object()
    R = geometry.look_at_R_m2c([1.0, 0.5, 0.8])
    t = np.array([0.0, 0.0, 0.5])
    a = renderer.render(toy, R, t, K_SMALL)
    b = renderer.render(toy, R, t, K_SMALL, lighting=random_lighting(np.random.default_rng(3)))
    f = renderer.render(toy, R, t, K_SMALL, lighting=Lighting(flat=True))
    np.testing.assert_array_equal(a.mask, b.mask)
    np.testing.assert_array_equal(a.mask, f.mask)
    assert np.abs(a.rgb.astype(int) - b.rgb.astype(int))[a.mask].mean() > 3
    bg = np.full((H, W, 3), 200, np.uint8)
    c = composite(a, bg)
    assert np.all(c[a.alpha == 0] == 200)
    inner = a.alpha == 1
    np.testing.assert_array_equal(c[inner], a.rgb[inner])
    with pytest.raises(InputError):
        composite(a, bg[:10])


def test_bad_input(renderer):
    box = box_mesh([-0.01] * 3, [0.02] * 3)
    with pytest.raises(InputError):
        renderer.render(box, np.eye(3), [0, 0, 0.5], np.zeros((3, 3)))
    with pytest.raises(InputError):
        MeshRenderer(0, 10)


def test_silhouette_keeps_the_part_outside_the_image(renderer):
    from featmap_ros.render.renderer import render_silhouette

    mesh = box_mesh([-0.02, -0.03, -0.04], [0.04, 0.06, 0.08])
    R = Rotation.random(random_state=4).as_matrix()
    t_in = np.array([0.0, 0.0, 0.5])
    inside = render_silhouette(renderer, mesh, R, t_in, K_SMALL)
    full = renderer.render(mesh, R, t_in, K_SMALL)
    # centre test on a 3x supersampled window vs the 4x coverage test: same pixels up to the edges
    assert abs(inside.px_count - int(full.mask.sum())) <= 0.03 * inside.px_count
    uv = geometry.project_model_points(mesh.vertices_m, R, t_in, K_SMALL)
    x, y, w, h = inside.bbox_xywh()
    assert abs(x - uv[:, 0].min()) <= 1.5 and abs(x + w - uv[:, 0].max()) <= 1.5
    # moved so that it leaves the image on the left: the silhouette keeps its full size
    t_out = t_in + np.array([-(K_SMALL[0, 2] + 5) * 0.5 / K_SMALL[0, 0], 0.0, 0.0])
    cut = render_silhouette(renderer, mesh, R, t_out, K_SMALL)
    assert cut.bbox_xywh()[0] < 0
    assert abs(cut.px_count - inside.px_count) <= 0.03 * inside.px_count
    assert cut.full_mask(W, H).sum() < 0.8 * cut.px_count
    # bop_toolkit's pixel convention shifts the silhouette half a pixel up-left
    bop_like = render_silhouette(renderer, mesh, R, t_in, K_SMALL, pixel_center=0.5)
    ys, xs = np.nonzero(inside.mask)
    yb, xb = np.nonzero(bop_like.mask)
    shift = (xb.mean() + bop_like.x0) - (xs.mean() + inside.x0), (yb.mean() + bop_like.y0) - (ys.mean() + inside.y0)
    np.testing.assert_allclose(shift, (-0.5, -0.5), atol=0.1)
    with pytest.raises(InputError):
        render_silhouette(renderer, mesh, R, t_in, K_SMALL, supersample=2)


def test_optimiser_after_rendering_does_not_crash():
    """Mesa's llvmpipe and Triton both load LLVM: an optimiser built after a render used to segfault."""
    import subprocess
    import sys

    code = (
        "import numpy as np, torch\n"
        "from featmap_ros.render.renderer import MeshRenderer\n"
        "from featmap_ros.render.toy_object import make_toy_object\n"
        "mesh, _ = make_toy_object()\n"
        "out = MeshRenderer(64, 64).render(mesh, np.eye(3), np.array([0, 0, 0.5]), "
        "np.array([[200.0, 0, 32], [0, 200.0, 32], [0, 0, 1]]))\n"
        "assert out.mask.any()\n"
        "torch.optim.AdamW([torch.nn.Parameter(torch.zeros(3))])\n"
        "print('ok')\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip().endswith("ok")
