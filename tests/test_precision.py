"""dtype "auto" follows the hardware's report: bfloat16 only where it runs natively, and says why."""

from __future__ import annotations

import pytest

from headrank.engine.backbone import BackboneError, load_backbone
from headrank.engine.precision import AUTO_OVERRIDE, choose_dtype, cpu_flags


@pytest.fixture(autouse=True)
def _probe_not_overridden(monkeypatch):
    """These tests are of the hardware probe itself: CI's override of "auto" must not reach them."""
    monkeypatch.delenv(AUTO_OVERRIDE, raising=False)


def test_the_override_forces_auto_whatever_the_hardware_says(monkeypatch):
    monkeypatch.setenv(AUTO_OVERRIDE, "bfloat16")
    forced = choose_dtype("auto", flags={"avx2"})
    assert forced.dtype == "bfloat16" and AUTO_OVERRIDE in forced.reason
    monkeypatch.setenv(AUTO_OVERRIDE, "float32")
    assert choose_dtype("auto", flags={"amx_bf16"}).dtype == "float32"
    assert choose_dtype("float16").dtype == "float16"  # a dtype asked for is never overridden
    monkeypatch.setenv(AUTO_OVERRIDE, "fp8")
    with pytest.raises(ValueError, match=AUTO_OVERRIDE):
        choose_dtype("auto")


def test_auto_picks_bfloat16_only_with_native_support():
    assert choose_dtype("auto", flags={"avx2", "avx512f"}).dtype == "float32"
    assert "emulated" in choose_dtype("auto", flags={"avx2"}).reason
    for native in ("avx512_bf16", "amx_bf16"):
        chosen = choose_dtype("auto", flags={"avx512f", native})
        assert chosen.dtype == "bfloat16" and native in chosen.reason
    assert choose_dtype("float16", flags={"amx_bf16"}).dtype == "float16"  # asked for is kept


def test_cpu_flags_are_read_from_cpuinfo(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nmodel name\t: X\nflags\t\t: fpu avx2 avx512_bf16\n")
    assert cpu_flags(info) == {"fpu", "avx2", "avx512_bf16"}
    assert cpu_flags(tmp_path / "missing") == set()


def test_a_dtype_that_does_not_exist_is_a_clear_error():
    with pytest.raises(ValueError, match="dtype must be one of"):
        choose_dtype("float8")
    with pytest.raises(BackboneError, match="dtype must be one of"):
        load_backbone("embedded", dtype="float8")


def test_auto_on_a_gpu_takes_bfloat16_only_where_it_is_native(monkeypatch):
    """is_bf16_supported() counts emulation; compute capability 8.0 (Ampere) is where bfloat16 is native."""
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "a GPU")
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (7, 5))
    assert choose_dtype("auto", "cuda").dtype == "float32"
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (9, 0))
    assert choose_dtype("auto", "cuda:0").dtype == "bfloat16"
