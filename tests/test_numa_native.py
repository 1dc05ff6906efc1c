"""bench numa C code on its own: -Wall -Wextra -Werror clean, and clean under valgrind."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SOURCES = [ROOT / "csrc/numa/numa_kernels.c", ROOT / "csrc/numa/numa_run.c", ROOT / "csrc/cpu/cpu_features.c"]

DRIVER = r"""
#include "numa_kernels.h"
#include <stdio.h>
#include <stdlib.h>

int main(void)
{
    size_t n = 4099, threads = 2;
    double *a = aligned_alloc(64, 64 * ((threads * n * 8 + 63) / 64));
    double *b = aligned_alloc(64, 64 * ((threads * n * 8 + 63) / 64));
    double *c = aligned_alloc(64, 64 * ((threads * n * 8 + 63) / 64));
    double seconds[3];
    int cpus[2] = {-1, -1};
    int bad = 0;
    for (int isa = 0; isa <= MLTOOLS_ISA_AVX512; isa++) {
        if (!mltools_numa_isa_usable(isa))
            continue;
        for (int k = 0; k < 4; k++)
            for (int nt = 0; nt < 2; nt++) {
                mltools_bw_job job = {k, nt, isa, (int)threads, cpus, a, b, c, n, 3, 1, seconds, 0, 0};
                if (mltools_bw_run(&job) != 0 || job.max_rel_error != 0.0) {
                    printf("kernel %d nt %d isa %d failed (%g)\n", k, nt, isa, job.max_rel_error);
                    bad = 1;
                }
            }
    }
    size_t lines = 1000;
    char *ring = aligned_alloc(64, lines * 64);
    double ns[2];
    mltools_chase_job cj = {-1, ring, lines, 64, 7, 1, 2, 5000, ns, NULL};
    if (mltools_chase_run(&cj) != 0 || cj.end == NULL)
        bad = 1;
    free(a); free(b); free(c); free(ring);
    printf("%s\n", bad ? "FAIL" : "ok");
    return bad;
}
"""


def _build(cbuild, extra=()):
    src = DRIVER
    flags = ["-std=c11", "-O2", "-Wall", "-Wextra", "-Werror", "-ffp-contract=off", "-pthread",
             f"-I{ROOT / 'csrc/numa'}", f"-I{ROOT / 'csrc/cpu'}", *map(str, SOURCES), *extra]
    return cbuild.build("numa_driver", src, flags=flags, libs=["-lm"])


def test_kernels_build_warning_free_and_validate(cbuild):
    exe = _build(cbuild)
    p = subprocess.run([str(exe)], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0 and p.stdout.strip() == "ok", p.stdout + p.stderr


@pytest.mark.skipif(not shutil.which("valgrind"), reason="needs valgrind")
def test_runner_and_chase_are_clean_under_valgrind(cbuild):
    exe = _build(cbuild, ["-g"])
    p = subprocess.run(["valgrind", "--error-exitcode=9", "--leak-check=full", "--errors-for-leak-kinds=definite",
                        "-q", str(exe)], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    assert p.stdout.strip() == "ok"
