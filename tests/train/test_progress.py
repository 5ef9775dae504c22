"""The console of a training run: ETA to the early-stopping point, run labels, the
early-stop message, a finished run's metrics on rerun, and rounded numbers."""

import doctest
import io
import re

import numpy as np
import pytest

from hgrank_jax.train import early_stopping as early_stopping_lib
from hgrank_jax.train import writers
from hgrank_jax.train.early_stopping import EarlyStopping
from hgrank_jax.train.loop import train_and_evaluate
from hgrank_jax.train.writers import Progress, RunContext, read_metrics
from tests.train.helpers import logistic_objective, loop_config, tiny_dataset


@pytest.mark.parametrize("module", [writers, early_stopping_lib])
def test_docstring_examples(module):
  assert doctest.testmod(module).failed == 0


def _simulated_stop(early, last_eval_step, eval_every, max_step):
  """Where the run really stops if every coming evaluation is worse than the best."""
  early = EarlyStopping.from_dict(early.to_dict())
  step = last_eval_step
  worse = -1.0 if early.mode == "max" else 10.0
  first = early.best_value is None and early.evals_since_best == 0
  while not early.stopped and step < max_step:
    step = min(step + eval_every, max_step)
    # Before any evaluation the first one is a best, as any finite value is.
    early.update(0.5 if first else worse, step)
    first = False
  return step


@pytest.mark.parametrize("mode", ["max", "min"])
@pytest.mark.parametrize("patience", [0, 1, 3])
def test_last_step_without_gain_is_where_a_run_without_gain_stops(mode, patience):
  eval_every, max_step = 10, 200
  values = [0.3, 0.35, 0.34, float("nan"), 0.36, 0.2] if mode == "max" else [0.7, 0.6, 0.65,
                                                                              0.5, 0.9, 0.55]
  early = EarlyStopping("gauc", mode, patience)
  cases = [(early, 0)]
  for i, value in enumerate(values):
    early = EarlyStopping.from_dict(early.to_dict())
    if early.stopped:
      break
    early.update(value, (i + 1) * eval_every)
    cases.append((early, (i + 1) * eval_every))
  for early, last in cases:
    for cap in (max_step, last + eval_every):
      if early.stopped:
        assert early.last_step_without_gain(last, eval_every, cap) == last
      else:
        assert early.last_step_without_gain(last, eval_every, cap) == _simulated_stop(
            early, last, eval_every, cap), (early, last, cap)


class _Clock:
  def __init__(self):
    self.now = 1000.0

  def __call__(self):
    return self.now


def test_eta_counts_to_the_early_stop_and_equals_the_remaining_time():
  """A scripted run: 10 s of compilation, 0.1 s a step, evaluations of 2 s (the first,
  compiling, 5 s) every 20 steps, gains at steps 20, 40 and 60, patience 3: it stops at
  step 120 of 1000. From the second evaluation on, the ETA is the time that is left."""
  clock, out = _Clock(), io.StringIO()
  early = EarlyStopping("gauc", "max", patience=3)
  progress = Progress(1000, 64, eval_every_steps=20, stream=out, clock=clock,
                      context=RunContext("run 3/12", "LogLoss + ListCE, seed 1", 400.0))
  progress.header("/runs/x")
  progress.start(0)
  gauc = {20: 0.60, 40: 0.61, 60: 0.62, 80: 0.615, 100: 0.61, 120: 0.60}
  reports = []  # (step, time, line)
  step = 0
  while not early.stopped:
    step += 10
    clock.now += 0.1 * 10 + (10.0 if step == 10 else 0.0)
    progress.report(step, 0.5, early)
    reports.append((step, clock.now, out.getvalue().splitlines()[-1]))
    if step % 20 == 0:
      clock.now += 5.0 if step == 20 else 2.0
      early.update(gauc[step], step)
      progress.evaluated(step, {"gauc": gauc[step]}, early)
      if early.stopped:
        progress.stopped_early(step, early)
      progress.resume_timing(step)
  end = clock.now
  assert step == 120

  lines = out.getvalue().splitlines()
  assert lines[0] == "[run 3/12] LogLoss + ListCE, seed 1 in /runs/x (job elapsed 10m00s)"
  assert all(line.startswith("[run 3/12] ") for line in lines)
  assert reports[0][2].endswith("ETA from the next report (this interval includes compiling)")
  for step, now, line in reports[1:]:
    # The best so far is the last gain evaluated before this report (the evaluation at
    # ``step`` comes after it); before any, the first evaluation at step 20.
    best = max([s for s in (20, 40, 60) if s < step], default=20)
    assert f"stops at step {best + 60} unless gauc improves" in line, line
    assert "to step 1000)" in line  # the cap comes second, as the bound it is
    if step > 60:  # the last gain is behind: the step it names is where the run ends
      assert progress_eta(line) == pytest.approx(end - now, abs=0.5)
  assert ("[run 3/12] step 70/1000  loss 0.5000  640 examples/s  elapsed 26s / job 10m26s  "
          "ETA ~11s (stops at step 120 unless gauc improves; at most 3m07s, to step 1000)"
          ) in lines
  assert lines[-1] == ("[run 3/12] Early stopping at step 120 of 1000: valid gauc has not "
                       "improved for 3 evaluations (patience 3); best gauc 0.6200 at step 60, "
                       "whose weights are evaluated on test.")


