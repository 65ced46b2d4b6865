"""What the warm client (:mod:`scdpo.utils.warm`) and server (:mod:`scdpo.utils.warm_server`) share: their settings
and their protocol, one length-prefixed JSON message each way over a Unix socket, the client's stdin/stdout/stderr
passed with the request (SCM_RIGHTS)."""

from __future__ import annotations

import json
import os
import socket
import struct
import time

#: imported once by the server: the libraries and scdpo modules behind the pipeline's commands (the cost model, the data
#: build, the trainings, the evaluations, the comparison), found with ``python -X importtime``; one that fails to import
#: (an optional extra) is left to the commands. Not onnxruntime (the NSFW judge's, 0.1-0.2 s): its import starts a
#: thread, and a fork copies only the thread that forks. In the order the pipeline needs them: those of its first
#: command, ``scdpo cost train`` (torch._dynamo comes with its optimiser, scdpo.demo and scdpo.world.commands with
#: every command's parser); then the VAE round trip of its EmojiWorld pool (diffusers' AutoencoderKL, which brings
#: transformers, peft and accelerate); then the later stages'. After the first, packages come before their heavy
#: modules, so none takes long (the longest, transformers, 0.60-0.81 s on the 2-core CPU: benchmarks/warm_preload.py):
#: a request waits for one import at most
PRELOAD = ("torch", "torch._dynamo", "torch.utils.tensorboard", "numpy", "pandas", "scipy.stats", "scipy.optimize",
           "sklearn.metrics", "PIL.Image", "PIL.PngImagePlugin", "safetensors.torch", "scdpo.cli", "scdpo.demo",
           "scdpo.world.commands", "scdpo.cost.train",
           "accelerate", "transformers", "transformers.models", "transformers.modeling_utils", "peft.tuners.lora",
           "diffusers.utils", "diffusers.models.autoencoders.autoencoder_kl",
           "diffusers.models.unets.unet_2d_condition", "diffusers.schedulers", "diffusers.loaders.peft",
           "matplotlib", "matplotlib.pyplot", "pyarrow.parquet", "datasets", "datasets.io.parquet", "scdpo.models.t2i",
           "scdpo.models.sampling", "scdpo.models.guards.sld", "scdpo.models.guards.safree", "scdpo.data.builder",
           "scdpo.data.card", "scdpo.train.trainer", "scdpo.train.together", "scdpo.eval.run", "scdpo.eval.compare",
           "scdpo.eval.report", "scdpo.eval.judges", "scdpo.world.judge", "scdpo.world.minilm")
#: how many of PRELOAD the server imports before it listens: those every ``scdpo cost train`` imports. The rest are
#: imported one at a time while no request waits, during the cost stage, off the pipeline's critical path. A command
#: forked before one of them is imported imports it itself, as a cold one does (a fork never sees the server's later
#: imports): so the cost stage's VAE stack is left out too, paid by the stage in the seconds the server would have
#: taken before listening, and not at all where it loads no VAE (cached features, ``--vae none``, user data)
PRELOAD_FIRST = PRELOAD.index("scdpo.cost.train") + 1
#: environment variables that libraries read at import (sys.path, hash seed, Hugging Face's cache and offline
#: switches, torch's and inductor's settings, thread counts, tqdm's and matplotlib's defaults, the home, cache and
#: temporary folders, the locale): a client whose values differ from the server's runs cold. CUDA_* are not among
#: them: CUDA is initialised in each command, after the fork
IMPORT_TIME_PREFIXES = ("PYTHON", "LD_", "HF_", "HUGGINGFACE_", "TRANSFORMERS_", "DIFFUSERS_", "TORCH", "PYTORCH_",
                        "ACCELERATE_", "OMP_", "MKL_", "OPENBLAS_", "TQDM_", "MPL", "HOME", "XDG_", "TMPDIR", "LANG",
                        "LC_")
#: seconds without a command (and none running) after which the server exits
IDLE_EXIT = 600.0
#: the longest Unix socket path Linux takes (sun_path is 108 bytes with the terminating NUL)
MAX_SOCKET_PATH = 107
_HEADER = struct.Struct("!I")


def send(sock: socket.socket, message: dict, fds: list[int] = ()) -> None:
    """One length-prefixed JSON message, with ``fds`` passed along its first bytes (SCM_RIGHTS)."""
    data = json.dumps(message).encode()
    data = _HEADER.pack(len(data)) + data
    sent = socket.send_fds(sock, [data], list(fds)) if fds else 0
    if sent < len(data):  # (an empty send to a peer that has already answered and closed raises EPIPE)
        sock.sendall(data[sent:])


def receive(sock: socket.socket, max_fds: int = 0) -> tuple[dict, list[int]]:
    """One message (and up to ``max_fds`` file descriptors sent with its first bytes); EOFError if none came."""
    data, fds = socket.recv_fds(sock, 1 << 16, max_fds)[:2] if max_fds else (sock.recv(1 << 16), [])
    try:
        if not data:
            raise EOFError("the other side closed the connection")
        while len(data) < _HEADER.size or len(data) < _HEADER.size + _HEADER.unpack_from(data)[0]:
            more = sock.recv(1 << 16)
            if not more:
                raise EOFError("the connection closed in the middle of a message")
            data += more
        return json.loads(data[_HEADER.size:_HEADER.size + _HEADER.unpack_from(data)[0]]), fds
    except BaseException:
        for fd in fds:  # never leak what came with a message that was not read whole
            os.close(fd)
        raise


def peer_uid(sock: socket.socket) -> int | None:
    """The user ID of the process at the other end of a Unix socket (Linux's SO_PEERCRED); None where unknown."""
    if not hasattr(socket, "SO_PEERCRED"):
        return None
    _, uid, _ = struct.unpack("3i", sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i")))
    return uid


def connect(path: str, wait: float) -> socket.socket:
    """A connection to the server at ``path``, retried for ``wait`` seconds; FileNotFoundError when none answers.
    A server of another user is refused: it would see this client's environment and streams."""
    deadline = time.monotonic() + wait
    while True:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect(path)
            break
        except (FileNotFoundError, ConnectionRefusedError):
            sock.close()
            if time.monotonic() >= deadline:
                raise FileNotFoundError(f"no warm scdpo server at {path}: start one with "
                                        f"`python -m scdpo.utils.warm start {path}`") from None
            time.sleep(0.05)
    if peer_uid(sock) not in (None, os.getuid()):
        sock.close()
        raise PermissionError(f"the warm server at {path} runs as another user: use a socket in a folder only you can "
                              f"write (e.g. under `mktemp -d`)")
    return sock


def answers(path: str) -> bool:
    """Whether a server of this user answers at ``path``."""
    try:
        with connect(path, 0) as sock:
            send(sock, {"op": "ping"})
            return receive(sock)[0].get("ok", False)
    except (OSError, EOFError, ValueError, AttributeError):
        return False
