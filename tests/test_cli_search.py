"""deepnet search and deepnet results, through the real command line."""

import csv
import json
import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request

import pytest
from click.testing import CliRunner

from deepnet.cli import main
from tests.tables import results_table


@pytest.fixture
def cli():
    runner = CliRunner()
    return lambda *args: runner.invoke(main, [str(a) for a in args])


GRID = ["--param", "optimizer=Adam,Nadam", "--param", "epochs=1", "--param", "batch_size=64"]


@pytest.fixture(scope="module")
def grid_run(small27_npz, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("cli") / "grid"
    result = CliRunner().invoke(
        main, ["search", *GRID, "--n-jobs", "1", "--path", str(small27_npz), "--out", str(run_dir)]
    )
    return result, run_dir


def test_search_prints_trials_table_best_and_refit(grid_run):
    result, run_dir = grid_run
    assert result.exit_code == 0, result.output
    out = result.output
    assert "grid, 2 trials" in out and "trial   0" in out and "trial   1" in out
    assert "best     cv accuracy" in out and "refit    on all 1200 training images" in out
    assert "test split (evaluated once)" in out and str(run_dir) in out
    assert out.rstrip().endswith(f"report   {run_dir / 'report.html'}")
    assert (run_dir / "report.html").is_file()


def test_results_shows_the_same_numbers_and_writes_csv(grid_run, cli, tmp_path):
    _, run_dir = grid_run
    shown = cli("results", run_dir, "--csv", tmp_path / "r.csv")
    assert shown.exit_code == 0, shown.output
    rows = list(csv.DictReader((tmp_path / "r.csv").open()))
    assert len(rows) == 2
    assert f"{float(rows[0]['mean_cv_accuracy']):.4f}" in shown.output


def test_grid_against_random_comparison(grid_run, cli, small27_npz, tmp_path):
    _, grid_dir = grid_run
    random_dir = tmp_path / "random"
    ran = cli(
        "search",
        "--strategy",
        "random",
        "--n-iter",
        1,
        *GRID,
        "--n-jobs",
        1,
        "--no-refit",
        "--path",
        small27_npz,
        "--out",
        random_dir,
    )
    assert ran.exit_code == 0, ran.output
    compared = cli("results", grid_dir, random_dir)
    table = compared.output.split("comparison", 1)[1]
    # the strategy column, then the trials column, of each run's row (a path cell wrapped
    # onto several lines never stands next to a trial count)
    assert re.search(r"│ grid\s+│\s+2 │", table) and re.search(r"│ random\s+│\s+1 │", table)
    reported = cli("report", random_dir, "--compare", grid_dir)
    assert reported.exit_code == 0, reported.output
    html = (random_dir / "report.html").read_text()
    assert "one line per search" in html
    assert "refit: the best configuration has not been refit" in html


def test_report_of_a_folder_that_is_not_a_run(cli, tmp_path):
    result = cli("report", tmp_path / "nowhere")
    assert result.exit_code == 1
    assert "not a deepnet run folder" in result.output and "Traceback" not in result.output


def test_dashboard_serves_the_study_on_the_free_port_it_prints(grid_run):
    _, run_dir = grid_run
    server = subprocess.Popen(
        [sys.executable, "-m", "deepnet", "dashboard", str(run_dir), "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        line = server.stdout.readline()
        port = int(re.search(r"http://127\.0\.0\.1:(\d+)/", line)[1])
        assert port != 0, line
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies", timeout=30) as r:
            body = json.loads(r.read())
        assert [s["study_name"] for s in body["study_summaries"]] == ["grid"]
    finally:
        server.terminate()
        server.wait(timeout=10)


def test_dashboard_on_a_busy_port_is_one_line(grid_run, cli):
    _, run_dir = grid_run
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = cli("dashboard", run_dir, "--port", port)
    assert result.exit_code == 1
    assert f"cannot serve on 127.0.0.1 port {port}: Address already in use" in result.output
    assert "Traceback" not in result.output


def test_dashboard_port_out_of_range_is_refused(grid_run, cli):
    result = cli("dashboard", grid_run[1], "--port", 70000)
    assert result.exit_code == 2
    assert "Invalid value for '--port': 70000 is not in the range 0<=x<=65535" in result.output


@pytest.mark.parametrize("name", ["s[/]x", "[red]search"])
def test_markup_in_a_search_folder_is_printed_as_written(small27_npz, tmp_path, cli, name):
    run_dir = tmp_path / name
    args = ["--param", "optimizer=Adam", "--param", "epochs=1", "--param", "batch_size=64"]
    result = cli(
        "search", *args, "--n-jobs", 1, "--no-refit", "--path", small27_npz, "--out", run_dir
    )
    assert result.exit_code == 0, result.output
    out = result.output.replace("\n", "")
    assert f"results in {run_dir} (again: deepnet results {run_dir})" in out
    assert f"report   {run_dir / 'report.html'}" in out
    shown = cli("results", run_dir)
    assert shown.exit_code == 0 and str(run_dir) in shown.output.replace("\n", "")


def test_more_jobs_than_cores_or_trials_starts_what_can_be_used(small27_npz, tmp_path, cli):
    args = ["--param", "optimizer=Adam", "--param", "epochs=1", "--param", "batch_size=64"]
    result = cli(
        "search",
        *args,
        "--n-jobs",
        16,
        "--no-refit",
        "--path",
        small27_npz,
        "--out",
        tmp_path / "run",
    )
    assert result.exit_code == 0, result.output
    assert "1 trials, 1 worker(s)" in result.output
    cores = os.cpu_count()
    if cores < 16:
        assert f"n_jobs=16 asks for more workers than the {cores} cores" in result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--param", "nurons=1,2"], "did you mean 'neurons'"),
        (["--param", "learn_rate=loguniform:1e-4:1e-1"], "grid search needs value lists"),
        (["--param", "neurons=1", "--config", "searches/seed-grid.toml"], "not both"),
        (["--config", "nowhere.toml"], "cannot read the search file nowhere.toml"),
        (["--config", "searches/coarse-to-fine.toml", "--strategy", "grid"], "several stages"),
        (["--param", "neurons=1", "--cv", "1"], "cv=1 is not allowed"),
        (
            ["--param", "neurons=1", "--storage", "nosuchdb://x", "--n-jobs", "1"],
            "study storage nosuchdb://x",
        ),
    ],
)
def test_bad_search_input(cli, small27_npz, tmp_path, args, message):
    result = cli("search", *args, "--path", small27_npz, "--out", tmp_path / "run")
    assert result.exit_code != 0
    assert message in result.output
    assert "Traceback" not in result.output


@pytest.mark.parametrize("value", ["0", "1", "-3", "fold"])
def test_a_bad_ensemble_is_one_line_before_anything_is_made(cli, small27_npz, tmp_path, value):
    run_dir = tmp_path / "run"
    result = cli("search", *GRID, "--path", small27_npz, "--out", run_dir, "--ensemble", value)
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert result.output.count("\n") == 1
    assert f"ensemble={value if value.lstrip('-').isdigit() else repr(value)} is not allowed" in (
        result.output
    )
    assert "--ensemble takes a number of seeds K >= 2" in result.output
    assert not run_dir.exists()


def test_an_ensemble_needs_the_refit(cli, small27_npz, tmp_path):
    run_dir = tmp_path / "run"
    result = cli("search", *GRID, "--path", small27_npz, "--out", run_dir, "--ensemble", "2",
                 "--no-refit")  # fmt: skip
    assert result.exit_code == 1 and "drop --no-refit" in result.output
    assert not run_dir.exists()


@pytest.fixture(scope="module")
def ensemble_run(small27_npz, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("cli") / "ensemble"
    args = ["search", *GRID, "--n-jobs", "1", "--path", str(small27_npz), "--out", str(run_dir)]
    result = CliRunner().invoke(main, [*args, "--ensemble", "2"])
    return result, run_dir


def test_search_with_an_ensemble_shows_single_and_ensemble_side_by_side(ensemble_run):
    from deepnet import load_run

    result, run_dir = ensemble_run
    assert result.exit_code == 0, result.output
    out = result.output
    assert "refit    2 seeds on 90% of the 1200 training images" in out
    assert "model    ensemble of 2 seeds:" in out and "chosen on the validation share" in out
    run = load_run(run_dir / "refit")
    test = run.ensemble.test
    rows = {line.split("│")[1].strip(): line for line in out.splitlines() if "│ " in line}
    for name, metrics in (("first member", test.single), ("ensemble of 2", test.ensemble)):
        low, high = metrics.interval_95
        assert f"{metrics.accuracy:.4f}  (95% CI {low:.4f}-{high:.4f}" in rows[name]
    used = "ensemble of 2" if run.ensemble.choice == "ensemble" else "first member"
    assert rows[used].split("│")[-2].strip() == "yes"
    page = (run_dir / "report.html").read_text()
    assert (
        "refit single model test accuracy" in page and "refit ensemble of 2 test accuracy" in page
    )
    assert f"{test.single.accuracy:.4f}" in page and f"{test.ensemble.accuracy:.4f}" in page


def test_evaluate_predict_and_export_use_the_chosen_model(ensemble_run, cli, small27_npz, tmp_path):
    import numpy as np
    import onnxruntime

    from deepnet import load_run
    from deepnet.ensemble import EnsembleNet

    _, run_dir = ensemble_run
    run = load_run(run_dir / "refit")
    evaluated = cli("evaluate", run_dir / "refit")
    assert evaluated.exit_code == 0, evaluated.output
    assert "matches the evaluation saved at training time" in evaluated.output
    assert f"{run.metrics.accuracy:.4f}" in evaluated.output
    predicted = cli("predict", run_dir, small27_npz, "--csv", tmp_path / "p.csv")
    assert predicted.exit_code == 0, predicted.output
    images = np.load(small27_npz)["x_test"]
    deepnet_probabilities = run.predict(images).probabilities
    lines = [line for line in predicted.output.splitlines() if "x_test" in line][:50]
    for line, row in zip(lines, deepnet_probabilities, strict=False):
        assert f"{row.max():.4f}" in line
    exported = cli("export", run_dir, "--out", tmp_path / "model.onnx")
    assert exported.exit_code == 0, exported.output
    session = onnxruntime.InferenceSession(
        str(tmp_path / "model.onnx"), providers=["CPUExecutionProvider"]
    )
    onnx_probabilities = session.run(None, {"images": images})[0]
    np.testing.assert_allclose(onnx_probabilities, deepnet_probabilities, atol=1e-5)
    if isinstance(run.model(), EnsembleNet):  # the graph averages both members
        members = [m.predict(images).probabilities for m in run.member_runs()]
        np.testing.assert_allclose(onnx_probabilities, np.mean(members, 0), atol=1e-5)


def test_an_ensemble_folder_keeps_its_plan_on_resume(ensemble_run, cli, small27_npz):
    _, run_dir = ensemble_run
    args = ["search", *GRID, "--n-jobs", "1", "--path", small27_npz, "--out", run_dir]
    again = cli(*args, "--ensemble", "2")
    assert again.exit_code == 0, again.output
    assert "resuming: 2 trials already finished are kept" in again.output
    other = cli(*args, "--ensemble", "3")
    assert other.exit_code == 1 and "Traceback" not in other.output
    assert "holds a finished refit with an ensemble of 2 seeds" in other.output
    assert "asks for an ensemble of 3 seeds" in other.output


def test_a_search_file_asks_for_the_ensemble_and_the_options_override_it(
    ensemble_run, cli, small27_npz, tmp_path
):
    _, run_dir = ensemble_run  # GRID with --ensemble 2
    grid = 'strategy = "grid"\n[space]\noptimizer = ["Adam", "Nadam"]\nepochs = [1]\n'
    search_file = tmp_path / "s.toml"
    args = ["search", "--config", search_file, "--n-jobs", "1", "--path", small27_npz]
    search_file.write_text(f"ensemble = 2\n{grid}batch_size = [64]\n")
    same = cli(*args, "--out", run_dir)  # the same search: resumed, its refit already done
    assert same.exit_code == 0, same.output
    assert "resuming: 2 trials already finished are kept" in same.output
    for more in (["--ensemble", "3"], ["--ensemble-validation", "0.2"]):
        other = cli(*args, "--out", run_dir, *more)
        assert other.exit_code == 1 and "Traceback" not in other.output
        assert "holds a finished refit with an ensemble of 2 seeds (validation share 0.1)" in (
            other.output
        )
    assert "asks for an ensemble of 2 seeds (validation share 0.2)" in other.output
    search_file.write_text(f"{grid}batch_size = [64]\n")
    alone = cli(*args, "--out", tmp_path / "run", "--ensemble-validation", "0.2")
    assert alone.exit_code == 1 and alone.output.count("\n") == 1
    assert "--ensemble-validation has no effect without an ensemble" in alone.output
    assert not (tmp_path / "run").exists()


def test_results_of_a_folder_that_is_not_a_search(cli, tmp_path):
    result = cli("results", tmp_path)
    assert result.exit_code == 1 and "not a search run folder" in result.output


def _completed(db) -> int:
    if not db.exists():
        return 0
    try:
        with sqlite3.connect(db) as con:
            return con.execute("select count(*) from trials where state = 'COMPLETE'").fetchone()[0]
    except sqlite3.Error:
        return 0


@pytest.mark.slow
def test_sigkill_midway_then_rerun_gives_the_uninterrupted_table(small27_npz, tmp_path):
    args = [
        sys.executable,
        "-m",
        "deepnet",
        "search",
        "--param",
        "optimizer=Adam,Nadam,RMSprop,Adamax",
        "--param",
        "neurons=8,16",
        "--param",
        "epochs=2",
        "--param",
        "batch_size=64",
        "--n-jobs",
        "1",
        "--no-refit",
        "--path",
        str(small27_npz),
    ]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    killed = tmp_path / "killed"
    proc = subprocess.Popen(
        [*args, "--out", str(killed)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.time() + 300
    # one worker trains 4 trials (12 fold members) at a time: kill it in the second batch
    while _completed(killed / "study.db") < 4 and time.time() < deadline:
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done_before = _completed(killed / "study.db")
    assert 4 <= done_before < 8
    rerun = subprocess.run(
        [*args, "--out", str(killed)], env=env, capture_output=True, text=True, timeout=600
    )
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert f"resuming: {done_before} trials already finished are kept" in rerun.stdout
    retrained = [line for line in rerun.stdout.splitlines() if line.startswith("trial ")]
    assert len(retrained) == 8 - done_before  # nothing finished is trained again
    clean = tmp_path / "clean"
    subprocess.run(
        [*args, "--out", str(clean)], env=env, check=True, capture_output=True, timeout=600
    )
    assert results_table(killed / "results.csv") == results_table(clean / "results.csv")
