"""Run Python in a child process with Triton's interpreter on, or with its compiler.

Triton reads ``TRITON_INTERPRET`` when it decorates a kernel, so the mode of a process is
fixed once fused_ops is imported. Counting bytes and recording launches need the
interpreter; compiling ahead of time needs it off, because once an interpreted kernel
has run, the interpreter leaves ``triton.language`` patched for the rest of its process.
The instruments therefore run the other mode in a child process, always through
:func:`run_python`.

Example:
    >>> done = run_python(["-c", "import os; print(os.environ['TRITON_INTERPRET'])"], interpret=True,
    ...                   capture_output=True, text=True)
    >>> done.stdout
    '1\\n'
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping, Sequence


def environment(
    interpret: bool, extra_pythonpath: Sequence[str] = (), overrides: Mapping[str, str] | None = None
) -> dict[str, str]:
    """This process's environment for a child that interprets (``interpret``) or compiles.

    Args:
        interpret: True sets ``TRITON_INTERPRET=1``; False removes it.
        extra_pythonpath: folders put in front of ``PYTHONPATH``.
        overrides: further variables to set.

    Returns:
        A new dict; ``TRITON_DEFAULT_FP_FUSION`` defaults to 1 (Triton 3.9 warns on every
        compile until it is set, and 1 keeps its default, FMA fusion).
    """
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    if interpret:
        env["TRITON_INTERPRET"] = "1"
    env.setdefault("TRITON_DEFAULT_FP_FUSION", "1")
    if extra_pythonpath:
        env["PYTHONPATH"] = os.pathsep.join([*extra_pythonpath, *filter(None, [env.get("PYTHONPATH")])])
    env.update(overrides or {})
    return env


def run_python(
    args: Sequence[str],
    interpret: bool,
    extra_pythonpath: Sequence[str] = (),
    overrides: Mapping[str, str] | None = None,
    check: bool = False,
    **kwargs,
) -> subprocess.CompletedProcess:
    """``python <args>`` in a child process, interpreted or compiled (see :func:`environment`).

    Args:
        args: the arguments after the interpreter, e.g. ``[script, "--flag"]``.
        interpret: whether the child runs Triton's interpreter.
        extra_pythonpath: folders put in front of the child's ``PYTHONPATH``.
        overrides: further environment variables.
        check: raise :class:`subprocess.CalledProcessError` on a non-zero exit status.
        **kwargs: passed to :func:`subprocess.run` (``capture_output``, ``text``, ...).

    Returns:
        The finished process.
    """
    env = environment(interpret, extra_pythonpath, overrides)
    return subprocess.run([sys.executable, *args], env=env, check=check, **kwargs)


def start_python(
    args: Sequence[str], interpret: bool, extra_pythonpath: Sequence[str] = (), **kwargs
) -> subprocess.Popen:
    """Like :func:`run_python`, without waiting (to run several children at once)."""
    return subprocess.Popen([sys.executable, *args], env=environment(interpret, extra_pythonpath), **kwargs)
