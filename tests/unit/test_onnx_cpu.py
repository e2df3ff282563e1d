"""The CPU class behind INT8: detection from real /proc/cpuinfo texts, the override, the
settings chosen per class, and the accept/refuse rule, without assuming this machine's CPU."""

from __future__ import annotations

import math
import platform
from pathlib import Path

import pytest

from image_search_service.core.config import load_settings
from image_search_service.core.errors import ConfigError
from image_search_service.encoders import cpu
from image_search_service.encoders.onnx_export import INT8_MIN_COSINE, int8_refusal

# Abridged first-processor blocks of real machines' /proc/cpuinfo.
EPYC_AVX2 = """processor\t: 0
vendor_id\t: AuthenticAMD
model name\t: AMD EPYC 7B12
flags\t\t: fpu vme sse sse2 ssse3 fma sse4_1 sse4_2 avx f16c avx2 bmi2 sha_ni clzero
bugs\t\t: sysret_ss_attrs spectre_v1

processor\t: 1
flags\t\t: fpu avx512f avx512_vnni
"""
SKYLAKE_SP = """processor\t: 0
model name\t: Intel(R) Xeon(R) Platinum 8168 CPU @ 2.70GHz
flags\t\t: sse4_2 avx avx2 avx512f avx512dq avx512cd avx512bw avx512vl
"""
CASCADE_LAKE = """processor\t: 0
model name\t: Intel(R) Xeon(R) Platinum 8259CL CPU @ 2.50GHz
flags\t\t: avx2 avx512f avx512dq avx512cd avx512bw avx512vl avx512_vnni
"""
ALDER_LAKE = """processor\t: 0
model name\t: 12th Gen Intel(R) Core(TM) i7-1265U
flags\t\t: sse4_2 avx avx2 avx_vnni
"""
GRAVITON2 = """processor\t: 0
BogoMIPS\t: 243.75
Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp asimddp ssbs
CPU implementer\t: 0x41
"""
CORTEX_A72 = """processor\t: 0
Features\t: fp asimd evtstrm crc32 cpuid
"""


@pytest.mark.parametrize(
    ("machine", "text", "expected"),
    [
        ("x86_64", EPYC_AVX2, "avx2"),  # the machine of issue 27
        ("x86_64", SKYLAKE_SP, "avx512"),
        ("x86_64", CASCADE_LAKE, "avx512_vnni"),
        ("x86_64", ALDER_LAKE, "avx_vnni"),
        ("x86_64", "flags\t: sse sse2 ssse3 sse4_1 sse4_2 avx\n", "x86_64"),
        ("AMD64", CASCADE_LAKE, "avx512_vnni"),  # Windows spells the machine so
        ("aarch64", GRAVITON2, "arm64_dotprod"),
        ("aarch64", CORTEX_A72, "arm64"),
        ("arm64", GRAVITON2, "arm64_dotprod"),  # macOS spells it so
        ("riscv64", "isa\t: rv64imafdc\n", "other"),
    ],
)
def test_class_from_cpuinfo(machine: str, text: str, expected: str) -> None:
    assert cpu.classify(machine, cpu.parse_cpuinfo(text)) == expected


def test_only_the_first_processors_flags_are_read() -> None:
    # EPYC_AVX2's second block claims VNNI: a mixed listing must not promote the class.
    assert "avx512_vnni" not in cpu.parse_cpuinfo(EPYC_AVX2)


def test_detection_reads_the_file_and_falls_back_without_it(tmp_path: Path) -> None:
    info = tmp_path / "cpuinfo"
    info.write_text(CASCADE_LAKE if platform.machine().lower() in ("x86_64", "amd64") else "")
    detected = cpu.detect_cpu_isa.__wrapped__(info)
    assert detected in cpu.CPU_ISAS
    if platform.machine().lower() in ("x86_64", "amd64"):
        assert detected == "avx512_vnni"
    # No /proc/cpuinfo (macOS, Windows): numpy's run-time dispatch flags still give a class.
    missing = cpu.detect_cpu_isa.__wrapped__(tmp_path / "absent")
    assert missing == cpu.classify(platform.machine(), cpu._numpy_flags())


