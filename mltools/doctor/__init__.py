"""``mltools doctor``: diagnose the native side of a Python ML environment.

- :func:`diagnose` runs the static pass (every ELF file of the interpreter's
  environment, resolved and checked without running it), the optional dynamic
  pass (``imports``: what really loads), and the environment checks, and
  returns a :class:`DoctorReport` whose findings carry stable codes, the
  owning package of each file and a fix.
"""
from mltools.doctor.core import diagnose
from mltools.doctor.model import DoctorReport, LoadedLibrary, RuntimeCopy
from mltools.python import InterpreterInfo, probe_interpreter, running_interpreter

__all__ = ["DoctorReport", "InterpreterInfo", "LoadedLibrary", "RuntimeCopy", "diagnose",
           "probe_interpreter", "running_interpreter"]
