#!/usr/bin/env python3
"""On a machine with an NVIDIA GPU: doctor's GPU-code verdicts against real kernel launches.

Builds, with nvcc, one small library per target set (SASS for sm_80 + PTX for
compute_90, PTX for compute_75 only, SASS for sm_75 + sm_86, the arch-specific
sm_90a, sm_100a and the family sm_120f, ...) and a runner that dlopens each and
launches its kernel. Then, for each library:

- doctor's verdict for the GPU nvidia-smi reports (``mltools doctor --path
  DIR --json``): NO_KERNEL_IMAGE, PTX_ONLY / PTX_NEWER_THAN_DRIVER, or runs;
- what the CUDA runtime says: cudaSuccess, cudaErrorNoKernelImageForDevice
  (209), cudaErrorUnsupportedPtxVersion (222), ...

and prints both, with exit status 1 when they disagree. Static cudart, so the
libraries need nothing but the driver. Run it where nvcc and a GPU are:

    python benchmarks/gpu_code_device_check.py [--keep DIR]

The expected outcome on an H100 (9.0): sm80_ptx90 runs (JIT of compute_90),
ptx75 runs (JIT), sm75_sm86 fails with 209, sm90a runs, sm100a and sm120f fail
with 209. Not run yet: no GPU was available where this was written.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile

KERNEL = r"""
#include <cuda_runtime.h>
__global__ void scale(float a, float *y, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) y[i] *= a;
}
extern "C" int mlt_launch(void) {
    float *y = 0;
    if (cudaMalloc(&y, 256 * sizeof(float)) != cudaSuccess) return (int)cudaGetLastError();
    scale<<<1, 256>>>(2.0f, y, 256);
    int err = (int)cudaGetLastError();
    if (err == 0) err = (int)cudaDeviceSynchronize();
    cudaFree(y);
    return err;
}
"""

RUNNER = r"""
#include <dlfcn.h>
#include <stdio.h>
int main(int argc, char **argv) {
    for (int i = 1; i < argc; i++) {
        void *h = dlopen(argv[i], RTLD_NOW | RTLD_LOCAL);
        if (!h) { printf("%s -1 %s\n", argv[i], dlerror()); continue; }
        int (*launch)(void) = (int (*)(void))dlsym(h, "mlt_launch");
        printf("%s %d\n", argv[i], launch ? launch() : -2);
    }
    return 0;
}
"""

BUILDS = {
    "libsm80_ptx90.so": ["-gencode", "arch=compute_80,code=sm_80", "-gencode", "arch=compute_90,code=compute_90"],
    "libptx75.so": ["-gencode", "arch=compute_75,code=compute_75"],
    "libsm75_sm86.so": ["-gencode", "arch=compute_75,code=sm_75", "-gencode", "arch=compute_86,code=sm_86"],
    "libsm90a.so": ["-gencode", "arch=compute_90a,code=sm_90a"],
    "libsm100a.so": ["-gencode", "arch=compute_100a,code=sm_100a"],
    "libsm120f.so": ["-gencode", "arch=compute_120f,code=sm_120f"],
    "libsm90.so": ["-gencode", "arch=compute_90,code=sm_90"],
}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--keep", metavar="DIR", help="build here and keep the files")
    args = ap.parse_args()
    nvcc = shutil.which("nvcc")
    if nvcc is None or shutil.which("nvidia-smi") is None:
        print("needs nvcc and nvidia-smi (a machine with an NVIDIA GPU and the CUDA toolkit)", file=sys.stderr)
        return 2
    d = args.keep or tempfile.mkdtemp(prefix="mltools-gpucheck-")
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "kern.cu"), "w") as fh:
        fh.write(KERNEL)
    with open(os.path.join(d, "runner.c"), "w") as fh:
        fh.write(RUNNER)
    built = []
    for name, gencode in BUILDS.items():
        proc = subprocess.run([nvcc, "-shared", "-Xcompiler", "-fPIC", *gencode, "-o", os.path.join(d, name),
                               os.path.join(d, "kern.cu")], capture_output=True, text=True)
        if proc.returncode == 0:
            built.append(name)
        else:
            print(f"skip {name}: this nvcc cannot build it ({proc.stderr.strip().splitlines()[-1:]})")
    subprocess.run(["gcc", "-o", os.path.join(d, "runner"), os.path.join(d, "runner.c"), "-ldl"], check=True)
    smi = subprocess.run(["nvidia-smi", "--query-gpu=name,compute_cap,driver_version", "--format=csv,noheader"],
                         capture_output=True, text=True).stdout.strip()
    print(f"GPU: {smi}")
    exe = shutil.which("mltools")
    doc = json.loads(subprocess.run([*([exe] if exe else [sys.executable, "-m", "mltools"]), "doctor", "--path", d,
                                     "--json", "--quiet", "--fail-on", "none"],
                                    capture_output=True, text=True, check=True).stdout)
    verdict = {name: "runs" for name in built}
    for f in doc["findings"]:
        if f["code"] in ("NO_KERNEL_IMAGE", "PTX_ONLY", "PTX_NEWER_THAN_DRIVER"):
            for p in f["details"].get("paths", [f["details"].get("path")]):
                if p and os.path.basename(p) in verdict:
                    verdict[os.path.basename(p)] = f["code"]
    out = subprocess.run([os.path.join(d, "runner"), *[os.path.join(d, n) for n in built]],
                         capture_output=True, text=True).stdout.splitlines()
    disagree = 0
    for line in out:
        path, code = line.split()[:2]
        name = os.path.basename(path)
        real = "runs" if code == "0" else {"209": "NO_KERNEL_IMAGE", "222": "PTX_NEWER_THAN_DRIVER"}.get(code, f"error {code}")
        expect_runs = verdict[name] in ("runs", "PTX_ONLY")
        ok = (real == "runs") == expect_runs and (real == "runs" or real == verdict[name])
        disagree += not ok
        print(f"{'OK  ' if ok else 'DIFF'} {name:22} doctor: {verdict[name]:22} CUDA runtime: {real}")
    return 1 if disagree else 0


if __name__ == "__main__":
    sys.exit(main())
