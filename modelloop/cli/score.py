"""`modelloop score`: score a table with a registered version, locally or as an Indexed Job on Kubernetes.

Locally (or in one index of the Job) it builds the source, the sink and the MLflow recorder and runs
`modelloop.batch.score_batch`, printing the summary; `--on-kubernetes` creates the batch's parent MLflow run
and launches the chart's Indexed Job through `modelloop.deploy.kubernetes.batch_job` instead, each index
running this same command with `--shard-index` from `JOB_COMPLETION_INDEX`. `--shards N` with no shard named
(no `--shard-index`, no `JOB_COMPLETION_INDEX`) scores every shard on this machine, as N local processes
running this same command (`cli.local_shards`), under one parent run.
"""

from __future__ import annotations

import re
import signal
import uuid
from pathlib import Path
from typing import Any

import click

from modelloop.cli.errors import reports_errors
from modelloop.cli.options import log_level_option
from modelloop.contract.errors import InvalidInputError
from modelloop.contract.interrupts import Interrupted, sigterm_interrupts

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(i?b?)\s*$", re.IGNORECASE)
_BATCH_ID = re.compile(r"^[a-z0-9]([a-z0-9-]{0,38}[a-z0-9])?$")


def parse_size(text: str) -> int:
    """`512M`, `1G`, `1GiB`, `1073741824` -> bytes (powers of 1024)."""
    found = _SIZE.match(text)
    if not found:
        raise InvalidInputError(f"--memory-budget {text[:40]!r} is not a size such as 512M or 2G")
    power = " kmgt".index(found.group(2).lower() or " ")
    return int(float(found.group(1)) * 1024**power)


def check_batch_id(batch_id: str) -> str:
    if not _BATCH_ID.match(batch_id):
        raise InvalidInputError(
            f"--batch-id {batch_id[:50]!r}: use 1-40 lowercase letters, digits and '-' "
            "(it names files and Jobs)"
        )
    return batch_id


@click.command()
@click.option("--model", required=True, help="The version to score with: NAME@ALIAS or NAME/VERSION.")
@click.option("--input", "input_path", type=click.Path(path_type=Path), help="A .parquet or .csv file.")
@click.option("--query", help="A SQL query giving the rows (with --url).")
@click.option("--url", help="SQLAlchemy URL of the database --query reads.")
@click.option("--output", type=click.Path(path_type=Path), help="Folder for the Parquet parts.")
@click.option("--output-table", help="SQL table for the answers (with --output-url); rejects: TABLE_rejects.")
@click.option("--output-url", help="SQLAlchemy URL of the database --output-table is in.")
@click.option(
    "--key", "keys", multiple=True, help="Input column(s) identifying a row (default: a row number)."
)
@click.option("--batch-id", help="Names the batch's parts and run; a re-run with the same id replaces them.")
@click.option(
    "--shards",
    type=click.IntRange(min=1, max=1000),
    default=1,
    show_default=True,
    help="Shards of the input: with no shard named, all of them here as local processes; with "
    "--on-kubernetes, one per index of the Job.",
)
@click.option(
    "--shard-index",
    type=click.IntRange(min=0),
    envvar="JOB_COMPLETION_INDEX",
    default=0,
    help="The shard this process scores (default: JOB_COMPLETION_INDEX, set in an Indexed Job's pods; "
    "without either, --shards N scores every shard here, N local processes).",
)
@click.option("--shard-key", help="Integer column splitting a --query into shards (contiguous key ranges).")
@click.option("--parent-run", help="MLflow parent run of a sharded batch (set by --on-kubernetes).")
@click.option(
    "--parallel",
    type=click.IntRange(min=1),
    help="Local shards running at once (--shards with no shard named).  [default: the usable cores]",
)
@click.option(
    "--memory-budget",
    default="1G",
    show_default=True,
    help="Peak memory of one process (each local shard has its own).",
)
@click.option("--tracking-uri", help="MLflow tracking URI (the registry is on the same server).")
@click.option("--no-record", is_flag=True, help="Write no MLflow run.")
@click.option("--quiet", is_flag=True, help="No progress line (and warnings and errors only in the log).")
@log_level_option()
@click.option("--on-kubernetes", is_flag=True, help="Launch the chart's Indexed Job with --shards indexes.")
@click.option(
    "--job-template",
    type=click.Path(path_type=Path),
    envvar="MODELLOOP_BATCH_JOB_TEMPLATE",
    help="The chart's batch Job template (ConfigMap <fullname>-batch-job, key job.yaml).",
)
@click.option("--namespace", envvar="MODELLOOP_BATCH_NAMESPACE", help="Namespace of the Job.")
@click.option(
    "--kubeconfig", type=click.Path(path_type=Path), help="Kubeconfig (default: in-cluster, then ~)."
)
@reports_errors
def score(**options: object) -> None:
    """Score a table (Parquet, CSV or a SQL query) with a registered model version."""
    from modelloop.contract.logs import configure_logging
    from modelloop.contract.settings import CommonSettings

    given: dict[str, Any] = {"tracking_uri": options["tracking_uri"], "log_level": options["log_level"]}
    settings = CommonSettings(**{k: v for k, v in given.items() if v is not None})
    quiet = bool(options["quiet"]) and settings.log_level == "INFO"
    configure_logging("WARNING" if quiet else settings.log_level, settings.log_format)
    batch_id = check_batch_id(str(options["batch_id"] or uuid.uuid4().hex[:12]))
    if options["on_kubernetes"]:
        _launch(options, settings.tracking_uri, batch_id)
    elif _every_shard_here(options):
        _score_in_processes(options, settings.tracking_uri, batch_id)
    else:
        _score_here(options, settings.tracking_uri, batch_id)


