"""The ``sectorkit`` command (also ``python -m sectorkit``).

    sectorkit train domain=finance [model=ft_transformer] [experiment=quick] [trainer.max_epochs=5 ...]
    sectorkit train -m domain=finance hparams_search=optuna [sweep.n_trials=20] [optimizer.lr=tag(log,interval(1e-4,1e-2))]
    sectorkit train -m domain=agriculture model=gru,dlinear     (a grid: one job per value, then one table)
    sectorkit evaluate ckpt_path=RUN_OR_CKPT                    (the domain comes from the checkpoint)
    sectorkit predict ckpt_path=RUN_OR_CKPT data.path=FILE [output=FILE]
    sectorkit export ckpt_path=RUN_OR_CKPT [format=onnx|torchscript]
    sectorkit serve ckpt_path=RUN_OR_CKPT [port=8000] [host=127.0.0.1] [serve.max_rows=N] [serve.history=FILE] [serve.in_memory=true] [runtime.torch_threads=1]
    sectorkit domains | demo | new-domain NAME [--dest DIR]

Everything after the subcommand is a Hydra override. Errors in the configuration or the data print one
line and exit with status 2; ``--debug`` shows the full traceback instead. ``--verbose`` shows the library
warnings and INFO lines a run hides by default (``runtime.verbose=true``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from sectorkit.core.errors import ConfigError, SectorkitError
from sectorkit.core.launch import run_hydra

RUN_TASKS = ("train", "evaluate", "predict", "export")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script; returns the process exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    verbose = "--verbose" in argv
    argv = [a for a in argv if a not in ("--debug", "--verbose")]
    if verbose and argv[:1] and argv[0] in RUN_TASKS:
        argv.append("runtime.verbose=true")
    before = os.environ.get("HYDRA_FULL_ERROR")
    if debug:  # for this call only (a notebook or test calling main() again gets its own setting)
        os.environ["HYDRA_FULL_ERROR"] = "1"
    try:
        if _is_ddp_worker():
            return _run_ddp_worker()
        return _dispatch(argv)
    except SectorkitError as err:
        if debug:
            raise
        print(f"sectorkit: error: {err}", file=sys.stderr)
        return 2
    finally:
        if debug and before is None:
            os.environ.pop("HYDRA_FULL_ERROR", None)


def _dispatch(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="sectorkit", description="Industry deep-learning pipelines on one Lightning + Hydra core.",
                                     epilog="Add --debug to any command for full tracebacks, --verbose for every library warning.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    helps = {"train": "fit, test with the best checkpoint, baselines and report", "evaluate": "test metrics and report for ckpt_path",
             "predict": "predictions of ckpt_path for data.path, written to a table", "export": "ONNX/TorchScript export of ckpt_path with a parity check"}
    for task in RUN_TASKS:
        p = sub.add_parser(task, help=f"{helps[task]} (Hydra overrides follow)")
        p.add_argument("-m", "--multirun", action="store_true", help="sweep over comma-separated values / hparams_search")
        p.add_argument("--cfg", choices=["job", "hydra", "all"], help="print the composed config instead of running")
        p.add_argument("--resolve", action="store_true", help="with --cfg: resolve interpolations")
    sub.add_parser("domains", help="list the registered domains with their models, datasets and primary metric")
    sub.add_parser("serve", help="HTTP inference server for ckpt_path (a run folder or checkpoint): ckpt_path=... [port=8000] [host=...] "
                   "[serve.max_rows=...] [serve.in_memory=true] [runtime.torch_threads=1] (the serve extra)")
    demo = sub.add_parser("demo", help="run every domain's demo (else quick) experiment on its built-in sample, then a short "
                          "Optuna search; print model vs baselines")
    demo.add_argument("--domains", nargs="*", help="only these domains")
    demo.add_argument("--sweep", default=None, metavar="DOMAIN",
                      help="after the runs, a 4-trial Optuna search on this domain's quick experiment, if it is among --domains "
                           "(default: the domain whose demo run was fastest; none: no search)")
    new = sub.add_parser("new-domain", help="scaffold a domain plugin package that trains out of the box")
    new.add_argument("name")
    new.add_argument("--dest", default=".", help="folder to create the package in (default: current folder)")
    args, rest = parser.parse_known_args(argv)

    if args.command in RUN_TASKS:
        flags = [*(["--cfg", args.cfg] if args.cfg else []), *(["--resolve"] if args.resolve else [])]
        return run_task(args.command, rest, multirun=args.multirun, flags=flags)
    if args.command == "serve":
        from sectorkit.core.serve import serve_command

        return serve_command(rest)
    if rest:
        parser.error(f"unexpected arguments: {' '.join(rest)}")
    if args.command == "domains":
        from sectorkit.core.summary import print_domains

        print_domains()
        return 0
    if args.command == "demo":
        from sectorkit.core.summary import run_demo

        return run_demo(args.domains, sweep=args.sweep)
    from sectorkit.core.scaffold import scaffold_domain

    path = scaffold_domain(args.name, Path(args.dest))
    print(f"created {path}\nnext: pip install -e {path} && sectorkit train domain={args.name}")
    return 0


def with_checkpoint_domain(task: str, overrides: list[str]) -> list[str]:
    """``overrides`` of an evaluate, predict or export with a run folder's ``ckpt_path`` replaced by the run's best
    checkpoint file, and ``domain=`` taken from the checkpoint's run record when none is given: a run folder is enough."""
    paths = [o.split("=", 1)[1] for o in overrides if o.startswith("ckpt_path=")]
    if task == "train" or not paths or paths[-1] in ("", "null"):
        return overrides
    has_domain = any(o.startswith("domain=") for o in overrides)
    if has_domain and not Path(paths[-1]).expanduser().is_dir():
        return overrides
    from sectorkit.core.checkpoint import checkpoint_record

    file, record = checkpoint_record(paths[-1])
    kept = [o for o in overrides if not o.startswith("ckpt_path=")]
    return [*([] if has_domain else [f"domain={record['domain']}"]), *kept, f"ckpt_path={file}"]


