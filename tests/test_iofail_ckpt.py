"""io-fail sweeps of real checkpoint writers, judged by their own loaders.

Oracles: the check of each point is the format's own reader (a sha256 over
the payload, json.load, numpy.load, torch.load, sqlite's integrity_check), so
a point is "silent corruption" only when the writer said nothing and the
reader rejects what it left. An in-place writer must show such points; one
that writes a temporary file, fsyncs, renames and fsyncs the folder must not.
Fork mode and --no-fork must agree point for point.
"""
from __future__ import annotations

import json
import shutil
import sys
import textwrap

import pytest

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc LD_PRELOAD shim")

WRITER = textwrap.dedent('''
    """A trainer's checkpoint step. Like most trainers, a failed save is logged and training goes on."""
    import hashlib, os, struct, sys

    MAGIC = b"CKPT1\\n"

    def parts(step):
        body = b"".join(hashlib.sha256(b"%d:%d" % (step, i)).digest() * 256 for i in range(8))   # 8 x 8 KiB
        yield MAGIC + struct.pack("<QQ", step, len(body))
        for i in range(0, len(body), 8192):
            yield body[i:i + 8192]
        yield hashlib.sha256(body).digest()

    def in_place(path, step):
        with open(path, "wb") as f:
            for p in parts(step):
                f.write(p)

    def atomic(path, step):
        folder = os.path.dirname(path)
        tmp = path + ".tmp"
        try:
            with open(tmp, "wb") as f:
                for p in parts(step):
                    f.write(p)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    mode, folder, step = sys.argv[1], sys.argv[2], int(sys.argv[3])
    try:
        (atomic if mode == "atomic" else in_place)(os.path.join(folder, "ckpt.bin"), step)
    except OSError as exc:
        print(f"warning: checkpoint {step} failed: {exc}", file=sys.stderr)
''')

CHECK = textwrap.dedent('''
    import hashlib, struct, sys
    data = open(sys.argv[1] + "/ckpt.bin", "rb").read()
    ok = data[:6] == b"CKPT1\\n"
    step, n = struct.unpack("<QQ", data[6:22]) if len(data) >= 22 else (0, -1)
    body = data[22:22 + n]
    ok = ok and len(body) == n and len(data) == 22 + n + 32 and hashlib.sha256(body).digest() == data[22 + n:]
    print("ok" if ok else "bad checkpoint")
    sys.exit(0 if ok else 1)
''')

# torch.save / numpy.save / json.dump, in place or through a temporary file and a rename
ML_WRITER = textwrap.dedent('''
    import json, os, sys
    kind, mode, folder = sys.argv[1], sys.argv[2], sys.argv[3]
    ext = {"torch": "pt", "numpy": "npy", "json": "json"}[kind]
    path = os.path.join(folder, "ckpt." + ext)
    N = 50_000

    def save(target, step):
        if kind == "torch":
            import torch
            torch.save({"step": step, "w": torch.full((N,), float(step))}, target)
        elif kind == "numpy":
            import numpy as np
            np.save(target, np.full(N, float(step)))
        else:
            with open(target, "w") as f:
                json.dump({"step": step, "w": [step] * (N // 10)}, f)

    def check():
        if kind == "torch":
            import torch
            d = torch.load(path)
            assert d["w"].shape == (N,) and bool((d["w"] == d["step"]).all())
        elif kind == "numpy":
            import numpy as np
            a = np.load(path)
            assert a.shape == (N,) and (a == a[0]).all()
        else:
            d = json.load(open(path))
            assert len(d["w"]) == N // 10 and set(d["w"]) == {d["step"]}

    if mode == "check":
        try:
            check()
        except Exception as exc:
            print("bad:", type(exc).__name__, exc)
            sys.exit(1)
        sys.exit(0)
    step = int(sys.argv[4])
    try:
        if mode == "inplace":
            save(path, step)
        else:
            tmp = path + ".tmp"
            if kind == "json":
                save(tmp, step)
                fd = os.open(tmp, os.O_RDONLY)
                os.fsync(fd)
                os.close(fd)
            else:
                with open(tmp, "wb") as f:
                    save(f, step)
                    f.flush()
                    os.fsync(f.fileno())
            os.replace(tmp, path)
    except OSError as exc:
        print("warning: checkpoint failed:", exc, file=sys.stderr)
''')


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    (tmp_path / "writer.py").write_text(WRITER)
    (tmp_path / "check.py").write_text(CHECK)
    (tmp_path / "ml.py").write_text(ML_WRITER)
    (tmp_path / "ckpt").mkdir()
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _sweep(cli, *args):
    res = cli("io-fail", "--sweep", "--json", *args)
    assert res.exit_code in (0, 1), res.stderr
    return res.json()


