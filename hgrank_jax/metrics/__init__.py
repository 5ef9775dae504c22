"""Evaluation metrics: CTR metrics of Table 1 and ranking metrics via Rax.

Classification (:mod:`.classification`): :func:`logloss`, :func:`auc`,
:func:`gauc`, :func:`expected_calibration_error`, and the eager float64
:func:`ctr_metrics` for large evaluation sets. Ranking (:mod:`.ranking`):
:func:`ndcg`, :func:`mrr`, :func:`recall` at ``topn``. Undefined values are
NaN, never a fake 0. List metrics of a final list of item indices
(:mod:`.lists`): category exposure, quota violation, diversity, Steck's
calibration KL, and ``lists.coverage``.
"""

from hgrank_jax.metrics.classification import auc
from hgrank_jax.metrics.classification import ctr_metrics
from hgrank_jax.metrics.classification import expected_calibration_error
from hgrank_jax.metrics.classification import gauc
from hgrank_jax.metrics.classification import logloss
from hgrank_jax.metrics import lists
from hgrank_jax.metrics.lists import calibration_kl
from hgrank_jax.metrics.lists import category_exposure
from hgrank_jax.metrics.lists import exposure_share_error
from hgrank_jax.metrics.lists import intra_list_diversity
from hgrank_jax.metrics.lists import quota_violation
from hgrank_jax.metrics.ranking import mrr
from hgrank_jax.metrics.ranking import ndcg
from hgrank_jax.metrics.ranking import recall

__all__ = [
    "calibration_kl",
    "category_exposure",
    "exposure_share_error",
    "intra_list_diversity",
    "lists",
    "quota_violation",
    "auc",
    "ctr_metrics",
    "expected_calibration_error",
    "gauc",
    "logloss",
    "mrr",
    "ndcg",
    "recall",
]
