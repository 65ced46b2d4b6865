"""The warm server of :mod:`scdpo.utils.warm`: import once, then fork a child per command.

One thread, one ``selectors`` loop over the listening socket and each running command's connection: a request is read
with a timeout (a silent or malformed client costs at most that and is answered or dropped, never the server), the
command is forked with the server's signals blocked until the child has reset them, and each child is reaped with
``WNOHANG`` and its exit code sent back. A byte from a client is its Ctrl-C (SIGINT to the command's process group);
its end means it is gone (SIGTERM). Only a client of the server's own user is served (``SO_PEERCRED``). The server
listens once the first command's modules are imported (:data:`PRELOAD_FIRST`) and imports the rest one at a time
whenever no request waits, so a request waits for one module's import at most.
"""

from __future__ import annotations

import contextlib
import os
import select
import selectors
import signal
import socket
import sys
import time

from scdpo.utils.warm_protocol import (IDLE_EXIT, IMPORT_TIME_PREFIXES, PRELOAD, PRELOAD_FIRST, answers, peer_uid,
                                       receive, send)

#: seconds a client may take to send its request once connected
REQUEST_TIMEOUT = 5.0
#: the signals a command must not receive with the server's handlers (blocked across the fork)
_GUARDED = {signal.SIGINT, signal.SIGTERM, signal.SIGCHLD}


def changed_import_vars(server_env: dict, client_env: dict) -> list[str]:
    """The variables of :data:`IMPORT_TIME_PREFIXES` whose values differ between the two environments."""
    names = {k for k in {**server_env, **client_env} if k.startswith(IMPORT_TIME_PREFIXES)}
    return sorted(k for k in names if server_env.get(k) != client_env.get(k))


def child_environment(server_env: dict, set_by_imports: dict, client_env: dict) -> dict:
    """The client's environment with what the server's imports changed in the server's own replayed on it, for each
    variable where the client had what the server started with: as the imports would have changed it, run cold.
    ``set_by_imports`` maps a name to its value after the imports (None: they removed it)."""
    env = dict(client_env)
    for name, value in set_by_imports.items():
        if client_env.get(name) != server_env.get(name):
            continue
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value
    return env


def cuda_driver_initialised(maps: str | None = None, load=None) -> bool:
    """Whether this process has initialised the CUDA driver (``cuInit``), after which a forked child cannot use the
    GPU. A driver library that is only loaded answers CUDA_ERROR_NOT_INITIALIZED (3) to any call. ``maps`` (the text of
    /proc/self/maps) and ``load`` (``ctypes.CDLL``) are for tests."""
    if maps is None:
        try:
            with open("/proc/self/maps") as f:
                maps = f.read()
        except OSError:  # not Linux: no driver to check
            return False
    loaded = [line.split()[-1] for line in maps.splitlines() if "libcuda.so" in line]
    if not loaded:
        return False
    import ctypes

    count = ctypes.c_int()
    return (load or ctypes.CDLL)(loaded[0]).cuDeviceGetCount(ctypes.byref(count)) != 3


def import_module(name: str) -> str | None:
    """Import ``name``; why it failed ("name (Error: ...)"), or None. The CUDA check is NVML's while it imports, so a
    library that asks torch whether CUDA is available does not initialise the driver."""
    import importlib

    before = os.environ.get("PYTORCH_NVML_BASED_CUDA_CHECK")
    os.environ["PYTORCH_NVML_BASED_CUDA_CHECK"] = "1"
    try:
        importlib.import_module(name)
    except Exception as err:  # an optional extra that is not installed: the command imports it cold
        return f"{name} ({type(err).__name__}: {err})"
    finally:  # restored at once: a command forked between two imports must not inherit it (set_by_imports)
        if before is None:
            os.environ.pop("PYTORCH_NVML_BASED_CUDA_CHECK", None)
        else:
            os.environ["PYTORCH_NVML_BASED_CUDA_CHECK"] = before
    return None


def preload(modules=PRELOAD) -> tuple[list[str], str | None]:
    """Import ``modules``, skipping those that fail: (the ones that failed, the first one after whose import the CUDA
    driver was initialised, or None)."""
    failed, culprit = [], None
    for name in modules:
        failed += [why for why in [import_module(name)] if why]
        if culprit is None and cuda_driver_initialised():
            culprit = name
    return failed, culprit


