"""The project's own object: a small coloured, asymmetric mesh made here (no fetched data).

:func:`make_toy_object` builds a ~10 cm "toy" from boxes, a cylinder and a cone with distinct
vertex colours and painted stripes, placed so that no rotation maps it onto itself; the origin is
the centre of its bounding box (as in BOP models). Faces do not share vertices, so each face
gets its own normal (crisp shading of the box sides) and colour.

:func:`box_mesh` is a plain coloured box, used by tests (its silhouette is the convex hull of
its projected corners).
"""
from __future__ import annotations

import numpy as np

from featmap_ros import geometry
from featmap_ros.data.bop import Mesh, ModelInfo, model_info_from_mesh

#: Name the toy object is published under (class_id, TF frame suffix).
TOY_NAME = "toy"


def box_mesh(min_m, size_m, colors=None, name: str = "box") -> Mesh:
    """An axis-aligned box with 8 shared vertices and 12 outward-facing triangles.

    Args:
        min_m: (3,) minimum corner, metres.
        size_m: (3,) extents, metres.
        colors: (8, 3) uint8 per-corner colours, or None for a colour per corner from its position.
        name: mesh name.

    Returns:
        :class:`Mesh` with vertices ordered as :data:`featmap_ros.geometry.BOX_CORNER_SIGNS`.
    """
    v = geometry.box_corners(min_m, size_m)
    # quads given counter-clockwise seen from outside (x, y, z bits of the corner index)
    quads = [(0, 1, 3, 2), (4, 6, 7, 5), (0, 4, 5, 1), (2, 3, 7, 6), (0, 2, 6, 4), (1, 5, 7, 3)]
    f = np.array([[a, b, c] for a, b, c, _ in quads] + [[a, c, d] for a, _, c, d in quads], np.int64)
    if colors is None:
        colors = (geometry.BOX_CORNER_SIGNS * 200 + 30).astype(np.uint8)
    return Mesh(v, f, np.asarray(colors, np.uint8).reshape(8, 3), name)


def _part(tm, rgb, stripe_rgb=None, stripe_axis=2, stripe_period_m=0.0):
    """Unmerge a trimesh part (one vertex per face corner) and colour it, optionally striped."""
    v, f = tm.vertices, tm.faces
    if stripe_rgb is not None and stripe_period_m > 0:  # small faces, so stripes have sharp edges
        from trimesh import remesh

        v, f = remesh.subdivide_to_size(v, f, max_edge=stripe_period_m / 2.0)
    # one vertex per face corner: per-face normals (crisp edges) and colours
    v = np.asarray(v, np.float64)[np.asarray(f).reshape(-1)]
    f = np.arange(len(v), dtype=np.int64).reshape(-1, 3)
    c = np.tile(np.asarray(rgb, np.uint8), (len(v), 1))
    if stripe_rgb is not None and stripe_period_m > 0:
        # colour whole faces by the stripe their centroid falls in (no blurred stripe edges)
        cen = v[f].mean(axis=1)[:, stripe_axis]
        band = np.floor(cen / stripe_period_m).astype(int) % 2 == 1
        for fi in np.nonzero(band)[0]:
            c[f[fi]] = stripe_rgb
    return v, f, c


def make_toy_object(obj_id: int = 1) -> tuple[Mesh, ModelInfo]:
    """The toy object and its models_info record.

    Layout (model frame, metres, before centring): a red body box 8 x 5 x 4 cm with yellow
    stripes along x, a green cylinder (r 1.2 cm, h 4 cm) standing on one end of the body, a blue
    cone (r 1.4 cm, h 3 cm) lying along -y at the other end, and a small white block on the front
    face. Non-symmetric: none of the parts is mirrored by another.

    Args:
        obj_id: the id it gets in models_info.

    Returns:
        (mesh in metres centred on its bounding box, :class:`ModelInfo` without symmetries).
    """
    from trimesh import creation, transformations as tf

    parts = []
    body = creation.box(extents=(0.08, 0.05, 0.04))
    parts.append(_part(body, (200, 40, 40), stripe_rgb=(235, 200, 40), stripe_axis=0, stripe_period_m=0.01))
    cyl = creation.cylinder(radius=0.012, height=0.04, sections=24)
    cyl.apply_translation((0.025, 0.008, 0.02 + 0.02))
    parts.append(_part(cyl, (40, 170, 60), stripe_rgb=(20, 90, 30), stripe_axis=2, stripe_period_m=0.008))
    cone = creation.cone(radius=0.014, height=0.03, sections=24)
    cone.apply_transform(tf.rotation_matrix(np.pi / 2, (1, 0, 0)))  # axis +z -> -y
    cone.apply_translation((-0.028, -0.025, 0.0))
    parts.append(_part(cone, (40, 70, 210)))
    block = creation.box(extents=(0.02, 0.012, 0.015))
    block.apply_translation((-0.005, 0.025 + 0.006, -0.008))
    parts.append(_part(block, (235, 235, 225)))

    verts, faces, cols, n = [], [], [], 0
    for v, f, c in parts:
        verts.append(v)
        faces.append(f + n)
        cols.append(c)
        n += len(v)
    v = np.concatenate(verts)
    lo, hi = v.min(axis=0), v.max(axis=0)
    v = v - (lo + hi) / 2.0
    mesh = Mesh(v, np.concatenate(faces), np.concatenate(cols).astype(np.uint8), name=TOY_NAME)
    return mesh, model_info_from_mesh(obj_id, mesh)
