"""Warm starts: many `scdpo` commands forked from one process that has imported everything once (issue 16).

A command spends its first seconds importing torch, diffusers, transformers and peft: 6.4-7.7 s on the project's
2-core CPU, and 8-15 s of set-up a command in the GPU pipeline, against about 1 s in a process that has imported
them already (docs/performance.md, "Warm starts"). A script that runs many short commands
(``benchmarks/emojiworld_alignment.sh``, a sweep of seeds) starts one server, which imports once; each command is
then forked from it, as ``gunicorn --preload`` serves requests or ``multiprocessing``'s forkserver starts workers::

    python -m scdpo.utils.warm start /tmp/scdpo.sock          # serves in the background, returns once it listens
    python -m scdpo.utils.warm run /tmp/scdpo.sock -- eval --model emojiworld ...   # = `scdpo eval ...`
    python -m scdpo.utils.warm stop /tmp/scdpo.sock           # waits for running commands, then exits

What a command gets: the client's arguments, working directory, environment and stdin/stdout/stderr (passed as
file descriptors), a process and a CUDA context of its own (the server never touches the GPU and refuses to serve
when an import initialised the CUDA driver: a forked child could not use it), and its exit code, which the client
returns. Ctrl-C at the client interrupts the command (SIGINT: its usual resume hint); a client killed otherwise
takes its command with it (SIGTERM). What commands share: the modules the server imported, with whatever those
read from the environment at import. So a client whose environment differs from the server's in a variable that a
library may read at import (:data:`IMPORT_TIME_PREFIXES`) runs cold, as ``python -m scdpo.cli``, with a one-line
note. The server exits after ``idle_exit`` seconds without a command, so a killed script leaves none behind; a client
with ``--cold-if-absent`` then runs its command cold. The server listens once it has imported what the pipeline's
first command needs (:data:`PRELOAD_FIRST`; ``--listen-after``) and imports the rest between requests: a command
forked before then imports what it needs itself, as a cold one does. The server serves its own user only
(``SO_PEERCRED``) on a socket only that user may open. The server's loop and the forked command:
:mod:`scdpo.utils.warm_server`.
"""

from __future__ import annotations

import argparse
import os
import select
import signal
import socket
import sys
import time

from scdpo.utils.warm_protocol import (IDLE_EXIT, IMPORT_TIME_PREFIXES, MAX_SOCKET_PATH, PRELOAD,  # noqa: F401
                                       PRELOAD_FIRST, answers, connect, receive, send)


def run(path: str, argv: list[str], wait: float = 60.0, cold_if_absent: bool = False) -> int:
    """``scdpo ARGV`` forked from the server at ``path`` (waiting up to ``wait`` s for it to listen); returns its exit
    code. Runs cold, replacing this process, where the server says the environment differs, or with
    ``cold_if_absent`` where no server answers or it stopped serving while the request waited."""
    try:
        sock = connect(path, wait)
    except FileNotFoundError:
        if not cold_if_absent:
            raise
        _exec_cold(argv, f"no server at {path}")
    fds = [fd if _is_open(fd) else os.open(os.devnull, os.O_RDWR) for fd in (0, 1, 2)]
    ignored = signal.getsignal(signal.SIGINT) == signal.SIG_IGN
    # Ctrl-C is only noted by the handler, whenever it comes, and relayed between two waits (_reply)
    presses = []
    before = None if ignored else signal.signal(signal.SIGINT, lambda *_: presses.append(1))
    try:
        send(sock, {"op": "run", "argv": argv, "cwd": os.getcwd(), "env": dict(os.environ), "sigint_ignored": ignored},
             fds)
        reply = _reply(sock, presses)
    except EOFError:
        print(f"scdpo warm: the server at {path} ended before the command did", file=sys.stderr)
        return 1
    finally:
        if before is not None:
            signal.signal(signal.SIGINT, before)
    if reply is None:  # a second Ctrl-C
        return 130
    if "gone" in reply:  # it stopped serving while this request waited: as if no server had been there
        if not cold_if_absent:
            raise RuntimeError(f"the warm server at {path} stopped serving: {reply['gone']}")
        _exec_cold(argv, f"the server at {path} stopped serving")
    if "cold" in reply:
        _exec_cold(argv, f"the environment differs from the server's in {', '.join(reply['cold'])}")
    if "error" in reply:
        print(f"scdpo warm: error: {reply['error']}", file=sys.stderr)
        return 2
    return int(reply["rc"])


def _reply(sock: socket.socket, presses: list) -> dict | None:
    """The server's answer, waited for in 0.2 s slices; between two, the first Ctrl-C noted in ``presses`` goes to
    the command (its resume hint) and a second one gives up waiting (None)."""
    relayed = False
    while True:
        if len(presses) > 1:
            return None
        if presses and not relayed:
            relayed = True
            try:
                sock.send(b"i")
            except OSError:  # the command has just ended: its exit code is on the way, or the server is gone
                pass
        if select.select([sock], [], [], 0.2)[0]:
            return receive(sock)[0]


def _exec_cold(argv: list[str], why: str):
    """Replace this process with ``python -m scdpo.cli ARGV``, with a one-line note of why."""
    print(f"scdpo warm: {why}; running cold", file=sys.stderr)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, [sys.executable, "-m", "scdpo.cli", *argv])


def _is_open(fd: int) -> bool:
    try:
        os.fstat(fd)
        return True
    except OSError:
        return False


