"""W&B media of a fold and of a cross-validation report, read back from the offline run folder.

wandb 0.31 writes no ``wandb-metadata.json``, ``config.yaml`` or ``wandb-summary.json`` for an
offline run: the run's settings and summary only exist in its ``run-<id>.wandb`` transaction
log. No reader of that log ships with wandb any more, so :func:`_records` reads its format
(LevelDB's log format behind a 7-byte W&B header) into ``wandb_internal_pb2.Record`` messages,
checking every chunk's CRC so a changed format fails loudly instead of silently parsing junk.
The media themselves are plain files under ``files/media/``.
"""

from __future__ import annotations

import csv
import json
import math
import os
import re
import socket
import struct
import subprocess
import sys
import threading
import time
import zlib
from pathlib import Path
from typing import Any

import matplotlib
import pytest

from evaluation.report import read_case_table
from tests.conftest import BIN, RECIPES, REPO, configs, isles_args, run_in_process

matplotlib.use("Agg", force=True)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

_HEADER = b":W&B" + struct.pack("<HB", 0xBEE1, 0)  # ident, magic, version 0
_BLOCK = 32 * 1024
_FULL, _FIRST, _MIDDLE, _LAST = 1, 2, 3, 4


def _records(path: Path) -> list[Any]:
    """The ``Record`` messages of a ``.wandb`` transaction log, in order."""
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    assert data[: len(_HEADER)] == _HEADER, f"{path}: unknown header {data[:7]!r}"
    records, pending, pos = [], b"", len(_HEADER)
    while len(data) - pos >= 7:
        if _BLOCK - pos % _BLOCK < 7:  # a chunk header never straddles blocks: zero padding
            pos += _BLOCK - pos % _BLOCK
            continue
        checksum, length, kind = struct.unpack_from("<IHB", data, pos)
        assert kind in (_FULL, _FIRST, _MIDDLE, _LAST), f"{path}: chunk type {kind} at {pos}"
        chunk = data[pos + 7 : pos + 7 + length]
        assert checksum == zlib.crc32(chunk, zlib.crc32(bytes([kind]))), f"{path}: CRC at {pos}"
        pending = chunk if kind in (_FULL, _FIRST) else pending + chunk
        pos += 7 + length
        if kind in (_FULL, _LAST):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            records.append(record)
    return records


def _read_run(run_dir: Path) -> tuple[Any, dict[str, Any]]:
    """The run's ``RunRecord`` (name, group, job type) and its final summary.

    Summary keys are ``key`` for flat keys and dot-joined ``nested_key`` parts otherwise.
    """
    (log_file,) = run_dir.glob("run-*.wandb")
    records = _records(log_file)
    runs = [r.run for r in records if r.WhichOneof("record_type") == "run"]
    assert runs, f"{log_file}: no run record"
    summary: dict[str, Any] = {}
    for record in records:
        if record.WhichOneof("record_type") == "summary":
            for item in record.summary.update:
                summary[item.key or ".".join(item.nested_key)] = json.loads(item.value_json)
    return runs[0], summary


def _read_config(run_dir: Path) -> dict[str, Any]:
    """The run's config: the run record's, updated by its config records."""
    (log_file,) = run_dir.glob("run-*.wandb")
    config: dict[str, Any] = {}
    for record in _records(log_file):
        kind = record.WhichOneof("record_type")
        if kind in ("run", "config"):
            items = record.run.config.update if kind == "run" else record.config.update
            config |= {item.key: json.loads(item.value_json) for item in items}
    return config


def _media(run_dir: Path, kind: str, key: str, suffix: str) -> Path:
    """The one media file W&B wrote for ``key`` (``files/media/<kind>/<key>_<step>_<hash>``)."""
    (path,) = (run_dir / "files" / "media" / kind).glob(f"{key}_*{suffix}")
    return path


