"""Fixtures: tiny random models built from configs and tokenizers trained on the spot (no download)."""

from __future__ import annotations

import functools
from pathlib import Path

import pytest
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import (
    BertConfig,
    BertModel,
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
    MistralConfig,
    MistralForCausalLM,
    PreTrainedTokenizerFast,
    Qwen2Config,
    Qwen2ForCausalLM,
    T5Config,
    T5ForConditionalGeneration,
)

from searc.classifier import ClassifierConfig
from searc.system import assemble_system

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"

CORPUS = [
    "The mother tongue of Danielle Darrieux is French. Her native language is English now.",
    "The Eiffel Tower is located in the city of Paris, not Rome. It stands in Paris.",
    "The capital of Japan is Tokyo. Toko Yasuda plays the guitar and the piano.",
    "New fact: Complete: Fact: -> . The twin city of Wellington is Sydney or Sheffield.",
    "Michel Rocard is a native speaker of French. Autonomous University of Madrid is in Spain, Sweden.",
    "What is the product made by UniFirst? uniform, unmanned aircraft. Who plays football?",
] * 4

ARCHITECTURES = ["gpt2", "llama", "qwen2", "mistral", "t5"]


@functools.cache
def _bpe_tokenizer_json() -> str:
    """A GPT-2-style byte-level BPE: "English" and " English" are different tokens, as in real LMs."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.post_processor = processors.ByteLevel(trim_offsets=True)
    trainer = trainers.BpeTrainer(
        vocab_size=400, special_tokens=["<pad>", "<eos>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tokenizer.train_from_iterator(CORPUS, trainer)
    return tokenizer.to_str()


def make_lm_tokenizer(padding_side: str = "right") -> PreTrainedTokenizerFast:
    return PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer.from_str(_bpe_tokenizer_json()),
        pad_token="<pad>",
        eos_token="<eos>",
        padding_side=padding_side,
    )


@functools.cache
def _wordpiece_json() -> str:
    """A BERT-style WordPiece vocabulary built, not trained: the corpus's words, and its characters
    alone and as continuations. The same in every process (the trainer breaks ties at random,
    which the multi-process training test cannot have)."""
    pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    words = sorted({word for line in CORPUS for word, _ in pre_tokenizer.pre_tokenize_str(line)})
    characters = sorted({c for line in CORPUS for c in line if not c.isspace()})
    tokens = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", *characters, *(f"##{c}" for c in characters), *(w for w in words if len(w) > 1)]
    tokenizer = Tokenizer(models.WordPiece({t: i for i, t in enumerate(dict.fromkeys(tokens))}, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizer
    tokenizer.decoder = decoders.WordPiece()
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", tokenizer.token_to_id("[CLS]")), ("[SEP]", tokenizer.token_to_id("[SEP]"))],
    )
    return tokenizer.to_str()


def make_encoder_tokenizer() -> PreTrainedTokenizerFast:
    return PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer.from_str(_wordpiece_json()),
        pad_token="[PAD]", unk_token="[UNK]", cls_token="[CLS]", sep_token="[SEP]",
    )


def make_lm(arch: str, vocab_size: int, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    small = dict(vocab_size=vocab_size, pad_token_id=0, eos_token_id=1, bos_token_id=1)
    if arch == "gpt2":
        model = GPT2LMHeadModel(GPT2Config(n_layer=2, n_embd=32, n_head=2, n_positions=256, **small))
    elif arch == "llama":
        model = LlamaForCausalLM(LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, **small))
    elif arch == "qwen2":
        model = Qwen2ForCausalLM(Qwen2Config(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, **small))
    elif arch == "mistral":
        model = MistralForCausalLM(MistralConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, **small))
    elif arch == "t5":
        model = T5ForConditionalGeneration(
            T5Config(d_model=32, d_ff=64, d_kv=16, num_layers=2, num_heads=2, decoder_start_token_id=0, **small)
        )
    else:
        raise ValueError(arch)
    return model.eval()


def make_encoder(vocab_size: int, seed: int = 0) -> BertModel:
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, max_position_embeddings=256
    )
    return BertModel(config, add_pooling_layer=False).eval()


def make_system(arch: str = "llama", variant: str = "dense", padding_side: str = "right", counterfactual_arch: str | None = None, seed: int = 0):
    tokenizer = make_lm_tokenizer(padding_side)
    encoder_tokenizer = make_encoder_tokenizer()
    cf_model = make_lm(counterfactual_arch, len(tokenizer), seed + 1) if counterfactual_arch else None
    return assemble_system(
        make_lm(arch, len(tokenizer), seed),
        tokenizer,
        make_encoder(len(encoder_tokenizer), seed),
        encoder_tokenizer,
        ClassifierConfig(variant=variant, trainable_layers=1),  # of the tiny encoder's 2 layers
        counterfactual_model=cf_model,
        counterfactual_tokenizer=make_lm_tokenizer(padding_side) if cf_model is not None else None,
    )


@pytest.fixture(params=ARCHITECTURES)
def arch(request) -> str:
    return request.param


def require_shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.fail(f"the shared data directory {SHARED_DATA} is missing (it must sit beside the checkout)")
    return SHARED_DATA



def save_tiny_models(directory: Path) -> tuple[str, str]:
    """The tiny Llama and BERT encoder saved as model directories (for `--lm` / `--encoder`)."""
    lm_dir, encoder_dir = directory / "lm", directory / "encoder"
    tokenizer = make_lm_tokenizer("left")
    make_lm("llama", len(tokenizer)).save_pretrained(lm_dir)
    tokenizer.save_pretrained(lm_dir)
    encoder_tokenizer = make_encoder_tokenizer()
    make_encoder(len(encoder_tokenizer)).save_pretrained(encoder_dir)
    encoder_tokenizer.save_pretrained(encoder_dir)
    return str(lm_dir), str(encoder_dir)
