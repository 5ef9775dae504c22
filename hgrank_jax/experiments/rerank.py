"""The Layer 3 comparison: every reranker on the simulator's or KuaiRand's request lists.

Splits the reranking requests into train / validation / test, chooses each
heuristic's trade-off parameter on validation (by list utility), trains the
learned rerankers on the training requests, and measures every method on the
test requests: list utility, NDCG@k, quota satisfaction and violation,
exposure-share error against the user's history distribution, intra-list
diversity, calibration KL, category coverage and milliseconds per list. Also
measures the constrained greedy's objective gap to the MILP optimum. Used by
``launch/rerank.py``.

``config.dataset`` picks the lists (simulator or official KuaiRand logs); see
:mod:`hgrank_jax.experiments.rerank_lists`. A quota can be impossible for a
KuaiRand list, so the constrained methods run best effort and the table
reports the share of test lists where the quota can be met.
"""

from __future__ import annotations

import json
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

from hgrank_jax.data import list_utility
from hgrank_jax.metrics import lists as list_metrics
from hgrank_jax.rerank import diversity, learned
from hgrank_jax.experiments.rerank_lists import load_lists
from hgrank_jax.rerank import generator_evaluator as ge
from hgrank_jax.rerank.constrained import constrained, exact, list_objective

COLUMNS = ("utility", "ndcg", "quota_satisfied", "quota_violation", "share_error", "diversity",
           "calibration_kl", "coverage", "ms_per_list")


def _split(x, start, stop):
  return {name: value[start:stop] for name, value in x.items()}


def _timed(fn, repeats=3):
  """Runs ``fn`` once to compile, then returns (result, best seconds of ``repeats``).

  A tuple result (``ConstrainedLists``) comes back whole; anything else as numpy.
  """
  result = jax.block_until_ready(fn())
  best = np.inf
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(fn())
    best = min(best, time.perf_counter() - start)
  return (result if isinstance(result, tuple) else np.asarray(result)), best


def _longest_runs(order, categories):
  category = np.where(order >= 0, np.take_along_axis(categories, np.maximum(order, 0), 1), -1)
  longest = np.ones(len(order), int)
  run = np.ones(len(order), int)
  for p in range(1, order.shape[1]):
    same = (category[:, p] >= 0) & (category[:, p] == category[:, p - 1])
    run = np.where(same, run + 1, 1)
    longest = np.maximum(longest, run)
  return longest


class Evaluator:
  """Scores final lists of one split against its truth.

  ``quota_satisfied`` counts a list when it fills ``min(k, valid candidates)``
  slots, keeps every category at or under ``max_count`` and no run longer than
  ``max_run``.
  """

  def __init__(self, lists, rows, config):
    self.lists, self.rows, self.config = lists, rows, config
    self.inputs = _split(lists.inputs, rows.start, rows.stop)
    self.relevance = lists.truth["relevance"][rows]
    history = self.inputs["history_category_counts"].astype(np.float32)
    self.target = history / np.maximum(history.sum(-1, keepdims=True), 1)
    self.num_categories = config.num_categories

  def utility(self, order):
    full = np.zeros((self.lists.num_requests, order.shape[1]), int)
    full[self.rows] = order
    return self.lists.true_utility(full)[self.rows]

  def ndcg(self, order):
    k = order.shape[1]
    discount = 1.0 / np.log2(2.0 + np.arange(k))
    gains = np.where(self.inputs["where"], 2.0 ** self.relevance - 1.0, 0.0)
    dcg = np.sum(np.where(order >= 0, np.take_along_axis(gains, np.maximum(order, 0), 1), 0)
                 * discount, 1)
    ideal = np.sum(-np.sort(-gains, 1)[:, :k] * discount, 1)
    return dcg / np.maximum(ideal, 1e-12)

  def row(self, order, seconds):
    cfg, categories = self.config, self.inputs["category"]
    c = self.num_categories
    violation = np.asarray(list_metrics.quota_violation(order, categories, c,
                                                        max_count=cfg.max_count))
    # A list meets the quota when it also fills every slot it can: leaving
    # slots empty would meet any cap trivially.
    filled = (order >= 0).sum(1) == np.minimum(order.shape[1], self.inputs["where"].sum(1))
    satisfied = (violation == 0) & filled
    if cfg.max_run is not None:
      satisfied &= _longest_runs(order, categories) <= cfg.max_run
    one_hot = np.eye(c, dtype=np.float32)[categories]
    return {
        "utility": float(self.utility(order).mean()),
        "ndcg": float(self.ndcg(order).mean()),
        "quota_satisfied": float(satisfied.mean()),
        "quota_violation": float(violation.mean()),
        "share_error": float(np.nanmean(list_metrics.exposure_share_error(order, categories,
                                                                          self.target))),
        "diversity": float(np.nanmean(list_metrics.intra_list_diversity(
            order, self.inputs["item_embedding"]))),
        "calibration_kl": float(np.nanmean(list_metrics.calibration_kl(order, one_hot,
                                                                       self.target))),
        "coverage": float(np.mean(list_metrics.coverage(order, categories, c,
                                                        weights=self.target))),
        "ms_per_list": 1e3 * seconds / len(order),
    }


