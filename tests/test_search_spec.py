"""Study specs and storage strings: validated once, every problem one line naming the field or value."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import optuna
import pytest
import yaml

from recon_core.errors import InputError
from search.launcher import plan_slots
from search.pruning import build_pruner
from search.spec import PrunerSpec, StorageSpec, StudySpec, load_spec
from search.storage import heartbeat_timings, open_storage, parse_storage
from search.study import open_study

STUDIES = Path(__file__).resolve().parents[1] / "studies"
BASE = {"name": "t", "data": {"ids": ["cards-0-0001"]}, "attack": {"max_iter": 10},
        "search": {"lr": {"type": "float", "low": 0.01, "high": 1.0, "log": True}}}


def _write(tmp_path: Path, raw: object) -> Path:
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(raw) if not isinstance(raw, str) else raw)
    return path


@pytest.mark.parametrize("name", ["demo", "ds1_baseline", "ds2_search"])
def test_shipped_specs_load(name: str) -> None:
    spec = load_spec(STUDIES / f"{name}.yaml")
    assert spec.name == name
    assert spec.search, "every shipped study searches something"


def test_baseline_keeps_the_original_ranges() -> None:
    search = load_spec(STUDIES / "ds1_baseline.yaml").search
    assert (search["lr"].low, search["lr"].high, search["lr"].log) == (0.001, 1.0, True)
    assert (search["top_grad_percentage"].low, search["top_grad_percentage"].high) == (0.2, 1.0)


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"search": {"lr": {"type": "float", "low": 1.0, "high": 0.1}}}, "search.lr"),
        ({"search": {"lr": {"type": "float", "low": 0.0, "high": 1.0, "log": True}}}, "log scale"),
        ({"search": {"lrr": {"type": "float", "low": 0.1, "high": 1.0}}}, "search.lrr"),
        ({"search": {"distance": {"type": "categorical", "choices": ["cosine", "manhattan"]}}}, "'manhattan'"),
        ({"search": {"top_grad_percentage": {"type": "float", "low": 0.5, "high": 2.0}}}, "top_grad_percentage"),
        ({"attack": {"max_iter": 10, "lr": 0.1}}, "both fixed and searched"),
        ({"pruner": {"type": "hyperband"}}, "pruner.type"),
        ({"pruner": {"patience": -1}}, "pruner.patience"),
        ({"objectives": ["seconds"]}, "objectives"),
        ({"n_trials": 0}, "n_trials"),
        ({"samplr": {}}, "samplr: unknown field"),
        ({"search": {"lr": {"type": "uniform", "low": 0.1, "high": 1.0}}}, "search.lr"),
    ],
)
def test_bad_spec_names_the_field(tmp_path: Path, change: dict, named: str) -> None:
    with pytest.raises(InputError, match=None) as err:
        load_spec(_write(tmp_path, {**BASE, **change}))
    message = str(err.value)
    assert named in message, message
    assert "\n" not in message


def test_bad_yaml_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="not valid YAML at line"):
        load_spec(_write(tmp_path, "name: [unclosed\n"))
    with pytest.raises(InputError, match="does not exist"):
        load_spec(tmp_path / "nope.yaml")
    with pytest.raises(InputError, match="must be a mapping"):
        load_spec(_write(tmp_path, "- a\n- b\n"))


def test_run_config_is_fixed_then_sampled() -> None:
    spec = StudySpec.model_validate({**BASE, "attack": {"max_iter": 10, "distance": "l2"}})
    cfg = spec.run_config({"lr": 0.25})
    assert (cfg.attack.lr, cfg.attack.distance, cfg.attack.max_iter) == (0.25, "l2", 10)
    assert cfg.data.ids == ("cards-0-0001",)


@pytest.mark.parametrize(
    ("text", "kind", "url"),
    [
        ("sqlite:///results/studies.db", "rdb", "sqlite:///results/studies.db"),
        ("results/x.db", "rdb", "sqlite:///results/x.db"),
        ("postgresql+psycopg://postgres@127.0.0.1:5432/test", "rdb",
         "postgresql+psycopg://postgres@127.0.0.1:5432/test"),
        ("journal:results/j.log", "journal", "results/j.log"),
        ("results/j.log", "journal", "results/j.log"),
    ],
)
def test_storage_strings(text: str, kind: str, url: str) -> None:
    target = parse_storage(text)
    assert (target.kind, target.url) == (kind, url)


@pytest.mark.parametrize("text", ["results/studies", "journal:", "sqlite://", "not a url://x"])
def test_bad_storage_strings(text: str) -> None:
    with pytest.raises(InputError, match="storage"):
        parse_storage(text)


def test_heartbeat_timings_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    assert heartbeat_timings(StorageSpec(heartbeat_interval=30)) == (30, 60)
    monkeypatch.setenv("ASR_RECON_HEARTBEAT_INTERVAL", "2")
    monkeypatch.setenv("ASR_RECON_GRACE_PERIOD", "5")
    assert heartbeat_timings(StorageSpec()) == (2, 5)
    monkeypatch.setenv("ASR_RECON_GRACE_PERIOD", "soon")
    with pytest.raises(InputError, match="ASR_RECON_GRACE_PERIOD='soon'"):
        heartbeat_timings(StorageSpec())


def test_sqlite_storage_is_wal_with_heartbeats(tmp_path: Path) -> None:
    db = tmp_path / "sub" / "s.db"
    storage = open_storage(str(db))
    assert storage.get_heartbeat_interval() == StorageSpec().heartbeat_interval
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_journal_storage_round_trip(tmp_path: Path) -> None:
    spec = StudySpec.model_validate(BASE)
    study = open_study(spec, f"journal:{tmp_path / 'j.log'}")
    study.enqueue_trial({"lr": 0.1})
    again = open_study(spec, str(tmp_path / "j.log"))
    assert len(again.trials) == 1


def test_joining_with_another_spec_is_refused(tmp_path: Path) -> None:
    storage = str(tmp_path / "s.db")
    open_study(StudySpec.model_validate(BASE), storage)
    changed = StudySpec.model_validate({**BASE, "attack": {"max_iter": 20}})
    with pytest.raises(InputError, match=r"attack.max_iter \(10 -> 20\)"):
        open_study(changed, storage)


def test_plateau_pruner_stops_flat_trials_worse_than_the_median() -> None:
    pruner = build_pruner(PrunerSpec(patience=2, min_delta=0.01, n_startup_trials=1), multi_objective=False)
    study = optuna.create_study(pruner=pruner)

    def reported(values: list[float]) -> bool:
        trial = study.ask()
        for step, value in enumerate(values):
            trial.report(value, step)
        answer = trial.should_prune()
        study.tell(trial, values[-1])
        return answer

    assert not reported([1.0, 0.5, 0.25, 0.12])  # the first completed trial sets the median
    assert reported([1.0, 0.9, 0.899, 0.899])  # flat for two reports and worse than the median
    assert not reported([1.0, 0.9, 0.6, 0.3])  # worse than the median but still improving
    assert not reported([0.2, 0.1, 0.1, 0.1])  # flat but better than the median
    assert not reported([1.0, 0.95, 0.97, 0.5])  # not monotone, but its last reports beat the ones before
    assert isinstance(build_pruner(PrunerSpec(), multi_objective=True), optuna.pruners.NopPruner)


def test_worker_slots() -> None:
    gpus = plan_slots("0,2", None, cores=16)
    assert [s.env["CUDA_VISIBLE_DEVICES"] for s in gpus] == ["0", "2"] and gpus[0].threads == 8
    cpus = plan_slots(None, 3, cores=2)
    assert [s.threads for s in cpus] == [1, 1, 1] and all(not s.env for s in cpus)
    with pytest.raises(InputError, match="--gpus 'a,b'"):
        plan_slots("a,b", None)
