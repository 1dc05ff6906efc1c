"""What mltools' LD_PRELOAD fault injectors (``malloc-fail``, ``io-fail``) share.

- :mod:`records`: the record channel (a mapped file the shim writes) and the
  records every shim writes (hello, exec, crash, fork points, exit counts);
- :mod:`target`: which program is the target, and whether a preload reaches it;
- :mod:`runner`: one run of a target under a shim (private folder, environment,
  stdin);
- :mod:`symbols`: call sites (module+offset) to function names and lines, as gdb names them;
- :mod:`outcome`: the outcome of one run, the parts both tools classify alike;
- :mod:`sweep`: failing each point in turn (baseline checks, the point loop,
  progress, interrupts, grouping by call site).

The shims' C lives in ``csrc/preload/`` (shared), ``csrc/mallocfail/`` and ``csrc/iofail/``.
"""
