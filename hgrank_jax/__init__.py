"""hgrank_jax: hierarchical and differentiable ranking for recommender systems in JAX.

The package is organised by layer of a ranking stack: ``data`` (datasets, splits,
feature specs and batching), ``models``/``losses``/``metrics`` (Layer 1 scoring),
``blend`` (Layer 2), ``ops``/``rerank`` (Layer 3) and ``train`` (jit-compiled,
data-parallel training). Subpackages are imported on demand so that ``import
hgrank_jax`` stays cheap; use ``from hgrank_jax import data`` and so on.
"""

__version__ = "0.1.0"
