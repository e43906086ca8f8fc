"""`vllm serve` of a policy checkpoint as a child process on loopback: the server the served evaluation, the demo,
the tests and the benchmarks talk to.

On a GPU node a researcher runs `vllm serve CHECKPOINT` themselves; this module runs the same command on the CPU
build in `.venv-vllm` (`make vllm-env`), with the settings that build needs:
- `--dtype float32` (`auto` serves fp32 weights as bf16 on CPU, so greedy outputs would differ from transformers');
- a KV cache sized in bytes (`VLLM_CPU_KVCACHE_SPACE`, GiB): on CPU `--gpu-memory-utilization` is a share of host RAM
  and its default (0.92) fails on a shared machine;
- `--enforce-eager` (no graph capture: ready in ~30 s instead of minutes);
- `--limit-mm-per-prompt` with no video (the policy sees page images only);
- `VLLM_CACHE_ROOT` inside the project's cache folder.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx

REPO_ROOT = Path(__file__).resolve().parents[2]
VLLM_VENV = REPO_ROOT / ".venv-vllm"


def vllm_python() -> Path:
    """The interpreter of the vLLM environment: this one when vLLM is importable here, else `.venv-vllm`'s."""
    try:
        import vllm  # noqa: F401

        return Path(sys.executable)
    except ImportError:
        pass
    candidate = VLLM_VENV / "bin" / "python"
    if not candidate.exists():
        raise FileNotFoundError(f"no vLLM environment: run `make vllm-env` (creates {VLLM_VENV})")
    return candidate


def cpu_environment(cache_dir: Path | None = None, kv_cache_gib: int = 1) -> dict[str, str]:
    """Environment variables for vLLM's CPU build (added to the current environment)."""
    cache = Path(cache_dir) if cache_dir else Path(os.environ.get("UNIDOC_CACHE_DIR", REPO_ROOT / ".cache"))
    return {
        "VLLM_CACHE_ROOT": str(cache / "vllm"),
        "VLLM_CPU_KVCACHE_SPACE": str(int(kv_cache_gib)),
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "VLLM_NO_USAGE_STATS": "1",
        "DO_NOT_TRACK": "1",
    }


def serve_command(
    model: str | Path,
    port: int,
    *,
    host: str = "127.0.0.1",
    served_model_name: str | None = None,
    max_model_len: int = 8192,
    max_images: int = 16,
    seed: int = 0,
    extra_args: tuple[str, ...] = (),
) -> list[str]:
    command = [
        str(Path(vllm_python()).parent / "vllm"),
        "serve",
        str(model),
        "--host",
        host,
        "--port",
        str(port),
        "--dtype",
        "float32",
        "--enforce-eager",
        "--max-model-len",
        str(max_model_len),
        "--limit-mm-per-prompt",
        json.dumps({"image": max_images, "video": 0}),
        "--seed",
        str(seed),
    ]
    if served_model_name:
        command += ["--served-model-name", served_model_name]
    return command + list(extra_args)


class VllmServer:
    """Start `vllm serve` on loopback, wait until `/v1/models` answers, stop it (and its engine process) on exit.

    Its output goes to `log_path`; a server that exits or does not answer within `ready_timeout_s` raises with the
    log's last lines.
    """

    def __init__(
        self,
        model: str | Path,
        port: int,
        log_path: Path,
        *,
        ready_timeout_s: float = 240.0,
        kv_cache_gib: int = 1,
        cache_dir: Path | None = None,
        **serve_options,
    ):
        self.command = serve_command(model, port, **serve_options)
        self.host = serve_options.get("host", "127.0.0.1")
        self.port = port
        self.log_path = Path(log_path)
        self.ready_timeout_s = ready_timeout_s
        self.env = {**os.environ, **cpu_environment(cache_dir, kv_cache_gib)}
        self.process: subprocess.Popen | None = None

    @property
    def base_url(self) -> str:
        """The OpenAI-compatible root (`.../v1`), as `--policy-url` takes it."""
        return f"http://{self.host}:{self.port}/v1"

    def _log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def start(self) -> VllmServer:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            self.command, stdout=log, stderr=subprocess.STDOUT, env=self.env, start_new_session=True
        )
        log.close()
        deadline = time.monotonic() + self.ready_timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"vllm serve exited with {self.process.returncode}:\n{self._log_tail()}")
            try:
                if httpx.get(f"{self.base_url}/models", timeout=2.0).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(1.0)
        self.stop()
        raise TimeoutError(f"vllm serve not ready after {self.ready_timeout_s:.0f} s:\n{self._log_tail()}")

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, 15)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, 9)
            self.process.wait(timeout=10)

    def __enter__(self) -> VllmServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