def heuristic_rerankers(inputs, target, config, params):
  """``{name: zero-argument function returning [R, k] lists}`` for one split."""
  k, c = config.list_length, config.num_categories
  where, categories = inputs["where"], inputs["category"]
  score = learned.model_inputs(inputs, num_categories=c, num_business=config.num_business)[
      "initial_score"]
  probability = 1.0 / (1.0 + np.exp(-inputs["initial_score"]))
  embeddings, one_hot = inputs["item_embedding"], np.eye(c, dtype=np.float32)[categories]
  bounds = dict(max_count=config.max_count, max_run=config.max_run, num_categories=c,
                where=where, best_effort=True)
  return {
      "MMR": lambda: diversity.mmr(score, embeddings, k, lam=params["mmr_lam"], where=where),
      "DPP": lambda: diversity.dpp_greedy(np.exp(params["dpp_alpha"] * score), embeddings, k,
                                          where=where),
      "calibrated": lambda: diversity.calibrated(score, one_hot, target, k,
                                                 lam=params["calibrated_lam"], where=where),
      "coverage": lambda: diversity.coverage(probability, categories, k,
                                             weights=target + params["coverage_floor"],
                                             where=where),
      "constrained greedy": lambda: constrained(probability, categories, k, **bounds),
      "exact (MILP)": lambda: exact(probability, categories, k, **bounds),
  }


def _select(valid_eval, config, grids):
  """Picks each heuristic's parameter by mean true utility on validation."""
  chosen = {name: values[0] for name, values in grids.items()}
  for name, values in grids.items():
    best = -np.inf
    for value in values:
      params = dict(chosen, **{name: value})
      method = {"mmr_lam": "MMR", "dpp_alpha": "DPP", "calibrated_lam": "calibrated",
                "coverage_floor": "coverage"}[name]
      fn = heuristic_rerankers(valid_eval.inputs, valid_eval.target, config, params)[method]
      utility = valid_eval.utility(_indices(fn())).mean()
      if utility > best:
        best, chosen[name] = utility, value
  return chosen


def _indices(result):
  """The ``[R, k]`` lists of a reranker's result (``ConstrainedLists`` or an array)."""
  return np.asarray(result[0] if isinstance(result, tuple) else result)


def _mean_std(per_seed):
  row = {column: float(np.mean([r[column] for r in per_seed])) for column in COLUMNS}
  row.update({f"{column}_std": float(np.std([r[column] for r in per_seed])) for column in COLUMNS})
  return row


