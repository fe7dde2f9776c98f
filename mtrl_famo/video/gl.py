"""Choosing MuJoCo's off-screen OpenGL backend (EGL, then OSMesa), each probed in a fresh process."""

from __future__ import annotations

import os
import subprocess
import sys

from mtrl_famo.video import VideoError

GL_BACKENDS = ("egl", "osmesa")  # tried in this order when MUJOCO_GL is not set
KNOWN_GL = ("egl", "osmesa", "glfw", "glx")
GL_INSTALL = ("install EGL (Debian: apt-get install libegl1 libgl1) or OSMesa (Debian: apt-get install libosmesa6)")

# `import mujoco` picks its GLContext class from MUJOCO_GL, as rendering in this process will.
# A warning while making the context (GLFW without a display warns instead of raising) is a failure.
_PROBE = ("import warnings, mujoco; warnings.simplefilter('error'); "
          "c = mujoco.GLContext(16, 16); c.make_current(); c.free()")
_chosen_backend: str | None = None
_user_failure: tuple[str, str] | None = None  # (MUJOCO_GL set by the user, why it cannot render)
_FAILURE_ENV = "MTRL_FAMO_MUJOCO_GL_FAILURE"  # _user_failure handed to child processes: "backend<TAB>reason"


def probe_backend(backend: str) -> str | None:
    """``None`` if MuJoCo can make an off-screen context with ``backend`` (in a fresh process), else why not."""
    env = dict(os.environ, MUJOCO_GL=backend)
    if backend in ("egl", "osmesa"):
        env.setdefault("PYOPENGL_PLATFORM", backend)
    try:
        proc = subprocess.run([sys.executable, "-c", _PROBE], env=env, capture_output=True, text=True,
                              timeout=120)
    except subprocess.TimeoutExpired:
        return "timed out creating a context"
    if proc.returncode == 0:
        return None
    lines = [ln.strip() for ln in proc.stderr.strip().splitlines() if ln.strip()]
    reason = lines[-1] if lines else f"exit code {proc.returncode}"
    return reason if len(reason) <= 160 else reason[:157] + "..."


def guard_user_backend() -> None:
    """Let a command that may render nothing run when the user's ``MUJOCO_GL`` cannot make a context.

    ``import mujoco`` (which Meta-World does) fails outright when ``MUJOCO_GL`` names a backend
    this machine lacks (``osmesa`` without OSMesa). If the one set is not usable, this process
    imports MuJoCo with ``MUJOCO_GL=disable`` instead, and :func:`choose_gl_backend` reports the
    failure if the command then asks for rendering. Costs one probe, only when ``MUJOCO_GL`` is set.
    """
    global _user_failure
    inherited = os.environ.get(_FAILURE_ENV)
    if _user_failure is None and inherited:  # a sweep's worker process: its parent probed already
        user, _, reason = inherited.partition("\t")
        _user_failure = (user, reason)
    user = os.environ.get("MUJOCO_GL", "").strip().lower()
    if not user or user in ("disable", "disabled", "off", "false", "0"):
        return
    reason = probe_backend(user) if user in KNOWN_GL else "not a MuJoCo rendering backend"
    if reason is not None:
        _user_failure = (user, reason)
        os.environ["MUJOCO_GL"] = "disable"
        # Worker processes (a sweep's joblib workers) inherit both: they render nothing either, and
        # a video asked for there reports the user's MUJOCO_GL, not "disable".
        os.environ[_FAILURE_ENV] = f"{user}\t{reason}"


def choose_gl_backend() -> str:
    """Pick MuJoCo's off-screen OpenGL backend and export it as ``MUJOCO_GL`` for this process.

    A ``MUJOCO_GL`` set by the user is respected (and checked); otherwise EGL, then OSMesa.
    Each candidate is tried in a fresh Python process, because a failed OpenGL
    initialisation cannot be undone inside one.

    :raises VideoError: naming the backends tried, why they failed, and what to install.
    """
    global _chosen_backend
    if _chosen_backend is not None:
        return _chosen_backend
    user = os.environ.get("MUJOCO_GL", "").strip().lower()
    if _user_failure is not None:
        user, reason = _user_failure
        if user in KNOWN_GL:
            raise VideoError(f"no off-screen OpenGL for rendering: tried MUJOCO_GL={user} ({reason}), set in your "
                             f"environment; {GL_INSTALL}, or unset MUJOCO_GL to try {' then '.join(GL_BACKENDS)}")
    if user and user not in KNOWN_GL:
        raise VideoError(f"MUJOCO_GL={user!r} is not a MuJoCo rendering backend; allowed: {', '.join(KNOWN_GL)} "
                         f"(or unset it to try {' then '.join(GL_BACKENDS)})")
    failures = []
    for backend in [user] if user else GL_BACKENDS:
        reason = probe_backend(backend)
        if reason is None:
            os.environ["MUJOCO_GL"] = backend
            if backend in ("egl", "osmesa"):
                os.environ.setdefault("PYOPENGL_PLATFORM", backend)
            _chosen_backend = backend
            return backend
        failures.append(f"MUJOCO_GL={backend} ({reason})")
    if user:
        raise VideoError(f"no off-screen OpenGL for rendering: tried {failures[0]}, set in your environment; "
                         f"{GL_INSTALL}, or unset MUJOCO_GL to try {' then '.join(GL_BACKENDS)}")
    raise VideoError(f"no off-screen OpenGL for rendering: tried {'; '.join(failures)}; {GL_INSTALL}")


