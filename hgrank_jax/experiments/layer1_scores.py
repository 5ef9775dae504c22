"""Initial scores for the simulator's request lists from a trained Layer 1 scorer.

The simulator's request lists come sorted by its own imperfect initial ranker.
:func:`rescore_with_run` replaces that ranker with a model trained by
``launch.train`` on the simulator's logs of the *same world* (same seed and
sizes): every candidate is scored as a log row at the top position
(``position`` 0, ``is_random`` 0, the user's observed profile when the run's
logs have one), exactly as the trainer's evaluation serves it (the bias tower
switched off), and the candidates are re-sorted by that logit, so candidate
slot j is the scorer's rank j again. The truth travels with its candidates.
The candidate set itself (the simulator's retrieval) is unchanged. The run's
user embedding e_u of each request is added as ``inputs["user_embedding"]``,
which ``learned.model_inputs`` appends to the rerankers' user vector.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib

import ml_collections
import numpy as np

from hgrank_jax.data.sim import synthetic
from hgrank_jax.data.sim.config import SimulatorConfig
from hgrank_jax.data.sim.lists import RequestLists
from hgrank_jax.data.sim.world import build_world, observed_user_profiles
from hgrank_jax.experiments.mechanisms import encode_users, restore_best
from hgrank_jax.train.evaluation import predict_split
from hgrank_jax.train.objectives import build_objective

# The [R, n, ...] arrays of RequestLists, permuted together when re-sorting.
PER_CANDIDATE_INPUTS = ("item_id", "category", "business", "item_embedding", "item_value",
                        "initial_score", "where")
PER_CANDIDATE_TRUTH = ("relevance", "long_view_given_click")
# Fields that size the logs or the lists, not the world a run learned.
_NOT_WORLD = ("num_requests", "num_list_requests", "list_candidates", "list_min_candidates",
              "chunk_requests")


def run_world(workdir: str | pathlib.Path) -> tuple[ml_collections.ConfigDict, SimulatorConfig]:
  """(the run's config, the SimulatorConfig of the logs it trained on).

  Raises:
    FileNotFoundError: when ``workdir`` holds no finished run's config.json.
    ValueError: when the run did not train on ``synthetic:<view>``.
  """
  path = pathlib.Path(workdir) / "config.json"
  if not path.exists():
    raise FileNotFoundError(f"{path} not found: scorer_workdir must be the --workdir of a "
                            "launch.train run")
  config = ml_collections.ConfigDict(json.loads(path.read_text()))
  name, _, view = str(config.dataset).partition(":")
  if name != "synthetic":
    raise ValueError(f"the run in {workdir} trained on {config.dataset!r}; only runs on the "
                     "simulator's logs ('synthetic:<view>') can score its request lists")
  return config, synthetic.config_for_view(view or "small", seed=int(config.split_seed))


def check_same_world(lists_config: SimulatorConfig, scorer_config: SimulatorConfig) -> None:
  """Raises ``ValueError`` naming every world setting in which the two differ."""
  differ = [f"{field.name}: lists {getattr(lists_config, field.name)!r}, scorer "
            f"{getattr(scorer_config, field.name)!r}"
            for field in dataclasses.fields(SimulatorConfig) if field.name not in _NOT_WORLD
            and getattr(lists_config, field.name) != getattr(scorer_config, field.name)]
  if differ:
    raise ValueError("the scorer was trained on another simulated world than the request "
                     "lists; differing settings: " + "; ".join(differ))


def score_candidates(workdir: str | pathlib.Path, lists: RequestLists,
                     lists_config: SimulatorConfig, *, batch_size: int = 4096
                     ) -> tuple[np.ndarray, np.ndarray]:
  """The run's serving logits of every candidate and its user embedding of every request.

  Returns:
    (logits float32 ``[R, n]``, ``-inf`` on padding; e_u float32 ``[R, d]``,
    the run's user-tower output, the personalised user vector the learned
    rerankers read).
  """
  run_config, scorer_config = run_world(workdir)
  check_same_world(lists_config, scorer_config)
  spec = synthetic.log_feature_spec(scorer_config)
  x = lists.inputs
  shape = x["item_id"].shape
  users = np.broadcast_to(x["user_id"][:, None], shape).reshape(-1)
  columns = {"user_id": users.astype(np.int32),
             "item_id": x["item_id"].reshape(-1).astype(np.int32),
             "category": x["category"].reshape(-1).astype(np.int32),
             "business": x["business"].reshape(-1).astype(np.int32),
             "position": np.zeros(users.size, np.int32),
             "is_random": np.zeros(users.size, np.int32)}
  if scorer_config.user_profile_noise is not None:
    columns["user_profile"] = observed_user_profiles(build_world(scorer_config))[users]
  # Placeholder labels: the spec's validation wants them; serving never reads them.
  columns.update({label: np.zeros(users.size, np.float32) for label in spec.labels})
  spec.validate(columns, where="request lists")
  objective = build_objective(run_config, spec)
  params, model_state = restore_best(workdir)
  logits = predict_split(objective.predict, params, model_state, columns, batch_size, None)
  first = np.arange(shape[0]) * shape[1]   # slot 0 of each request: its user fields
  user_embedding = encode_users(run_config, spec, params, model_state,
                                {name: value[first] for name, value in columns.items()})
  return (np.where(x["where"], logits.reshape(shape), -np.inf).astype(np.float32),
          user_embedding)


def rescore_with_run(workdir: str | pathlib.Path, lists: RequestLists,
                     lists_config: SimulatorConfig) -> RequestLists:
  """``lists`` with ``initial_score`` from the run and candidates re-sorted by it.

  Args:
    workdir: a finished ``launch.train`` run on ``synthetic:<view>``.
    lists: request lists of ``lists_config`` (from ``make_request_lists``).
    lists_config: their SimulatorConfig; its world must be the run's.

  Returns:
    RequestLists: every per-candidate input and truth array permuted alike;
    ``initial_score`` holds the run's logits (0 on padding, which stays last);
    ``inputs["user_embedding"]`` float32 ``[R, d]`` the run's user embedding.
  """
  scores, user_embedding = score_candidates(workdir, lists, lists_config)
  order = np.argsort(-scores, axis=1, kind="stable")

  def sort(value):
    index = order.reshape(order.shape + (1,) * (value.ndim - 2))
    return np.take_along_axis(value, index, axis=1)

  inputs = {name: sort(value) if name in PER_CANDIDATE_INPUTS else value
            for name, value in lists.inputs.items()}
  inputs["user_embedding"] = user_embedding
  inputs["initial_score"] = np.where(inputs["where"], np.take_along_axis(scores, order, 1),
                                     0.0).astype(np.float32)
  truth = {name: sort(value) if name in PER_CANDIDATE_TRUTH else value
           for name, value in lists.truth.items()}
  return RequestLists(inputs=inputs, truth=truth)
