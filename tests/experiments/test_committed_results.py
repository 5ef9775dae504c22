"""The committed quick tables (results/kuairand_sig_quick/) match what the code writes today.

They are regenerated on purpose (``bash launch/quickstart.sh --workdir
results/kuairand_sig_quick``); these checks catch a change to the rows, columns,
headings or files that was not followed by that regeneration. Numbers are not
compared: they need the 7-minute run.
"""

import csv
import json
import math
import pathlib

import pytest

from configs import table1

from hgrank_jax.experiments import report, summarise
from hgrank_jax.experiments.tables import METRICS

ROOT = pathlib.Path(__file__).resolve().parents[2]
QUICK = ROOT / "results" / "kuairand_sig_quick"
# What reproduce.run() writes for Tables 1 and 2 (see hgrank_jax/experiments/reproduce.py).
WRITTEN = {"table1.md", "table1.csv", "table1.json", "table2.md", "table2.json",
           "convergence.png", "harder_negatives.md", "harder_negatives.json"}


@pytest.fixture(name="config", scope="module")
def _config():
  return table1.get_config("kuairand_sig,quick")


def _written_table(config, tmp_path):
  """Table 1 as the code writes it, from hand-made runs with the config's rows and seeds."""
  rows = [{"key": r.key, "name": r.name, "chosen": {},
           "runs": [{"seed": s, "test": {m: 0.5 + 0.01 * s for m in METRICS}}
                    for s in range(config.num_seeds)]} for r in config.table1_rows]
  table = summarise(rows, rows[0]["key"])
  report.write_table(tmp_path / "table1", table, METRICS, rows[0]["name"], title="t")
  return table


def _markdown_rows(text):
  return [[c.strip() for c in line.strip().strip("|").split("|")]
          for line in text.splitlines() if line.startswith("|")]


def test_committed_quick_folder_holds_what_reproduce_writes():
  assert {p.name for p in QUICK.iterdir() if p.is_file()} == WRITTEN


def test_committed_quick_table1_rows_and_columns(config, tmp_path):
  table = _written_table(config, tmp_path)
  names = [r.name for r in config.table1_rows]
  md = (QUICK / "table1.md").read_text()
  lines = _markdown_rows(md)
  assert lines[0] == report.table_header(METRICS, names[0])
  assert [line[0] for line in lines[2:]] == names
  assert all(line[1] == str(config.num_seeds) for line in lines[2:])
  assert f"command: python -m launch.reproduce --config {config.command_config}" in md
  committed = json.loads((QUICK / "table1.json").read_text())["rows"]
  assert [r["name"] for r in committed] == names
  for got, want in zip(committed, table):
    assert set(got) == set(want)
    for metric in METRICS:
      assert math.isfinite(got[f"{metric}_mean"]) and math.isfinite(got[f"{metric}_std"])
  with (QUICK / "table1.csv").open() as f, (tmp_path / "table1.csv").open() as g:
    assert next(csv.reader(f)) == next(csv.reader(g))


def test_committed_quick_table2_sections(config):
  names = [r.name for r in config.table1_rows]
  md = (QUICK / "table2.md").read_text()
  assert md.startswith("# Table 2 on kuairand_sig:paper")
  sections = md.split("\n## ")[1:]
  assert [s.split(" ", 1)[0] for s in sections] == ["cold", "warm"]
  for section in sections:
    lines = _markdown_rows(section)
    assert lines[0] == report.table_header(METRICS, names[0])
    assert [line[0] for line in lines[2:]] == names
  groups = json.loads((QUICK / "table2.json").read_text())["tables"]
  assert {g: [r["name"] for r in rows] for g, rows in groups.items()} == {"cold": names,
                                                                          "warm": names}