@pytest.fixture
def wandb_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Offline, silent W&B whose staging, cache and settings stay inside the test's folder."""
    env = {
        "WANDB_MODE": "offline",
        "WANDB_SILENT": "true",
        "WANDB_DATA_DIR": str(tmp_path / "wandb-data"),
        "WANDB_CACHE_DIR": str(tmp_path / "wandb-cache"),
        "WANDB_CONFIG_DIR": str(tmp_path / "wandb-config"),
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return env


def _fit_args(twin: Path, tmp: Path, cache: Path) -> list[str]:
    """Two epochs of the demo recipe logged to W&B (on 32×32 slices of the tiny twin)."""
    recipe = RECIPES["wandb"]
    return [*configs(*recipe.configs), *isles_args(twin, tmp, epochs=2, cache=cache), *recipe.tiny]


def test_importing_the_callbacks_does_not_import_wandb():
    code = "import sys, callbacks.case_report; sys.exit('wandb' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], cwd=REPO).returncode == 0


@pytest.mark.slow
def test_fold_logs_its_best_case_table_curves_and_best_to_wandb(
    tiny_twin, shared_cache, tmp_path, wandb_env
):
    args = _fit_args(tiny_twin, tmp_path, shared_cache)
    run_in_process("lightning", "fit", *args, cwd=tmp_path, env=wandb_env)
    fold_dir = tmp_path / "runs" / "pspnet_focal_demo" / "fold0"
    (run_dir,) = (fold_dir / "wandb").glob("offline-run-*")
    run, summary = _read_run(run_dir)
    assert (run.run_group, run.display_name, run.job_type) == ("pspnet_focal_demo", "fold0", "fit")
    assert run.run_id == (fold_dir / "wandb_run_id").read_text().strip()

    table_file = _media(run_dir, "table", "val/cases_best", ".table.json")
    table = json.loads(table_file.read_text())
    with (fold_dir / "val_cases_best.csv").open(newline="") as handle:
        header = next(csv.reader(handle))
    expected = read_case_table(fold_dir / "val_cases_best.csv")
    assert table["columns"] == header
    assert [row[0] for row in table["data"]] == [row["case"] for row in expected]
    for logged, row in zip(table["data"], expected):
        assert logged[1:] == pytest.approx([row[c] for c in header[1:]], nan_ok=True)
    assert summary["val/cases_best.path"] == str(table_file.relative_to(run_dir / "files"))

    curves = _media(run_dir, "images", "val/curves", ".png")
    assert curves.read_bytes()[:8] == PNG_MAGIC

    with (fold_dir / "metrics.csv").open() as handle:
        dice = {
            int(float(row["epoch"])): float(row["val/dice"])
            for row in csv.DictReader(handle)
            if row.get("val/dice") and math.isfinite(float(row["val/dice"]))
        }
    best = max(dice.values())
    assert summary["best/val/dice"] == pytest.approx(best)
    assert summary["best/epoch"] == min(epoch for epoch, value in dice.items() if value == best)


def _png(path: Path) -> Path:
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(2, 2))
    axes.plot([0, 1], [0, 1])
    figure.savefig(path)
    plt.close(figure)
    return path


