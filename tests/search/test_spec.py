import dataclasses
import json
import re
import tomllib

import pytest

from deepnet import ConfigError, SearchSpec, Space, Stage
from deepnet.search.spec import DEFAULT_SEARCH, build_spec, read_toml

SPACE = "[space]\nneurons = [16, 32]\n"


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


def shipped_files(root):
    return [*sorted((root / "searches").glob("*.toml")), DEFAULT_SEARCH]


def test_shipped_search_files_parse(request):
    paths = shipped_files(request.config.rootpath)
    assert len(paths) >= 4 and DEFAULT_SEARCH.name == "default.toml"
    for path in paths:
        spec = SearchSpec.from_toml(path)
        assert spec.cv in (2, 3) and all(stage.n_trials > 1 for stage in spec.stages), path
        # what a run folder stores reads back as the same search (the ensemble is the refit's)
        stored = SearchSpec.from_mapping(json.loads(json.dumps(spec.to_json())))
        assert stored == dataclasses.replace(spec, ensemble=None)


def test_the_default_search_is_halving(request):
    spec = build_spec([], None, {})
    assert spec == SearchSpec.from_toml(DEFAULT_SEARCH)
    assert [s.strategy for s in spec.stages] == ["halving"]


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


def toml_spec(tmp_path, text):
    path = tmp_path / "s.toml"
    path.write_text(text)
    return SearchSpec.from_toml(path)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            'n_iter = "5"\nstrategy = "random"\n',
            r"n_iter='5' is not allowed in .*s\.toml: it "
            r"must be an integer >= 1\.$",
        ),
        (
            'min_epochs = "1"\nstrategy = "halving"\n',
            r"min_epochs='1' is not allowed in .*: "
            r"it must be an integer >= 1\.$",
        ),
        (
            "strategy = 5\n",
            r"strategy=5 is not allowed in .*: it must be one of grid, random, "
            r"halving, hyperband, tpe\.$",
        ),
        ("seed = 'x'\n", r"seed='x' is not allowed in .*: it must be an integer from 0 to "),
        ("seed = 1.5\n", r"seed=1\.5 is not allowed in .*: it must be an integer from 0"),
        ("seed = -1\n", r"seed=-1 is not allowed in .*: it must be an integer from 0"),
        ('cv = "3"\n', r"cv='3' is not allowed in .*: it must be an integer >= 2\.$"),
        (
            "reduction_factor = 1.5\n",
            r"reduction_factor=1\.5 is not allowed in .*: it must be "
            r"an integer >= 2\.$",
        ),
        ("n_iter = 5\n", r"n_iter=5 has no effect with strategy grid"),
    ],
)
def test_every_bad_value_is_one_line_naming_key_value_and_rule(tmp_path, text, message):
    with pytest.raises(ConfigError, match=message) as error:
        toml_spec(tmp_path, text + SPACE)
    assert "\n" not in str(error.value)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("space = 5\n", r"space=5 is not allowed in .*: it must be a table of parameters"),
        (
            "stages = [1]\n",
            r"stages=\[1\] is not allowed in .*: it must be a non-empty list "
            "of stage tables",
        ),
        ("stages = []\n", r"stages=\[\] is not allowed"),
        (
            "[[stages]]\nspace = { neurons = [16] }\nn_iter = 'x'\n",
            r"n_iter='x' is not allowed in stage 1 of .*s\.toml",
        ),
        (
            'strategy = "grid"\n[[stages]]\nspace = { neurons = [16] }\n',
            "has both \\[\\[stages\\]\\] and a top-level strategy",
        ),
        (
            "strategy = 'random'\n[space]\nlearn_rate = { loguniform = [0, 1] }\n",
            r"learn_rate: loguniform needs low > 0 \(it is uniform in log space\), got \[0, 1\]",
        ),
    ],
)
def test_bad_structure_is_one_line_too(tmp_path, text, message):
    with pytest.raises(ConfigError, match=message):
        toml_spec(tmp_path, text)


def test_the_whole_file_is_checked_before_any_stage_is_built(tmp_path):
    # stage 1 is fine; stage 2's bad n_iter is found before stage 1's space is built
    text = (
        "[[stages]]\nspace = { nuerons = [16] }\n"
        "[[stages]]\nspace = { neurons = [16] }\nn_iter = 0\n"
    )
    with pytest.raises(ConfigError, match="n_iter=0 is not allowed in stage 2"):
        toml_spec(tmp_path, text)


def test_a_file_that_is_not_text(tmp_path):
    (tmp_path / "s.toml").write_bytes(b"\xff\xfe\x00binary")
    with pytest.raises(ConfigError, match="is not a text file"):
        SearchSpec.from_toml(tmp_path / "s.toml")


