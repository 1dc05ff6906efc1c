"""`mltools bench shakeshake`: options, output, bad input, data loading."""
import pickle
import sys

import numpy as np
import pytest

from mltools.shakeshake import TORCH_HINT

TINY = ["--depth", "8", "--width", "4", "--batch-size", "4", "--steps", "2", "--warmup", "1"]


def _one_error_line(res):
    assert res.exit_code == 2, (res.exit_code, res.stdout, res.stderr)
    assert res.stdout == ""
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), res.stderr
    return lines[0]


def test_torch_missing_is_one_line_exit_2(cli, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)   # makes `import torch` raise ImportError
    line = _one_error_line(cli("bench", "shakeshake", "--params-only"))
    assert "pip install 'mltools[torch]'" in line and "torch==2.13.0" in line
    assert line == f"Error: {TORCH_HINT}"


def test_library_without_torch_raises_missing_dependency():
    import subprocess
    code = ("import sys; sys.modules['torch'] = None\n"
            "from mltools.errors import MissingDependencyError\n"
            "try:\n    import mltools.shakeshake.bench\nexcept MissingDependencyError as e:\n    print(e.message)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == TORCH_HINT


torch = pytest.importorskip("torch")


def test_params_only_json(cli):
    res = cli("bench", "shakeshake", "--params-only", "--json", "--width", "64")
    assert res.exit_code == 0, res.stderr
    doc = res.json()
    assert doc["schema"] == "mltools.bench.shakeshake" and doc["version"] == 2
    assert doc["params"] == 11_653_978 and doc["params_only"] is True
    assert doc["flops_per_image"]["train"] == 10_112_154_624


def test_params_only_text(cli):
    res = cli("bench", "shakeshake", "--params-only")
    assert res.exit_code == 0
    assert "26,192,922" in res.stdout and "22.6605 G training" in res.stdout


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has GPUs")
def test_missing_gpu_is_one_line_exit_2(cli):
    for argv in (["--gpu", "3"], ["--gpus", "0,1"], ["--device", "cuda:3"]):
        line = _one_error_line(cli("bench", "shakeshake", *argv))
        assert "no GPU" in line


def test_bad_options_exit_2(cli):
    for argv, text in ((["--depth", "9"], "6n+2"), (["--width", "5"], "even"),
                       (["--train-epochs", "1", "--device", "cpu"], "--data"),
                       (["--gpu", "0", "--device", "cpu"], "only one"),
                       (["--device", "tpu"], "not a device")):
        line = _one_error_line(cli("bench", "shakeshake", *argv))
        assert text in line, line


def test_data_dir_without_batches_is_one_line_exit_2(cli, tmp_path):
    (tmp_path / "data_batch_1").write_bytes(b"x")
    line = _one_error_line(cli("bench", "shakeshake", "--device", "cpu", "--data", str(tmp_path), *TINY))
    assert "data_batch_2" in line and "test_batch" in line
    line = _one_error_line(cli("bench", "shakeshake", "--device", "cpu", "--data", str(tmp_path / "nope")))
    assert "no such directory" in line


def _write_fake_cifar(root, per_batch=24, corrupt=None):
    rng = np.random.default_rng(0)
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for name in names:
        if name == corrupt:
            (root / name).write_bytes(b"not a pickle")
            continue
        d = {b"data": rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8),
             b"labels": [int(v) for v in rng.integers(0, 10, per_batch)]}
        with open(root / name, "wb") as fh:
            pickle.dump(d, fh)


def test_corrupt_batch_is_one_line_exit_2(cli, tmp_path):
    _write_fake_cifar(tmp_path, corrupt="data_batch_3")
    line = _one_error_line(cli("bench", "shakeshake", "--device", "cpu", "--data", str(tmp_path), *TINY))
    assert "data_batch_3" in line and "not a CIFAR-10 pickle batch" in line


