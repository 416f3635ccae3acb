"""A stand-in for the Kubeflow Pipelines API server (no KFP server can run on this machine: it needs a
Kubernetes cluster, MySQL and Argo). A real HTTP server on loopback that answers the KFP v2beta1 REST
paths kfp.Client's generated kfp_server_api layer sends, with the JSON shapes and grpc-gateway errors
the real server returns, and records every request (method, path, query, headers, body) for the tests."""

from __future__ import annotations

import json
import re
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from email.parser import BytesParser
from email.policy import default as email_policy
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import yaml

API = "/apis/v2beta1"
CREATED_AT = "2026-01-01T00:00:00Z"
# grpc status codes in grpc-gateway error bodies: https://grpc.io/docs/guides/status-codes/
NOT_FOUND, ALREADY_EXISTS, PERMISSION_DENIED, INVALID_ARGUMENT = 5, 6, 7, 3


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes

    def arg(self, name: str) -> str | None:
        return self.query.get(name, [None])[0]

    def json(self) -> Any:
        return json.loads(self.body)

    def files(self) -> dict[str, tuple[str | None, bytes]]:
        """multipart/form-data parts: field name -> (file name, content)."""
        head = f"Content-Type: {self.headers['content-type']}\r\n\r\n".encode()
        message = BytesParser(policy=email_policy).parsebytes(head + self.body)
        return {
            str(part.get_param("name", header="content-disposition")): (
                part.get_filename(),
                part.get_payload(decode=True),
            )
            for part in message.iter_parts()
        }


class ApiError(Exception):
    def __init__(self, status: int, code: int, message: str) -> None:
        super().__init__(message)
        self.status, self.code = status, code


@dataclass
class FakeKfpApi:
    """mode: "kfp" answers like KFP; "deny" answers every request `deny_status` with KFP's
    PermissionDenied body; "not-kfp" is a web server without the API (404 text pages)."""

    mode: str = "kfp"
    deny_status: int = 403
    final_state: str = "SUCCEEDED"
    requests: list[Request] = field(default_factory=list)
    pipelines: dict[str, dict[str, Any]] = field(default_factory=dict)
    versions: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    experiments: dict[str, dict[str, Any]] = field(default_factory=dict)
    runs: dict[str, dict[str, Any]] = field(default_factory=dict)

    def start(self) -> FakeKfpApi:
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def sent(self, method: str, path: str) -> list[Request]:
        return [r for r in self.requests if r.method == method and r.path == API + path]

    # Routes: (method, path regex) -> handler(request, *path groups) -> JSON body.
    def routes(self) -> list[tuple[str, str, Callable[..., Any]]]:
        return [
            ("GET", r"/healthz", lambda _: {"commit_sha": "fake", "tag_name": "2.5.0", "multi_user": False}),
            ("GET", r"/pipelines", self.list_pipelines),
            ("POST", r"/pipelines/upload", self.upload_pipeline),
            ("POST", r"/pipelines/upload_version", self.upload_version),
            ("GET", r"/pipelines/([^/]+)/versions", self.list_versions),
            ("GET", r"/experiments", self.list_experiments),
            ("POST", r"/experiments", self.create_experiment),
            ("POST", r"/runs", self.create_run),
            ("GET", r"/runs/([^/:]+)", self.get_run),
        ]

    def dispatch(self, method: str, request: Request) -> Any:
        if self.mode == "deny":
            raise ApiError(self.deny_status, PERMISSION_DENIED, "User is not authorized to access the resource")
        if self.mode == "kfp" and request.path.startswith(API):
            for verb, pattern, route in self.routes():
                found = re.fullmatch(pattern, request.path[len(API) :])
                if verb == method and found:
                    return route(request, *found.groups())
            raise ApiError(404, NOT_FOUND, "Not Found")
        raise _NotFound

    def list_pipelines(self, request: Request) -> dict[str, Any]:
        namespace = request.arg("namespace") or ""  # no namespace: the shared pipelines
        found = [p for p in self.pipelines.values() if p["namespace"] == namespace and _matches(request, p)]
        return {"pipelines": found, "total_size": len(found)} if found else {}  # proto3 JSON drops empty fields

    def upload_pipeline(self, request: Request) -> dict[str, Any]:
        name, namespace = request.arg("name") or "", request.arg("namespace") or ""
        spec = _parsed_upload(request)
        if any(p["display_name"] == name and p["namespace"] == namespace for p in self.pipelines.values()):
            raise ApiError(409, ALREADY_EXISTS, f"Failed to create a pipeline. The name {name} already exists")
        pipeline = {"pipeline_id": str(uuid.uuid4()), "display_name": name, "name": name, "namespace": namespace}
        pipeline.update(description=request.arg("description") or "", created_at=CREATED_AT)
        self.pipelines[pipeline["pipeline_id"]] = pipeline
        # Like KFP: the upload also creates the pipeline's first version, named like the pipeline.
        self.versions[pipeline["pipeline_id"]] = [_version(pipeline["pipeline_id"], name, spec)]
        return pipeline

    def upload_version(self, request: Request) -> dict[str, Any]:
        pipeline_id, name = request.arg("pipelineid") or "", request.arg("name") or ""
        spec = _parsed_upload(request)
        if pipeline_id not in self.pipelines:
            raise ApiError(404, NOT_FOUND, f"Pipeline {pipeline_id} not found")
        if any(v["display_name"] == name for v in self.versions[pipeline_id]):
            raise ApiError(409, ALREADY_EXISTS, f"The name {name} already exists")
        version = _version(pipeline_id, name, spec)
        self.versions[pipeline_id].append(version)
        return version

    def list_versions(self, request: Request, pipeline_id: str) -> dict[str, Any]:
        if pipeline_id not in self.pipelines:
            raise ApiError(404, NOT_FOUND, f"Pipeline {pipeline_id} not found")
        found = list(reversed(self.versions[pipeline_id])) if request.arg("sort_by") == "created_at desc" else []
        found = found or self.versions[pipeline_id]
        size = int(request.arg("page_size") or 20)
        return {"pipeline_versions": found[:size], "total_size": len(found)}

    def list_experiments(self, request: Request) -> dict[str, Any]:
        namespace = request.arg("namespace") or ""
        found = [e for e in self.experiments.values() if e["namespace"] == namespace and _matches(request, e)]
        return {"experiments": found, "total_size": len(found)} if found else {}

    def create_experiment(self, request: Request) -> dict[str, Any]:
        body = request.json()
        experiment = {"experiment_id": str(uuid.uuid4()), "display_name": body["display_name"]}
        experiment.update(namespace=body.get("namespace") or "", created_at=CREATED_AT, storage_state="AVAILABLE")
        self.experiments[experiment["experiment_id"]] = experiment
        return experiment

    def create_run(self, request: Request) -> dict[str, Any]:
        body = request.json()
        if body.get("experiment_id") not in self.experiments:
            raise ApiError(404, NOT_FOUND, f"Experiment {body.get('experiment_id')} not found")
        reference = body.get("pipeline_version_reference") or {}
        known = [v["pipeline_version_id"] for v in self.versions.get(reference.get("pipeline_id", ""), [])]
        if reference.get("pipeline_version_id") not in known:
            raise ApiError(400, INVALID_ARGUMENT, "Failed to create a run: unknown pipeline version")
        run = {**body, "run_id": str(uuid.uuid4()), "state": "PENDING", "created_at": CREATED_AT}
        self.runs[run["run_id"]] = run
        return run

    def get_run(self, _: Request, run_id: str) -> dict[str, Any]:
        if run_id not in self.runs:
            raise ApiError(404, NOT_FOUND, f"Run {run_id} not found")
        return {**self.runs[run_id], "state": self.final_state, "finished_at": CREATED_AT}