def run_task(task: str, overrides: list[str], multirun: bool = False, flags: Sequence[str] = ()) -> int:
    """Validate the overrides, then hand the run to Hydra with the domain's config tree (``flags``: Hydra's own)."""
    from sectorkit.core.config import domain_from_overrides, validate_overrides

    unknown = [o for o in overrides if o.startswith("-")]
    if unknown:
        raise ConfigError(f"unknown option(s) {' '.join(unknown)}; overrides are key=value, see sectorkit {task} --help")
    overrides = with_checkpoint_domain(task, overrides)
    domain = domain_from_overrides(overrides)
    root = Path(os.environ.setdefault("SECTORKIT_ROOT", os.getcwd()))  # paths.root_dir and sweep storage follow it
    check_output_folder([*overrides, *beside_the_run(task, overrides)], root)
    from sectorkit.core import auto, candidates

    if auto.requested(overrides):  # model=auto: each candidate's run, then the choice (core/candidates.py, core/auto.py)
        if task != "train" or multirun or any(o.lstrip("+").startswith("hparams_search=") for o in overrides):
            raise ConfigError(f"model=auto trains its candidates with sectorkit train, one run each (no -m or hparams_search); "
                              f"{task} takes the auto run's ckpt_path=<run>/checkpoints/best.ckpt")
        return candidates.run_auto(domain, overrides, flags)  # checks the overrides first
    if multirun or any(o.lstrip("+").startswith("hparams_search=") for o in overrides):
        from sectorkit.core import sweep

        if sweep.requested(overrides):  # an Optuna search, run here trial by trial (with or without -m)
            if task != "train":
                raise ConfigError(f"hparams_search: searches run with sectorkit train, not {task}")
            validate_overrides(domain, sweep.split_overrides(domain, overrides).fixed)
            return sweep.run_search(domain, overrides, flags)
        if multirun:
            validate_overrides(domain, overrides)
            (root / "outputs").mkdir(parents=True, exist_ok=True)
            if task == "train" and not flags:  # a grid: Hydra's multirun, then one table over its jobs
                return sweep.run_grid(domain, overrides)
            run_hydra(domain, ["--multirun", *flags, f"task={task}", *overrides])
            return 0
    from sectorkit.core.run_record import checkpoint_data_preset

    overrides = [*overrides, *checkpoint_data_preset(domain, task, overrides)]  # data.<key> checked against the checkpoint's preset
    validate_overrides(domain, overrides)
    run_hydra(domain, [*flags, f"task={task}", *overrides, *beside_the_run(task, overrides)])
    return 0


def beside_the_run(task: str, overrides: Sequence[str]) -> list[str]:
    """For evaluate, predict and export of a checkpoint of a run folder: the override that puts this command's
    folder inside that run (``<run>/<task>/<timestamp>``) rather than among the training runs; none when the user
    chose ``hydra.run.dir`` or the checkpoint is not in a run's ``checkpoints/`` folder."""
    if task == "train" or any(o.startswith("hydra.run.dir=") for o in overrides):
        return []
    paths = [o.split("=", 1)[1] for o in overrides if o.startswith("ckpt_path=")]
    if not paths:
        return []
    checkpoint = Path(paths[-1]).expanduser().resolve()
    if checkpoint.parent.name != "checkpoints":
        return []
    return [f"hydra.run.dir={checkpoint.parent.parent / task}/${{now:%Y-%m-%d_%H-%M-%S_%f}}"]


def check_output_folder(overrides: Sequence[str], root: Path) -> None:
    """A run folder that cannot be written (read-only, full or not a folder) is one line naming it, before Hydra tries
    to create it: the nearest existing folder of ``hydra.run.dir`` / ``hydra.sweep.dir`` / ``paths.log_dir`` (default
    ``<SECTORKIT_ROOT>/outputs``) must take a new folder."""
    import tempfile

    given = [o.split("=", 1)[1] for o in overrides if o.startswith(("hydra.run.dir=", "hydra.sweep.dir=", "paths.log_dir="))]
    folder = Path(given[-1].split("${", 1)[0].strip("'\"") or ".").expanduser().absolute() if given else root / "outputs"
    existing = next((p for p in [folder, *folder.parents] if p.exists()), None)
    if existing is None:
        return
    try:
        tempfile.TemporaryDirectory(dir=existing, prefix=".sectorkit-write-check-").cleanup()
    except OSError as err:
        raise ConfigError(f"{existing}: the run folder cannot be written there ({err.strerror or err}); choose a writable "
                          "hydra.run.dir (or SECTORKIT_ROOT)") from None


def _is_ddp_worker() -> bool:
    if os.environ.get("LOCAL_RANK", "0") in ("", "0"):
        return False
    from sectorkit.core.runtime import DDP_JOB_ENV  # imports torch: only for processes that may be workers

    return DDP_JOB_ENV in os.environ


def _run_ddp_worker() -> int:
    """A DDP worker started by Lightning: join the parent's job, in the parent's run folder."""
    from sectorkit.core.registry import get_domain
    from sectorkit.core.runtime import DDP_JOB_ENV

    job = json.loads(os.environ[DDP_JOB_ENV])
    rank = os.environ["LOCAL_RANK"]
    pinned = [f'hydra.run.dir="{job["run_dir"]}"', "hydra.output_subdir=null", f"hydra.job.name=rank{rank}", "hydra.mode=RUN"]
    run_hydra(get_domain(job["domain"]), [*job["overrides"], *pinned])
    return 0