def _generator_evaluator(config, trained, truth, splits, rows, evals, log):
  """Generator (PRM + quota perturbations and Seq2Slate + quota beams) and a learned evaluator.

  Per seed: the seed's trained PRM + quota and Seq2Slate + quota generate
  feasible proposals; a :class:`ListEvaluator` regresses their true utility on
  the training requests (extra noise levels widen its training lists); the
  perturbation noise is chosen on validation (seed 0); test lists are timed
  end to end (PRM, beam search, perturbed greedy and evaluator in one jit).
  """
  spec = dict(config.generator_evaluator)
  label = spec.pop("label")
  beam_width = spec.pop("beam_width")
  noise_grid = tuple(spec.pop("noise_grid"))
  evaluator_config = ge.EvaluatorConfig(**spec)
  k, c = config.list_length, config.num_categories
  train_x, valid_x, test_x = splits
  train_rows, _, _ = rows
  valid_eval, test_eval = evals
  bounds = dict(num_categories=c, max_count=config.max_count, max_run=config.max_run)

  def generator(seed):
    prm, prm_config, prm_params = trained[("prm_quota", seed)]
    s2s, _, s2s_params = trained[("seq2slate_quota", seed)]

    def generate(batch, key, noise):
      args = (batch["features"], batch["initial_score"], batch["user"], batch["where"])
      scores = prm.apply(prm_params, *args)
      beams, beam_scores = s2s.apply(s2s_params, *args, categories=batch["categories"],
                                     beam_width=beam_width, return_beams=True,
                                     method=learned.Seq2Slate.decode, **bounds)
      lists = ge.propose(scores, batch["categories"], batch["where"], k, key=key,
                         num_perturbations=evaluator_config.num_perturbations, noise=noise,
                         **bounds)
      # A beam that could not be completed is replaced by the PRM's own list.
      beams = jnp.where(jnp.isfinite(beam_scores)[..., None], beams, lists[:, :1])
      return jnp.concatenate([lists, beams], axis=1)

    return jax.jit(generate)

  def utility(lists, split_rows):
    shape = lists.shape[:2] + (truth["relevance"].shape[-1],)
    relevance = jnp.broadcast_to(jnp.asarray(truth["relevance"][split_rows])[:, None], shape)
    categories = jnp.broadcast_to(jnp.asarray(truth["categories"][split_rows])[:, None], shape)
    return np.asarray(list_utility(lists, relevance, categories,
                                   position_bias=truth["position_bias"],
                                   repeat_decay=truth["repeat_decay"]))

  per_seed, chosen_noise = [], None
  for seed in range(config.num_seeds):
    generate = generator(seed)
    key = jax.random.PRNGKey(200 + seed)
    noises = (evaluator_config.noise,) + tuple(evaluator_config.train_noise)
    train_lists = jnp.concatenate(
        [generate(train_x, jax.random.fold_in(key, i), noise) for i, noise in enumerate(noises)],
        axis=1)
    model, params, _ = ge.train_evaluator(evaluator_config, train_x, train_lists,
                                          utility(train_lists, train_rows), key=key, log=log)
    select = jax.jit(lambda p, batch, key, noise: ge.pick(model, p, batch,
                                                           generate(batch, key, noise)))
    if chosen_noise is None:
      best = -np.inf
      for noise in noise_grid:
        order = np.asarray(select(params, valid_x, key, noise))
        value = valid_eval.utility(order).mean()
        log(f"{label} noise={noise}: validation utility {value:.4f}")
        if value > best:
          best, chosen_noise = value, noise
    order, seconds = _timed(lambda: select(params, test_x, key, chosen_noise))
    per_seed.append(test_eval.row(order, seconds))
  return label, per_seed, {"noise": chosen_noise}


