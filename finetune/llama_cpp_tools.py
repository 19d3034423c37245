"""llama.cpp's converters and quantizer, used from Python without committing llama.cpp code.

- ``convert_hf_to_gguf.py`` and ``convert_lora_to_gguf.py`` (with their ``conversion/`` and ``gguf-py/`` packages)
  are extracted once from the llama-cpp-python sdist of the version the gateway runs, into a cache folder: the
  converter then matches the llama.cpp that loads its output. pip fetches the sdist from the package index.
- Quantization goes through ``llama_cpp.llama_model_quantize`` (the ``gguf`` package cannot write K-quants).
"""

from __future__ import annotations

import logging
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

log = logging.getLogger(__name__)

CONVERTER_MEMBERS = ("convert_hf_to_gguf.py", "convert_lora_to_gguf.py", "conversion/", "gguf-py/")


def ensure_converters(version: str, cache_dir: Path) -> Path:
    """The folder holding llama.cpp's converter scripts for llama-cpp-python ``version`` (extracted once)."""
    target = cache_dir / f"llama.cpp-{version}"
    if (target / "convert_lora_to_gguf.py").exists() and (target / "conversion").is_dir():
        return target
    sdist_dir = cache_dir / "sdist"
    sdist = sdist_dir / f"llama_cpp_python-{version}.tar.gz"
    if not sdist.exists():
        log.info("fetching the llama-cpp-python %s sdist for the llama.cpp converters", version)
        sdist_dir.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
             f"llama-cpp-python=={version}", "-d", str(sdist_dir)],
            check=True,
        )  # fmt: skip
    prefix = f"llama_cpp_python-{version}/vendor/llama.cpp/"
    tmp = Path(tempfile.mkdtemp(prefix="llama.cpp-", dir=cache_dir))
    with tarfile.open(sdist) as tar:
        members = []
        for member in tar.getmembers():
            if not member.name.startswith(prefix) or not (member.isfile() or member.isdir()):
                continue
            rel = member.name[len(prefix) :]
            if any(rel == m or (m.endswith("/") and rel.startswith(m)) for m in CONVERTER_MEMBERS):
                member.name = rel
                members.append(member)
        tar.extractall(tmp, members=members, filter="data")
    if not (tmp / "convert_lora_to_gguf.py").exists():
        raise RuntimeError(f"{sdist} has no vendor/llama.cpp/convert_lora_to_gguf.py")
    if target.exists():
        import shutil

        shutil.rmtree(target)
    tmp.rename(target)
    return target


def _run(cmd: list[str]) -> None:
    log.info("running %s", " ".join(cmd))
    proc = subprocess.run(cmd, check=False, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{Path(cmd[1]).name} failed ({proc.returncode}):\n{proc.stderr[-4000:]}")


def convert_hf_to_gguf(tools: Path, model_dir: Path, outfile: Path, outtype: str = "f16") -> Path:
    """A Hugging Face model folder → one GGUF file (``outtype``: f32, f16, bf16 or q8_0)."""
    outfile.parent.mkdir(parents=True, exist_ok=True)
    _run([sys.executable, str(tools / "convert_hf_to_gguf.py"), str(model_dir),
          "--outfile", str(outfile), "--outtype", outtype])  # fmt: skip
    return outfile


def convert_lora_to_gguf(
    tools: Path, adapter_dir: Path, base_dir: Path, outfile: Path, outtype: str = "f16"
) -> Path:
    """A PEFT adapter folder → a llama.cpp LoRA adapter GGUF (``--base`` gives the config; no hub needed)."""
    outfile.parent.mkdir(parents=True, exist_ok=True)
    _run([sys.executable, str(tools / "convert_lora_to_gguf.py"), str(adapter_dir), "--base", str(base_dir),
          "--outfile", str(outfile), "--outtype", outtype])  # fmt: skip
    return outfile


QUANT_FTYPES = {
    "q4_k_m": "LLAMA_FTYPE_MOSTLY_Q4_K_M",
    "q8_0": "LLAMA_FTYPE_MOSTLY_Q8_0",
    "f16": "LLAMA_FTYPE_MOSTLY_F16",
}


def quantize(src: Path, dst: Path, quant: str, threads: int = 1) -> Path:
    """Quantize a GGUF with llama.cpp's own quantizer (``llama_model_quantize``)."""
    import llama_cpp

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, QUANT_FTYPES[quant])
    params.nthread = threads
    dst.parent.mkdir(parents=True, exist_ok=True)
    rc = llama_cpp.llama_model_quantize(str(src).encode(), str(dst).encode(), params)
    if rc != 0:
        raise RuntimeError(f"llama_model_quantize({src} → {quant}) returned {rc}")
    return dst