def test_cv_summary_is_one_run_in_the_experiment_group(tmp_path, wandb_env):
    import wandb

    from callbacks.wandb_media import log_cv_summary

    folds = [{"fold": 0, "dice": 0.5}, {"fold": 1, "dice": 0.6}]
    paper = [
        {"metric": "dice", "paper": 0.58, "ours": 0.55},
        {"metric": "hd95", "paper": "-", "ours": 12.0},
    ]
    cases = [
        {"case": "case_3", "fold": 1, "dice": float("nan")},
        {"case": "case_1", "fold": 0, "dice": 0.7},
    ]
    run_dir = log_cv_summary(
        tmp_path / "report",
        "pspnet_focal",
        project="strokeseg-repro",
        tables={"folds": folds, "paper_vs_ours": paper, "cases_oof": cases, "empty": []},
        images={"dice_boxplot": _png(tmp_path / "box.png"), "curves_all": _png(tmp_path / "c.png")},
        summary={"dice_mean": 0.55, "dice_std": 0.05},
    )
    wandb.teardown()  # run.finish() returns before the service has flushed the run's log
    assert run_dir.parent == tmp_path / "report" / "wandb"
    assert run_dir.name.startswith("offline-run-")
    run, summary = _read_run(run_dir)
    assert (run.run_group, run.display_name, run.job_type, run.project) == (
        "pspnet_focal",
        "pspnet_focal-cv",
        "cv-report",
        "strokeseg-repro",
    )
    for key, rows in (("folds", folds), ("paper_vs_ours", paper), ("cases_oof", cases)):
        table = json.loads(_media(run_dir, "table", key, ".table.json").read_text())
        assert table["columns"] == list(rows[0])
        assert [r[0] for r in table["data"]] == [row[next(iter(row))] for row in rows]
    assert not list((run_dir / "files" / "media" / "table").glob("empty_*"))
    for key in ("dice_boxplot", "curves_all"):
        assert _media(run_dir, "images", key, ".png").read_bytes()[:8] == PNG_MAGIC
    assert summary["dice_mean"] == 0.55 and summary["dice_std"] == 0.05


def test_cv_summary_refuses_a_missing_image_before_creating_a_run(tmp_path, wandb_env):
    from callbacks.wandb_media import log_cv_summary

    missing = tmp_path / "box.png"
    with pytest.raises(FileNotFoundError, match=f"not found: .*{re.escape(str(missing))}"):
        log_cv_summary(
            tmp_path / "report",
            "pspnet_focal",
            project="strokeseg-repro",
            tables={},
            images={"dice_boxplot": missing},
            summary={},
        )
    assert not (tmp_path / "report").exists()


class _Listener:
    """A TCP server on 127.0.0.1 that records the first line of every connection it accepts
    (an HTTP request line, or ``CONNECT host:443`` when it serves as a proxy) and answers 404."""

    def __init__(self) -> None:
        self._socket = socket.create_server(("127.0.0.1", 0))
        self._socket.settimeout(0.1)
        self.port = self._socket.getsockname()[1]
        self.seen: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                connection, _ = self._socket.accept()
            except TimeoutError:
                continue
            with connection:
                connection.settimeout(2.0)
                try:
                    head = connection.recv(4096)
                except OSError:
                    head = b""
                self.seen.append(head.split(b"\r\n", 1)[0].decode("latin-1") or "(no bytes)")
                try:
                    connection.sendall(
                        b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                    )
                except OSError:
                    pass

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self._socket.close()


def _fake_folds(experiment_dir: Path) -> None:
    """Two finished folds of a W&B-logged experiment, as much as ``lightning-cv report`` reads."""
    config = {
        "experiment": experiment_dir.name,
        "seed_everything": 7,
        "data": {"init_args": {"num_folds": 2, "image_size": 64}},
        "model": {
            "class_path": "lightning_modules.SegmentationModule",
            "init_args": {
                "metrics": "atlas2_challenge",
                "loss": {"class_path": "losses.FocalLoss", "init_args": {"gamma": 2.0}},
            },
        },
        "trainer": {
            "logger": [
                {
                    "class_path": "pytorch_lightning.loggers.WandbLogger",
                    "init_args": {"project": "strokeseg-repro", "offline": True},
                }
            ]
        },
    }
    for fold, (case, dice) in enumerate((("case_1", 0.5), ("case_2", 0.7))):
        run_dir = experiment_dir / f"fold{fold}"
        run_dir.mkdir(parents=True)
        (run_dir / "config.yaml").write_text(json.dumps(config))  # JSON is YAML
        (run_dir / "split.json").write_text(json.dumps({"val_cases": [case]}))
        (run_dir / "metrics.csv").write_text(f"epoch,step,val/dice\n0,1,{dice}\n")
        (run_dir / "val_cases_best.csv").write_text(
            "case,dice,volume_difference,lesion_f1,lesion_count_difference\n"
            f"{case},{dice},12.0,1.0,0.0\n"
        )
        (run_dir / "fit_done.json").write_text("{}\n")


