"""A tiny, randomly initialised XLM-RoBERTa saved the way BGEM3FlagModel loads BAAI/bge-m3 (weights,
an XLMRobertaTokenizerFast trained on the fly with ``tokenizers``, ``sparse_linear.pt`` and
``colbert_linear.pt``): the BGE-M3 code path without the 2 GB weights or any network."""

from __future__ import annotations

from pathlib import Path

CORPUS = [
    "I walk alone in the rain tonight", "the city lights are burning bright", "love will tear us apart again",
    "dancing in the moonlight with you", "Привет, как дела, мой друг", "東京の夜は長い", "fire and ice and water",
    "we are the champions my friend", "hold me closer tiny dancer", "sweet dreams are made of this",
] * 20


def build(out: Path, hidden: int = 32, layers: int = 2, seed: int = 0) -> Path:
    import torch
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import XLMRobertaConfig, XLMRobertaModel, XLMRobertaTokenizerFast

    out.mkdir(parents=True, exist_ok=True)
    specials = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
    tok = Tokenizer(models.Unigram())
    tok.normalizer = normalizers.NFKC()
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.train_from_iterator(CORPUS, trainers.UnigramTrainer(vocab_size=300, special_tokens=specials,
                                                            unk_token="<unk>"))
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", pair="<s> $A </s> </s> $B </s>",
        special_tokens=[("<s>", tok.token_to_id("<s>")), ("</s>", tok.token_to_id("</s>"))])
    fast = XLMRobertaTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", sep_token="</s>",
                                   cls_token="<s>", unk_token="<unk>", pad_token="<pad>", mask_token="<mask>",
                                   model_max_length=512)
    fast.save_pretrained(out)
    torch.manual_seed(seed)
    config = XLMRobertaConfig(vocab_size=fast.vocab_size, hidden_size=hidden, num_hidden_layers=layers,
                              num_attention_heads=2, intermediate_size=hidden * 2, max_position_embeddings=514,
                              pad_token_id=fast.pad_token_id, bos_token_id=fast.bos_token_id,
                              eos_token_id=fast.eos_token_id)
    XLMRobertaModel(config).save_pretrained(out)
    torch.save(torch.nn.Linear(hidden, 1).state_dict(), out / "sparse_linear.pt")
    torch.save(torch.nn.Linear(hidden, hidden).state_dict(), out / "colbert_linear.pt")
    return out