def start(path: str, modules=PRELOAD, idle_exit: float = IDLE_EXIT, log: str | None = None,
          timeout: float = 600.0, target: str = "scdpo.cli:main", listen_after: int = PRELOAD_FIRST) -> int:
    """Start a server at ``path`` in the background (its own session; its output in ``log``, default
    ``path + ".log"``) and return its PID once it listens, after importing the first ``listen_after`` of ``modules``;
    raise RuntimeError with its reason if it will not. A server already answering there is reused (PID unknown: 0)."""
    if len(os.fsencode(path)) > MAX_SOCKET_PATH:
        raise ValueError(f"socket path {path!r} is {len(os.fsencode(path))} bytes, over the {MAX_SOCKET_PATH} a Unix "
                         f"socket allows: use a shorter one, e.g. /tmp/scdpo-warm.sock")
    if listen_after < 0:
        raise ValueError(f"--listen-after {listen_after}: give a number of modules, 0 or more (0: listen at once)")
    if answers(path):
        return 0
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the server: detached from the caller's terminal, job control and open files
        os.close(read)
        _serve_detached(path, modules, idle_exit, target, log or path + ".log", write, listen_after)
    os.close(write)
    chunks, deadline = [], time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not select.select([read], [], [], 0.2)[0]:
            continue
        chunk = os.read(read, 4096)
        if not chunk:
            break
        chunks.append(chunk)
    os.close(read)
    said = b"".join(chunks).decode()
    if said != "ok":
        raise RuntimeError(said or f"the warm server did not start (its log: {log or path + '.log'})")
    return pid


def _serve_detached(path: str, modules, idle_exit: float, target: str, log: str, write: int,
                    listen_after: int) -> None:
    """In the forked server process: a session of its own, /dev/null in, ``log`` out, no descriptor of the caller's
    but ``write`` (the readiness pipe, closed once it has said "ok" or why not). Never returns."""
    from scdpo.utils.warm_server import serve

    os.setsid()
    out = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.dup2(out, 1)
    os.dup2(out, 2)
    os.closerange(3, write)
    os.closerange(write + 1, os.sysconf("SC_OPEN_MAX") if hasattr(os, "sysconf") else 1024)
    sys.stdout = open(1, "w", buffering=1, closefd=False)
    sys.stderr = open(2, "w", buffering=1, closefd=False)
    said = []

    def ready(error):
        said.append(error)
        os.write(write, (error or "ok").encode())
        os.close(write)
    code = 0
    try:
        serve(path, modules, idle_exit, target, ready=ready, listen_after=listen_after)
    except BaseException as err:
        import traceback

        traceback.print_exc()
        code = 1
        if not said:  # e.g. the socket's folder does not exist: the caller gets the reason, not only the log
            ours = isinstance(err, (ValueError, RuntimeError))  # serve's own one-line errors
            ready(str(err) if ours else f"cannot serve at {path}: {type(err).__name__}: {err}")
    os._exit(code)


def stop(path: str) -> bool:
    """Ask the server at ``path`` to exit once its running commands end; False if none answered."""
    try:
        with connect(path, 0) as sock:
            send(sock, {"op": "stop"})
        return True
    except FileNotFoundError:
        return False


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m scdpo.utils.warm", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="op", required=True)
    p = sub.add_parser("start", help="start a server in the background; return when it is ready")
    p.add_argument("socket")
    p.add_argument("--preload", nargs="+", default=list(PRELOAD), metavar="MODULE",
                   help="modules the server imports, in this order (default: the pipeline's)")
    p.add_argument("--listen-after", type=int, default=None, metavar="N",
                   help=f"import the first N of them, then listen and import the rest between requests (0: listen at "
                        f"once; default: {PRELOAD_FIRST}, those of `scdpo cost train`, the pipeline's first command, "
                        f"for the default --preload, and every module of another list)")
    p.add_argument("--idle-exit", type=float, default=IDLE_EXIT, metavar="S",
                   help=f"exit after S seconds without a command (default {IDLE_EXIT:.0f})")
    p.add_argument("--log", default=None, help="the server's output (default: SOCKET.log)")
    p.add_argument("--target", default="scdpo.cli:main", metavar="MODULE:FUNCTION",
                   help="what a command runs, called with its arguments (default: scdpo's command line)")
    p = sub.add_parser("run", help="run `scdpo ARGS...` forked from the server")
    p.add_argument("--wait", type=float, default=60.0, metavar="S", help="seconds to wait for the server to listen")
    p.add_argument("--cold-if-absent", action="store_true",
                   help="where no server answers (not started, stopped, idle too long), run the command cold")
    p.add_argument("socket")
    p.add_argument("args", nargs=argparse.REMAINDER, help="-- then the scdpo arguments")
    sub.add_parser("stop", help="stop the server once its running commands end").add_argument("socket")
    args = parser.parse_args(argv)
    try:
        if args.op == "start":
            # PRELOAD_FIRST counts modules of PRELOAD: a list of one's own is imported whole before listening
            first = PRELOAD_FIRST if args.preload == list(PRELOAD) else len(args.preload)
            pid = start(args.socket, args.preload, args.idle_exit, args.log, target=args.target,
                        listen_after=first if args.listen_after is None else args.listen_after)
            print(pid or "already running")
            return 0
        if args.op == "run":
            rest = args.args[1:] if args.args[:1] == ["--"] else args.args
            return run(args.socket, rest, args.wait, args.cold_if_absent)
        return 0 if stop(args.socket) else 1
    except (OSError, RuntimeError, ValueError) as err:
        print(f"scdpo warm: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
