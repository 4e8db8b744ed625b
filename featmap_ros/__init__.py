"""featmap_ros: 3D pose estimation with Feature Mapping (Rad, Oberweger, Lepetit, CVPR 2018).

Kept free of imports and logic on purpose: under colcon the generated message package's
``__init__.py`` may be installed in its place (see DESIGN §4).
"""