def test_python_api_gets_the_same_rules():
    stage = Stage(Space.from_dict({"neurons": [16, 32]}))
    for kwargs, message in [
        ({"seed": -1}, "seed=-1 is not allowed: it must be an integer from 0 to 2147483647"),
        ({"seed": 2**32}, "seed=4294967296 is not allowed"),
        ({"cv": 2.0}, "cv=2.0 is not allowed"),
    ]:
        with pytest.raises(ConfigError, match=message):
            SearchSpec((stage,), **kwargs)
    with pytest.raises(ConfigError, match="at least one stage"):
        SearchSpec(())
    assert SearchSpec([stage]).stages == (stage,)


def test_build_spec_from_param_options_is_a_grid_with_overrides():
    spec = build_spec(["neurons=16,32", "optimizer=Adam"], None, {"cv": 4, "seed": None})
    assert (spec.cv, spec.seed, spec.stages[0].strategy, spec.stages[0].n_trials) == (
        4,
        0,
        "grid",
        2,
    )
    halving = build_spec(["neurons=16,32"], None, {"strategy": "halving", "n_iter": 1})
    assert halving.stages[0].strategy == "halving" and halving.stages[0].n_trials == 1


@pytest.mark.parametrize(
    ("params", "config", "overrides", "message"),
    [
        (["neurons=1"], "searches/seed-grid.toml", {}, "not both"),
        ([], "searches/coarse-to-fine.toml", {"strategy": "grid"}, "several stages"),
        ([], "searches/coarse-to-fine.toml", {"n_iter": 3}, "several stages"),
        (["neurons=1,2"], None, {"n_iter": 5}, "n_iter=5 has no effect with strategy grid"),
        (["neurons=1"], None, {"seed": -1}, "seed=-1 is not allowed in the --param options"),
        (["learn_rate=loguniform:0:1"], None, {"strategy": "random"}, "needs low > 0"),
        ([], "nowhere.toml", {}, "cannot read the search file nowhere.toml"),
    ],
)
def test_build_spec_errors(request, params, config, overrides, message):
    path = None if config is None else request.config.rootpath / config
    if config == "nowhere.toml":
        path = config
    with pytest.raises(ConfigError, match=message):
        build_spec(params, path, overrides)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (
            {"strategy": "grid", "min_epochs": 2, "space": {"optimizer": ["Adam"]}},
            "min_epochs in the test file set(s) the rungs of halving and hyperband, which grid",
        ),
        (
            {"strategy": "random", "reduction_factor": 4, "space": {"optimizer": ["Adam"]}},
            "reduction_factor in the test file set(s) the rungs",
        ),
        (
            {"strategy": "halving", "min_epochs": 5, "space": {"epochs": [1, 2]}},
            "min_epochs=5 is not below the longest budget (epochs up to 2)",
        ),
    ],
    ids=["grid-min-epochs", "random-reduction-factor", "min-epochs-past-the-budget"],
)
def test_rung_settings_without_rungs_are_refused(values, message):
    with pytest.raises(ConfigError) as info:
        SearchSpec.from_mapping(values, "the test file")
    assert message in str(info.value)


def test_a_search_file_asks_for_the_refits_ensemble(tmp_path):
    from deepnet.ensemble import EnsembleKind, EnsemblePlan

    path = tmp_path / "s.toml"
    path.write_text(f"ensemble = 5\nensemble_validation = 0.2\n{SPACE}")
    spec = SearchSpec.from_toml(path)
    assert spec.ensemble == EnsemblePlan(EnsembleKind.SEEDS, 5, 0.2)
    # the refit's, not the search's: the same run folder and identity as without it
    plain = SearchSpec.from_mapping({"space": {"neurons": [16, 32]}})
    assert spec.to_json() == plain.to_json() and plain.ensemble is None
    assert spec.fingerprint({}) == plain.fingerprint({})
    path.write_text('ensemble = "Folds"\n[[stages]]\nspace = { neurons = [16, 32] }\n')
    assert SearchSpec.from_toml(path).ensemble == EnsemblePlan(EnsembleKind.FOLDS, None, 0.1)
    assert SearchSpec(plain.stages, ensemble=3).ensemble == EnsemblePlan(EnsembleKind.SEEDS, 3)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("ensemble = 1", "ensemble=1 is not allowed in F: it must be a number of seeds K >= 2"),
        ('ensemble = "fold"', "ensemble='fold' is not allowed in F"),
        ("ensemble = true", "ensemble=True is not allowed in F"),
        ("ensemble = 3\nensemble_validation = 1.5", "ensemble_validation=1.5 is not allowed"),
        ("ensemble_validation = 0.2", "ensemble_validation in F has no effect without an ensemble"),
        ("[space]\nneurons = [1]\nensemble = 3", "unknown parameter 'ensemble'"),
    ],
)
def test_bad_ensemble_keys_in_a_search_file(text, message):
    values = tomllib.loads(f"{text}\n{SPACE}" if "[space]" not in text else text)
    with pytest.raises(ConfigError, match=re.escape(message)):
        SearchSpec.from_mapping(values, "F")
