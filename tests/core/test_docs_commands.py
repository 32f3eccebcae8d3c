"""Every command shown in README.md and docs/**/*.md is checked, so a broken example fails the tests.

The ```bash (``sh``, ``shell``) blocks of the docs are read line by line (backslash continuations joined,
``# comments`` dropped). Blocks marked ```text or ```console hold what cannot run here (a GPU, a download, a
server) and are not read; an unmarked block that holds commands is an error, so every command is either run or
explicitly not. New doc files are picked up as they appear.

Default run (``-m "not slow"``):
* every ``sectorkit train|evaluate|predict|export`` command is validated as the CLI validates it before a run:
  the overrides parse, groups and keys exist, values pass the typed schemas and ranges (each job of a grid,
  the fixed part of an Optuna search); ``--cfg`` commands are run (they only print);
* ``sectorkit domains`` and ``sectorkit new-domain`` run; ``make`` targets are dry-run (``make -n``); a
  ``python benchmarks/...`` script must exist and accept every ``--option`` it is shown with;
* a budgeted subset runs end to end in quick mode: the README's bring-your-own-data finance example on a
  generated file with exactly the columns it names, then the README's evaluate, predict and export of its
  checkpoint (placeholders such as ``<ckpt>``, ``RUN/...``, ``/path/to/...`` replaced by generated files).

``slow``: every command runs end to end in a fresh process, in quick mode (``debug=fast_dev_run`` appended to
training runs, two trials for a search), on generated files in the documented shape.
"""

from __future__ import annotations

import hashlib
import io
import itertools
import os
import re
import shlex
import subprocess
import sys
from contextlib import redirect_stdout
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

REPO = Path(__file__).resolve().parents[2]
RUN_LANGUAGES = {"bash", "sh", "shell"}
QUOTED_LANGUAGES = {"text", "console"}  # commands shown but not run (a GPU, a download, a server, ...)
RUN_TASKS = ("train", "evaluate", "predict", "export")
PLACEHOLDER = re.compile(r"<[^>]+>|\bRUN\b|\bPATH\b|\.\.\.|/path/to/|NNN")
FENCE = re.compile(r"^(?P<indent>[ \t]*)```(?P<lang>[\w+-]*)[^\n]*\n(?P<body>.*?)^(?P=indent)```[ \t]*$", re.DOTALL | re.MULTILINE)
COMMAND_START = re.compile(r"^\s*(?:[A-Z_][A-Z0-9_]*=\S+\s+)*"
                           r"(?:sectorkit\s|python3?\s+-m\s+sectorkit\s|python3?\s+benchmarks/|python3?\s+-m\s+benchmarks|make\s)")


# --- reading the docs -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Command:
    """One shell command of a doc: where it is, its text and its words (environment assignments apart)."""

    file: str
    line: int
    text: str
    env: tuple[tuple[str, str], ...]
    argv: tuple[str, ...]
    block: int  # index of its block in the file: commands of one block share state (new-domain then train)

    @property
    def id(self) -> str:
        return f"{self.file}:{self.line}"

    @property
    def kind(self) -> str:
        """sectorkit | benchmark | make | pip | pytest | other."""
        argv = self.argv
        if argv[:1] == ("sectorkit",) or (argv[:1] in (("python",), ("python3",)) and argv[1:3] == ("-m", "sectorkit")):
            return "sectorkit"
        python = argv[0] in ("python", "python3")
        module = argv[1] == "-m" and len(argv) > 2 and argv[2].startswith("benchmarks")
        if python and len(argv) > 1 and (argv[1].startswith("benchmarks/") or module):
            return "benchmark"
        return argv[0] if argv[0] in ("make", "pip", "pytest") else "other"

    @property
    def sectorkit_args(self) -> list[str]:
        """The arguments after ``sectorkit`` / ``python -m sectorkit``."""
        return list(self.argv[1:] if self.argv[0] == "sectorkit" else self.argv[3:])


def doc_files(root: Path = REPO) -> list[Path]:
    """README.md and every Markdown file under docs/, in a stable order (new files are picked up)."""
    return [root / "README.md", *sorted((root / "docs").rglob("*.md"))]


def fenced_blocks(text: str) -> list[tuple[str, int, str]]:
    """(language, line number of the first body line, body) of every fenced block."""
    return [(m["lang"].lower(), text.count("\n", 0, m.start()) + 2, m["body"]) for m in FENCE.finditer(text)]