def test_detected_class_agrees_with_this_machines_cpuinfo() -> None:
    proc = Path("/proc/cpuinfo")
    if not proc.exists():
        pytest.skip("no /proc/cpuinfo here")
    flags = cpu.parse_cpuinfo(proc.read_text())
    assert cpu.detect_cpu_isa() == cpu.classify(platform.machine(), flags)


class TestOverride:
    def test_argument_then_environment_then_detection(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.delenv(cpu.ENV_VAR, raising=False)
        assert cpu.cpu_isa() == cpu.detect_cpu_isa()
        monkeypatch.setenv(cpu.ENV_VAR, " AVX2 ")
        assert cpu.cpu_isa() == "avx2"
        assert cpu.cpu_isa("arm64") == "arm64"

    def test_a_wrong_name_is_refused_naming_the_variable(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setenv(cpu.ENV_VAR, "avx3")
        with pytest.raises(ValueError, match="ONNX_CPU_ISA: must be one of .*avx2"):
            cpu.cpu_isa()

    def test_settings_validate_it_at_start_up(self) -> None:
        assert load_settings(onnx_cpu_isa=" AVX2", _env_file=None).onnx_cpu_isa == "avx2"
        assert load_settings(onnx_cpu_isa="", _env_file=None).onnx_cpu_isa is None
        with pytest.raises(ConfigError, match="ONNX_CPU_ISA"):
            load_settings(onnx_cpu_isa="vnni", _env_file=None)


class TestSettingsPerClass:
    @pytest.mark.parametrize("isa", ["avx2", "avx512", "x86_64"])
    def test_x86_without_vnni_never_gets_signed_8_bit_weights(self, isa: str) -> None:
        # U8S8 with 8-bit weights is what saturates there (VPMADDUBSW).
        settings = cpu.int8_settings(isa)
        assert settings.weights == "uint8" or settings.reduce_range
        assert settings is cpu.U8U8

    @pytest.mark.parametrize("isa", ["avx512_vnni", "avx_vnni", "arm64_dotprod", "arm64"])
    def test_where_products_do_not_saturate_the_settings_stay(self, isa: str) -> None:
        assert cpu.int8_settings(isa) is cpu.U8S8

    def test_classes_that_may_saturate_get_settings_that_cannot(self) -> None:
        assert cpu.SATURATING_U8S8 == {"avx512", "avx2", "x86_64"}
        for isa in cpu.CPU_ISAS:
            assert cpu.int8_settings(isa).exact_on_every_cpu is (isa in cpu.SATURATING_U8S8)
        assert cpu.U8U8.exact_on_every_cpu
        assert cpu.U8S8_REDUCED.exact_on_every_cpu
        assert not cpu.U8S8.exact_on_every_cpu

    def test_every_class_has_settings(self) -> None:
        assert {cpu.int8_settings(isa).name for isa in cpu.CPU_ISAS} <= set(cpu.INT8_SETTINGS)


class TestTheRule:
    """Accepted iff every tower's min cosine to PyTorch reaches the threshold."""

    def test_at_the_threshold_it_is_accepted(self) -> None:
        cosines = {"image": 0.99995, "text": INT8_MIN_COSINE}
        assert int8_refusal(cosines, isa="avx2", settings=cpu.U8U8) is None

    @pytest.mark.parametrize("tower", ["image", "text"])
    def test_below_it_on_either_tower_it_is_refused(self, tower: str) -> None:
        cosines = {"image": 0.99995, "text": 0.99995, tower: 0.986179}
        reason = int8_refusal(cosines, isa="avx2", settings=cpu.U8S8)
        assert reason is not None
        assert f"INT8 {tower} tower: min cosine to PyTorch 0.986179 < {INT8_MIN_COSINE}" in reason
        assert "avx2" in reason
        assert "u8s8" in reason

    def test_nan_is_refused(self) -> None:
        cosines = {"image": math.nan, "text": 1.0}
        assert int8_refusal(cosines, isa="avx512_vnni", settings=cpu.U8S8) is not None
