"""Differentiable sorting and ranking operators (Layer 3 building blocks).

``sorting`` holds the public relaxations (``soft_permutation``, ``soft_rank``,
``soft_sort``, ``soft_topk_mask``) with methods softsort, neuralsort, ot, fast
and hard; ``exposure`` turns them into expected per-category counts in the top
k. The kernels live in ``isotonic`` (PAV and permutahedron projection, whose
blocks ``pav_blocks`` finds on GPU, CPU or elsewhere),
``fast_sort``, ``relaxed`` (dense matrices) and ``ot_sort`` (ott-jax);
``stable_order`` is the hard stable argsort they share (numpy on CPU).
``segments`` holds O(n) segment reductions and ``group_ids`` the group ids
(counted into a table for small integer keys, by sorting otherwise), used by
the list and group-wise losses.
"""

from hgrank_jax.ops.exposure import soft_category_exposure
from hgrank_jax.ops.sorting import METHODS
from hgrank_jax.ops.sorting import soft_permutation
from hgrank_jax.ops.sorting import soft_rank
from hgrank_jax.ops.sorting import soft_sort
from hgrank_jax.ops.sorting import soft_topk_mask
from hgrank_jax.ops.isotonic import isotonic_decreasing
from hgrank_jax.ops.isotonic import project_sorted_permutahedron
from hgrank_jax.ops import segments
from hgrank_jax.ops.segments import dense_segment_ids, prefix_segment_ids
