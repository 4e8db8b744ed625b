"""Drawing on images: projected 3D boxes, silhouette outlines, labels (OpenCV; pure functions)."""