def _every_shard_here(options: dict[str, object]) -> bool:
    """`--shards N` with no shard named (no `--shard-index`, no JOB_COMPLETION_INDEX): all N shards, here."""
    from click.core import ParameterSource

    named = click.get_current_context().get_parameter_source("shard_index")
    return int(str(options["shards"])) > 1 and named is ParameterSource.DEFAULT


def _score_in_processes(options: dict[str, object], tracking_uri: str, batch_id: str) -> None:
    """The batch's shards as local processes (`cli.local_shards`), each given the version (an alias is
    resolved once here), the batch id and the batch's parent run (created here unless --no-record)."""
    from modelloop.cli.local_shards import run_local_shards
    from modelloop.contract.model_ref import parse_model_ref
    from modelloop.deploy.kubernetes.jobs import option_removed

    shards = int(str(options["shards"]))
    model = str(options["model"])
    name, ref = parse_model_ref(model)
    if not (ref.isdigit() and options["no_record"]):  # checked before a parent run or a shard exists
        name, ref = _pinned_version(tracking_uri, model)
    args = _given_args()
    for flag in ("--model", "--batch-id", "--shards", "--shard-index", "--parent-run", "--parallel"):
        args = option_removed(args, flag)
    args = ["--model", f"{name}/{ref}", *args, "--batch-id", batch_id, "--shards", str(shards)]
    parallel = int(str(options["parallel"])) if options["parallel"] else None
    if options["no_record"]:
        run_local_shards(
            args, shards=shards, batch_id=batch_id, progress=not options["quiet"], parallel=parallel
        )
        return
    from modelloop.batch.records import MlflowRecorder

    recorder = MlflowRecorder(tracking_uri)
    parent = recorder.parent(batch_id, shards, model=name)
    try:
        run_local_shards(
            [*args, "--parent-run", parent], shards=shards, batch_id=batch_id, progress=not options["quiet"],
            parallel=parallel,
        )  # fmt: skip
    except BaseException as exc:  # the shards did not all finish: the parent run says so
        recorder.parent_ended(parent, "FAILED" if isinstance(exc, Exception) else "KILLED")
        raise