def run(config, log=print):
  """Runs the comparison; returns a dict with rows, the greedy gap and the settings."""
  lists, (train_rows, valid_rows, test_rows), config, data_info = load_lists(config, log)
  valid_eval, test_eval = (Evaluator(lists, rows, config) for rows in (valid_rows, test_rows))
  k, c = config.list_length, config.num_categories

  params = _select(valid_eval, config, {name: list(values) for name, values in config.grids.items()})
  log(f"validation-selected parameters: {params}")
  results = {}
  initial = np.where(test_eval.inputs["where"][:, :k], np.arange(k), -1)
  results["initial order"] = test_eval.row(initial, 0.0)
  computed = {}
  for name, fn in heuristic_rerankers(test_eval.inputs, test_eval.target, config, params).items():
    result, seconds = _timed(fn, repeats=1 if name.startswith("exact") else 3)
    computed[name] = result
    results[name] = test_eval.row(_indices(result), seconds)
    log(f"{name}: {results[name]}")

  # Greedy gap on the objective both optimise.
  probability = 1.0 / (1.0 + np.exp(-test_eval.inputs["initial_score"]))
  greedy, optimum = computed["constrained greedy"], computed["exact (MILP)"]
  # Over the lists where the quota can be met (all of them on the simulator).
  feasible = np.asarray(optimum.feasible)
  greedy_value = list_objective(probability, np.asarray(greedy.indices))[feasible]
  exact_value = list_objective(probability, np.asarray(optimum.indices))[feasible]
  gap = (exact_value - greedy_value) / exact_value
  greedy_gap = {"mean_relative_gap": float(gap.mean()), "max_relative_gap": float(gap.max()),
                "lists_with_gap": float((gap > 1e-9).mean()),
                "greedy_infeasible_rate": float(np.mean(~np.asarray(greedy.feasible)[feasible])),
                "num_lists": int(len(gap)), "feasible_lists": float(feasible.mean())}
  log(f"greedy gap: {greedy_gap}")

  x = learned.model_inputs(lists.inputs, num_categories=c, num_business=config.num_business)
  train_x, valid_x, test_x = (_split(x, r.start, r.stop) for r in (train_rows, valid_rows,
                                                                   test_rows))
  truth = {"relevance": lists.truth["relevance"], "position_bias": lists.truth["position_bias"],
           "repeat_decay": lists.truth["repeat_decay"], "categories": lists.inputs["category"]}
  trained, learned_rows, selected_learned = {}, {}, {}

  def train(variant, seed, quota_weight=None):
    settings = dict(config.train)
    settings.update({name: value for name, value in variant.items()
                     if name not in ("init_from", "constrain", "select_quota_weight")})
    if quota_weight is not None:
      settings["quota_weight"] = quota_weight
    train_config = learned.TrainConfig(list_length=k, max_count=config.max_count,
                                       max_run=config.max_run, **settings)
    if variant.get("init_from"):
      model, _, start = trained[(variant["init_from"], seed)]
      model_params, _ = learned.train_reinforce(
          model, start, train_config, train_x, truth["relevance"][train_rows],
          position_bias=truth["position_bias"], repeat_decay=truth["repeat_decay"],
          key=jax.random.PRNGKey(100 + seed), num_categories=c,
          constrain=variant.get("constrain", True), log=log)
      return model, train_config, model_params
    model, model_params, _ = learned.train_reranker(
        train_config, train_x, truth["relevance"][train_rows], valid_x,
        key=jax.random.PRNGKey(seed), num_categories=c, log=log)
    return model, train_config, model_params

  def decoder(model, train_config, constrain):
    return jax.jit(lambda p, batch: learned.predict(model, train_config, p, batch,
                                                     num_categories=c, constrain=constrain))

  for key in config.learned_order:
    variant = dict(config.learned[key])
    name = variant.pop("label")
    constrain = variant.get("constrain", variant.get("quota_weight", 0) > 0)
    chosen_weight, seed0 = None, None
    if variant.get("select_quota_weight"):
      # lambda by true utility of the validation lists; the winner is seed 0.
      best = -np.inf
      for weight in config.quota_grid:
        candidate = train(variant, 0, weight)
        order = np.asarray(decoder(candidate[0], candidate[1], constrain)(candidate[2], valid_x))
        utility = valid_eval.utility(order).mean()
        log(f"{name} lambda={weight}: validation utility {utility:.4f}")
        if utility > best:
          best, chosen_weight, seed0 = utility, weight, candidate
      selected_learned[name] = {"quota_weight": chosen_weight}
    per_seed = []
    for seed in range(config.num_seeds):
      model, train_config, model_params = (seed0 if seed == 0 and seed0 is not None
                                           else train(variant, seed, chosen_weight))
      trained[(key, seed)] = (model, train_config, model_params)
      predict = decoder(model, train_config, constrain)
      order, seconds = _timed(lambda: predict(model_params, test_x))
      per_seed.append(test_eval.row(order, seconds))
    learned_rows[name] = per_seed
    results[name] = _mean_std(per_seed)
    log(f"{name}: {results[name]}")
  generators = [(key, seed) for key in ("prm_quota", "seq2slate_quota")
                for seed in range(config.num_seeds)]
  if config.get("generator_evaluator") and not all(g in trained for g in generators):
    log("generator-evaluator skipped: it needs 'prm_quota' and 'seq2slate_quota' in "
        "config.learned_order")
  elif config.get("generator_evaluator"):
    name, rows, chosen = _generator_evaluator(config, trained, truth, (train_x, valid_x, test_x),
                                              (train_rows, valid_rows, test_rows),
                                              (valid_eval, test_eval), log)
    learned_rows[name] = rows
    results[name] = _mean_std(rows)
    selected_learned[name] = chosen
    log(f"{name}: {results[name]}")
  pareto = []
  for quota_weight in config.get("pareto_weights", ()):
    # Unconstrained decoding, so the quota is met only as far as training taught it.
    train_config = learned.TrainConfig(list_length=k, max_count=config.max_count,
                                       max_run=config.max_run, model="prm",
                                       quota_weight=quota_weight, **dict(config.train))
    model, model_params, _ = learned.train_reranker(
        train_config, train_x, lists.truth["relevance"][train_rows], valid_x,
        key=jax.random.PRNGKey(0), num_categories=c, log=log)
    order = np.asarray(learned.predict(model, train_config, model_params, test_x,
                                       num_categories=c))
    pareto.append(dict(test_eval.row(order, 0.0), quota_weight=float(quota_weight)))
    log(f"pareto lambda={quota_weight}: {pareto[-1]}")
  return {"rows": results, "greedy_gap": greedy_gap, "selected": params,
          "selected_learned": selected_learned, "pareto": pareto,
          "num_seeds": config.num_seeds, "num_test_lists": int(len(initial)),
          "data": data_info}


