"""io-fail: make chosen file-system calls of a program fail (disk full, I/O error, a
short write), and see what it leaves on disk.

The LD_PRELOAD shim lives in ``csrc/iofail/`` (with ``csrc/preload/``, shared
with malloc-fail) and is built into ``mltools/iofail/_shim*.so``; this package
configures it, runs targets, checks what they left and classifies the outcome.
"""