def split_commands(body: str, first_line: int, file: str = "<doc>", block: int = 0) -> list[Command]:
    """The commands of a block: continuation lines joined, comments and blank lines dropped."""
    commands: list[Command] = []
    pending, start = "", first_line
    for offset, line in enumerate(body.splitlines()):
        if not pending:
            start = first_line + offset
        stripped = line.rstrip()
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        text, pending = (pending + line).strip(), ""
        words = shlex.split(text, comments=True)
        if not words:
            continue
        env = []
        while words and re.fullmatch(r"[A-Z_][A-Z0-9_]*=\S*", words[0]):
            env.append(tuple(words.pop(0).split("=", 1)))
        if words:
            commands.append(Command(file, start, text.split(" #")[0].strip(), tuple(env), tuple(words), block))
    return commands


def doc_commands(root: Path = REPO, quoted: bool = False) -> tuple[list[Command], list[str]]:
    """Every command of every run block (``quoted``: of the ```text / ```console blocks instead, the command lines
    only, a ``$ `` prompt dropped), and the problems found while reading (unmarked command blocks)."""
    commands: list[Command] = []
    problems: list[str] = []
    for path in doc_files(root):
        name = path.relative_to(root).as_posix()
        for index, (lang, line, body) in enumerate(fenced_blocks(path.read_text(encoding="utf-8"))):
            if lang in RUN_LANGUAGES and not quoted:
                commands += split_commands(body, line, name, index)
            elif lang in QUOTED_LANGUAGES and quoted:
                rows = [re.sub(r"^\s*\$ ", "", row) for row in body.splitlines()]
                rows = [row if COMMAND_START.match(row) else "" for row in rows]
                commands += split_commands("\n".join(rows), line, name, index)
            elif lang not in RUN_LANGUAGES | QUOTED_LANGUAGES and any(COMMAND_START.match(row) for row in body.splitlines()):
                problems.append(f"{name}:{line}: a ```{lang or ''} block holds commands: mark it ```bash (run by the tests) "
                                "or ```text / ```console (not run: say why in the text)")
    return commands, problems


# --- what a command means ---------------------------------------------------------------------------------
@dataclass
class RunCommand:
    """A ``sectorkit train|evaluate|predict|export`` command split as the CLI splits it."""

    task: str
    overrides: list[str]
    multirun: bool = False
    flags: list[str] = field(default_factory=list)


def parse_run(args: list[str]) -> RunCommand:
    """The CLI's reading of ``sectorkit <task> [-m] [--cfg X] [--resolve] overrides...``."""
    task, rest = args[0], args[1:]
    command = RunCommand(task, [])
    words = iter(rest)
    for word in words:
        if word in ("-m", "--multirun"):
            command.multirun = True
        elif word == "--cfg":
            command.flags += ["--cfg", next(words)]
        elif word == "--resolve":
            command.flags.append("--resolve")
        elif word in ("--debug", "--verbose"):
            continue
        else:
            command.overrides.append(word)
    return command