def _classes(doc):
    return {p["index"]: p["outcome"]["class_name"] for p in doc["points"]}


def _first_state(workdir, step=0):
    import subprocess
    subprocess.run([sys.executable, "writer.py", "inplace", "ckpt", str(step)], check=True, cwd=workdir)


def test_in_place_writer_corrupts_silently_atomic_does_not(cli, workdir):
    _first_state(workdir)
    before = (workdir / "ckpt" / "ckpt.bin").read_bytes()
    common = ["--path", "ckpt/*", "--state", "ckpt", "--check", f"{sys.executable} check.py ckpt"]
    inplace = _sweep(cli, *common, "--", sys.executable, "writer.py", "inplace", "ckpt", "1")
    atomic = _sweep(cli, *common, "--", sys.executable, "writer.py", "atomic", "ckpt", "1")
    assert (workdir / "ckpt" / "ckpt.bin").read_bytes() == before       # put back after the sweep
    # in place: open, the header, 8 chunks, the digest, close
    assert inplace["baseline"]["eligible_total"] == 12
    silent = [p for p in inplace["points"] if p["outcome"]["class_name"] == "silent-corruption"]
    assert {p["function"] for p in silent} == {"write"} and len(silent) == 10
    assert all(p["site"].endswith("in in_place") for p in silent)
    assert all(p["replay"] and "--fail-at" in p["replay"] for p in silent)
    assert inplace["by_class"].get("recovered") == 2                 # open (the old file stays) and close
    # atomic: no point loses data or hides a failure
    assert atomic["baseline"]["eligible_total"] == 15
    assert set(atomic["by_class"]) == {"recovered", "not-reached"}
    calls = [p["function"] for p in atomic["points"]][:15]
    assert calls == ["open"] + ["write"] * 10 + ["fsync", "close", "rename", "fsync"]


def test_fork_mode_agrees_with_reruns_point_for_point(cli, workdir):
    _first_state(workdir)
    common = ["--path", "ckpt/*", "--state", "ckpt", "--check", f"{sys.executable} check.py ckpt"]
    for mode in ("inplace", "atomic"):
        fork = _sweep(cli, *common, "--fork", "--", sys.executable, "writer.py", mode, "ckpt", "1")
        rerun = _sweep(cli, *common, "--no-fork", "--", sys.executable, "writer.py", mode, "ckpt", "1")
        assert fork["fork_mode"] == "used" and fork["forked"] == len(fork["points"])
        assert rerun["forked"] == 0
        key = lambda d: [(p["index"], p["function"], p["path"], p["outcome"]["class_name"], p["exit_status"],
                          p["check"]["passed"]) for p in d["points"]]
        assert key(fork) == key(rerun), mode


def test_persistent_and_eio_and_short_writes(cli, workdir):
    _first_state(workdir)
    common = ["--path", "ckpt/*", "--state", "ckpt", "--check", f"{sys.executable} check.py ckpt",
              "--", sys.executable, "writer.py", "inplace", "ckpt", "1"]
    eio = _sweep(cli, "--errno", "EIO", *common)
    assert {p["errno_name"] for p in eio["points"] if p["function"]} == {"EIO"}
    assert eio["by_class"]["silent-corruption"] == 10
    # Python's BufferedWriter writes the rest after a short write: nothing is lost
    short = _sweep(cli, "--short-write", *common)
    assert set(short["by_class"]) == {"recovered", "not-reached"}
    persistent = _sweep(cli, "--persistent", *common)
    assert persistent["by_class"]["silent-corruption"] == 10


def test_a_strict_writer_that_fails_loses_the_old_state(cli, workdir):
    _first_state(workdir)
    strict = WRITER.replace("except OSError as exc:", "except ImportError as exc:")   # an OSError ends it
    assert strict != WRITER
    (workdir / "strict.py").write_text(strict)
    doc = _sweep(cli, "--path", "ckpt/*", "--state", "ckpt", "--check", f"{sys.executable} check.py ckpt",
                 "--only", "write", "--", sys.executable, "strict.py", "inplace", "ckpt", "1")
    assert doc["by_class"] == {"old-state-lost": 10, "not-reached": 1}
    assert all(p["exit_status"] == 1 for p in doc["points"] if p["function"])