def progress_eta(line):
  """The seconds of ``ETA ~..`` in a progress line."""
  text = re.search(r"ETA ~?(\S+)", line).group(1)
  if text == "<1s":
    return 0.0
  match = re.fullmatch(r"(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?", text)
  hours, minutes, seconds = (int(g or 0) for g in match.groups())
  return 3600 * hours + 60 * minutes + seconds


def test_console_of_an_early_stopped_run_and_of_its_rerun(tmp_path, capsys):
  data = tiny_dataset()
  config = loop_config(num_train_steps=200, eval_every_steps=2, log_every_steps=1,
                       learning_rate=0.5, **{"early_stopping.patience": 3})
  context = RunContext("run 3/12", "LogLoss + ListCE, seed 1", job_started_at=0.0)
  results = train_and_evaluate(config, tmp_path, objective=logistic_objective(), dataset=data,
                               context=context)
  out = capsys.readouterr().out
  lines = out.splitlines()
  assert re.fullmatch(rf"\[run 3/12\] LogLoss \+ ListCE, seed 1 in {tmp_path} "
                      r"\(job elapsed \S+\)", lines[0])
  assert all(line.startswith("[run 3/12] ") for line in lines)
  assert not re.search(r"\d\.\d{5}", out), out  # rounded, as in the progress lines

  evals = read_metrics(tmp_path, "eval")
  gaucs = [r["valid_gauc"] for r in evals]
  best = evals[int(np.nanargmax(gaucs))]
  assert results["stopped_early"] and results["best_step"] == best["step"]
  progress = [l for l in lines if re.match(r"\[run 3/12\] step \d+/200  loss \d\.\d{4}", l)]
  assert len(progress) == results["steps"]  # one a step (log_every_steps=1)
  for line in progress[1:]:
    step = int(re.search(r"step (\d+)/", line).group(1))
    claimed = int(re.search(r"stops at step (\d+) unless gauc improves", line).group(1))
    assert claimed <= 200 and "to step 200)" in line
    if step > results["best_step"]:
      assert claimed == results["steps"]
  assert (f"[run 3/12] Early stopping at step {results['steps']} of 200: valid gauc has not "
          f"improved for 3 evaluations (patience 3); best gauc {best['valid_gauc']:.4f} at step "
          f"{best['step']}, whose weights are evaluated on test.") in lines
  summary = (f"Best step {best['step']} (stopped early at step {results['steps']} of 200): "
             f"valid gauc {best['valid_gauc']:.4f}  logloss {best['valid_logloss']:.4f}")
  assert f"[run 3/12] {summary}" in out
  assert f"test gauc {results['test']['gauc']:.4f}" in out

  # A rerun returns the saved results and prints them, without training.
  assert train_and_evaluate(config, tmp_path, objective=logistic_objective(), dataset=data,
                            context=context) == results
  out = capsys.readouterr().out
  assert f"holds a finished run (step {results['steps']})" in out and summary in out
  assert f"test gauc {results['test']['gauc']:.4f}" in out
  assert not re.search(r"step \d+/200", out)


def test_without_early_stopping_the_eta_is_to_the_step_cap(tmp_path, capsys):
  config = loop_config(num_train_steps=6, eval_every_steps=3, log_every_steps=2)
  results = train_and_evaluate(config, tmp_path, objective=logistic_objective(),
                               dataset=tiny_dataset())
  out = capsys.readouterr().out
  progress = [l for l in out.splitlines() if l.startswith("step ")]
  assert [l.split()[1] for l in progress] == ["2/6", "3/6", "4/6", "6/6"]
  assert all(re.search(r"ETA ~?\S+$", l) for l in progress[1:]) and "stops at" not in out
  assert "Early stopping" not in out and not results["stopped_early"]
  assert not any(line.startswith("[") for line in out.splitlines())  # no label, no prefix