def grid_points(overrides: list[str]) -> list[list[str]]:
    """Each job of a grid sweep (``key=a,b`` overrides expanded), as plain override lists."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_overrides(overrides)
    axes = []
    for override in parsed:
        if override.is_discrete_sweep():
            axes.append([f"{override.get_key_element()}={value}" for value in override.sweep_string_iterator()])
        else:
            axes.append([override.input_line])
    return [list(point) for point in itertools.product(*axes)]


def stand_in(override: str) -> str:
    """A placeholder path (``ckpt_path=<ckpt>``, ``RUN/...``) as a path a user would type (``<`` does not parse)."""
    key, _, value = override.partition("=")
    if (key in ("ckpt_path", "data.path") and PLACEHOLDER.search(value)) or re.search(r"<[^>]+>", value):
        return f"{key}=/placeholder/{Path(re.sub(r'[<>]', '', value)).name or 'file'}"
    return override


def validate_run(command: RunCommand) -> str:
    """Check a run command as ``sectorkit`` does before running it; returns what ``--cfg`` printed, if asked."""
    from sectorkit.core import sweep
    from sectorkit.core.cli import main
    from sectorkit.core.config import domain_from_overrides, validate_overrides
    from sectorkit.core.errors import ConfigError

    command = RunCommand(command.task, [stand_in(o) for o in command.overrides], command.multirun, command.flags)
    domain = domain_from_overrides(command.overrides)
    unknown = [o for o in command.overrides if o.startswith("-")]
    if unknown:
        raise ConfigError(f"unknown option(s) {' '.join(unknown)}")
    if sweep.requested(command.overrides):
        if command.task != "train":
            raise ConfigError("hparams_search: searches run with sectorkit train")
        validate_overrides(domain, sweep.split_overrides(domain, command.overrides).fixed)
    elif command.multirun:
        for point in grid_points(command.overrides):
            validate_overrides(domain, point)
    else:
        validate_overrides(domain, command.overrides)
    if not command.flags:
        return ""
    out = io.StringIO()
    with redirect_stdout(out):
        code = main([command.task, *(["-m"] if command.multirun else []), *command.flags, *command.overrides])
    if code != 0:
        raise ConfigError(f"sectorkit {command.task} {' '.join(command.flags)} exited with {code}")
    return out.getvalue()


def check_benchmark(command: Command) -> None:
    """The script exists and defines every ``--option`` the doc passes to it."""
    argv = list(command.argv)
    module = argv[2] if argv[1] == "-m" else None
    script = REPO / (module.replace(".", "/") + ".py" if module else argv[1])
    assert script.is_file(), f"{command.id}: {script.relative_to(REPO)} does not exist"
    source = script.read_text()
    for option in (w.split("=", 1)[0] for w in argv[2:] if w.startswith("--")):
        assert f'"{option}"' in source or f"'{option}'" in source, f"{command.id}: {script.name} has no option {option}"


def check_make(command: Command) -> None:
    """Every target exists (``make -n``: the commands are printed, not run)."""
    result = subprocess.run(["make", "-n", "-C", str(REPO), *command.argv[1:]], capture_output=True, text=True, check=False,
                            env={**os.environ, "MAKEFLAGS": ""}, timeout=60)
    assert result.returncode == 0, f"{command.id}: {command.text}: {result.stderr.strip()}"


# --- files in the documented shapes --------------------------------------------------------------------------
def composed_data(overrides: list[str]):
    """The data config the command composes (the preset's documented defaults with its overrides)."""
    from sectorkit.core.config import compose_config, domain_from_overrides

    keep = [o for o in overrides if o.startswith(("domain=", "data", "experiment="))]  # what shapes the data
    return compose_config(domain_from_overrides(overrides), keep).data


def write_finance(data, path: Path, seed: int = 0, roles: set[str] | None = None) -> None:
    """A transaction table with the columns ``data.columns`` names (and no others), covering any dates the split names;
    ``roles``: only these of time, amount, label, card, terminal, id (the ones a command names), the others absent."""
    from sectorkit.domains.finance.sample import SimulatorConfig, simulate

    cols, split = data.columns, data.split
    dates = [str(d) for key in ("train", "valid", "test") for d in (split.get(key) or [])]
    start = min(dates) if dates else "2018-04-01"
    days = max(45, (pd.Timestamp(max(dates)) - pd.Timestamp(start)).days + 2) if dates else 45
    tx = simulate(SimulatorConfig(n_customers=200, n_terminals=400, n_days=days, start_date=start, n_compromised_terminals=1,
                                  n_compromised_customers=1, grid_size=20.0, seed=seed))
    if roles is not None:
        cols = SimpleNamespace(**{**cols, **{role: None for role in ("card", "terminal", "id") if role not in roles}})
    rng = np.random.default_rng(seed)
    out = pd.DataFrame()
    seconds = tx["TX_TIME_SECONDS"].to_numpy()
    if str(cols.time_unit) == "seconds":
        offset = (pd.Timestamp(start) - pd.Timestamp(str(cols.time_origin))).total_seconds()
        out[cols.time] = seconds + offset
    else:
        out[cols.time] = tx["TX_DATETIME"]
    out[cols.amount] = tx["TX_AMOUNT"]
    if cols.label is not None:
        out[cols.label] = tx["TX_FRAUD"].astype(int)
    if cols.card is not None:
        out[cols.card] = tx["CUSTOMER_ID"]
    if cols.terminal is not None:
        out[cols.terminal] = tx["TERMINAL_ID"]
    if cols.id is not None:
        out[cols.id] = np.arange(len(tx)) + 1
    for name in cols.numeric or []:
        out[name] = rng.normal(size=len(tx)) + 2.0 * tx["TX_FRAUD"].to_numpy()
    for name in cols.categorical or []:
        out[name] = rng.choice(["web", "pos", "atm", "app"], size=len(tx))
    if str(split.method) == "column":
        values = split.get("values") or {}
        names = [values.get(k, k) if hasattr(values, "get") else k for k in ("train", "valid", "test")]
        part = np.searchsorted(np.quantile(seconds, [0.7, 0.85]), seconds, side="right")
        out[split.column] = np.array(names)[part]
    write_table(out, path)


def write_table(frame: pd.DataFrame, path: Path, **kwargs) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if ".parquet" in path.suffixes:
        frame.to_parquet(path, index=False)
    else:
        frame.to_csv(path, index=False, **kwargs)


def write_retail(data, path: Path) -> None:
    """An interaction log in the layout the file name selects (ratings.csv, u.data, .inter or data.*_column names)."""
    from sectorkit.domains.retail.sample import generate_interactions

    log = generate_interactions(n_users=150, n_items=120, mean_length=20, seed=1)
    log["timestamp"] = (log["timestamp"] * 1e8).astype("int64")
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.name == "ratings.csv" or path.name.endswith("ratings.csv"):
        log.set_axis(["userId", "movieId", "rating", "timestamp"], axis=1).to_csv(path, index=False)
    elif path.suffix == ".data":
        log.to_csv(path, sep="\t", header=False, index=False)
    elif path.suffix == ".inter":
        log.set_axis(["user_id:token", "item_id:token", "rating:float", "timestamp:float"], axis=1).to_csv(path, sep="\t", index=False)
    else:
        names = {"user": data.user_column, "item": data.item_column, "rating": data.rating_column, "timestamp": data.timestamp_column}
        write_table(log[[k for k, v in names.items() if v]].rename(columns=names), path)


def phantom_images(n: int, size: int, abnormal: bool, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``n`` smooth grey images, with a bright disc (and its mask) when ``abnormal``."""
    y, x = np.mgrid[:size, :size] / size
    images, masks = [], []
    for _ in range(n):
        image = 0.4 + 0.2 * np.sin(6 * x + rng.uniform(0, 6)) * np.cos(5 * y) + rng.normal(0, 0.03, (size, size))
        mask = np.zeros((size, size), bool)
        if abnormal:
            cx, cy, r = rng.uniform(0.3, 0.7, 2).tolist() + [rng.uniform(0.08, 0.15)]
            mask = (x - cx) ** 2 + (y - cy) ** 2 < r**2
            image = np.where(mask, 0.95, image)
        images.append((np.clip(image, 0, 1) * 255).astype(np.uint8))
        masks.append(mask)
    if not images:
        return np.zeros((0, size, size), np.uint8), np.zeros((0, size, size), bool)
    return np.stack(images), np.stack(masks)


def write_healthcare(data, path: Path, predict: bool = False) -> None:
    """A MedMNIST-style .npz, a folder of images to score (``predict``) or the benchmark folder layout with masks."""
    from PIL import Image

    rng = np.random.default_rng(0)
    size = 32
    if path.suffix == ".npz":
        arrays = {}
        for split, n in (("train", 24), ("val", 16), ("test", 16)):
            normal, _ = phantom_images(n if split == "train" else n // 2, size, False, rng)
            abnormal, _ = phantom_images(0 if split == "train" else n // 2, size, True, rng)
            arrays[f"{split}_images"] = np.concatenate([normal, abnormal]) if len(abnormal) else normal
            arrays[f"{split}_labels"] = np.array([[data.normal_label]] * len(normal) + [[data.normal_label + 1]] * len(abnormal))
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez(path, **arrays)
        return
    folders = [("", 6, False)] if predict else [("train/good", 24, False), ("valid/good", 6, False), ("valid/Ungood", 6, True),
                                                  ("test/good", 6, False), ("test/Ungood", 6, True)]
    for folder, n, abnormal in folders:
        images, masks = phantom_images(n, size, abnormal, rng)
        image_dir = path / folder / ("img" if abnormal else "")
        image_dir.mkdir(parents=True, exist_ok=True)
        for i, (image, mask) in enumerate(zip(images, masks)):
            Image.fromarray(image).save(image_dir / f"{i:04d}.png")
            if abnormal:
                (path / folder / "anomaly_mask").mkdir(exist_ok=True)
                Image.fromarray(mask.astype(np.uint8) * 255).save(path / folder / "anomaly_mask" / f"{i:04d}.png")


def write_agriculture(data, path: Path, predict: bool = False) -> None:
    """Station weather in the layout the path selects: a long table, a folder of AquaCrop climate files, a day-first CSV."""
    from sectorkit.domains.agriculture.sample import sample_weather

    frame = sample_weather().dropna(subset=["tmax", "tmin", "precip"])
    frame["et0"] = frame["et0"].fillna(3.0) if "et0" in frame else 3.0
    frame = frame.groupby("series_id").tail(200 if predict else 900)
    if data.get("shard_by_rank"):  # a Parquet dataset: a folder of one file per station
        columns = ["series_id", "date", str(data.target), *[str(c) for c in data.covariates]]
        for name, station in frame[list(dict.fromkeys(columns))].groupby("series_id"):
            write_table(station.rename(columns={"series_id": data.id_column, "date": data.date_column}), path / f"{name}.parquet")
        return
    if path.suffix == "" or path.is_dir():  # a folder of AquaCrop climate files, one per station
        path.mkdir(parents=True, exist_ok=True)
        for name, station in frame.groupby("series_id"):
            dates = pd.to_datetime(station["date"])
            rows = [f"{d.day} {d.month} {d.year} {r.tmin:.1f} {r.tmax:.1f} {r.precip:.1f} {r.et0:.1f}"
                    for d, r in zip(dates, station.itertuples())]
            (path / f"{name}.txt").write_text("Day Month Year Tmin(C) Tmax(C) Prcp(mm) Et0(mm)\n" + "\n".join(rows) + "\n")
        return
    columns = ["series_id", "date", str(data.target), *[str(c) for c in data.covariates], *[str(c) for c in data.optional_covariates]]
    out = frame[list(dict.fromkeys(columns))].rename(columns={"series_id": data.id_column, "date": data.date_column})
    if data.get("date_format"):
        out[data.date_column] = pd.to_datetime(out[data.date_column]).dt.strftime(str(data.date_format))
    write_table(out, path)


WRITERS = {"finance": write_finance, "retail": write_retail, "healthcare": write_healthcare, "agriculture": write_agriculture}


def generated_path(root: Path, command: Command, value: str) -> Path:
    """Where the file standing in for a doc's ``data.path=value`` goes: the same name, in a folder of its own."""
    key = hashlib.sha1(command.text.encode()).hexdigest()[:8]
    name = Path(value.rstrip("/")).name.replace("...", "data") or "data"
    return root / "files" / key / name


def write_data(domain: str, data, path: Path, predict: bool = False) -> None:
    writer = WRITERS[domain]
    if predict and domain in ("healthcare", "agriculture"):
        writer(data, path, predict=True)
    else:
        writer(data, path)


# --- running commands ------------------------------------------------------------------------------------
def sectorkit_env(root: Path) -> dict[str, str]:
    return {**os.environ, "SECTORKIT_ROOT": str(root), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def run_sectorkit(args: list[str], root: Path, timeout: float = 900) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "sectorkit", *args], cwd=root, env=sectorkit_env(root), capture_output=True, text=True,
                          timeout=timeout, check=False)


QUICK_TRAIN = ["debug=fast_dev_run"]
QUICK_SEARCH = ["sweep.n_trials=2", "trainer.max_epochs=1", "+trainer.limit_train_batches=2", "+trainer.limit_val_batches=2"]
CHECKPOINT_TRAIN = ["trainer.max_epochs=1", "+trainer.limit_train_batches=3", "+trainer.limit_val_batches=2",
                    "callbacks.early_stopping=null",
                    "trainer.enable_progress_bar=false"]


def quick_args(command: RunCommand, checkpoints: dict[str, Path], root: Path, doc: Command) -> list[str]:
    """The command in quick mode with its placeholders replaced by generated files."""
    from sectorkit.core import sweep
    from sectorkit.core.config import domain_from_overrides

    domain = domain_from_overrides(command.overrides).name
    overrides = []
    for override in command.overrides:
        key, _, value = override.partition("=")
        if key == "ckpt_path" and value != "last" and (PLACEHOLDER.search(value) or not (root / value).is_file()):
            override = f"ckpt_path={checkpoints[domain]}"  # a placeholder, or a run's file that a quick run does not write
        overrides.append(override)
    paths = [o.split("=", 1)[1] for o in overrides if o.startswith("data.path=")]
    if paths:
        target = generated_path(root, doc, paths[-1])
        data_overrides = overrides if command.task == "train" else checkpoint_overrides(domain, root)
        write_data(domain, composed_data(data_overrides), target, predict=command.task == "predict")
        overrides = [f"data.path={target}" if o.startswith("data.path=") else o for o in overrides]
    extra: list[str] = []
    if command.task == "train" and not command.flags:
        extra = QUICK_SEARCH if sweep.requested(command.overrides) else QUICK_TRAIN
    replaced = {e.split("=", 1)[0].lstrip("+") for e in extra}
    overrides = [o for o in overrides if o.split("=", 1)[0].lstrip("+") not in replaced]  # quick mode's values win
    prefix = ["-m"] if command.multirun else []
    return [command.task, *prefix, *command.flags, *overrides, *extra]


def checkpoint_overrides(domain: str, root: Path) -> list[str]:
    """The training command behind each domain's stand-in checkpoint: the domain's own-file preset on a generated file."""
    files = {"finance": ("data=csv", "tx.csv"), "retail": ("data=file", "ratings.csv"), "healthcare": ("data=folder", "scans"),
             "agriculture": ("data=weather", "stations.csv")}
    preset, name = files[domain]
    extra = {"finance": ["experiment=quick", "data=csv"], "retail": ["experiment=quick"], "healthcare": ["experiment=quick"],
             "agriculture": ["experiment=quick", "data=weather"]}[domain]
    return [f"domain={domain}", *extra, preset, f"data.path={root / 'checkpoint_data' / domain / name}"]


def train_checkpoint(domain: str, root: Path) -> Path:
    """A one-epoch run of ``domain`` on a generated file; its best checkpoint stands in for the docs' ``<ckpt>``."""
    overrides = checkpoint_overrides(domain, root)
    path = Path(overrides[-1].split("=", 1)[1])
    write_data(domain, composed_data(overrides), path)
    result = run_sectorkit(["train", *overrides, *CHECKPOINT_TRAIN, f"hydra.run.dir={root / 'checkpoint_runs' / domain}"], root)
    assert result.returncode == 0, result.stderr[-3000:]
    found = sorted((root / "checkpoint_runs" / domain / "checkpoints").glob("best-*.ckpt"))
    assert found, f"no checkpoint for {domain}: {result.stdout[-2000:]}"
    return found[-1]


# --- tests -------------------------------------------------------------------------------------------------------------
COMMANDS, PROBLEMS = doc_commands()
RUN = [c for c in COMMANDS if c.kind == "sectorkit" and c.sectorkit_args[:1] and c.sectorkit_args[0] in RUN_TASKS]
QUOTED = doc_commands(quoted=True)[0]  # shown, not run (a GPU, a cluster, a download): validated all the same
VALIDATED: dict[tuple[str, ...], str] = {}
QUOTED_RUN = [c for c in QUOTED if c.kind == "sectorkit" and c.sectorkit_args[:1] and c.sectorkit_args[0] in RUN_TASKS]


def test_docs_have_commands_and_every_command_block_is_marked() -> None:
    assert len(RUN) >= 20, "the docs-runner found too few commands: is the block syntax still ```bash?"
    assert not PROBLEMS, "\n".join(PROBLEMS)


def test_every_doc_command_is_one_the_runner_knows() -> None:
    """A ```bash block holds only sectorkit, benchmark, make, pip and pytest commands (each checked below)."""
    other = [f"{c.id}: {c.text}" for c in COMMANDS if c.kind == "other"]
    assert not other, "commands no test checks (move them to a ```text block and say why):\n" + "\n".join(other)


@pytest.mark.parametrize("command", RUN + QUOTED_RUN, ids=lambda c: c.id)
def test_run_command_validates(command: Command, monkeypatch, tmp_path) -> None:
    """Composed and validated as the CLI does it before a run (commands of ```text blocks too): nothing trains."""
    from sectorkit.core.errors import SectorkitError

    monkeypatch.setenv("SECTORKIT_ROOT", str(tmp_path))  # a --cfg command goes through the CLI, which sets it
    args = command.sectorkit_args
    if "domain=insurance" in args:
        pytest.skip("the scaffolded domain of docs/extending.md: checked by test_scaffold_walkthrough")
    key = tuple(args)
    try:
        printed = VALIDATED[key] if key in VALIDATED else validate_run(parse_run(args))  # the same command in two docs: once
    except SectorkitError as err:
        pytest.fail(f"{command.id}: {command.text}\n  -> {err}")
    VALIDATED[key] = printed
    if "--cfg" in args:
        assert "domain:" in printed or "_target_" in printed, printed[:500]


@pytest.mark.parametrize("command", [c for c in COMMANDS + QUOTED if c.kind == "benchmark"], ids=lambda c: c.id)
def test_benchmark_command_is_valid(command: Command) -> None:
    check_benchmark(command)


@pytest.mark.parametrize("command", [c for c in COMMANDS if c.kind == "make"], ids=lambda c: c.id)
def test_make_command_is_valid(command: Command) -> None:
    check_make(command)


def test_other_sectorkit_commands_are_known() -> None:
    """Subcommands other than the four runs: ``domains`` and ``new-domain`` run below; ``demo`` runs every domain (it
    has its own test); ``serve`` starts a server that does not return, so it belongs in a ```text block."""
    known = {"domains", "new-domain", "demo"}
    bad = [f"{c.id}: {c.text}" for c in COMMANDS
           if c.kind == "sectorkit" and c.sectorkit_args[:1] and c.sectorkit_args[0] not in (*RUN_TASKS, *known)]
    assert not bad, "sectorkit commands a ```bash block cannot run (a server does not return: use ```text):\n" + "\n".join(bad)


def test_sectorkit_domains_runs(capsys) -> None:
    from sectorkit.core.cli import main

    assert any(c.kind == "sectorkit" and c.sectorkit_args == ["domains"] for c in COMMANDS)
    assert main(["domains"]) == 0
    out = capsys.readouterr().out
    assert "finance" in out and "healthcare" in out


def test_scaffold_walkthrough(tmp_path) -> None:
    """docs/extending.md's walk-through: new-domain writes the package its pip and pytest lines name, and its train
    command composes once the package is installed (into a folder of its own here, not the environment)."""
    from sectorkit.core.config import domain_from_overrides, validate_overrides
    from sectorkit.core.registry import discover
    from sectorkit.core.scaffold import scaffold_domain

    for block in {(c.file, c.block) for c in COMMANDS if c.kind == "sectorkit" and c.sectorkit_args[:1] == ["new-domain"]}:
        steps = [c for c in COMMANDS if (c.file, c.block) == block]
        new = next(c for c in steps if c.sectorkit_args[:1] == ["new-domain"])
        name = new.sectorkit_args[1]
        here = tmp_path / f"{Path(new.file).stem}-{new.block}"
        here.mkdir()
        package = scaffold_domain(name, here)
        for step in steps:
            if step.kind in ("pip", "pytest"):
                target = step.argv[-1]
                assert (here / target).exists(), f"{step.id}: {target} does not exist after {new.text}"
        trains = [parse_run(s.sectorkit_args).overrides for s in steps if s.kind == "sectorkit" and s.sectorkit_args[:1] == ["train"]
                  and f"domain={name}" in s.argv]
        if not trains:
            continue
        site = here / "site"
        install = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--no-index",
                                  "--disable-pip-version-check", "--target", str(site), str(package)],
                                 capture_output=True, text=True, check=False)
        assert install.returncode == 0, install.stderr
        sys.path.insert(0, str(site))
        discover.cache_clear()
        try:
            for overrides in trains:
                validate_overrides(domain_from_overrides(overrides), overrides)
        finally:
            sys.path.remove(str(site))
            for module in [m for m in sys.modules if m == name or m.startswith(f"{name}.")]:
                del sys.modules[module]
            discover.cache_clear()