def test_cpu_benchmark_both_json(cli):
    res = cli("bench", "shakeshake", "--device", "cpu", "--json", *TINY)
    assert res.exit_code == 0, res.stderr
    doc = res.json()
    assert doc["impl"] == "both" and doc["device"] == "cpu" and doc["batch_size"] == 4
    assert set(doc["images_per_s"]) == {"reference", "fast"}
    assert doc["speedup"] == pytest.approx(doc["images_per_s"]["fast"] / doc["images_per_s"]["reference"], rel=1e-3)
    assert doc["mfu"] == {"reference": None, "fast": None}   # no peak known for a CPU
    for e in doc["implementations"]:
        assert e["precision"] == "fp32" and e["compiled"] is False and e["autocast"] is None
        assert e["images_per_s"] > 0 and e["eval_images_per_s"] > 0
        assert e["step_ms"]["min_ms"] <= e["step_ms"]["p50_ms"] <= e["step_ms"]["max_ms"]
        # achieved TFLOP/s uses the architecture FLOPs for both implementations
        assert e["achieved_tflops"] == pytest.approx(doc["flops_per_image"]["train"] * e["images_per_s"] / 1e12,
                                                     rel=1e-3, abs=1e-4)
    from mltools.shakeshake.model import build_model, count_parameters
    assert doc["params"] == count_parameters(build_model("reference", 8, 4))


def test_peak_override_gives_mfu_and_text_output(cli):
    res = cli("bench", "shakeshake", "--device", "cpu", "--impl", "fast", "--peak-tflops", "1", *TINY)
    assert res.exit_code == 0, res.stderr
    assert "fast" in res.stdout and "MFU" in res.stdout and "reference" not in res.stdout.split("impl")[1]
    res = cli("bench", "shakeshake", "--device", "cpu", "--impl", "fast", "--peak-tflops", "1", "--json", *TINY)
    e = res.json()["implementations"][0]
    assert e["mfu"] == pytest.approx(e["achieved_tflops"] / 1.0, rel=1e-2, abs=1e-4)


def test_cpu_fallback_warns(cli):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    res = cli("bench", "shakeshake", "--json", *TINY)
    assert res.exit_code == 0
    assert "no CUDA GPU found: running on the CPU" in res.stderr
    assert res.json()["device"] == "cpu"


def test_cifar_training_on_fake_batches(cli, tmp_path):
    _write_fake_cifar(tmp_path, per_batch=8)
    res = cli("bench", "shakeshake", "--device", "cpu", "--data", str(tmp_path), "--train-epochs", "2",
              "--impl", "fast", "--json", "--depth", "8", "--width", "4", "--batch-size", "8")
    assert res.exit_code == 0, res.stderr
    doc = res.json()
    assert doc["data"] == str(tmp_path)
    epochs = doc["implementations"][0]["training"]
    assert [e["epoch"] for e in epochs] == [1, 2]
    for e in epochs:
        assert 0.0 <= e["test_accuracy"] <= 1.0 and e["train_images_per_s"] > 0
    assert "epoch 2:" in res.stderr


def test_benchmark_on_cifar_batches(cli, tmp_path):
    _write_fake_cifar(tmp_path, per_batch=8)
    res = cli("bench", "shakeshake", "--device", "cpu", "--data", str(tmp_path), "--json", *TINY)
    assert res.exit_code == 0, res.stderr
    assert res.json()["data"] == str(tmp_path)


def test_loader_reads_pickles_like_numpy(tmp_path):
    """Oracle: the pickle read directly with numpy, reshaped (N, 3, 32, 32)."""
    from mltools.shakeshake.data import load_cifar10
    _write_fake_cifar(tmp_path, per_batch=5)
    data = load_cifar10(str(tmp_path), torch.device("cpu"))
    with open(tmp_path / "data_batch_2", "rb") as fh:
        d = pickle.load(fh, encoding="bytes")
    assert data.train_x.shape == (25, 3, 32, 32) and data.test_x.shape == (5, 3, 32, 32)
    assert np.array_equal(data.train_x[5:10].numpy(), d[b"data"].reshape(5, 3, 32, 32))
    assert data.train_y[5:10].tolist() == d[b"labels"]