@pytest.mark.slow
def test_an_offline_report_to_wandb_connects_nowhere_with_wandb_mode_unset(tmp_path):
    """``offline: true`` in the folds' WandbLogger must be enough: no WANDB_MODE in the
    environment. Every address W&B knows of points at a local listener (its server through
    WANDB_BASE_URL, any other host through the HTTP(S) proxy variables), and it must see no
    connection."""
    experiment_dir = tmp_path / "runs" / "netcheck"
    _fake_folds(experiment_dir)
    listener = _Listener()
    here = f"http://127.0.0.1:{listener.port}"
    proxies = {"http_proxy", "https_proxy", "all_proxy", "no_proxy"}
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("WANDB_") and k.lower() not in proxies
    }
    env |= {
        "PYTHONWARNINGS": "ignore",
        "WANDB_BASE_URL": here,
        "HTTP_PROXY": here,
        "HTTPS_PROXY": here,
        "WANDB_SILENT": "true",
        "WANDB_DATA_DIR": str(tmp_path / "wandb-data"),
        "WANDB_CACHE_DIR": str(tmp_path / "wandb-cache"),
        "WANDB_CONFIG_DIR": str(tmp_path / "wandb-config"),
    }
    try:
        result = subprocess.run(
            [str(BIN / "lightning-cv"), "report", str(experiment_dir), "--wandb"],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        time.sleep(2.0)  # W&B's service process may outlive the command by a moment
    finally:
        listener.close()
    assert result.returncode == 0, result.stderr[-4000:]
    assert list((experiment_dir / "report" / "wandb").glob("offline-run-*"))
    assert listener.seen == [], f"connections to {here} (server or proxy): {listener.seen}"


def test_a_report_written_again_updates_its_wandb_run_instead_of_adding_one(tmp_path, wandb_env):
    # Each `lightning-cv report --wandb` used to create a new run: after `wandb sync`, the
    # experiment's group held one `<experiment>-cv` run per report written.
    experiment_dir = tmp_path / "runs" / "again"
    _fake_folds(experiment_dir)
    for _ in range(2):
        run_in_process("lightning-cv", "report", str(experiment_dir), "--wandb", cwd=tmp_path)
    report = experiment_dir / "report"
    runs = [_read_run(path) for path in sorted((report / "wandb").glob("offline-run-*"))]
    ids = {run.run_id for run, _ in runs}
    assert len(ids) == 1, f"{len(ids)} W&B runs of one report"
    assert ids == {(report / "wandb_run_id").read_text().strip()}
    assert {(run.display_name, run.job_type) for run, _ in runs} == {("again-cv", "cv-report")}
    assert runs[-1][1]["cv/dice_mean"] == pytest.approx(0.6)


def test_the_report_run_names_the_experiment_and_its_recipe_in_its_config(tmp_path, wandb_env):
    # The summary run logged no config: in W&B, report runs could not be filtered by experiment,
    # seed or recipe as the folds' runs are.
    experiment_dir = tmp_path / "runs" / "named"
    _fake_folds(experiment_dir)
    run_in_process("lightning-cv", "report", str(experiment_dir), "--wandb", cwd=tmp_path)
    (run_dir,) = (experiment_dir / "report" / "wandb").glob("offline-run-*")
    config = _read_config(run_dir)
    assert config["experiment"] == "named" and config["seed"] == 7 and config["paper"] is None
    assert (config["num_folds"], config["folds"], config["complete"]) == (2, [0, 1], True)
    assert (config["metrics"], config["monitor"]) == ("atlas2_challenge", "val/dice")
    assert config["model"] == "lightning_modules.SegmentationModule"
    assert config["loss"] == {"class_path": "losses.FocalLoss", "init_args": {"gamma": 2.0}}
    assert config["image_size"] == 64  # the data module's settings, as the folds' runs log them