def test_a_broken_snippet_fails(tmp_path) -> None:
    """The runner catches a misspelt key, a bad value, an unknown option and an unmarked command block."""
    from sectorkit.core.errors import SectorkitError

    doc = tmp_path / "README.md"
    doc.write_text("# x\n\n```bash\nsectorkit train domain=finance data.batch_sise=64   # typo\n"
                   "sectorkit train domain=finance trainer.max_epochs=ten\nsectorkit train domain=finance model=mlpp\n"
                   "sectorkit train -m domain=agriculture model=gru,dlinearr\n```\n\n```\nsectorkit train domain=finance\n```\n")
    (tmp_path / "docs").mkdir()
    commands, problems = doc_commands(tmp_path)
    assert [c.line for c in commands] == [4, 5, 6, 7] and commands[0].text == "sectorkit train domain=finance data.batch_sise=64"
    assert problems and "README.md:11" in problems[0]
    for command, message in zip(commands, ["data.batch_sise", "max_epochs", "mlpp", "dlinearr"]):
        with pytest.raises(SectorkitError, match=message):
            validate_run(parse_run(command.sectorkit_args))
    bad_bench = split_commands("python benchmarks/finance_wide.py --no-such-flag\n", 1)[0]
    with pytest.raises(AssertionError, match="no-such-flag"):
        check_benchmark(bad_bench)
    with pytest.raises(AssertionError, match="No rule to make target"):
        check_make(split_commands("make no-such-target\n", 1)[0])


