"""`rooivalk submit`: compile a plan's pipeline, upload it to a Kubeflow Pipelines API server (a new
version when the pipeline exists) and start a run, all through kfp.Client. kfp is imported inside
the functions that talk to the server, so the CLI starts without it."""

from __future__ import annotations

import contextlib
import hashlib
import inspect
import io
import json
import os
import re
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml

from rooivalk import __version__
from rooivalk.cli.compile import PIPELINES, compile_plan, with_tracking_default
from rooivalk.plan import Plan, PlanError

# kfp.client.KF_PIPELINES_SA_TOKEN_ENV / KF_PIPELINES_SA_TOKEN_PATH, repeated here because the help
# text needs them before kfp is imported (a test checks they still match kfp's).
TOKEN_ENV = "KF_PIPELINES_SA_TOKEN_PATH"
DEFAULT_TOKEN_PATH = "/var/run/secrets/kubeflow/pipelines/token"

CREDENTIALS_HELP = (
    f"Credentials: the token file from --token-path, else ${TOKEN_ENV}, else {DEFAULT_TOKEN_PATH} when it "
    "exists (a projected service-account token with audience pipelines.kubeflow.org), sent as a Bearer "
    "token and re-read on every request so the kubelet's rotation is picked up. kfp.Client reads that "
    "token by itself only when it is given no host; submit always passes --host, so it hands the token "
    "to kfp.Client as its ServiceAccountTokenVolumeCredentials. No token file: no credentials are sent."
)


class SubmitError(Exception):
    """A submission that cannot go on; the message is one line for the user."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


@dataclass(frozen=True)
class SubmitOptions:
    host: str
    tracking_uri: str  # MLflow URI the pods use when the plan sets none
    pipeline: str = "training"
    namespace: str | None = None
    experiment: str | None = None
    params: tuple[str, ...] = ()
    run_name: str | None = None
    pipeline_name: str | None = None
    token_path: Path | None = None
    wait: bool = False
    timeout: int = 21600


@dataclass(frozen=True)
class SubmitResult:
    pipeline_name: str
    pipeline_id: str
    version_name: str
    version_id: str
    new_pipeline: bool
    experiment_id: str
    run_id: str
    run_url: str
    state: str | None = None  # set with --wait: the run's final state


def declared_parameters(ir_path: Path) -> dict[str, str]:
    """The compiled pipeline's run parameters (root.inputDefinitions.parameters): name -> parameterType."""
    spec = next(yaml.safe_load_all(ir_path.read_text()))  # pipeline spec [+ platform spec]
    parameters = spec["root"].get("inputDefinitions", {}).get("parameters", {})
    return {name: str(definition["parameterType"]) for name, definition in parameters.items()}


def _typed(name: str, text: str, parameter_type: str) -> Any:
    # KFP validates run parameters against the declared type, so "3" for an integer is converted
    # here rather than refused by the server after the upload.
    try:
        if parameter_type == "NUMBER_INTEGER":
            return int(text)
        if parameter_type == "NUMBER_DOUBLE":
            return float(text)
        if parameter_type == "BOOLEAN":
            return {"true": True, "false": False}[text.lower()]
        if parameter_type in ("STRUCT", "LIST"):
            value = json.loads(text)
            if isinstance(value, dict if parameter_type == "STRUCT" else list):
                return value
            raise ValueError(text)
    except (ValueError, KeyError):
        raise SubmitError(f"--param {name}={text}: not a {parameter_type} value", 2) from None
    return text


def parse_params(values: tuple[str, ...] | list[str], declared: dict[str, str]) -> dict[str, Any]:
    """`--param name=value` pairs, checked against the pipeline's declared parameters."""
    parsed: dict[str, Any] = {}
    settable = sorted(name for name in declared if name != "plan")
    for item in values:
        name, sep, text = item.partition("=")
        if not sep or not name:
            raise SubmitError(f"--param {item!r}: expected name=value", 2)
        if name == "plan":
            raise SubmitError(
                "--param plan=...: the plan comes from the plan file; change it with --set key.path=value", 2
            )
        if name not in declared:
            raise SubmitError(
                f"--param {name}: the pipeline declares no such parameter (it takes: {', '.join(settable) or 'none'})",
                2,
            )
        parsed[name] = _typed(name, text, declared[name])
    return parsed