def test_augment_matches_a_per_image_numpy_crop_and_flip():
    """Oracle: numpy normalise → zero-pad 4 → crop at the drawn offsets → flip."""
    from mltools.shakeshake.data import MEAN, STD, augment
    gen_seed = 5
    imgs = torch.randint(0, 256, (16, 3, 32, 32), dtype=torch.uint8)
    out = augment(imgs, torch.Generator().manual_seed(gen_seed))
    g = torch.Generator().manual_seed(gen_seed)
    off = torch.randint(0, 9, (2, 16), generator=g).numpy()
    flip = (torch.rand(16, generator=g) < 0.5).numpy()
    norm = (imgs.numpy().astype(np.float32) - np.array(MEAN, np.float32)[:, None, None]) / np.array(STD, np.float32)[:, None, None]
    padded = np.pad(norm, ((0, 0), (0, 0), (4, 4), (4, 4)))
    for i in range(16):
        crop = padded[i, :, off[0, i]:off[0, i] + 32, off[1, i]:off[1, i] + 32]
        if flip[i]:
            crop = crop[:, :, ::-1]
        assert np.allclose(out[i].numpy(), crop, atol=1e-5)
    assert flip.any() and not flip.all()


@pytest.mark.gpu
def test_gpu_benchmark_smoke(cli):
    res = cli("bench", "shakeshake", "--gpu", "0", "--json", "--no-compile", *TINY)
    assert res.exit_code == 0, res.stderr
    doc = res.json()
    assert doc["device"] == "cuda:0" and doc["versions"]["cudnn"]
    fast = [e for e in doc["implementations"] if e["impl"] == "fast"][0]
    assert fast["channels_last"] and fast["autocast"] in ("bf16", "fp16")
    assert fast["peak_memory_bytes"] > 0


@pytest.mark.gpu
@pytest.mark.slow
def test_gpu_benchmark_compiled_fast_and_tf32_off(cli):
    res = cli("bench", "shakeshake", "--gpu", "0", "--json", "--no-tf32", *TINY)
    assert res.exit_code == 0, res.stderr
    doc = res.json()
    assert doc["settings"]["cudnn_allow_tf32"] is False
    by = {e["impl"]: e for e in doc["implementations"]}
    assert by["reference"]["precision"] == "fp32" and by["fast"]["compiled"] is True
    assert doc["speedup"] > 0


def test_interrupted_run_prints_the_rounds_that_finished(tmp_path):
    """SIGINT once the first timed round is done (read from the progress line on a terminal):
    one JSON document with what finished, "interrupted": true, exit 130."""
    import json
    import re
    import signal

    from terminal import interrupt_after_progress

    out = tmp_path / "ss.json"
    # the first round is 20 of the 100 steps
    proc, seen = interrupt_after_progress(
        ["bench", "shakeshake", "--device", "cpu", "--impl", "fast", "--depth", "8", "--width", "4", "--batch-size",
         "4", "--steps", "100", "--warmup", "1", "--max-warmup", "1", "--json", "--output", str(out)],
        signal.SIGINT, label="bench shakeshake", min_done=20)
    stdout = proc.stdout
    assert re.search(r"bench shakeshake: \d+/150 \(\d+%\)", seen), seen[-300:]   # done/total on a terminal
    assert proc.returncode == 130
    doc = json.loads(stdout)
    assert doc["interrupted"] is True and json.loads(out.read_text())["interrupted"] is True
    (impl,) = doc["implementations"]
    assert 20 <= impl["timed_steps"] < 100 and impl["images_per_s"] > 0
    assert any("interrupted" in n for n in doc["notes"])
