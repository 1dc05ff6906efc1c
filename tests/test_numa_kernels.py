"""bench numa C kernels: every ISA variant against numpy, the runner's validation, the Sattolo ring."""
from __future__ import annotations

import numpy as np
import pytest

from mltools.numa import _numa
from mltools.numa.bench import counted_bytes, dram_bytes, kernel_base

ISAS = [isa for isa in ("portable", "sse2", "avx2", "avx512") if _numa.isa_usable(isa)]


def test_best_isa_is_usable():
    assert _numa.best_isa() in ISAS and "portable" in ISAS


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("nt", [False, True])
@pytest.mark.parametrize("n,offset", [(0, 0), (1, 0), (7, 1), (1001, 3), (4096, 0), (4099, 5)])
def test_kernels_match_numpy(isa, nt, n, offset):
    rng = np.random.default_rng(n + offset)
    a0, b0, c0 = (rng.standard_normal(n + 8) for _ in range(3))
    sl = slice(offset, offset + n)           # misaligned starts exercise the scalar prologue

    a, b, c = a0.copy(), b0.copy(), c0.copy()
    s = _numa.kernel_apply("read", nt, isa, a[sl], b[sl], c[sl], 0.0)
    assert s == pytest.approx(float(np.sum(a0[sl])), rel=1e-12, abs=1e-12)

    a, b, c = a0.copy(), b0.copy(), c0.copy()
    _numa.kernel_apply("write", nt, isa, a[sl], b[sl], c[sl], 2.5)
    assert np.array_equal(c[sl], np.full(n, 2.5)) and np.array_equal(np.delete(c, np.arange(offset, offset + n)),
                                                                       np.delete(c0, np.arange(offset, offset + n)))

    a, b, c = a0.copy(), b0.copy(), c0.copy()
    _numa.kernel_apply("copy", nt, isa, a[sl], b[sl], c[sl], 0.0)
    assert np.array_equal(c[sl], a0[sl]) and np.array_equal(c[offset + n:], c0[offset + n:])

    a, b, c = a0.copy(), b0.copy(), c0.copy()
    _numa.kernel_apply("triad", nt, isa, a[sl], b[sl], c[sl], 3.0)
    # -ffp-contract=off: a separate multiply and add, bit-identical to numpy's
    assert np.array_equal(a[sl], b0[sl] + 3.0 * c0[sl])
    assert np.array_equal(a[:offset], a0[:offset]) and np.array_equal(a[offset + n:], a0[offset + n:])