def version_name(ir_bytes: bytes, now: float | None = None) -> str:
    """Package version, a content hash of the compiled IR and a UTC timestamp: unique for each upload
    and traceable to the code and plan that made it. Lower-case [a-z0-9.-] only, as KFP version names
    must be valid Kubernetes names when KFP stores pipelines as Kubernetes objects."""
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime(now))
    return f"{__version__}-{hashlib.sha256(ir_bytes).hexdigest()[:12]}-{stamp}"


def token_file(option: Path | None) -> Path | None:
    """The token file to send (see CREDENTIALS_HELP); one named explicitly must exist."""
    named = option or (Path(os.environ[TOKEN_ENV]) if os.environ.get(TOKEN_ENV) else None)
    if named is not None:
        if not named.is_file():
            source = "--token-path" if option else f"${TOKEN_ENV}"
            raise SubmitError(f"{source} {named}: no such file", 2)
        return named
    default = Path(DEFAULT_TOKEN_PATH)
    return default if default.is_file() else None


def run_url(host: str, run_id: str) -> str:
    return f"{host.rstrip('/')}/#/runs/details/{run_id}"


def _one_shot_client(host: str, namespace: str | None, token: Path | None) -> Any:
    from kfp import client as kfp_client
    from kfp.client.set_volume_credentials import ServiceAccountTokenVolumeCredentials

    class OneShotHealthzClient(kfp_client.Client):  # type: ignore[misc]
        # kfp.Client's constructor asks /healthz whether KFP is multi-user and retries any API error
        # 5 times 5 s apart, so a 403 took 25 s to show; one try, and submit explains the error.
        def get_kfp_healthz(self, sleep_duration: int = 5) -> Any:
            return self._healthz_api.healthz_service_get_healthz()

    credentials = ServiceAccountTokenVolumeCredentials(str(token)) if token else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # "only works with KFP v2.0.0-beta.2 and later"
        # kfp's default namespace "kubeflow" means "not set" (it then asks /healthz about multi-user).
        return OneShotHealthzClient(host=host, namespace=namespace or "kubeflow", credentials=credentials)


def _api_message(body: Any) -> str:
    text = body.decode(errors="replace") if isinstance(body, bytes) else str(body or "")
    with contextlib.suppress(ValueError, AttributeError):
        parsed = json.loads(text)
        text = str(parsed.get("message") or parsed.get("error") or text)
    return " ".join(text.split())[:300]


def explain(error: Exception, host: str, token: Path | None, step: str) -> str:
    """One line for what went wrong talking to the KFP API server."""
    import kfp_server_api
    import urllib3

    if isinstance(error, urllib3.exceptions.HTTPError):
        reason = str(getattr(error, "reason", None) or error)
        errno = re.search(r"\[Errno [^\]]+\] ([^)]+)", reason)
        return f"cannot reach the KFP API at {host} ({(errno.group(1) if errno else reason).lower()})"
    if isinstance(error, kfp_server_api.ApiException):
        status = f"HTTP {error.status} {error.reason}".strip()
        detail = _api_message(error.body)
        if error.status in (401, 403):
            sent = f"sent the token in {token}" if token else "sent no credentials"
            return (
                f"the KFP API at {host} refused the request ({status}: {detail}) while submit was {step}; "
                f"submit {sent}. "
                f"{CREDENTIALS_HELP} In multi-user KFP the token's service account needs access to the namespace."
            )
        if error.status == 404:
            return (
                f"the KFP API at {host} answered {status} while submit was {step}: is --host the KFP API server "
                "(in-cluster http://ml-pipeline.kubeflow:8888, or an address that proxies /apis/v2beta1)?"
            )
        return f"the KFP API at {host} answered {status} while submit was {step}: {detail}"
    return f"the KFP API at {host}: {error} (while submit was {step})"


class _Steps:
    """Remembers what submit was doing when the server said no, for the error message."""

    def __init__(self, host: str, token: Path | None) -> None:
        self.host, self.token = host, token

    @contextlib.contextmanager
    def step(self, what: str) -> Iterator[None]:
        import kfp_server_api
        import urllib3

        # kfp prints links of its own ("Run details: ..."); submit prints the ids and the run's link.
        try:
            with contextlib.redirect_stdout(io.StringIO()):
                yield
        # ValueError, TimeoutError: kfp's "Multiple experiments is found with name ...", "Run timeout".
        except (urllib3.exceptions.HTTPError, kfp_server_api.ApiException, ValueError, TimeoutError) as error:
            raise SubmitError(explain(error, self.host, self.token, what)) from None