def _plot_pareto(summary, path):
  """NDCG against quota satisfaction: the PRM lambda sweep and the fixed methods."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  figure, axis = plt.subplots(figsize=(9, 4.8))
  utility_name = summary.get("data", {}).get("utility", "utility")
  sweep = summary["pareto"]
  axis.plot([p["quota_satisfied"] for p in sweep], [p["ndcg"] for p in sweep], "o-",
            color="black", label="PRM, lambda sweep (unconstrained decoding)")
  for point in sweep:
    axis.annotate(f"lambda={point['quota_weight']:g}", (point["quota_satisfied"], point["ndcg"]),
                  textcoords="offset points", xytext=(5, 3), fontsize=7)
  # Methods go in the legend: several share quota satisfaction 1.0.
  markers = "xs^vD<>pP*h+d"
  for index, (name, row) in enumerate(summary["rows"].items()):
    axis.plot(row["quota_satisfied"], row["ndcg"], markers[index % len(markers)], ms=7,
              fillstyle="none", label=f"{name} ({utility_name} {row['utility']:.3f})")
  axis.set_xlabel("quota satisfaction rate (test lists)")
  axis.set_ylabel(summary.get("data", {}).get("ndcg", "NDCG@k"))
  axis.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
  figure.tight_layout()
  figure.savefig(path, dpi=120)
  plt.close(figure)


def write(summary, workdir):
  """Writes rerank.md, rerank.csv and rerank.json into ``workdir``."""
  os.makedirs(workdir, exist_ok=True)
  rows = summary["rows"]
  data = summary.get("data", {})
  header = ["method", data.get("utility", "true utility"), "NDCG@k", "quota satisfied", "quota violation",
            "share error", "diversity", "calibration KL", "coverage", "ms/list"]
  lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
  csv = [",".join(header)]
  for name, row in rows.items():
    cells = []
    for column in COLUMNS:
      digits = 3 if column != "ms_per_list" else 4
      text = f"{row[column]:.{digits}f}"
      if f"{column}_std" in row and column != "ms_per_list":
        text += f" ± {row[column + '_std']:.{digits}f}"
      cells.append(text)
    lines.append(f"| {name} | " + " | ".join(cells) + " |")
    csv.append(",".join([name] + [f"{row[column]:.6g}" for column in COLUMNS]))
  gap = summary["greedy_gap"]
  ranker = f" (initial ranker: {data['initial_ranker']})" if data.get("initial_ranker") else ""
  lines += ["", f"Lists: {data.get('dataset', 'simulator')}{ranker}, {data.get('lists_per_split')} "
            f"train/valid/test requests; NDCG@k against "
            f"{data.get('ndcg', 'NDCG@k vs true click probabilities')[len('NDCG@k vs '):]}.",
            f"Constrained greedy vs exact MILP on the {gap['num_lists']} test lists where the quota "
            f"can be met ({100 * gap.get('feasible_lists', 1.0):.1f}% of them): mean relative "
            f"gap {100 * gap['mean_relative_gap']:.3f}%, max {100 * gap['max_relative_gap']:.3f}%, "
            f"lists with any gap {100 * gap['lists_with_gap']:.1f}%, greedy infeasible rate "
            f"{100 * gap['greedy_infeasible_rate']:.1f}%.",
            f"Validation-selected parameters: {summary['selected']}, learned: "
            f"{summary.get('selected_learned', {})}; learned rows: mean ± std "
            f"over {summary['num_seeds']} seeds (ms/list: mean)."]
  if summary.get("pareto"):
    lines += ["", "PRM lambda sweep (unconstrained decoding, seed 0; pareto.png):", "",
              f"| lambda | {data.get('utility', 'true utility')} | NDCG@k | quota satisfied | "
              "quota violation |",
              "|---|---|---|---|---|"]
    lines += [f"| {p['quota_weight']:g} | {p['utility']:.3f} | {p['ndcg']:.3f} | "
              f"{p['quota_satisfied']:.3f} | {p['quota_violation']:.3f} |"
              for p in summary["pareto"]]
    _plot_pareto(summary, os.path.join(workdir, "pareto.png"))
  with open(os.path.join(workdir, "rerank.md"), "w") as f:
    f.write("\n".join(lines) + "\n")
  with open(os.path.join(workdir, "rerank.csv"), "w") as f:
    f.write("\n".join(csv) + "\n")
  with open(os.path.join(workdir, "rerank.json"), "w") as f:
    json.dump(summary, f, indent=2, default=float)
  return "\n".join(lines)
