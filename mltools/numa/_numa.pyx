# cython: language_level=3, boundscheck=False, wraparound=False
"""Memory mappings, NUMA system calls and the C kernels of ``csrc/numa``.

mbind, set_mempolicy, get_mempolicy and move_pages are raw system calls, so
libnuma is not needed. Every long call releases the GIL.
"""
from libc.errno cimport errno
from libc.stdint cimport uint64_t, uintptr_t
from libc.stdlib cimport malloc, free
from libc.string cimport memset
from cpython.memoryview cimport PyMemoryView_FromMemory
from cpython.buffer cimport PyBUF_WRITE

import os


cdef extern from "<sys/mman.h>" nogil:
    void *mmap(void *addr, size_t length, int prot, int flags, int fd, long offset)
    int munmap(void *addr, size_t length)
    int madvise(void *addr, size_t length, int advice)
    int PROT_READ, PROT_WRITE, MAP_PRIVATE, MAP_ANONYMOUS
    void *MAP_FAILED
    int MADV_HUGEPAGE, MADV_NOHUGEPAGE

cdef extern from "<unistd.h>" nogil:
    long syscall(long number, ...)

cdef extern from "<sys/syscall.h>" nogil:
    long SYS_mbind, SYS_set_mempolicy, SYS_get_mempolicy, SYS_move_pages

cdef extern from "numa_kernels.h" nogil:
    int MLTOOLS_BW_READ, MLTOOLS_BW_WRITE, MLTOOLS_BW_COPY, MLTOOLS_BW_TRIAD
    int MLTOOLS_ISA_PORTABLE, MLTOOLS_ISA_SSE2, MLTOOLS_ISA_AVX2, MLTOOLS_ISA_AVX512
    int mltools_numa_best_isa()
    int mltools_hypervisor_vendor(char *out)
    int mltools_numa_isa_usable(int isa)
    double mltools_bw_kernel_apply(int kernel, int nontemporal, int isa, double *a,
                                   double *b, double *c, size_t n, double scalar)
    double mltools_bw_expected(int kernel, int reps)
    double mltools_bw_validate(int kernel, const double *a, const double *b,
                               const double *c, size_t n, int reps, double read_sum)
    ctypedef struct mltools_bw_job:
        int kernel
        int nontemporal
        int isa
        int nthreads
        const int *cpus
        double *a
        double *b
        double *c
        size_t n_per_thread
        int reps
        int init
        double *seconds
        double max_rel_error
        int failed_cpu
    int mltools_bw_run(mltools_bw_job *job)
    void mltools_chase_build(void *buf, size_t n_lines, size_t line_bytes, uint64_t seed)
    void *mltools_chase_walk(void *start, size_t steps)
    ctypedef struct mltools_chase_job:
        int cpu
        void *buf
        size_t n_lines
        size_t line_bytes
        uint64_t seed
        int build
        int samples
        size_t steps_per_sample
        double *ns_per_load
        void *end
    int mltools_chase_run(mltools_chase_job *job)


KERNELS = {"read": MLTOOLS_BW_READ, "write": MLTOOLS_BW_WRITE,
           "copy": MLTOOLS_BW_COPY, "triad": MLTOOLS_BW_TRIAD}
ISAS = {"portable": MLTOOLS_ISA_PORTABLE, "sse2": MLTOOLS_ISA_SSE2,
        "avx2": MLTOOLS_ISA_AVX2, "avx512": MLTOOLS_ISA_AVX512}
_ISA_NAMES = {v: k for k, v in ISAS.items()}

MPOL_DEFAULT = 0
MPOL_PREFERRED = 1
MPOL_BIND = 2
MPOL_INTERLEAVE = 3
MPOL_F_MEMS_ALLOWED = 4
MPOL_MF_STRICT = 1
MPOL_MF_MOVE = 2

cdef enum:
    MASK_BITS = 1024                    # node ids 0..1023
    MASK_LONGS = 16                     # 1024 bits in 64-bit longs (LP64 Linux)
    HUGE = 2 * 1024 * 1024


_HYPERVISORS = {"KVMKVMKVM": "KVM", "Microsoft Hv": "Hyper-V", "VMwareVMware": "VMware",
                "XenVMMXenVMM": "Xen", "TCGTCGTCGTCG": "QEMU TCG", "ACRNACRNACRN": "ACRN",
                " lrpepyh  vr": "Parallels", "VBoxVBoxVBox": "VirtualBox", "bhyve bhyve ": "bhyve"}


def hypervisor_vendor():
    """The hypervisor's CPUID vendor (e.g. "KVM"), or None on bare metal."""
    cdef char out[13]
    if not mltools_hypervisor_vendor(out):
        return None
    raw = out[:12].decode("ascii", "replace").rstrip("\0")
    return _HYPERVISORS.get(raw, raw.strip() or "unknown")


def best_isa():
    """Name of the widest kernel ISA this CPU runs."""
    return _ISA_NAMES[mltools_numa_best_isa()]


def isa_usable(str name):
    return bool(mltools_numa_isa_usable(ISAS[name]))