def _find_pipeline(client: Any, name: str, namespace: str | None) -> str | None:
    # client.get_pipeline_id(name) lists shared pipelines only (it sends no namespace), so a pipeline
    # uploaded into a namespace would never be found again; the same filter, with the namespace.
    predicate = {"operation": "EQUALS", "key": "display_name", "stringValue": name}
    found = client.list_pipelines(filter=json.dumps({"predicates": [predicate]}), namespace=namespace).pipelines or []
    if len(found) > 1:
        raise ValueError(f"{len(found)} pipelines are named {name!r}; pass --pipeline-name")
    return str(found[0].pipeline_id) if found else None


def _upload(client: Any, ir_path: Path, name: str, namespace: str | None, steps: _Steps) -> tuple[str, str, str, bool]:
    """(pipeline id, version name, version id, whether the pipeline is new)."""
    version = version_name(ir_path.read_bytes())
    description = f"rooivalk {__version__}: {version}"
    with steps.step(f"looking up pipeline {name!r}"):
        pipeline_id = _find_pipeline(client, name, namespace)
    if pipeline_id is None:
        with steps.step(f"uploading pipeline {name!r}"):
            pipeline_id = str(client.upload_pipeline(str(ir_path), name, description, namespace).pipeline_id)
        # The upload makes the pipeline's first version itself (named like the pipeline); its id is
        # what the run must name.
        with steps.step(f"listing the versions of pipeline {pipeline_id}"):
            listed = client.list_pipeline_versions(pipeline_id, page_size=1, sort_by="created_at desc")
        first = (listed.pipeline_versions or [None])[0]
        if first is None:
            raise SubmitError(f"the KFP API at {steps.host} uploaded pipeline {pipeline_id} but lists no version")
        return pipeline_id, str(first.display_name or name), str(first.pipeline_version_id), True
    with steps.step(f"uploading a version of pipeline {name!r}"):
        uploaded = client.upload_pipeline_version(
            str(ir_path), version, pipeline_id=pipeline_id, description=description
        )
    return pipeline_id, version, str(uploaded.pipeline_version_id), False


def submit_plan(plan: Plan, options: SubmitOptions, echo: Callable[[str], None] = print) -> SubmitResult:
    """Compile, upload (a new version when the pipeline exists), make sure the experiment exists, start a
    run, and with options.wait wait for it. Raises SubmitError."""
    if options.pipeline not in PIPELINES:
        raise SubmitError(f"--pipeline {options.pipeline!r} is not one of {', '.join(PIPELINES)}", 2)
    if not options.host.startswith(("http://", "https://")):
        raise SubmitError(f"--host {options.host}: give the scheme, e.g. http://ml-pipeline.kubeflow:8888", 2)
    token = token_file(options.token_path)
    pipeline_name = options.pipeline_name or f"{plan.name}-{options.pipeline}"
    with tempfile.TemporaryDirectory(prefix="rooivalk-submit-") as tmp:
        ir_path = compile_plan(plan, Path(tmp) / "pipeline.yaml", options.tracking_uri, options.pipeline)
        # Checked before any request, so a typo costs no upload.
        params = parse_params(options.params, declared_parameters(ir_path))
        steps = _Steps(options.host, token)
        with steps.step("connecting to it (kfp.Client asks /healthz)"):
            client = _one_shot_client(options.host, options.namespace, token)
        pipeline_id, version, version_id, new = _upload(client, ir_path, pipeline_name, options.namespace, steps)
    echo(f"pipeline {pipeline_name}: {pipeline_id} ({'uploaded' if new else 'new version'})")
    echo(f"version {version}: {version_id}")
    experiment = options.experiment or plan.tracking.experiment
    with steps.step(f"finding or creating experiment {experiment!r}"):
        # create_experiment returns the experiment of that name when one exists in the namespace.
        experiment_id = str(client.create_experiment(experiment, namespace=options.namespace).experiment_id)
    echo(
        f"experiment {experiment}: {experiment_id}" + (f" (namespace {options.namespace})" if options.namespace else "")
    )
    run_name = options.run_name or f"{pipeline_name}-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}"
    # The same tracking default compile_plan wrote into the IR: the run's plan and the version's default agree.
    arguments = {"plan": with_tracking_default(plan, options.tracking_uri).to_parameter(), **params}
    with steps.step(f"starting run {run_name!r}"):
        run = client.run_pipeline(
            experiment_id=experiment_id,
            job_name=run_name,
            pipeline_id=pipeline_id,
            version_id=version_id,
            params=arguments,
        )
    run_id = str(run.run_id)
    url = run_url(options.host, run_id)
    echo(f"run {run_name}: {run_id}")
    echo(f"  {url}")
    state: str | None = None
    if options.wait:
        with steps.step(f"waiting for run {run_id}"):
            state = str(client.wait_for_run_completion(run_id, options.timeout).state)
    return SubmitResult(pipeline_name, pipeline_id, version, version_id, new, experiment_id, run_id, url, state)


