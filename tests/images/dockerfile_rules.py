"""Static rules for images/*/Dockerfile (no Docker engine runs here).

Each `check_*` function takes parsed stages and returns a list of problems (empty = passes), so the tests
run the same functions on the real Dockerfiles and on deliberately bad texts. ARG defaults are resolved
the way `docker build` does without --build-arg: global ARGs (before the first FROM) for FROM lines,
stage ARGs (re-declared or given a default inside the stage) for the stage's instructions.
"""

from __future__ import annotations

import io
import re
import shlex
from dataclasses import dataclass, field

from dockerfile_parse import DockerfileParser

SECRET_NAME = re.compile(r"SECRET|PASSWORD|PASSWD|TOKEN|ACCESS_KEY|API_KEY|PRIVATE_KEY|CREDENTIAL", re.IGNORECASE)
# Compilers, build systems and VCS: needed (if at all) in a builder stage, never in the shipped one.
BUILD_TOOL = re.compile(
    r"^(gcc|g\+\+|cc|c\+\+|clang|make|cmake|ninja(-build)?|build-essential|git|[\w.+]+-dev|[\w.+]+-devel)(=\S*)?$"
)
CREDENTIAL_FILE = re.compile(
    r"(^|/)(\.aws|\.ssh|\.docker|\.kube|kubeconfig|credentials|\.netrc|\.npmrc|\.pypirc|\.git-credentials|\.env"
    r"|id_rsa\S*|id_ed25519\S*|\S+\.pem|\S+\.key)(/|$)",
    re.IGNORECASE,
)
EXACT_VERSION = re.compile(r"\d+\.\d+\.\d+")
VARIABLE = re.compile(r"\$\{(\w+)\}|\$(\w+)")


@dataclass
class Instruction:
    name: str
    value: str  # with the stage's ARG defaults substituted
    line: int


@dataclass
class Stage:
    base: str  # resolved image reference, or an earlier stage's name
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)

    def values(self, name: str) -> list[str]:
        return [item.value for item in self.instructions if item.name == name]


@dataclass
class Dockerfile:
    global_args: dict[str, str | None]  # None: declared without a default
    stages: list[Stage]

    @property
    def final(self) -> Stage:
        return self.stages[-1]

    def declared_names(self) -> list[str]:
        """Every ARG and ENV name, global or in a stage."""
        names = list(self.global_args)
        for stage in self.stages:
            names += [_arg(value)[0] for value in stage.values("ARG")]
            names += [key for value in stage.values("ENV") for key in _env_keys(value)]
        return names


def _substitute(text: str, args: dict[str, str]) -> str:
    return VARIABLE.sub(lambda m: args.get(m.group(1) or m.group(2), m.group(0)), text)


def _arg(value: str) -> tuple[str, str | None]:
    name, _, default = value.strip().partition("=")
    return name.strip(), (default.strip().strip("\"'") if "=" in value else None)


def _env_keys(value: str) -> list[str]:
    tokens = shlex.split(value)
    if tokens and "=" not in tokens[0]:  # legacy `ENV NAME value`
        return [tokens[0]]
    return [token.partition("=")[0] for token in tokens]


def parse(text: str) -> Dockerfile:
    parser = DockerfileParser(fileobj=io.BytesIO(text.encode()))
    global_args: dict[str, str | None] = {}
    defaults: dict[str, str] = {}  # the global ARGs that have a value
    stages: list[Stage] = []
    stage_args: dict[str, str] = {}
    for item in parser.structure:
        name, value = item["instruction"], item["value"]
        if name == "COMMENT":
            continue
        if name == "FROM":
            tokens = [token for token in _substitute(value, defaults).split() if not token.startswith("--")]
            alias = tokens[2] if len(tokens) == 3 and tokens[1].lower() == "as" else None
            stages.append(Stage(base=tokens[0], name=alias))
            stage_args = {}
            continue
        if name == "ARG":
            arg_name, default = _arg(value)
            if not stages:
                global_args[arg_name] = default
                if default is not None:
                    defaults[arg_name] = _substitute(default, defaults)
                continue
            # `ARG X` in a stage brings the global default in; `ARG X=v` sets its own.
            resolved = default if default is not None else defaults.get(arg_name)
            if resolved is not None:
                stage_args[arg_name] = _substitute(resolved, stage_args)
        if stages:
            stages[-1].instructions.append(Instruction(name, _substitute(value, stage_args), item["startline"] + 1))
    return Dockerfile(global_args, stages)


def check_stages(dockerfile: Dockerfile) -> list[str]:
    """Multi-stage: a builder that has the tools, a final stage that has only the result."""
    count = len(dockerfile.stages)
    return [] if count >= 2 else [f"{count} stage(s): a builder stage and a runtime stage are required"]


def check_pinned_bases(dockerfile: Dockerfile) -> list[str]:
    """Every FROM names an earlier stage, a digest, or an exact x.y.z version tag (never `latest`)."""
    problems = []
    earlier: set[str] = set()
    for stage in dockerfile.stages:
        ref = stage.base
        if ref in earlier:
            pass
        elif "$" in ref:
            problems.append(f"FROM {ref}: a variable without a default")
        elif "@sha256:" not in ref:
            last = ref.rsplit("/", 1)[-1]
            tag = last.partition(":")[2]
            if not tag:
                problems.append(f"FROM {ref}: no tag (implicitly latest)")
            elif tag == "latest":
                problems.append(f"FROM {ref}: the latest tag moves")
            elif not EXACT_VERSION.search(tag):
                problems.append(f"FROM {ref}: tag {tag!r} is not an exact x.y.z version")
        if stage.name:
            earlier.add(stage.name)
    return problems