def test_read_sum_is_exact_for_integers():
    for isa in ISAS:
        a = np.arange(1 << 16, dtype=np.float64)
        z = np.zeros_like(a)
        assert _numa.kernel_apply("read", False, isa, a, z, z, 0.0) == float(a.size * (a.size - 1) // 2)


def test_byte_accounting():
    assert [counted_bytes(k) for k in ("read", "write", "copy", "triad")] == [8, 8, 16, 24]
    assert [dram_bytes(k) for k in ("read", "write", "copy", "triad")] == [8, 16, 24, 32]    # write-allocate
    assert [dram_bytes(k) for k in ("write_nt", "copy_nt", "triad_nt")] == [8, 16, 24]
    assert kernel_base("triad_nt") == ("triad", True) and kernel_base("copy") == ("copy", False)


def _mappings(n_bytes):
    maps = [_numa.Mapping(n_bytes) for _ in range(3)]
    return maps


@pytest.mark.parametrize("kernel", ["read", "write", "copy", "triad"])
@pytest.mark.parametrize("nt", [False, True])
def test_runner_validates_and_leaves_expected_values(kernel, nt):
    n, reps, threads = 1 << 14, 3, 2
    a, b, c = _mappings(n * threads * 8)
    secs, err = _numa.run_bandwidth(kernel, nt, _numa.best_isa(), [-1] * threads, a, b, c, n, reps, True)
    assert len(secs) == reps and all(s > 0 for s in secs) and err == 0.0
    arrays = {name: np.frombuffer(m.view(), dtype=np.float64)[: n * threads] for name, m in zip("abc", (a, b, c))}
    written = {"read": "a", "write": "c", "copy": "c", "triad": "a"}[kernel]
    expected = {"read": 1.0, "write": float(reps), "copy": 1.0, "triad": 2.0 + reps * 0.5}[kernel]
    assert _numa.expected_value(kernel, reps) == expected
    assert np.all(arrays[written] == expected)           # numpy, independently of the C check


def test_validation_catches_a_wrong_element():
    n, reps = 1000, 4
    a = np.full(n, 2.0 + reps * 0.5)
    b = np.full(n, 2.0)
    c = np.full(n, 0.5)
    assert _numa.validate("triad", a, b, c, reps) == 0.0
    a[617] = np.nextafter(a[617], 10.0)
    assert 0 < _numa.validate("triad", a, b, c, reps) < 1e-15
    a[617] = 7.0
    assert _numa.validate("triad", a, b, c, reps) > 0.5
    ones = np.ones(n)
    assert _numa.validate("read", ones, b, c, reps, float(n)) == 0.0
    assert _numa.validate("read", ones, b, c, reps, float(n - 1)) > 0     # a wrong sum
    c_bad = np.full(n, float(reps))
    c_bad[0] = np.nan
    assert _numa.validate("write", ones, b, c_bad, reps) > 1e-13           # NaN never passes


@pytest.mark.parametrize("n_lines", [1, 2, 3, 17, 1000, 4096])
@pytest.mark.parametrize("line_bytes", [64, 128])
def test_sattolo_ring_is_one_cycle_over_every_line(n_lines, line_bytes):
    buf = np.zeros(n_lines * line_bytes, dtype=np.uint8)
    _numa.chase_build(buf, n_lines, line_bytes, 12345 + n_lines)
    ptrs = buf.view(np.uint64)[:: line_bytes // 8]
    base = buf.ctypes.data
    nxt = (ptrs.astype(np.int64) - base) // line_bytes
    assert np.all((ptrs.astype(np.int64) - base) % line_bytes == 0)
    assert sorted(nxt.tolist()) == list(range(n_lines))       # a permutation
    seen, i = 0, 0
    while True:                                               # one cycle through all lines
        i = int(nxt[i])
        seen += 1
        if i == 0:
            break
    assert seen == n_lines
    if n_lines > 1:
        assert all(int(nxt[k]) != k for k in range(n_lines))  # no fixed points


def test_sattolo_rings_differ_by_seed():
    a = np.zeros(64 * 256, dtype=np.uint8)
    b = np.zeros(64 * 256, dtype=np.uint8)
    _numa.chase_build(a, 256, 64, 1)
    _numa.chase_build(b, 256, 64, 2)
    da = a.view(np.uint64)[::8].astype(np.int64) - a.ctypes.data
    db = b.view(np.uint64)[::8].astype(np.int64) - b.ctypes.data
    assert not np.array_equal(da, db)


def test_chase_runs_and_reports_positive_latency():
    m = _numa.Mapping(1 << 20)
    ns = _numa.run_chase(-1, m, (1 << 20) // 64, 64, 7, True, 3, 1 << 15)
    assert len(ns) == 3 and all(0 < x < 10_000 for x in ns)


def test_mapping_offset_and_bind_cover_the_whole_range():
    m = _numa.Mapping(1 << 20, 17 * 64)
    assert m.address % (2 << 20) == 17 * 64
    m.advise_huge_pages(False)
    m.bind([_numa.mems_allowed()[0]])
    v = np.frombuffer(m.view(), dtype=np.float64)
    v[:] = 1.0
    assert set(m.page_nodes([0, (1 << 20) - 8])) == {_numa.mems_allowed()[0]}
    with pytest.raises(ValueError):
        _numa.Mapping(4096, 3)