def _score_here(options: dict[str, object], tracking_uri: str, batch_id: str) -> None:
    from modelloop.batch import BatchJob, Shard, score_batch
    from modelloop.batch.records import MlflowRecorder
    from modelloop.batch.sinks import ParquetSink, Sink, SqlSink
    from modelloop.batch.sources import open_source

    shards = int(str(options["shards"]))
    shard = Shard(int(str(options["shard_index"])), shards)
    if shards > 1:
        _one_arrow_thread()
    source = open_source(
        input_path=_path(options["input_path"]),
        query=_text(options["query"]),
        url=_text(options["url"]),
        shard=shard,
        shard_key=_text(options["shard_key"]),
    )
    output, table = _path(options["output"]), _text(options["output_table"])
    if (output is None) == (table is None):
        raise InvalidInputError("give either --output DIR or --output-table TABLE (with --output-url)")
    if table is not None and not options["output_url"]:
        raise InvalidInputError("--output-table needs --output-url (a SQLAlchemy URL of the database)")
    sink: Sink = (
        ParquetSink(output, batch_id, shard)
        if output is not None
        else SqlSink(str(options["output_url"]), str(table), batch_id, shard)
    )
    recorder = None
    if not options["no_record"]:
        recorder = MlflowRecorder(tracking_uri, parent_run_id=_text(options["parent_run"]))
    job = BatchJob(
        model=str(options["model"]), tracking_uri=tracking_uri, source=source, sink=sink, batch_id=batch_id,
        shard=shard, keys=_keys(options["keys"]), memory_budget=parse_size(str(options["memory_budget"])),
        progress=not options["quiet"], recorder=recorder,
    )  # fmt: skip
    try:
        with sigterm_interrupts():  # so the shard's sink is aborted: no half-written part or staging table
            result = score_batch(job)
    except Interrupted:
        click.echo("error: stopped by SIGTERM (its uncommitted output removed)", err=True)
        raise SystemExit(128 + signal.SIGTERM) from None
    click.echo(result.summary())


def _launch(options: dict[str, object], tracking_uri: str, batch_id: str) -> None:
    from modelloop.batch.records import MlflowRecorder
    from modelloop.deploy.kubernetes.batch_job import launch_batch_job, shard_args

    template = _path(options["job_template"])
    if template is None:
        raise InvalidInputError(
            "--on-kubernetes needs the chart's batch Job template: --job-template or "
            "MODELLOOP_BATCH_JOB_TEMPLATE"
        )
    shards = int(str(options["shards"]))
    name, version = _pinned_version(tracking_uri, str(options["model"]))
    parent = MlflowRecorder(tracking_uri).parent(batch_id, shards, model=name)
    args = shard_args(
        _given_args(), model=f"{name}/{version}", batch_id=batch_id, shards=shards, parent_run=parent
    )
    launched = launch_batch_job(
        template, args, batch_id=batch_id, shards=shards, model=name,
        namespace=_text(options["namespace"]), kubeconfig=_path(options["kubeconfig"]),
    )  # fmt: skip
    click.echo(f"batch {batch_id}: {launched} scoring {name} version {version}; MLflow parent run {parent}")


def _pinned_version(tracking_uri: str, model: str) -> tuple[str, str]:
    """The model's name and the version `model` (NAME@ALIAS or NAME/VERSION) names now: the shards of a
    Job start at different times, so they are given the version, not an alias that may move meanwhile.
    NotFoundError names an unknown model, alias or version before anything is launched."""
    from modelloop.adapters.mlflow_registry import MlflowModelRegistry
    from modelloop.contract.model_ref import parse_model_ref
    from modelloop.serving.model_host import resolve_version

    name, ref = parse_model_ref(model)
    registry = MlflowModelRegistry(tracking_uri)
    version = resolve_version(registry, name, ref)
    registry.version(name, version)  # NotFoundError naming the model or the version
    return name, version


def _one_arrow_thread() -> None:
    """One Arrow CPU thread: a shard shares the machine with the other shards (each reads and writes on
    its own core), so Arrow's pool (one thread per core by default, whatever the affinity) would only
    oversubscribe it."""
    import pyarrow as pa

    pa.set_cpu_count(1)


def _given_args() -> list[str]:
    """The options given on the command line, as arguments again (in the command's order)."""
    from click.core import ParameterSource

    ctx = click.get_current_context()
    args: list[str] = []
    for param in ctx.command.params:
        if not isinstance(param, click.Option) or param.name is None:
            continue
        if ctx.get_parameter_source(param.name) is not ParameterSource.COMMANDLINE:
            continue
        flag, value = param.opts[0], ctx.params[param.name]
        if param.is_flag:
            args += [flag] if value else []
        elif param.multiple:
            for item in value:
                args += [flag, str(item)]
        else:
            args += [flag, str(value)]
    return args


def _text(value: object) -> str | None:
    return str(value) if value else None


def _keys(value: object) -> tuple[str, ...]:
    return tuple(str(k) for k in value) if isinstance(value, tuple | list) else ()


def _path(value: object) -> Path | None:
    return value if isinstance(value, Path) else None


__all__ = ["check_batch_id", "parse_size", "score"]
