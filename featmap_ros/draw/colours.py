"""The one colour convention of every picture: overlays, the nodes' debug images, RViz markers.

Ground truth is green, an estimate is blue, in objects' boxes and hands' skeletons alike; the
image windows a node cropped are yellow. RGB, 0-255; :func:`rgba_unit` gives RViz's 0-1 form.
"""
from __future__ import annotations

#: the ground truth (boxes, skeletons)
GROUND_TRUTH_RGB = (0, 200, 0)
#: an estimate (boxes, skeletons, RViz markers)
ESTIMATE_RGB = (0, 80, 255)
#: the image windows an estimate was cropped from (node debug images)
WINDOW_RGB = (255, 210, 0)


def rgba_unit(rgb: tuple[int, int, int], alpha: float = 1.0) -> tuple[float, float, float, float]:
    """(r, g, b) in 0-255 -> (r, g, b, a) in 0-1, as std_msgs/ColorRGBA wants."""
    return (rgb[0] / 255.0, rgb[1] / 255.0, rgb[2] / 255.0, float(alpha))
