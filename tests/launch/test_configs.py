"""The configs package and the launchers' shape: one variant parser, one error, one flag pair.

Every file in configs/ is a module of the ``configs`` package that reads its
variants with ``configs.common.parse_variants``; ``--config configs/X.py:variants``
(as the launchers load it) gives the same config as ``get_config("variants")``;
launch.train and launch.reproduce take ``--config`` and ``--workdir`` and hand
both to their experiment's ``run(config, workdir)``.
"""

import ast
import doctest
import importlib
import pathlib
import random

import pytest
from absl import flags
from ml_collections import config_flags

from configs import common
from hgrank_jax.experiments import reproduce, runs

ROOT = pathlib.Path(__file__).resolve().parents[2]
CONFIG_FILES = sorted(p.stem for p in (ROOT / "configs").glob("*.py")
                      if p.stem not in ("__init__", "common"))


def _known(module):
  """The variants a config file declares (training configs: the shared training variants)."""
  return tuple(getattr(module, "VARIANTS", common.TRAIN_VARIANTS))


@pytest.mark.parametrize("module", [common, reproduce, runs], ids=lambda m: m.__name__)
def test_docstring_examples(module):
  assert doctest.testmod(module).failed == 0


def test_parse_variants_matches_a_plain_split():
  known = ("runlocal", "groupce", "listce", "kuairand")
  rng = random.Random(0)
  for _ in range(200):
    names = [rng.choice(known + ("",)) for _ in range(rng.randrange(6))]
    arg = ",".join(names)
    expected = []
    for name in names:  # the reference: order kept, empty and repeated names dropped
      if name and name not in expected:
        expected.append(name)
    assert common.parse_variants(arg, known) == expected
    assert common.parse_variants(names, known) == expected
  assert common.parse_variants(None, known) == [] == common.parse_variants("", known)


def test_unknown_variants_are_all_named_with_the_file_and_the_known_ones():
  with pytest.raises(ValueError) as error:
    common.parse_variants("runlocal,fast,tiny", ("runlocal", "quick"), "/x/configs/table1.py")
  assert str(error.value) == ("configs/table1.py: unknown config variants 'fast', 'tiny'; "
                              "known: runlocal, quick")


def test_no_config_file_edits_sys_path():
  for path in (ROOT / "configs").glob("*.py"):
    assert "import sys" not in path.read_text(), path.name


@pytest.mark.parametrize("name", CONFIG_FILES)
def test_every_config_checks_its_variants_with_the_shared_parser(name):
  module = importlib.import_module(f"configs.{name}")
  known = _known(module)
  with pytest.raises(ValueError) as error:
    module.get_config("no_such_variant")
  assert str(error.value) == (f"configs/{name}.py: unknown config variant 'no_such_variant'; "
                              f"known: {', '.join(known)}")
  module.get_config(None)
  for variant in known:
    module.get_config(variant)


@pytest.mark.parametrize("name,arg", [("simulator", "example,groupce"),
                                      ("table1", "simulator,quick"), ("rerank", "runlocal"),
                                      ("blend", "runlocal"), ("kuairand_sig", "runlocal,listce")])
def test_config_flag_loads_the_file_as_get_config_does(name, arg):
  flag_values = flags.FlagValues()
  config_flags.DEFINE_config_file("config", None, "", flag_values=flag_values)
  flag_values(["launch", f"--config={ROOT / 'configs' / name}.py:{arg}"])
  expected = importlib.import_module(f"configs.{name}").get_config(arg)
  assert repr(flag_values.config.to_dict()) == repr(expected.to_dict())  # NaN caps in blend


def _launcher_shape(path: pathlib.Path):
  """The flags a launcher defines and the ``X.run(...)`` calls in its ``main``."""
  tree = ast.parse(path.read_text())
  defined = {node.args[0].value for node in ast.walk(tree)
             if isinstance(node, ast.Call) and getattr(node.func, "attr", "").startswith("DEFINE")
             and node.args and isinstance(node.args[0], ast.Constant)}
  main = next(node for node in tree.body if isinstance(node, ast.FunctionDef)
              and node.name == "main")
  calls = [ast.unparse(node.func) for node in ast.walk(main)
           if isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "run"]
  imports = {alias.asname or alias.name: f"{node.module}.{alias.name}" for node in tree.body
             if isinstance(node, ast.ImportFrom) for alias in node.names}
  return defined, calls, imports


@pytest.mark.parametrize("launcher,module", [("train", "hgrank_jax.experiments.runs"),
                                             ("reproduce", "hgrank_jax.experiments.reproduce")])
def test_launchers_take_config_and_workdir_and_call_run(launcher, module):
  defined, calls, imports = _launcher_shape(ROOT / "launch" / f"{launcher}.py")
  assert {"config", "workdir"} <= defined
  assert calls == ["experiment.run"] and imports["experiment"] == module
