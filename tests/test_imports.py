"""`mltools --help` stays fast: importing the CLI loads nothing heavy."""
import subprocess
import sys

HEAVY = ["torch", "elftools", "Cython", "numpy", "psutil", "threadpoolctl", "mltools._cpu"]


def test_cli_import_is_light():
    code = ("import sys, mltools.cli; heavy = %r; "
            "print(','.join(m for m in heavy if m in sys.modules))" % HEAVY)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_help_runs_without_heavy_imports():
    code = ("import sys\nfrom mltools.cli import main\ntry:\n    main(['--help'])\n"
            "except SystemExit:\n    pass\nheavy = %r\n"
            "sys.stderr.write(','.join(m for m in heavy if m in sys.modules))" % HEAVY)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.stderr.strip() == ""


def test_every_module_imports_alone():
    import pkgutil

    import mltools
    names = [m.name for m in pkgutil.walk_packages(mltools.__path__, "mltools.")
             if not m.name.endswith("__main__")]
    for name in names:
        proc = subprocess.run([sys.executable, "-c", f"import {name}"], capture_output=True, text=True)
        if "does not define module export function" in proc.stderr:
            continue   # a plain shared object (an LD_PRELOAD shim), never imported
        if "MissingDependencyError" in proc.stderr and "pip install" in proc.stderr:
            continue   # needs an optional extra that is not installed, and says how to get it
        assert proc.returncode == 0, f"{name}: {proc.stderr.strip().splitlines()[-1:]}"


def test_a_command_imports_only_its_own_module():
    """The root group loads command modules lazily: `env` does not pay for bench or elf."""
    code = ("import sys\nfrom mltools.cli import main\ntry:\n    main(['env', '--help'])\n"
            "except SystemExit:\n    pass\n"
            "sys.stderr.write(','.join(m for m in ('mltools.cli.bench', 'mltools.cli.elf', "
            "'mltools.cli.bench_numa', 'mltools.cli.doctor') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.stderr.strip() == ""