def test_json_dump(cli, workdir):
    import subprocess
    subprocess.run([sys.executable, "ml.py", "json", "inplace", "ckpt", "0"], check=True)
    common = ["--path", "ckpt/*", "--state", "ckpt", "--check", f"{sys.executable} ml.py json check ckpt"]
    inplace = _sweep(cli, *common, "--", sys.executable, "ml.py", "json", "inplace", "ckpt", "1")
    atomic = _sweep(cli, *common, "--", sys.executable, "ml.py", "json", "atomic", "ckpt", "1")
    assert inplace["by_class"].get("silent-corruption", 0) >= 1
    assert "silent-corruption" not in atomic["by_class"] and "old-state-lost" not in atomic["by_class"]


def test_numpy_save_through_a_temporary_file(cli, workdir):
    np = pytest.importorskip("numpy")
    np.save(workdir / "ckpt" / "ckpt.npy", np.zeros(50_000))
    doc = _sweep(cli, "--path", "ckpt/*", "--state", "ckpt", "--check", f"{sys.executable} ml.py numpy check ckpt",
                 "--", sys.executable, "ml.py", "numpy", "atomic", "ckpt", "1")
    # numpy writes the header with Python's write and the array with C stdio (ndarray.tofile)
    functions = {p["function"] for p in doc["points"] if p["function"]}
    assert {"open", "write", "fwrite", "fclose", "fsync", "rename"} <= functions
    # numpy ignores fclose's result (npy_PyFile_DupClose2): the last buffered part of the
    # array is lost, yet np.save returns. Whatever numpy version this is, a silent
    # corruption may only come from such an ignored failure, never from the rename protocol.
    for p in doc["points"]:
        if p["outcome"]["class_name"] == "silent-corruption":
            assert p["function"] == "fclose" and "numpy" in p["site"], p
    assert "old-state-lost" not in doc["by_class"]


def test_torch_save(cli, workdir):
    torch = pytest.importorskip("torch")
    torch.save({"step": 0, "w": torch.zeros(50_000)}, workdir / "ckpt" / "ckpt.pt")
    common = ["--path", "ckpt/*", "--state", "ckpt", "--check", f"{sys.executable} ml.py torch check ckpt"]
    # through a temporary file and a rename: no point loses data or hides a failure
    atomic = _sweep(cli, *common, "--", sys.executable, "ml.py", "torch", "atomic", "ckpt", "1")
    assert "silent-corruption" not in atomic["by_class"] and "old-state-lost" not in atomic["by_class"]
    assert atomic["by_class"].get("recovered", 0) >= 1 and atomic["baseline"]["eligible_total"] >= 6
    failed_in_torch = [p for p in atomic["points"] if p["python_stack"]
                       and "torch/serialization.py" in p["python_stack"][0]]
    assert failed_in_torch                     # the Python stack of a failure inside torch.save
    # in place: torch raises RuntimeError (the writer's OSError handler misses it) after the
    # old checkpoint was truncated
    res = cli("io-fail", "--json", *common, "--only", "write", "--fail-at", "1",
              "--", sys.executable, "ml.py", "torch", "inplace", "ckpt", "1")
    doc = res.json()
    assert res.exit_code == 1 and "RuntimeError" in res.stderr
    assert doc["outcome"]["class_name"] == "old-state-lost"
    assert doc["check_before"]["passed"] and not doc["check_after"]["passed"]


def test_sqlite3_database_file(cli, workdir):
    sqlite3 = shutil.which("sqlite3")
    if sqlite3 is None:
        pytest.skip("needs the sqlite3 shell")
    import subprocess
    db = workdir / "ckpt" / "t.db"
    subprocess.run([sqlite3, str(db), "create table t(a); insert into t values(1);"], check=True)
    check = (f"sh -c 'test \"$({sqlite3} {db} \"pragma integrity_check; select count(*) from t\")\" "
             f"= \"$(printf \"ok\\n1\")\" || test \"$({sqlite3} {db} \"pragma integrity_check; "
             f"select count(*) from t\")\" = \"$(printf \"ok\\n2\")\"'")
    doc = _sweep(cli, "--path", "ckpt/*", "--state", "ckpt", "--check", check,
                 "--", sqlite3, str(db), "insert into t values(2);")
    assert doc["baseline"]["eligible_total"] >= 10
    # sqlite's rollback journal: every failure is reported or recovered, nothing is lost
    assert set(doc["by_class"]) <= {"reported", "recovered", "not-reached"}
    assert doc["by_class"].get("reported", 0) >= 1
    assert json.loads(json.dumps(doc))["state"] == str(workdir / "ckpt")