def expected_value(str kernel, int reps):
    """What validation expects in the written array after ``reps`` repetitions."""
    return mltools_bw_expected(KERNELS[kernel], reps)


cdef int _fill_mask(unsigned long *mask, nodes) except -1:
    memset(mask, 0, MASK_LONGS * sizeof(unsigned long))
    for n in nodes:
        if n < 0 or n >= MASK_BITS:
            raise ValueError(f"node id {n} is outside 0..{MASK_BITS - 1}")
        mask[n // (8 * sizeof(unsigned long))] |= (<unsigned long>1) << (n % (8 * sizeof(unsigned long)))
    return 0


def _oserror(int err, str what):
    return OSError(err, f"{what}: {os.strerror(err)}")


cdef class Mapping:
    """An anonymous private mapping, aligned to 2 MiB so THP can back it."""
    cdef char *_raw
    cdef size_t _raw_size
    cdef char *_addr
    cdef char *_base                # 2 MiB aligned; _addr = _base + offset
    cdef size_t _span               # offset + size: what madvise and mbind cover
    cdef readonly size_t size

    def __cinit__(self, size_t size, size_t offset=0):
        # offset (bytes after a 2 MiB boundary) lets arrays used together start at
        # different 4 KiB offsets, so their loads and stores do not alias
        if size == 0:
            raise ValueError("mapping size must be positive")
        if offset >= HUGE or offset % 64:
            raise ValueError("offset must be a multiple of 64 below 2 MiB")
        self._raw_size = size + HUGE + offset
        cdef void *p
        with nogil:
            p = mmap(NULL, self._raw_size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0)
        if p == MAP_FAILED:
            raise _oserror(errno, f"mmap of {size} bytes")
        self._raw = <char *>p
        self._base = <char *>(((<uintptr_t>p) + HUGE - 1) & ~(<uintptr_t>(HUGE - 1)))
        self._addr = self._base + offset
        self._span = offset + size
        self.size = size

    def __dealloc__(self):
        if self._raw != NULL:
            munmap(self._raw, self._raw_size)
            self._raw = NULL

    @property
    def address(self):
        return <uintptr_t>self._addr

    def advise_huge_pages(self, bint huge):
        """MADV_HUGEPAGE or MADV_NOHUGEPAGE; call before the first touch."""
        if madvise(self._base, self._span, MADV_HUGEPAGE if huge else MADV_NOHUGEPAGE) != 0:
            raise _oserror(errno, "madvise")

    def bind(self, nodes, int mode=MPOL_BIND, unsigned flags=0):
        """mbind(2) the whole mapping to ``nodes``."""
        cdef unsigned long mask[MASK_LONGS]
        _fill_mask(mask, nodes)
        cdef long rc
        with nogil:
            rc = syscall(SYS_mbind, self._base, self._span, mode, mask, <unsigned long>(MASK_BITS + 1), flags)
        if rc != 0:
            raise _oserror(errno, f"mbind to node(s) {','.join(map(str, nodes))}")

    def view(self):
        """A writable memoryview of the mapping (keep the Mapping alive)."""
        return PyMemoryView_FromMemory(self._addr, self.size, PyBUF_WRITE)

    def page_nodes(self, offsets):
        """Node of the page at each byte offset (move_pages query); -2 = not yet touched."""
        cdef Py_ssize_t count = len(offsets), i
        if count == 0:
            return []
        cdef void **pages = <void **>malloc(count * sizeof(void *))
        cdef int *status = <int *>malloc(count * sizeof(int))
        if pages == NULL or status == NULL:
            free(pages); free(status)
            raise MemoryError()
        cdef size_t off
        try:
            for i in range(count):
                off = offsets[i]
                if off >= self.size:
                    raise ValueError(f"offset {off} is outside the mapping")
                pages[i] = self._addr + off
            with nogil:
                rc = syscall(SYS_move_pages, 0, <unsigned long>count, pages, NULL, status, 0)
            if rc < 0:
                raise _oserror(errno, "move_pages")
            return [status[i] for i in range(count)]
        finally:
            free(pages)
            free(status)


def mems_allowed():
    """Node ids this thread may allocate on (get_mempolicy MPOL_F_MEMS_ALLOWED)."""
    cdef unsigned long mask[MASK_LONGS]
    cdef int mode = 0
    memset(mask, 0, sizeof(mask))
    if syscall(SYS_get_mempolicy, &mode, mask, <unsigned long>(MASK_BITS + 1), NULL, <unsigned long>MPOL_F_MEMS_ALLOWED) != 0:
        raise _oserror(errno, "get_mempolicy")
    bits = 8 * sizeof(unsigned long)
    return [n for n in range(MASK_BITS) if mask[n // bits] >> (n % bits) & 1]


def set_mempolicy(int mode, nodes=()):
    """set_mempolicy(2) for the calling thread (MPOL_DEFAULT with no nodes resets)."""
    cdef unsigned long mask[MASK_LONGS]
    _fill_mask(mask, nodes)
    cdef long rc
    if mode == MPOL_DEFAULT:
        rc = syscall(SYS_set_mempolicy, mode, NULL, 0)
    else:
        rc = syscall(SYS_set_mempolicy, mode, mask, <unsigned long>(MASK_BITS + 1))
    if rc != 0:
        raise _oserror(errno, "set_mempolicy")


def run_bandwidth(str kernel, bint nontemporal, str isa, cpus, Mapping a, Mapping b, Mapping c,
                  size_t n_per_thread, int reps, bint init=True):
    """Run one kernel on len(cpus) pinned threads; returns (seconds per rep, max rel. error).

    Raises OSError (with ``.cpu`` set) when a thread cannot be pinned.
    """
    cdef int nthreads = len(cpus), i
    cdef size_t need = <size_t>nthreads * n_per_thread * sizeof(double)
    for m in (a, b, c):
        if m is not None and m.size < need:
            raise ValueError("mapping too small for threads x elements")
    cdef int *cpu_arr = <int *>malloc(max(nthreads, 1) * sizeof(int))
    cdef double *seconds = <double *>malloc(max(reps, 1) * sizeof(double))
    if cpu_arr == NULL or seconds == NULL:
        free(cpu_arr); free(seconds)
        raise MemoryError()
    cdef mltools_bw_job job
    cdef int rc
    try:
        for i in range(nthreads):
            cpu_arr[i] = cpus[i]
        job.kernel = KERNELS[kernel]
        job.nontemporal = nontemporal
        job.isa = ISAS[isa]
        job.nthreads = nthreads
        job.cpus = cpu_arr
        job.a = <double *>a._addr
        job.b = <double *>b._addr if b is not None else NULL
        job.c = <double *>c._addr if c is not None else NULL
        job.n_per_thread = n_per_thread
        job.reps = reps
        job.init = init
        job.seconds = seconds
        with nogil:
            rc = mltools_bw_run(&job)
        if rc != 0:
            err = _oserror(rc, f"bandwidth run on CPU {job.failed_cpu}" if job.failed_cpu >= 0 else "bandwidth run")
            err.cpu = job.failed_cpu
            raise err
        return [seconds[i] for i in range(reps)], job.max_rel_error
    finally:
        free(cpu_arr)
        free(seconds)


def run_chase(int cpu, Mapping buf, size_t n_lines, size_t line_bytes, uint64_t seed,
              bint build, int samples, size_t steps_per_sample):
    """Pointer chase on a thread pinned to ``cpu``; returns ns per load for each sample."""
    if n_lines * line_bytes > buf.size:
        raise ValueError("ring larger than the mapping")
    cdef double *ns = <double *>malloc(max(samples, 1) * sizeof(double))
    if ns == NULL:
        raise MemoryError()
    cdef mltools_chase_job job
    cdef int rc, i
    try:
        job.cpu = cpu
        job.buf = buf._addr
        job.n_lines = n_lines
        job.line_bytes = line_bytes
        job.seed = seed
        job.build = build
        job.samples = samples
        job.steps_per_sample = steps_per_sample
        job.ns_per_load = ns
        with nogil:
            rc = mltools_chase_run(&job)
        if rc != 0:
            err = _oserror(rc, f"pointer chase on CPU {cpu}")
            err.cpu = cpu
            raise err
        return [ns[i] for i in range(samples)]
    finally:
        free(ns)


def kernel_apply(str kernel, bint nontemporal, str isa, double[::1] a, double[::1] b,
                 double[::1] c, double scalar):
    """One single-thread kernel call on numpy arrays (for validation tests).

    Uses min(len) elements; returns the sum for read.
    """
    if not mltools_numa_isa_usable(ISAS[isa]):
        raise ValueError(f"ISA {isa} is not usable on this CPU")
    cdef size_t n = min(a.shape[0], b.shape[0], c.shape[0])
    cdef int k = KERNELS[kernel], isa_id = ISAS[isa]
    cdef double r
    with nogil:
        r = mltools_bw_kernel_apply(k, nontemporal, isa_id, &a[0] if a.shape[0] else NULL,
                                    &b[0] if b.shape[0] else NULL, &c[0] if c.shape[0] else NULL,
                                    n, scalar)
    return r


def validate(str kernel, double[::1] a, double[::1] b, double[::1] c, int reps, double read_sum=0.0):
    """The runner's STREAM-style check on caller arrays: max relative error."""
    cdef size_t n = min(a.shape[0], b.shape[0], c.shape[0])
    return mltools_bw_validate(KERNELS[kernel], &a[0] if a.shape[0] else NULL, &b[0] if b.shape[0] else NULL,
                               &c[0] if c.shape[0] else NULL, n, reps, read_sum)


def chase_build(unsigned char[::1] buf, size_t n_lines, size_t line_bytes, uint64_t seed):
    """Build the Sattolo ring in a caller's buffer (for tests)."""
    if n_lines * line_bytes > <size_t>buf.shape[0] or line_bytes < sizeof(void *):
        raise ValueError("ring does not fit the buffer")
    with nogil:
        mltools_chase_build(&buf[0], n_lines, line_bytes, seed)