def set_by_imports(started_with: dict) -> dict:
    """What the imports so far changed in this process's environment (transformers' verbosity, inductor's cache folder
    ...): name -> value, None where they removed it. Computed at each fork, as the imports go on between commands."""
    return {k: os.environ.get(k) for k in {**started_with, **os.environ} if os.environ.get(k) != started_with.get(k)}


def _driver_error(name: str) -> str:
    return (f"importing {name} initialised the CUDA driver, so a command forked after it could not use the GPU: "
            f"leave it out (--preload without it), or run the commands cold (plain `scdpo`)")


def exit_code(status: int) -> int:
    """A child's wait status as a shell reports it: its exit code, or 128 + the signal that killed it."""
    code = os.waitstatus_to_exitcode(status)
    return 128 - code if code < 0 else code


def serve(path: str, modules=PRELOAD, idle_exit: float = IDLE_EXIT, target: str = "scdpo.cli:main",
          ready=None, listen_after: int = PRELOAD_FIRST) -> None:
    """Import the first ``listen_after`` of ``modules``, listen on the Unix socket ``path`` and fork a child per ``run``
    request until a ``stop`` request, SIGTERM, or ``idle_exit`` seconds without a command; the rest of ``modules`` are
    imported one at a time while no request waits. ``ready(error)``: called once, with None when listening or with the
    reason it will not serve."""
    started_with = dict(os.environ)  # what the clients' environments are compared with: the server's own, as given
    started_in = os.getcwd()  # `python -m` put it first on sys.path; each command gets its own cwd there instead
    modules, failed = list(modules), []
    for name in modules[:listen_after]:
        failed += [why for why in [import_module(name)] if why]
        if cuda_driver_initialised():
            raise RuntimeError(_driver_error(name))
    pending = modules[listen_after:]
    listener = _listen(path)
    ours = os.stat(path)
    stopping = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append("SIGTERM"))
    if failed and not pending:
        _not_preloaded(failed)
    if ready:
        ready(None)
    sel = selectors.DefaultSelector()
    sel.register(listener, selectors.EVENT_READ)
    children: dict[int, socket.socket] = {}
    server = {"env": started_with, "cwd": started_in, "target": target, "sel": sel, "listener": listener,
              "path": path, "ours": ours,
              "children": children, "stopping": stopping, "pending": pending, "failed": failed}
    last = time.monotonic()
    try:
        while children or not stopping:
            # while modules remain, a request that waits goes first, and each moment without one imports one more
            events = sel.select(timeout=0 if pending and not stopping else 0.05)
            for key, _ in events:
                if key.fileobj is listener:
                    _accept(server)
                else:
                    _relay(key, sel)
            _reap(children, sel)
            if pending and not stopping and not events:
                _import_next(server)
            if stopping and listener.fileno() != -1:  # no new commands; the running ones finish
                _refuse_new(server, f"it was stopped ({stopping[0]})")
                sel.unregister(listener)
                _close(listener, path, ours)
            # idle time counts once the imports are done: a server still importing is not idle, and a short
            # --idle-exit would otherwise end it before the commands it imports for have come
            if children or (pending and not stopping):
                last = time.monotonic()
            elif time.monotonic() - last > idle_exit:
                break
    finally:
        sel.close()
        _close(listener, path, ours)


def _import_next(server: dict) -> None:
    """Import the next module left. If it initialised the CUDA driver, answer the requests already waiting with why
    and stop serving: the running commands, forked before it, finish; the next clients find no server."""
    name = server["pending"].pop(0)
    server["failed"] += [why for why in [import_module(name)] if why]
    if cuda_driver_initialised():
        server["pending"].clear()
        server["gone"] = _driver_error(name)
        print(f"scdpo warm: stopped serving: {server['gone']}", file=sys.stderr)
        server["stopping"].append("CUDA")  # serve's loop refuses new commands next, telling them this reason
    if not server["pending"] and server["failed"]:
        _not_preloaded(server["failed"])


