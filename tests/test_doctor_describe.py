"""doctor's text: paths under the site dir are shown relative to it, whichever way it is spelled.

The loader names objects by their real paths, so a venv reached through a symlink (``/home`` ->
``/data`` on many clusters) gives "needed by" paths under the resolved site dir while the site dir
itself is spelled through the link."""
from mltools.doctor.describe import _needed_by_text, _rel, _short


def test_site_dir_reached_through_a_symlink(tmp_path):
    real_site = tmp_path / "data" / "v" / "lib" / "python3.11" / "site-packages"
    (real_site / "torch" / "lib").mkdir(parents=True)
    (tmp_path / "home").symlink_to(tmp_path / "data")
    spelled_site = str(tmp_path / "home" / "v" / "lib" / "python3.11" / "site-packages")
    real_lib = str(real_site / "torch" / "lib" / "libtorch.so")
    spelled_lib = spelled_site + "/torch/lib/libtorch.so"

    assert _short(real_lib, spelled_site) == "torch/lib/libtorch.so"
    assert _short(spelled_lib, spelled_site) == "torch/lib/libtorch.so"
    assert _needed_by_text([real_lib, str(real_site / "nvidia" / "x.so")], spelled_site) == \
        "2 files under nvidia, torch"
    assert _rel(f"{real_lib} needs libc10.so", spelled_site) == "torch/lib/libtorch.so needs libc10.so"
    # a path outside the site dir keeps its full spelling
    assert _short("/usr/lib/libm.so.6", spelled_site) == "/usr/lib/libm.so.6"
    assert _needed_by_text(["/usr/lib/a.so", "/opt/b.so"], spelled_site) == "2 files under /opt, /usr/lib"
