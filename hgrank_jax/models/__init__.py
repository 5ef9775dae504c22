"""Layer 1 models: the scorer zoo, residual vector quantisation and the paper's model.

``ResidualVQ`` quantises user embeddings into hierarchical codes with EMA
codebooks (state in the ``"rvq"`` collection).
"""

from hgrank_jax.models.rvq import RVQ_COLLECTION, ResidualVQ, RVQOutput, prefix_group_ids, residual_cascade

__all__ = ["RVQ_COLLECTION", "ResidualVQ", "RVQOutput", "prefix_group_ids", "residual_cascade"]