def _refuse_new(server: dict, why: str) -> None:
    """Stop taking commands: the socket's path first, so that a client from now on finds no server (and runs cold
    with --cold-if-absent) instead of a listener about to close under it; then every client that connected before
    is answered ``{"gone": why}`` (the first reason given stays), not left to a connection reset."""
    server.setdefault("gone", why)
    _unlink_ours(server["path"], server["ours"])
    while select.select([server["listener"]], [], [], 0)[0]:
        _accept(server)


def _not_preloaded(failed: list[str]) -> None:
    print(f"scdpo warm: not preloaded (imported by each command instead): {'; '.join(failed)}", file=sys.stderr)


def _listen(path: str) -> socket.socket:
    """A listening socket at ``path``, readable and writable by this user alone. A socket file that no server answers
    on (one killed without cleaning up) is replaced; anything else at ``path`` is an error, never deleted."""
    import stat

    if os.path.lexists(path):
        if not stat.S_ISSOCK(os.lstat(path).st_mode):
            raise ValueError(f"{path} exists and is not a socket: choose another path for the warm server")
        if answers(path):
            raise ValueError(f"a warm server already listens at {path}: use it, or stop it first")
        os.unlink(path)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    umask = os.umask(0o177)
    try:
        listener.bind(path)
    finally:
        os.umask(umask)
    listener.listen(64)
    return listener


def _close(listener: socket.socket, path: str, ours: os.stat_result) -> None:
    """Close the listener and remove its socket file once, unless another server has bound that path since."""
    listener.close()
    _unlink_ours(path, ours)


def _unlink_ours(path: str, ours: os.stat_result) -> None:
    with contextlib.suppress(FileNotFoundError):
        now = os.lstat(path)
        if (now.st_dev, now.st_ino, now.st_ctime_ns) == (ours.st_dev, ours.st_ino, ours.st_ctime_ns):
            os.unlink(path)


def _signal_command(pid: int, sig: int) -> None:
    """``sig`` to a command's process group (its own subprocesses too, as a terminal's Ctrl-C reaches them); the
    command itself if its group is not set up yet. Only for a child not reaped yet, whose PID cannot be reused."""
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


def _relay(key, sel) -> None:
    """A running command's client spoke: a byte is its Ctrl-C, its end (EOF) means it is gone."""
    try:
        data = key.fileobj.recv(16)
    except OSError:
        data = b""
    _signal_command(key.data, signal.SIGINT if data else signal.SIGTERM)
    if not data:
        sel.unregister(key.fileobj)


def _accept(server: dict) -> None:
    conn, _ = server["listener"].accept()
    fds = []
    try:
        conn.settimeout(REQUEST_TIMEOUT)
        if peer_uid(conn) not in (None, os.getuid()):
            return  # another user's client: it would run commands as this user
        request, fds = receive(conn, max_fds=3)
        conn.settimeout(None)
        op = request.get("op") if isinstance(request, dict) else None
        if op == "stop":
            server["stopping"].append("stop")
        elif op == "ping":
            send(conn, {"ok": "gone" not in server})
        elif op == "run" and _well_formed(request) and len(fds) == 3:
            cold = changed_import_vars(server["env"], request["env"])
            if "gone" in server:  # the client runs as it would with no server
                send(conn, {"gone": server["gone"]})
            elif cold:
                send(conn, {"cold": cold})
            else:
                request["env"] = child_environment(server["env"], set_by_imports(server["env"]), request["env"])
                _fork(server, request, fds, conn)
                conn = None  # the command's now
        else:
            send(conn, {"error": "a malformed request: use `python -m scdpo.utils.warm run SOCKET -- ARGS`"})
    except (EOFError, OSError, ValueError):  # a client that went silent, closed early or sent no JSON
        pass
    finally:
        for fd in fds:
            os.close(fd)
        if conn is not None:
            conn.close()


def _well_formed(request: dict) -> bool:
    return (isinstance(request.get("argv"), list) and all(isinstance(a, str) for a in request["argv"])
            and isinstance(request.get("cwd"), str) and isinstance(request.get("env"), dict)
            and all(isinstance(k, str) and isinstance(v, str) for k, v in request["env"].items()))


