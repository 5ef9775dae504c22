"""Datasets by name: ``load_dataset("kuairand_sig:paper", seed=0)``.

A name is ``dataset[:view]``. Each entry maps to a loader returning a
:class:`~hgrank_jax.data.dataset.Dataset`; later loaders (the simulator, MovieLens,
official KuaiRand and Taobao) register here so launchers and configs can name them.
The official datasets (``kuairand:pure|1k|27k``, ``movielens:100k|1m``,
``taobao_ad``, ``taobao_userbehavior``) read the files a user brings:
``load_dataset("kuairand:pure", manual_dir=DIR)``.
"""

from __future__ import annotations

from typing import Callable

from hgrank_jax.data.sim import synthetic
from hgrank_jax.data.official import kuairand_sig
from hgrank_jax.data.dataset import Dataset

# name -> (loader(view, seed, **kwargs), views, default view)
_LOADERS: dict[str, tuple[Callable[..., Dataset], tuple[str, ...], str]] = {
    "kuairand_sig": (lambda view, seed, **kw: kuairand_sig.load(view, seed=seed, **kw),
                     kuairand_sig.VIEWS, "paper"),
    # The simulator: the seed picks the simulated world and its split.
    "synthetic": (lambda view, seed, **kw: synthetic.load(view, seed=seed, **kw),
                  synthetic.VIEWS, "small"),
}




def official_builders():
  """The :mod:`hgrank_jax.data.official.tfds_builders` module, imported on first use.

  TFDS takes seconds to import and the bundled data, the simulator and the
  tests of everything else need none of it, so this is the package's one
  deliberate function-local import (see docs/architecture.md).
  """
  from hgrank_jax.data.official import tfds_builders  # pylint: disable=g-import-not-at-top
  return tfds_builders


def _official_loader(name: str) -> Callable[..., Dataset]:
  def loader(view, seed, **kwargs):
    return official_builders().load(name, view, seed=seed, **kwargs)
  return loader


_OFFICIAL = {"kuairand": (("pure", "1k", "27k"), "pure"), "movielens": (("100k", "1m"), "100k"),
             "taobao_ad": (("default",), "default"),
             "taobao_userbehavior": (("default",), "default")}
for _name, (_views, _default) in _OFFICIAL.items():
  _LOADERS[_name] = (_official_loader(_name), _views, _default)


def register_dataset(name: str, loader: Callable[..., Dataset], views: tuple[str, ...],
                     default_view: str) -> None:
  """Adds a loader ``loader(view, seed, **kwargs) -> Dataset`` under ``name``."""
  if default_view not in views:
    raise ValueError(f"default view {default_view!r} is not one of {views}")
  _LOADERS[name] = (loader, tuple(views), default_view)


def available_datasets() -> dict[str, tuple[str, ...]]:
  """Dataset names and their views."""
  return {name: views for name, (_, views, _) in sorted(_LOADERS.items())}


def parse_dataset_name(spec: str) -> tuple[str, str]:
  """``"kuairand_sig:paper"`` -> ("kuairand_sig", "paper"); the view defaults per dataset."""
  name, _, view = spec.partition(":")
  if name not in _LOADERS:
    raise ValueError(f"unknown dataset {name!r}; available: "
                     + ", ".join(f"{n}[:{'|'.join(v)}]" for n, v in available_datasets().items()))
  _, views, default_view = _LOADERS[name]
  view = view or default_view
  if view not in views:
    raise ValueError(f"dataset {name!r} has no view {view!r}; views are {list(views)}")
  return name, view


def load_dataset(spec: str, *, seed: int = 0, **kwargs) -> Dataset:
  """Loads ``spec`` = ``name[:view]`` with the given split seed."""
  name, view = parse_dataset_name(spec)
  return _LOADERS[name][0](view, seed, **kwargs)
