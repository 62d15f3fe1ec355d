import pytest

from deepnet import ConfigError, SearchSpec
from deepnet.search.spec import read_toml


def test_single_stage_toml(tmp_path):
    path = tmp_path / "s.toml"
    path.write_text(
        'strategy = "halving"\ncv = 4\nseed = 2\n[space]\noptimizer = ["SGD"]\n'
        "learn_rate = { loguniform = [1e-4, 1e-1] }\nn_iter = 5\n"
    )
    with pytest.raises(ConfigError, match="unknown parameter 'n_iter'"):
        SearchSpec.from_toml(path)  # n_iter inside [space] is a mistake, named as such
    path.write_text(
        'strategy = "halving"\ncv = 4\nseed = 2\nn_iter = 5\n[space]\n'
        'optimizer = ["SGD"]\nlearn_rate = { loguniform = [1e-4, 1e-1] }\n'
    )
    spec = SearchSpec.from_toml(path)
    assert (spec.cv, spec.seed, len(spec.stages)) == (4, 2, 1)
    assert spec.stages[0].strategy == "halving" and spec.stages[0].n_iter == 5


@pytest.mark.parametrize("name", ["seed-grid.toml", "seed-grid-full.toml", "coarse-to-fine.toml"])
def test_shipped_search_files_parse(name, request):
    spec = SearchSpec.from_toml(request.config.rootpath / "searches" / name)
    assert spec.cv == 3


@pytest.mark.parametrize(
    ("name", "strategy"), [("seed-grid", "halving"), ("seed-grid-full", "grid")]
)
def test_seed_grid_files_are_the_seeds_280_configurations(request, name, strategy):
    spec = SearchSpec.from_toml(request.config.rootpath / "searches" / f"{name}.toml")
    assert spec.stages[0].n_trials == 7 * 8 * 5 and spec.stages[0].strategy == strategy


def test_unknown_key_gets_a_hint():
    with pytest.raises(
        ConfigError, match="unknown key 'stratgy' in the search spec: did you mean 'strategy'"
    ):
        SearchSpec.from_mapping({"stratgy": "grid", "space": {"neurons": [1]}})


def test_space_and_stages_together_are_refused():
    with pytest.raises(ConfigError, match="both"):
        SearchSpec.from_mapping({"space": {"neurons": [1]}, "stages": [{"space": {}}]})


def test_a_stage_without_space():
    with pytest.raises(ConfigError, match="stage 2 of the search spec has no space"):
        SearchSpec.from_mapping({"stages": [{"space": {"neurons": [1]}}, {"strategy": "grid"}]})


@pytest.mark.parametrize("cv", [1, "3", True])
def test_cv_must_be_an_integer_of_at_least_two(cv):
    with pytest.raises(ConfigError, match="cv="):
        SearchSpec.from_mapping({"cv": cv, "space": {"neurons": [1]}})


def test_unreadable_and_invalid_files(tmp_path):
    with pytest.raises(ConfigError, match="cannot read the search file"):
        read_toml(tmp_path / "missing.toml")
    (tmp_path / "bad.toml").write_text("strategy = [")
    with pytest.raises(ConfigError, match="is not valid TOML"):
        read_toml(tmp_path / "bad.toml")


def test_fingerprint_follows_the_spec_and_the_data():
    a = SearchSpec.from_mapping({"space": {"neurons": [1, 2]}})
    b = SearchSpec.from_mapping({"space": {"neurons": [1, 3]}})
    data = {"name": "mnist"}
    assert a.fingerprint(data) == a.fingerprint(dict(data))
    assert a.fingerprint(data) != b.fingerprint(data)
    assert a.fingerprint(data) != a.fingerprint({"name": "fashion-mnist"})
