"""FeatureSpec and the paper's embedding-size rule."""

import math

import numpy as np
import pytest

from hgrank_jax.data.features import CategoricalFeature, FeatureSpec, NumericFeature, embedding_size


@pytest.mark.parametrize("cardinality,expected", [
    (1, 16), (2, 16), (255, 16), (256, 16), (511, 16),  # floor(log2) * 2 <= 16
    (512, 18), (1023, 18), (1024, 20), (4373, 24), (16974, 28), (2**20, 40), (2**20 - 1, 38),
])
def test_embedding_size_hand_computed(cardinality, expected):
  assert embedding_size(cardinality) == expected


def test_embedding_size_matches_float_formula_away_from_powers_of_two():
  for c in np.unique(np.random.default_rng(0).integers(3, 10**7, 500)):
    if c & (c - 1):  # skip exact powers of two, where float log2 may round either way
      assert embedding_size(int(c)) == max(math.floor(math.log2(c)) * 2, 16)


def test_embedding_size_rejects_empty_vocabulary():
  with pytest.raises(ValueError, match="cardinality"):
    embedding_size(0)


def test_feature_dim_uses_rule_unless_overridden():
  assert CategoricalFeature("u", 4373, tower="user").dim == 24
  assert CategoricalFeature("u", 4373, tower="user", embedding_dim=8).dim == 8


def test_spec_roles_and_validation():
  spec = FeatureSpec(categorical=(CategoricalFeature("user_id", 10, "user"),
                                  CategoricalFeature("item_id", 5, "item")),
                     numeric=(NumericFeature("dense", 3),), labels=("click", "like"),
                     user_field="user_id", item_field="item_id")
  assert spec.label == "click"
  assert spec.column_names == ("user_id", "item_id", "dense", "click", "like")
  assert [f.name for f in spec.by_tower("user")[0]] == ["user_id"]
  good = {"user_id": np.array([0, 9]), "item_id": np.array([4, 0]), "dense": np.zeros((2, 3)),
          "click": np.array([0.0, 1.0]), "like": np.array([0.0, 0.0])}
  spec.validate(good)
  with pytest.raises(ValueError, match="item_id"):
    spec.validate({**good, "item_id": np.array([5, 0])})
  with pytest.raises(ValueError, match="missing columns"):
    spec.validate({k: v for k, v in good.items() if k != "like"})
  with pytest.raises(ValueError, match="dense"):
    spec.validate({**good, "dense": np.zeros((2, 2))})
  assert FeatureSpec.from_dict(spec.to_dict()) == spec


def test_spec_rejects_bad_definitions():
  with pytest.raises(ValueError, match="tower"):
    CategoricalFeature("x", 3, tower="side")
  with pytest.raises(ValueError, match="duplicated"):
    FeatureSpec(categorical=(CategoricalFeature("x", 3),), labels=("x",))
  with pytest.raises(ValueError, match="user_field"):
    FeatureSpec(categorical=(CategoricalFeature("x", 3),), user_field="uid")