def check_non_root_user(dockerfile: Dockerfile) -> list[str]:
    """The final stage ends as a numeric non-root uid:gid (runAsNonRoot can only verify a number)."""
    users = dockerfile.final.values("USER")
    if not users:
        return ["final stage has no USER: it runs as root"]
    user = users[-1].strip()
    match = re.fullmatch(r"(\d+)(?::(\d+))?", user)
    if not match:
        return [f"USER {user}: not numeric (Kubernetes runAsNonRoot needs a numeric uid)"]
    if int(match.group(1)) == 0 or (match.group(2) is not None and int(match.group(2)) == 0):
        return [f"USER {user}: root"]
    return []


def check_no_build_tools_in_final(dockerfile: Dockerfile) -> list[str]:
    """No compiler, build system, VCS or -dev package is installed (or run) in the final stage."""
    problems = []
    for command in dockerfile.final.values("RUN"):
        for token in re.split(r"[\s;&|()]+", command):
            if BUILD_TOOL.match(token.strip("\"'")):
                problems.append(f"final stage RUN uses build tool {token!r}")
    return problems


def check_final_copies(dockerfile: Dockerfile) -> list[str]:
    """The final stage copies only from other stages: never the build context (source tree, secrets)."""
    problems = []
    final = dockerfile.final
    for item in final.instructions:
        if item.name == "ADD":
            problems.append(f"final stage ADD {item.value}: use COPY --from=<stage>")
        elif item.name == "COPY" and "--from=" not in item.value:
            problems.append(f"final stage COPY {item.value}: copies from the build context")
    return problems


def check_no_credential_files(dockerfile: Dockerfile) -> list[str]:
    """No stage copies a credential-looking file (a builder's layers are pushed with the cache)."""
    problems = []
    for stage in dockerfile.stages:
        for item in stage.instructions:
            if item.name not in ("COPY", "ADD"):
                continue
            sources = [token for token in shlex.split(item.value) if not token.startswith("--")][:-1]
            problems += [
                f"{item.name} {source}: a credential file" for source in sources if CREDENTIAL_FILE.search(source)
            ]
    return problems


def check_no_secret_names(dockerfile: Dockerfile) -> list[str]:
    """ARG and ENV values are visible in `docker history`: secrets go through Kubernetes Secrets."""
    return [f"{name}: a secret in ARG/ENV" for name in dockerfile.declared_names() if SECRET_NAME.search(name)]


def check_wheel_from_repo(dockerfile: Dockerfile) -> list[str]:
    """A builder stage copies the project and runs `pip wheel --no-deps .`; the final stage copies the
    builder's venv."""
    builders = [
        stage
        for stage in dockerfile.stages[:-1]
        if any(re.search(r"pip wheel\b[^&]*--no-deps[^&]*\s\.(\s|$)", run) for run in stage.values("RUN"))
        and any("pyproject.toml" in value.split()[:-1] for value in stage.values("COPY"))
    ]
    if not builders:
        return ["no builder stage copies pyproject.toml and runs `pip wheel --no-deps .`"]
    names = {stage.name for stage in builders}
    venv_copies = [v for v in dockerfile.final.values("COPY") if re.match(r"--from=(\S+) /opt/venv /opt/venv$", v)]
    if not any(v.split()[0].removeprefix("--from=") in names for v in venv_copies):
        return ["final stage does not COPY --from=<builder> /opt/venv /opt/venv"]
    return []


GENERAL_CHECKS = (
    check_stages,
    check_pinned_bases,
    check_non_root_user,
    check_no_build_tools_in_final,
    check_final_copies,
    check_no_credential_files,
    check_no_secret_names,
    check_wheel_from_repo,
)


def check_dockerfile(text: str) -> list[str]:
    """All the rules that hold for every image."""
    dockerfile = parse(text)
    return [problem for check in GENERAL_CHECKS for problem in check(dockerfile)]


def pinned_versions(dockerfile: Dockerfile, package: str) -> set[str]:
    """Versions `package==X` is pinned to in any RUN (local labels such as +cpu kept)."""
    pattern = re.compile(rf"(?<![\w.-]){re.escape(package)}==([\w.+!-]+)", re.IGNORECASE)
    return {m.group(1) for stage in dockerfile.stages for run in stage.values("RUN") for m in pattern.finditer(run)}


def labels(stage: Stage) -> dict[str, str]:
    result = {}
    for value in stage.values("LABEL"):
        for token in shlex.split(value):
            key, _, label = token.partition("=")
            result[key] = label
    return result


def torchvision_matches(torch_version: str, torchvision_version: str) -> bool:
    """torchvision 0.(N+15) is the release built for torch 2.N (pytorch/vision's compatibility table)."""
    torch_parts = torch_version.split("+")[0].split(".")
    vision_parts = torchvision_version.split("+")[0].split(".")
    return torch_parts[0] == "2" and vision_parts[0] == "0" and int(vision_parts[1]) == int(torch_parts[1]) + 15


def _dockerignore_regex(pattern: str) -> re.Pattern[str]:
    """A .dockerignore pattern (Go filepath.Match plus `**`) as a regex over a relative path."""
    out, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return re.compile(out)


def dockerignored(path: str, dockerignore: str) -> bool:
    """Whether the build context leaves `path` out: the last matching pattern wins, and a pattern that
    matches a directory leaves out everything under it."""
    parts = path.strip("/").split("/")
    candidates = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    ignored = False
    for line in dockerignore.splitlines():
        pattern = line.strip()
        if not pattern or pattern.startswith("#"):
            continue
        negate = pattern.startswith("!")
        regex = _dockerignore_regex(pattern.lstrip("!").strip("/"))
        if any(regex.fullmatch(candidate) for candidate in candidates):
            ignored = not negate
    return ignored
