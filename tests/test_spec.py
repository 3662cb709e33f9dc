import pytest
from pydantic import BaseModel, ConfigDict, Field

from lab.backbone import MLPSpec, NetworkSpec
from lab.spec import (
    SpecError,
    apply_overrides,
    flatten,
    parse_seeds,
    parse_value,
    validate_spec,
)


class FakeConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    algo: str = "fake"
    lr: float = Field(1e-3, gt=0)
    network: NetworkSpec = MLPSpec()


CONFIGS = {"fake": FakeConfig}
RAW = {"name": "t", "env": {"id": "CartPole-v1"},
       "agent": {"algo": "fake", "network": {"type": "mlp"}}, "train": {"steps": 100}}


def check(overrides, env_ids=("CartPole-v1",)):
    return validate_spec(apply_overrides(RAW, overrides), CONFIGS, list(env_ids))


def test_overrides_set_dotted_paths_and_parse_values():
    spec = check(["agent.lr=3e-4", "env.num_envs=16", "agent.network.hidden=[8, 8]"])
    assert spec.agent.lr == pytest.approx(3e-4)
    assert spec.env.num_envs == 16
    assert spec.agent.network.hidden == [8, 8]


def test_a_network_override_without_type_means_mlp():
    raw = {**RAW, "agent": {"algo": "fake"}}
    spec = validate_spec(apply_overrides(raw, ["agent.network.hidden=[8]"]), CONFIGS)
    assert spec.agent.network.type == "mlp" and spec.agent.network.hidden == [8]


def test_parse_value_fills_yaml_gaps():
    assert parse_value("3e-4") == pytest.approx(3e-4)
    assert parse_value("true") is True
    assert parse_value("ppo") == "ppo"
    assert parse_value("[1, 2]") == [1, 2]


@pytest.mark.parametrize("overrides, words", [
    (["agent.lrr=1"], ["agent.lrr", "did you mean 'lr'", "agent.lr", "agent.network"]),
    (["agent.lr=-1"], ["agent.lr", "greater than 0", "-1"]),
    (["agent.lr=fast"], ["agent.lr", "'fast'"]),
    (["env.num_envs=0"], ["env.num_envs", "greater than or equal to 1"]),
    (["agent.algo=nope"], ["unknown agent 'nope'", "valid agents: fake"]),
    (["env.id=Nope-v0"], ["unknown env id 'Nope-v0'", "CartPole-v1"]),
    (["trian.steps=5"],
     ["unknown key 'trian'", "did you mean 'train'", "valid keys: agent, description"]),
    (["agent.network.widths=[3]"], ["agent.network.widths", "agent.network.hidden"]),
    (["agent.network.type=transformer"], ["agent.network", "transformer", "'mlp'", "'vgg'"]),
    (["agent"], ["not key=value"]),
])
def test_bad_specs_give_one_line_naming_the_item_and_choices(overrides, words):
    with pytest.raises(SpecError) as err:
        check(overrides)
    message = str(err.value)
    assert "\n" not in message
    for word in words:
        assert word in message


def test_seeds_ranges_and_lists():
    assert parse_seeds("0-4") == [0, 1, 2, 3, 4]
    assert parse_seeds("0,3,7") == [0, 3, 7]
    assert parse_seeds("5") == [5]
    for bad in ["a-b", "", "1,1", "-3"]:
        with pytest.raises(SpecError):
            parse_seeds(bad)


def test_flatten_nested():
    assert flatten({"a": {"b": 1, "c": {"d": [1, 2]}}, "e": {}}) == {
        "a.b": 1, "a.c.d": [1, 2], "e": {}}
