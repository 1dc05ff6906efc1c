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


def test_one_file_is_one_needer_however_it_is_spelled(tmp_path):
    from mltools.doctor.static import _one_spelling

    (tmp_path / "data" / "lib").mkdir(parents=True)
    (tmp_path / "data" / "lib" / "libmid.so").write_bytes(b"")
    (tmp_path / "home").symlink_to(tmp_path / "data")
    walked = str(tmp_path / "home" / "lib" / "libmid.so")
    spelled = _one_spelling([walked])
    assert spelled(str(tmp_path / "data" / "lib" / "libmid.so")) == walked     # the loader's real path
    assert spelled(walked) == walked
    assert spelled("/usr/lib/x86_64-linux-gnu/libc.so.6") == "/usr/lib/x86_64-linux-gnu/libc.so.6"
