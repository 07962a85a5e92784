"""The `trajmoe demo` job: the experiment on slices of real data, and the command line."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

import trajmoe
from trajmoe import cli
from trajmoe.schema import DataWarning

TINY = dict(d_model=16, n_layers=1, n_heads=2, verbose=0)


@pytest.fixture(scope="module")
def small_demo():
    """Edinburgh as the target (30 % of its training users fine-tune), Osaka as the source."""
    with pytest.warns(DataWarning, match="before the year 2000"):   # Flickr camera clocks, counted
        return cli.run_demo("edinburgh", ("osaka",), fraction=0.3, seed=0, max_epochs=1,
                            model_params=TINY, log=lambda *args: None)


def test_demo_rows_compare_every_model_on_the_same_targets(small_demo):
    rows = {row["model"]: row for row in small_demo["rows"]}
    assert list(rows) == ["trajmoe_finetuned", "trajmoe_full_target", "history_frequency", "history_moves",
                          "history_gravity", "history_gravity_moves", "gravity", "markov", "popularity"]
    assert small_demo["target_city"] == "edinburgh" and small_demo["protocol"] == "all"
    n_targets = {row["n_targets"] for row in rows.values()}
    assert len(n_targets) == 1 and n_targets.pop() > 0
    for row in rows.values():
        assert 0 <= row["acc@1"] <= row["acc@5"] <= row["acc@10"] <= 1
        assert row["acc@1"] <= row["mrr"] <= 1
    # pre-training epochs (1) + the one fine-tuning epoch; the scratch model trains 1 epoch
    assert rows["trajmoe_finetuned"]["epochs"] == 2
    assert rows["trajmoe_full_target"]["epochs"] == 1
    # the counting baselines train no epoch: null, as the README says
    assert all(rows[name]["epochs"] is None
               for name in ("history_frequency", "history_moves", "history_gravity_moves", "gravity", "markov",
                            "popularity"))
    # the window's moves change the rule's ranking, not its targets
    assert rows["history_moves"]["acc@1"] != rows["history_frequency"]["acc@1"]


def test_demo_table_lists_every_model(small_demo):
    table = cli.format_table(small_demo)
    for name in ("trajmoe_finetuned", "trajmoe_full_target", "history_frequency", "history_moves",
                 "history_gravity", "history_gravity_moves", "gravity", "markov", "popularity"):
        assert name in table


def test_python_dash_m_runs_the_command_line():
    result = subprocess.run([sys.executable, "-m", "trajmoe", "demo", "--fraction", "5"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2                       # a usage error, before any data is read
    assert "argument --fraction: must be in (0, 1], got 5" in result.stderr
    result = subprocess.run([sys.executable, "-m", "trajmoe", "--help"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and result.stdout.startswith("usage: trajmoe")


def test_version(capsys):
    with pytest.raises(SystemExit) as exited:
        cli.main(["--version"])
    assert exited.value.code == 0
    assert capsys.readouterr().out == f"trajmoe {trajmoe.__version__}\n"


def test_a_data_folder_without_the_citys_files_is_a_usage_error(tmp_path, capsys):
    # an existing folder that lacks the data: the loader's message, exit status 2, no traceback
    assert cli.main(["demo", "--data-home", str(tmp_path)]) == 2
    assert "trajmoe demo: error: data file 'foursquare_nyc/checkins.csv.gz'" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["pretrain", "--sources", "singapore", "--output", str(tmp_path / "m"), "--data-home", str(tmp_path)])
    assert exit_info.value.code == 2
    assert "trajmoe pretrain: error: data file 'foursquare_singapore/" in capsys.readouterr().err


def test_target_among_sources_is_refused():
    with pytest.raises(ValueError, match="must not be a source"):
        cli.run_demo("osaka", ("osaka", "toronto"))


def test_unknown_city_names_the_choices():
    with pytest.raises(ValueError, match=r"Unknown city 'atlantis'.*nyc"):
        cli.load_city("atlantis")


def test_main_prints_the_table_and_writes_json(tmp_path, monkeypatch, capsys):
    seen = {}

    def fake_run_demo(target, sources, fraction, seed, data_home, max_epochs, protocol, min_stays=5):
        seen.update(target=target, sources=sources, fraction=fraction, seed=seed, max_epochs=max_epochs,
                    min_stays=min_stays)
        return {"target_city": target, "protocol": protocol, "fraction": fraction, "seed": seed,
                "sources": list(sources),
                "rows": [{"model": "trajmoe_finetuned", "acc@1": 0.25, "acc@5": 0.5, "mrr": 0.375,
                          "ndcg@10": 0.4, "n_targets": 8, "fit_seconds": 1.0, "epochs": 2}]}

    monkeypatch.setattr(cli, "run_demo", fake_run_demo)
    out = tmp_path / "r.json"
    assert cli.main(["demo", "--target", "osaka", "--sources", "toronto", "--fraction", "0.1",
                     "--max-epochs", "3", "--min-stays", "4", "--output", str(out)]) == 0
    assert seen == dict(target="osaka", sources=("toronto",), fraction=0.1, seed=0, max_epochs=3, min_stays=4)
    result = json.loads(out.read_text())
    assert result["target_city"] == "osaka" and result["rows"][0]["model"] == "trajmoe_finetuned"
    assert result["rows"][0]["acc@1"] == 0.25 and "wall_seconds" in result
    assert "trajmoe_finetuned" in capsys.readouterr().out
    # '~' the shell leaves as it is (--output=~/...): the file checked is the file written
    monkeypatch.setenv("HOME", str(tmp_path))
    assert cli.main(["demo", "--target", "osaka", "--sources", "toronto", "--output=~/home.json"]) == 0
    assert json.loads((tmp_path / "home.json").read_text())["target_city"] == "osaka"


def test_data_notes_gather_the_short_windows_of_every_frame_into_one_line(capsys):
    """The demo windows many frames: what min_stays leaves out of each is one line, after the other notes."""
    import warnings

    from trajmoe.cli import _data_notes
    from trajmoe.exceptions import ShortWindowsWarning

    def short(n_left_out, n_visits, kind):
        return ShortWindowsWarning(f"{n_left_out} of {n_visits}", n_left_out=n_left_out, n_visits=n_visits,
                                   n_users_without=0, n_users=9, min_stays=5, window_days=3, kind=kind)

    with _data_notes():
        warnings.warn(short(11, 7000, "non-overlapping windows, as scored"))
        warnings.warn(short(7, 49000, "training windows starting every 1 day"))
        warnings.warn(short(11, 7000, "non-overlapping windows, as scored"))     # the same frame again
        warnings.warn(short(3, 7000, "training windows starting every 1 day"))  # the same frame, other windows
        warnings.warn("3 of 40 visits are left out", DataWarning)
    assert capsys.readouterr().err.splitlines() == [
        "note: 3 of 40 visits are left out",
        "note: min_stays=5: visits in no window of at least 5 stays within window_days=3 days are left out "
        "(not trained on, not scored); lower min_stays or raise window_days to use them. Left out, per frame "
        "(known by its number of visits):",
        "  a frame of 7,000 visits: 11 (non-overlapping windows, as scored); 3 (training windows starting every "
        "1 day)",
        "  a frame of 49,000 visits: 7 (training windows starting every 1 day)"]


def test_data_notes_print_each_distinct_note_once(capsys):
    """The demo scores every model on the same users: their identical notes are printed once."""
    import warnings

    from trajmoe.cli import _data_notes
    with _data_notes():
        for _ in range(3):
            warnings.warn("12 of 40 visits are left out", DataWarning)
        warnings.warn("3 of 40 visits are left out", DataWarning)
        warnings.warn("a runtime matter", RuntimeWarning)
    assert capsys.readouterr().err.splitlines() == [
        "note: 12 of 40 visits are left out", "note: 3 of 40 visits are left out", "RuntimeWarning: a runtime matter"]
