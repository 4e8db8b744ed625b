"""The meshes shipped for RViz markers (package://featmap_ros/meshes/<object>.ply) match their generators."""
from pathlib import Path

import numpy as np

from featmap_ros.data.bop import load_mesh
from featmap_ros.render.toy_object import make_toy_object

MESHES = Path(__file__).resolve().parents[1] / "meshes"


def test_toy_mesh_file_is_the_generated_toy_in_millimetres():
    shipped = load_mesh(MESHES / "toy.ply", units="mm")
    toy, _ = make_toy_object()
    assert shipped.faces.shape == toy.faces.shape
    np.testing.assert_allclose(shipped.vertices_m, toy.vertices_m, atol=1e-6)
    np.testing.assert_array_equal(shipped.faces, toy.faces)