def test_continuations_comments_and_environment_are_read() -> None:
    [command] = split_commands("OMP_NUM_THREADS=1 sectorkit train domain=finance \\\n    data.columns.time=ts   # a comment\n", 10)
    assert command.line == 10 and command.env == (("OMP_NUM_THREADS", "1"),)
    assert command.argv == ("sectorkit", "train", "domain=finance", "data.columns.time=ts")
    assert grid_points(["domain=agriculture", "model=gru,dlinear", "seed=1,2"])[3] == ["domain=agriculture", "model=dlinear", "seed=2"]


def readme_chain() -> list[Command]:
    """The README's bring-your-own-data finance command and the README's evaluate/predict/export commands."""
    readme = [c for c in RUN if c.file == "README.md"]
    byod = [c for c in readme if "data=csv" in c.argv and "domain=finance" in c.argv]
    after = [c for c in readme if c.sectorkit_args[0] in ("evaluate", "predict", "export") and "domain=finance" in c.argv]
    return byod[:1] + after


def test_readme_finance_chain_runs_end_to_end(tmp_path, monkeypatch) -> None:
    """The README's own-file finance example on a file with exactly the columns it names (one short epoch, which
    writes a checkpoint), then the README's evaluate, predict and export commands on that checkpoint."""
    from sectorkit.core.cli import main

    chain = readme_chain()
    assert chain and chain[0].sectorkit_args[0] == "train" and len(chain) >= 3, [c.text for c in chain]
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SECTORKIT_ROOT", str(tmp_path))
    train = parse_run(chain[0].sectorkit_args)
    data_value = next(o.split("=", 1)[1] for o in train.overrides if o.startswith("data.path="))
    data_file = tmp_path / data_value
    data = composed_data(train.overrides)
    roles = {o.split("=", 1)[0].removeprefix("data.columns.") for o in train.overrides if o.startswith("data.columns.")}
    write_finance(data, data_file, roles=roles)
    named = {o.split("=", 1)[1] for o in train.overrides if o.startswith("data.columns.") and o.split("=", 1)[1] != "null"}
    named = {n.strip("[]") for n in named}
    assert set(pd.read_parquet(data_file).columns if data_file.suffix == ".parquet" else pd.read_csv(data_file).columns) == named
    run_dir = tmp_path / "byod"
    assert main(["train", *train.overrides, *CHECKPOINT_TRAIN, f"hydra.run.dir={run_dir}"]) == 0
    checkpoint = sorted((run_dir / "checkpoints").glob("best-*.ckpt"))[-1]
    new_file = tmp_path / "new.csv"
    write_finance(data, new_file, seed=1, roles=roles)
    for command in chain[1:]:
        step = parse_run(command.sectorkit_args)
        overrides = [f"ckpt_path={checkpoint}" if o.startswith("ckpt_path=") else o for o in step.overrides]
        assert main([step.task, *overrides]) == 0, command.text
    assert list(run_dir.glob("evaluate/*/metrics.json")), "evaluate wrote no metrics"
    if any(c.sectorkit_args[0] == "predict" for c in chain):
        written = [o.split("=", 1)[1] for c in chain for o in c.argv if c.sectorkit_args[0] == "predict" and o.startswith("output=")]
        assert all((tmp_path / w).is_file() for w in written), written


# --- slow: everything, end to end -------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def docs_root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("docs_runs")


@pytest.fixture(scope="session")
def checkpoints(docs_root) -> dict[str, Path]:
    class Lazy(dict):
        def __missing__(self, domain: str) -> Path:
            self[domain] = train_checkpoint(domain, docs_root)
            return self[domain]

    return Lazy()


@pytest.mark.slow
@pytest.mark.parametrize("command", RUN, ids=lambda c: c.id)
def test_run_command_end_to_end(command: Command, docs_root: Path, checkpoints) -> None:
    """Every run command in quick mode, in a fresh process, on generated files of the documented shape."""
    if "domain=insurance" in command.argv:
        pytest.skip("the scaffolded domain of docs/extending.md: trained by tests/core/test_scaffold.py")
    args = quick_args(parse_run(command.sectorkit_args), checkpoints, docs_root, command)
    result = run_sectorkit(args, docs_root)
    assert result.returncode == 0, f"{command.id}: sectorkit {' '.join(args)}\n{result.stderr[-3000:]}"