def _matches(request: Request, item: dict[str, Any]) -> bool:
    """The display_name EQUALS predicate of a filter (kfp sends the operation as its enum number)."""
    raw = request.arg("filter")
    for predicate in json.loads(raw)["predicates"] if raw else []:
        assert predicate["operation"] in (1, "EQUALS"), predicate
        if item.get(predicate["key"]) != predicate["stringValue"]:
            return False
    return True


def _parsed_upload(request: Request) -> dict[str, Any]:
    try:
        _, content = request.files()["uploadfile"]
        spec = yaml.safe_load(content)
        if not isinstance(spec, dict) or "root" not in spec:
            raise ValueError("not a pipeline spec")
    except Exception as error:
        raise ApiError(400, INVALID_ARGUMENT, f"Failed to read the pipeline spec: {error}") from error
    return spec


def _version(pipeline_id: str, name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "pipeline_id": pipeline_id,
        "pipeline_version_id": str(uuid.uuid4()),
        "display_name": name,
        "name": name,
        "created_at": CREATED_AT,
        "pipeline_spec": spec,
    }


def _handler(api: FakeKfpApi) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *_: Any) -> None:
            pass

        def do_GET(self) -> None:  # noqa: N802
            self._answer("GET")

        def do_POST(self) -> None:  # noqa: N802
            self._answer("POST")

        def _answer(self, method: str) -> None:
            parts = urlsplit(self.path)
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            headers = {k.lower(): v for k, v in self.headers.items()}
            request = Request(method, parts.path, parse_qs(parts.query), headers, body)
            api.requests.append(request)
            try:
                self._send(200, json.dumps(api.dispatch(method, request)).encode())
            except ApiError as error:
                error_body = {"error": str(error), "code": error.code, "message": str(error), "details": []}
                self._send(error.status, json.dumps(error_body).encode())
            except _NotFound:  # a server without the API: Go's net/http text 404, as an ingress answers
                self._send(404, b"404 page not found\n", "text/plain; charset=utf-8")

        def _send(self, status: int, data: bytes, content_type: str = "application/json") -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    return Handler


class _NotFound(Exception):
    pass
