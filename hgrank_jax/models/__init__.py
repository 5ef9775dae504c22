"""Layer 1 models: the scorer zoo, residual vector quantisation and the paper's model.

- :class:`Scorer` / :func:`make_scorer`: user tower + item tower + a main network
  chosen by name from :data:`MAIN_NETWORKS` ("dnn", "wide_deep", "deepfm",
  "dcnv2", "mmoe"), with an optional bias tower used in training only.
- :class:`ResidualVQ`: hierarchical codes from EMA codebooks, state in the
  ``"rvq"`` collection (:data:`RVQ_COLLECTION`).
- :class:`HGRModel` / :func:`make_hgr_model` / :func:`hgr_loss`: the paper's
  model (seed 002) and its Eq. 10 loss.
- :class:`PRM`, :class:`Seq2Slate`: listwise rerankers over a candidate list;
  :class:`ListEvaluator` scores a whole ordered list (the generator-evaluator).
"""

from hgrank_jax.models.hgr import HGRModel, HGROutput, hgr_loss, make_hgr_model
from hgrank_jax.models.layers import MLP, FieldEmbeddings, Tower
from hgrank_jax.models.codebooks import prefix_group_ids, residual_cascade
from hgrank_jax.models.rvq import RVQ_COLLECTION, ResidualVQ, RVQOutput
from hgrank_jax.models.scorers import MAIN_NETWORKS, Scorer, ScorerOutput, make_scorer
from hgrank_jax.models.rerankers import PRM, ListEvaluator, Seq2Slate

__all__ = [
    "FieldEmbeddings", "HGRModel", "ListEvaluator", "PRM", "Seq2Slate", "HGROutput", "MAIN_NETWORKS", "MLP",
    "RVQ_COLLECTION",
    "RVQOutput", "ResidualVQ", "Scorer", "ScorerOutput", "Tower", "hgr_loss", "make_hgr_model",
    "make_scorer", "prefix_group_ids", "residual_cascade",
]
