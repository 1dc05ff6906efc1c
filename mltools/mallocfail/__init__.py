"""malloc-fail: make chosen allocations of a program fail, and see what breaks.

The LD_PRELOAD shim lives in ``csrc/mallocfail/`` (with ``csrc/preload/``,
shared with io-fail) and is built into ``mltools/mallocfail/_shim*.so``; this
package configures it, runs targets, parses its records and classifies what
happened. What it shares with io-fail is in :mod:`mltools.preload`.
"""
