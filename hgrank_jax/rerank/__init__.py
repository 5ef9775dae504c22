"""Inference rerankers: from candidate scores to a final list of k indices.

Greedy diversity rerankers (:mod:`.diversity`): :func:`mmr`,
:func:`dpp_greedy`, :func:`calibrated`, :func:`coverage`. Constrained
reranking (:mod:`.constrained`): the feasible greedy :func:`constrained` and
the MILP optimum :func:`exact` for per-category min/max counts and a maximum
run length, with :func:`list_objective` to compare them. The step rule that
position-by-position decoders share with the greedy (:func:`category_state`,
:func:`allowed_picks`, :func:`advance`) lives in
:mod:`hgrank_jax.ops.category_constraints` and is re-exported here. All return
candidate indices ``[..., k]`` in list order with ``-1`` for unfilled slots;
see docs/reranking.md.

Submodules not imported here: :mod:`.learned` (inputs, loss and inference of
the PRM / Seq2Slate models) and :mod:`.generator_evaluator` (feasible
candidate lists, a learned list evaluator picks). Their training, the
comparison's request lists and the comparison itself are experiments
(:mod:`hgrank_jax.experiments.rerank`). The latency benchmark is
``benchmarks/rerank.py``.
"""

from hgrank_jax.ops.category_constraints import CategoryState
from hgrank_jax.rerank.constrained import ConstrainedLists
from hgrank_jax.ops.category_constraints import advance
from hgrank_jax.ops.category_constraints import allowed_picks
from hgrank_jax.ops.category_constraints import category_state
from hgrank_jax.rerank.constrained import constrained
from hgrank_jax.rerank.constrained import exact
from hgrank_jax.rerank.constrained import infeasibility_reasons
from hgrank_jax.rerank.constrained import list_objective
from hgrank_jax.rerank.constrained import position_discount
from hgrank_jax.rerank.diversity import calibrated
from hgrank_jax.rerank.diversity import coverage
from hgrank_jax.rerank.diversity import dpp_greedy
from hgrank_jax.rerank.diversity import mmr

__all__ = [
    "CategoryState",
    "ConstrainedLists",
    "advance",
    "allowed_picks",
    "category_state",
    "calibrated",
    "constrained",
    "coverage",
    "dpp_greedy",
    "exact",
    "infeasibility_reasons",
    "list_objective",
    "mmr",
    "position_discount",
]
