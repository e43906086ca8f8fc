"""Each fused MaxSim kernel this CPU runs equals the float64 definition on awkward sizes; the scorer falls back to
torch. On x86-64 with AVX2 (every CI machine here) at least the AVX2 kernel runs, so these tests do not skip."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from search_engine import maxsim
from search_engine.maxsim import (
    PANEL_LANES,
    MaxSimScorer,
    available_kernels,
    kernel_available,
    maxsim_reference,
    pad_queries,
)

needs_kernel = pytest.mark.skipif(not kernel_available(), reason="fused kernel not built or the CPU runs none")
KERNEL_CHECK = Path(__file__).with_name("kernel_check.c")
# Every kernel the CPU runs, not only the one chosen by default (an AVX-512 machine also runs the AVX2 kernel).
KERNELS = available_kernels() or ("none",)


def _corpus(rng: np.random.Generator, lengths: list[int], dim: int) -> tuple[np.ndarray, list[np.ndarray]]:
    pages = [rng.standard_normal((n, dim)).astype(np.float16) for n in lengths]
    return np.concatenate(pages), pages


# Page lengths below, at and above a tile of 16 vectors, with runs of equal lengths and singletons.
LENGTHS = [1, 15, 16, 17, 17, 17, 33, 100, 100, 47]


def test_x86_64_machines_with_avx2_run_a_kernel():
    import platform

    flags = open("/proc/cpuinfo").read().split() if platform.machine() == "x86_64" else []
    if not {"avx2", "fma", "f16c"} <= set(flags):
        pytest.skip("not an x86-64 CPU with AVX2/FMA/F16C")
    assert maxsim._kernel is not None, "the extension is not built: python setup.py build_ext --inplace"
    assert "avx2" in available_kernels()
    assert ("avx512" in available_kernels()) == ("avx512f" in flags)
    assert set(available_kernels()) <= set(maxsim._kernel.compiled())


@needs_kernel
@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("dim", [128, 40])
@pytest.mark.parametrize("residency", ["fp16", "fp32", "mmap"])
def test_kernel_equals_the_definition_for_odd_sizes(kernel: str, dim: int, residency: str):
    rng = np.random.default_rng(dim)
    shard, pages = _corpus(rng, LENGTHS, dim)
    # 1..40 query vectors: one block, full blocks of 13 and 14, uneven splits (15, 25, 29) and several blocks.
    sizes = (1, 7, 13, 14, 15, 25, 29, 40)
    queries = [rng.standard_normal((n, dim)).astype(np.float32) / np.sqrt(dim) for n in sizes]
    expected = np.array([[maxsim_reference(q, p) for p in pages] for q in queries])
    for threads in (1, 2):
        scorer = MaxSimScorer([shard], [LENGTHS], num_threads=threads, residency=residency, kernel=kernel)
        assert scorer.uses_kernel and scorer.kernel == kernel
        # One query per call (a single block or two) and all of them in one batch (more than 4 blocks).
        single = np.concatenate([scorer.scores(pad_queries([q])) for q in queries])
        np.testing.assert_allclose(single, expected, rtol=0, atol=1e-4)
        np.testing.assert_allclose(scorer.scores(pad_queries(queries)), expected, rtol=0, atol=1e-4)
        subset = np.array([9, 3, 3, 0, 6])
        np.testing.assert_allclose(scorer.scores_of(pad_queries(queries), subset), expected[:, subset], atol=1e-4)


@needs_kernel
@pytest.mark.parametrize("kernel_name", KERNELS)
def test_kernel_and_torch_path_agree_with_negative_scores(kernel_name: str):
    # All dot products negative: the zero-padded lanes of a page's last tile must never win the max (page lengths
    # with a tail of 5 lanes, in the first half of a tile, and 9, in the second).
    rng = np.random.default_rng(7)
    shard, pages = _corpus(rng, [5, 25], 32)
    shard = np.abs(shard)
    query = -np.abs(rng.standard_normal((1, 3, 32)).astype(np.float32))
    kernel = MaxSimScorer([shard], [[5, 25]], kernel=kernel_name).scores(query)
    torch_path = MaxSimScorer([shard], [[5, 25]], use_kernel=False).scores(query)
    expected = [maxsim_reference(query[0], shard[:5]), maxsim_reference(query[0], shard[5:])]
    assert max(expected) < 0
    np.testing.assert_allclose(kernel[0], expected, rtol=0, atol=1e-4)
    np.testing.assert_allclose(torch_path[0], expected, rtol=0, atol=1e-4)


@needs_kernel
def test_kernel_refuses_pages_outside_its_buffer():
    dim = 8
    panels = np.zeros(PANEL_LANES * dim, dtype=np.float16)
    query_t = np.zeros((dim, 2), dtype=np.float32)
    maxes = np.zeros((1, 2), dtype=np.float32)
    lengths = np.array([17], dtype=np.int64)  # two tiles, but the buffer holds one
    with pytest.raises(ValueError, match="page 0 lies outside the panel buffer"):
        maxsim._kernel.score_panels(query_t, 2, dim, panels, True, np.zeros(1, np.int64), lengths, maxes)
    with pytest.raises(ValueError, match="offsets, lengths and maxes disagree"):
        maxsim._kernel.score_panels(query_t, 2, dim, panels, True, np.zeros(1, np.int64), lengths, maxes[:, :1])
    with pytest.raises(ValueError, match="'sse9' is not compiled in"):
        maxsim._kernel.score_panels(query_t, 2, dim, panels, True, np.zeros(1, np.int64), lengths, maxes, "sse9")
    rows = np.zeros((16, dim), dtype=np.float16)  # 16 vectors, row-major: page 0 claims 17
    with pytest.raises(ValueError, match="page 0 lies outside the rows"):
        maxsim._kernel.score_rows(query_t, 2, dim, rows, np.zeros(1, np.int64), lengths, maxes)
    with pytest.raises(RuntimeError, match="'sse9' is not available here"):
        MaxSimScorer([panels.reshape(-1, dim)], [[PANEL_LANES]], kernel="sse9")


@needs_kernel
@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("count", [1, 15, 16, 60])
def test_dense_scores_are_every_dot_product(kernel: str, count: int):
    # The query-centroid scores of the approximate mode: every (query vector, vector) product, padding lanes of the
    # last tile never written, query vectors in one block (7) or several (29).
    rng = np.random.default_rng(count)
    dim = 40
    vectors = rng.standard_normal((count, dim)).astype(np.float32)
    panels = torch.zeros((1, -(-count // PANEL_LANES), dim, PANEL_LANES))
    maxsim.write_panels(torch.from_numpy(vectors)[None], panels)
    for rows in (7, 29):
        query = rng.standard_normal((rows, dim)).astype(np.float32)
        scores = np.full((rows, count), np.nan, dtype=np.float32)
        maxsim._kernel.dense_scores(np.ascontiguousarray(query.T), rows, dim, panels.numpy(), count, scores, kernel)
        np.testing.assert_allclose(scores, query.astype(np.float64) @ vectors.T, rtol=0, atol=1e-4)
    with pytest.raises(ValueError, match="panels must hold"):
        maxsim._kernel.dense_scores(np.ascontiguousarray(query.T), rows, dim, panels.numpy(), count + 16, scores)
    with pytest.raises(ValueError, match="scores must be float32"):
        maxsim._kernel.dense_scores(np.ascontiguousarray(query.T), rows, dim, panels.numpy(), count, scores[1:])


def test_without_the_kernel_the_torch_path_scores_and_requiring_it_fails(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(maxsim, "_kernel", None)
    assert not kernel_available()
    rng = np.random.default_rng(3)
    shard, pages = _corpus(rng, [17, 3], 24)
    query = rng.standard_normal((1, 4, 24)).astype(np.float32)
    scorer = MaxSimScorer([shard], [[17, 3]], residency="fp16")
    assert not scorer.uses_kernel
    np.testing.assert_allclose(scorer.scores(query)[0], [maxsim_reference(query[0], p) for p in pages], atol=1e-4)
    with pytest.raises(RuntimeError, match="fused MaxSim kernel is not available"):
        MaxSimScorer([shard], [[17, 3]], use_kernel=True)


def test_automatic_choice_uses_the_kernel_in_every_residency():
    shard, _ = _corpus(np.random.default_rng(4), [3], 8)
    chosen = {
        residency: MaxSimScorer([shard], [[3]], residency=residency).uses_kernel
        for residency in ("fp16", "fp32", "mmap")
    }
    assert chosen == {"fp16": kernel_available(), "fp32": kernel_available(), "mmap": kernel_available()}


def _build_and_run_check(compiler: str, tmp_path: Path, runner: list[str], extra: list[str]) -> str:
    binary = tmp_path / "kernel_check"
    subprocess.run([compiler, "-O3", *extra, "-o", str(binary), str(KERNEL_CHECK), "-lm"], check=True)
    done = subprocess.run([*runner, str(binary)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_kernels_standalone_equal_the_definition_natively(tmp_path: Path):
    # The kernels without Python (the build the aarch64 check below uses), on this machine's own compiler.
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        pytest.skip("no C compiler")
    out = _build_and_run_check(compiler, tmp_path, [], [])
    names = [line.split()[0] for line in out.splitlines()]
    assert names == list(available_kernels()) and all(line.endswith(" 0") for line in out.splitlines()), out


def test_neon_kernel_equals_the_definition_under_qemu(tmp_path: Path):
    # No Arm machine here: the NEON kernel is cross-compiled and run under user-mode emulation where the tools are
    # installed (apt: gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user).
    compiler, emulator = shutil.which("aarch64-linux-gnu-gcc"), shutil.which("qemu-aarch64")
    if compiler is None or emulator is None:
        pytest.skip("aarch64 cross compiler or qemu-aarch64 not installed")
    out = _build_and_run_check(compiler, tmp_path, [emulator], ["-static"])
    assert out.strip() == "neon max_abs_error 0", out
