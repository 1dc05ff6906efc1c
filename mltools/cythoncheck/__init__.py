"""``mltools cython check``: pointer-cast pitfalls in Cython code, found with
Cython's own parser and type analysis.

Library API: ``check_paths(paths, CheckSettings(...)) -> CheckReport`` and the
rule table ``RULES``. ``mltools.cythoncheck.demo.run_demo()`` compiles and runs
the pitfalls for real.
"""
from mltools.cythoncheck.check import (CheckReport, CheckSettings, CythonFinding, FileError,
                                       check_paths, find_sources, parse_env)
from mltools.cythoncheck.rules import RULES, Rule

__all__ = ["CheckReport", "CheckSettings", "CythonFinding", "FileError", "RULES", "Rule",
           "check_paths", "find_sources", "parse_env"]
