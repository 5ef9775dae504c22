"""Installs hgrank_jax; the version is read from hgrank_jax/__init__.py."""

import pathlib
import re

import setuptools

HERE = pathlib.Path(__file__).parent
VERSION = re.search(
    r'^__version__ = "([^"]+)"', (HERE / "hgrank_jax" / "__init__.py").read_text(), re.M
).group(1)

INSTALL_REQUIRES = [
    "jax>=0.6",
    "flax>=0.10",
    "optax>=0.2.4",
    "orbax-checkpoint>=0.11",
    "ott-jax>=0.5",
    "tensorflow-datasets>=4.9.7",
    "grain>=0.2.6",
    "array-record>=0.7",
    "absl-py>=2.1",
    "ml-collections>=1.0",
    "rax>=0.4",
    "numpy>=1.26",
    "scipy>=1.12",
    "matplotlib>=3.8",
]

EXTRAS = {
    # Independent references the tests compare against, and notebook execution.
    "test": [
        "pytest>=8",
        "pytest-xdist>=3.5",
        "scikit-learn>=1.4",
        "nbformat>=5.9",
        "nbclient>=0.10",
        "ipykernel>=6.29",
    ],
    "colab": ["jupyter>=1.0", "nbformat>=5.9", "ipykernel>=6.29"],
}

setuptools.setup(
    name="hgrank_jax",
    version=VERSION,
    description="Hierarchical and differentiable ranking for recommender systems in JAX.",
    long_description=(HERE / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="Apache-2.0 (code); bundled KuaiRand-derived data CC BY-SA 4.0",
    python_requires=">=3.10",
    # Namespace discovery lists the bundled-data folders (no __init__.py) as packages
    # too, so their files ship as package data without setuptools' "absent from the
    # packages configuration" warnings.
    packages=setuptools.find_namespace_packages(include=["hgrank_jax", "hgrank_jax.*"],
                                                exclude=["*.__pycache__"]),
    package_data={"hgrank_jax.data.official.bundled.kuairand_sig": ["*.txt", "*.md"]},
    install_requires=INSTALL_REQUIRES,
    extras_require=EXTRAS,
)