def submit(
    plan: Annotated[Path, typer.Argument(help="Plan YAML file.")],
    host: Annotated[
        str,
        typer.Option(
            envvar="KF_PIPELINES_ENDPOINT",
            help="KFP API server URL, e.g. http://ml-pipeline.kubeflow:8888 in the cluster.",
        ),
    ],
    namespace: Annotated[
        str | None, typer.Option(help="Multi-user KFP: the profile namespace for the pipeline, experiment and run.")
    ] = None,
    experiment: Annotated[
        str | None, typer.Option(help="KFP experiment; default: the plan's tracking.experiment.")
    ] = None,
    pipeline: Annotated[str, typer.Option(help=f"Which pipeline: {', '.join(PIPELINES)}.")] = "training",
    set_: Annotated[
        list[str] | None, typer.Option("--set", help="Override a plan key: key.path=value (repeatable).")
    ] = None,
    param: Annotated[
        list[str] | None,
        typer.Option(help="A run parameter the pipeline declares: name=value (repeatable), e.g. data_uri=s3://b/k."),
    ] = None,
    run_name: Annotated[str | None, typer.Option(help="Run name; default: <pipeline name>-<UTC time>.")] = None,
    pipeline_name: Annotated[str | None, typer.Option(help="Pipeline name; default: <plan name>-<pipeline>.")] = None,
    tracking_uri: Annotated[str | None, typer.Option(help="MLflow URI the pods use when the plan sets none.")] = None,
    token_path: Annotated[
        Path | None, typer.Option(help=f"Bearer token file; default ${TOKEN_ENV}, then {DEFAULT_TOKEN_PATH}.")
    ] = None,
    wait: Annotated[bool, typer.Option(help="Wait for the run to end; exit 1 unless it SUCCEEDED.")] = False,
    timeout: Annotated[int, typer.Option(help="Seconds --wait waits before giving up.")] = 21600,
) -> None:
    """Upload the plan's pipeline to Kubeflow Pipelines (a new version when the pipeline exists) and start
    a run with the plan as its `plan` parameter. Prints the pipeline, version and run ids and the run's link."""
    from rooivalk.cli.common import CLUSTER_TRACKING_URI, load_cli_plan, print_error

    loaded = load_cli_plan(plan, set_)
    options = SubmitOptions(
        host=host,
        tracking_uri=tracking_uri or CLUSTER_TRACKING_URI,
        pipeline=pipeline,
        namespace=namespace,
        experiment=experiment,
        params=tuple(param or ()),
        run_name=run_name,
        pipeline_name=pipeline_name,
        token_path=token_path,
        wait=wait,
        timeout=timeout,
    )
    try:
        result = submit_plan(loaded, options, typer.echo)
    except SubmitError as error:
        print_error(str(error))
        raise typer.Exit(error.exit_code) from None
    except PlanError as error:  # what compiling refuses (a search plan's storage, its pipeline kind)
        print_error(f"{plan}: {error}")
        raise typer.Exit(2) from None
    if result.state is not None:
        if result.state.upper() != "SUCCEEDED":
            print_error(f"run {result.run_id} ended {result.state}: {result.run_url}")
            raise typer.Exit(1)
        typer.echo(f"run {result.run_id} {result.state}")


# One text for --help and for the 401/403 message.
submit.__doc__ = f"{inspect.cleandoc(submit.__doc__ or '')}\n\n{CREDENTIALS_HELP}"
