"""Training losses with Rax's signature ``fn(logits, labels, *, where, segments)``.

Pointwise (:func:`logloss`), listwise (:func:`list_ce`, :func:`softmax_ce`),
pairwise (:func:`pairwise_logistic`), the paper's hierarchical group-wise loss
(:func:`group_ce`, Eq. 9) and JRC (:func:`jrc_loss`). :func:`get_loss` looks a
loss up by name.
"""

from hgrank_jax.losses.listwise import list_ce
from hgrank_jax.losses.listwise import segment_cross_entropy
from hgrank_jax.losses.listwise import softmax_ce
from hgrank_jax.losses.pointwise import logloss
from hgrank_jax.losses.groupwise import group_ce
from hgrank_jax.losses.groupwise import per_level_list_ce
from hgrank_jax.losses.groupwise import uncertainty_weighted_sum
