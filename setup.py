import re
from pathlib import Path

from setuptools import setup

# The version lives in one place, fused_ops/__init__.py.
version = re.search(r'__version__ = "([^"]+)"', Path("fused_ops/__init__.py").read_text()).group(1)

setup(
    name="fused_ops",
    version=version,
    description="Fused Triton kernels for PyTorch: autograd ops and Adam/AdamW optimizers",
    long_description=Path("README.md").read_text() if Path("README.md").exists() else "",
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    # PyPI already has an unrelated package called `kernels`, so the top-level kernels/
    # folder is installed inside this package, as fused_ops.kernels.
    packages=["fused_ops", "fused_ops.optim", "fused_ops.kernels"],
    package_dir={"fused_ops.kernels": "kernels"},
    # The C++ autograd node's source, compiled on first use (fused_ops/_native.py).
    package_data={"fused_ops": ["csrc/*.cpp"]},
    install_requires=[
        "torch>=2.6",
        # Triton ships Linux wheels only; elsewhere the library runs on its eager reference.
        "triton>=3.3; platform_system == 'Linux'",
        "numpy",  # Triton's interpreter needs it
        "ninja",  # torch.utils.cpp_extension builds the C++ autograd node with it
    ],
    extras_require={
        "test": ["pytest>=8", "pytest-xdist", "hypothesis", "scikit-learn", "tqdm", "transformers"],
        "bench": ["pytest-benchmark", "matplotlib", "tqdm"],
    },
    entry_points={"console_scripts": ["fused-ops = fused_ops.cli:main"]},
)