def _fork(server: dict, request: dict, fds: list[int], conn: socket.socket) -> None:
    # the server's handlers must never run in the command: its signals wait, blocked, until the child has reset them
    old = signal.pthread_sigmask(signal.SIG_BLOCK, _GUARDED)
    try:
        pid = os.fork()
        if pid == 0:
            _child(request, fds, conn, server)
        with contextlib.suppress(OSError):  # (the child does the same: whichever runs first)
            os.setpgid(pid, pid)
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)
    server["children"][pid] = conn
    server["sel"].register(conn, selectors.EVENT_READ, data=pid)


def _child(request: dict, fds: list[int], conn: socket.socket, server: dict) -> None:
    """In the forked child: become the client's command, run it, and exit with its code. Never returns."""
    code = 1
    try:
        # Ctrl-C as the client takes it: a shell's background job ignores SIGINT, and so would the command run cold
        signal.signal(signal.SIGINT, signal.SIG_IGN if request.get("sigint_ignored") else signal.default_int_handler)
        for sig in (signal.SIGTERM, signal.SIGCHLD):
            signal.signal(sig, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, _GUARDED)
        with contextlib.suppress(OSError):
            os.setpgid(0, 0)  # its own process group, which the server signals
        # the server's sockets and selector are not the command's
        for sock in (server["listener"], conn, *server["children"].values()):
            sock.close()
        server["sel"].close()
        for i, fd in enumerate(fds):
            os.dup2(fd, i)
            os.close(fd)
        fds.clear()
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        _streams()
        # as `python -m` sets them: the working directory first on the path (where the server's was), the arguments
        if sys.path and sys.path[0] in (server["cwd"], ""):
            sys.path[0] = request["cwd"]
        sys.argv = ["scdpo", *request["argv"]]
        result = _target(server["target"])(list(request["argv"]))
        code = result if isinstance(result, int) else 0
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
        if isinstance(exit_.code, str):
            print(exit_.code, file=sys.stderr)
    except KeyboardInterrupt:
        code = 130
    except BaseException:
        import traceback

        traceback.print_exc()
    finally:
        try:
            _shut_down()
        finally:
            os._exit(code)


def _streams() -> None:
    """New sys.stdin/stdout/stderr over the client's descriptors, buffered as Python buffers its own: stdout by
    lines on a terminal or with PYTHONUNBUFFERED set (the environment's: ``python -u`` is not seen), else by blocks;
    stderr by lines, its unencodable characters backslash-escaped."""
    unbuffered = bool(os.environ.get("PYTHONUNBUFFERED"))
    sys.stdin = open(0, closefd=False, encoding=sys.__stdin__.encoding if sys.__stdin__ else None)
    out = open(1, "w", closefd=False, buffering=1 if os.isatty(1) or unbuffered else -1,
               encoding=sys.__stdout__.encoding if sys.__stdout__ else None)
    if unbuffered:
        out.reconfigure(write_through=True)
    sys.stdout = out
    sys.stderr = open(2, "w", closefd=False, buffering=1, errors="backslashreplace",
                      encoding=sys.__stderr__.encoding if sys.__stderr__ else None)


def _shut_down() -> None:
    """What interpreter shutdown would do before the exit: join the non-daemon threads, run the atexit functions
    (logging's flush, open writers), flush the streams."""
    import atexit
    import threading

    with contextlib.suppress(Exception):
        threading._shutdown()
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()


def _target(spec: str):
    """``"module:function"``: the function a child calls with the client's arguments (``scdpo.cli:main``)."""
    import importlib

    module, _, name = spec.partition(":")
    return getattr(importlib.import_module(module), name)


def _reap(children: dict, sel) -> None:
    while children:
        pid, status = os.waitpid(-1, os.WNOHANG)
        if pid == 0:
            return
        conn = children.pop(pid, None)
        if conn is None:
            continue
        with contextlib.suppress(OSError):  # the client may be gone
            send(conn, {"rc": exit_code(status)})
        if conn in {key.fileobj for key in sel.get_map().values()}:
            sel.unregister(conn)
        conn.close()

