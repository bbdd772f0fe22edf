"""GPU bench, embeddings section (issue 19): BGE-M3 at full size, random weights, fp16.

The model is built from the BGE-M3 config (XLM-RoBERTa-large: 24 layers, hidden 1024, 16 heads,
FFN 4096, vocab 250,002, 8194 positions) with random weights — weights do not change the speed and
no hub is reachable — plus the ``sparse_linear.pt`` / ``colbert_linear.pt`` heads, and saved the way
``BGEM3FlagModel`` loads ``BAAI/bge-m3``, with a tokenizer trained here with ``tokenizers`` (as
tests/tiny_bge_m3.py does). Texts are made long enough that every one is truncated to exactly the
target length, so each batch is ``batch x length`` tokens.

For 128, 256 and 512 tokens and batch sizes 32 (the project's default) and 128, interleaved and
best of 2:

* ``embed``: the project's path, ``musicrec.embeddings.encoder.load_encoder("bge-m3:<dir>")`` then
  ``Encoder.encode`` (tokenizing, forward with the dense and sparse heads in fp16, the sparse
  ``{token: weight}`` dicts, copies to the host) — docs/s;
* ``raw``: the XLM-R forward alone (``model.model(**inputs)``) on the same texts pre-tokenized on
  the device — docs/s; ``ratio`` = embed / raw;
* peak GPU memory (``torch.cuda.max_memory_allocated``) of each measurement;
* ``tokenize_seconds``: tokenizing the texts alone (and the copy to the device), which the embed path
  does inside its loop and the raw forward does not — the first suspect when the ratio is low.

``--cpu-smoke``: a 2-layer, 32-wide model of the same vocab on the CPU, 16 texts, batch 8 — this
only proves the code path.
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import REPO, Results, log  # noqa: E402

sys.path.insert(0, str(REPO / "include"))

BGE_M3_CONFIG = {"vocab_size": 250_002, "hidden_size": 1024, "num_hidden_layers": 24, "num_attention_heads": 16,
                 "intermediate_size": 4096, "max_position_embeddings": 8194, "type_vocab_size": 1,
                 "layer_norm_eps": 1e-5, "hidden_act": "gelu", "pad_token_id": 1, "bos_token_id": 0,
                 "eos_token_id": 2}
SMOKE_CONFIG = BGE_M3_CONFIG | {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
                                "intermediate_size": 64}
LENGTHS = [128, 256, 512]
RATIO_TARGET = 0.95
DOCS_TARGET = 1000.0  # docs/s at 256 tokens
SPECIALS = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]  # ids 0..4, as XLM-R numbers them


def words(n: int, seed: int = 0) -> list[str]:
    """Deterministic pseudo-words (syllable strings): a lyrics-like vocabulary without any download."""
    import numpy as np

    rng = np.random.default_rng(seed)
    syll = [c + v for c in "bcdfghjklmnprstvwz" for v in "aeiou"]
    return ["".join(rng.choice(syll, size=rng.integers(1, 4))) for _ in range(n)]


def build_model(out: Path, config: dict, dtype: str, device: str) -> Path:
    """Tokenizer + random XLM-R weights + BGE-M3 heads in ``out`` (what BGEM3FlagModel loads)."""
    import torch
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import XLMRobertaConfig, XLMRobertaModel, XLMRobertaTokenizerFast

    out.mkdir(parents=True, exist_ok=True)
    vocab = words(4000)
    corpus = [" ".join(vocab[i:i + 12]) for i in range(0, len(vocab), 12)] * 3
    tok = Tokenizer(models.Unigram())
    tok.normalizer = normalizers.NFKC()
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.train_from_iterator(corpus, trainers.UnigramTrainer(vocab_size=2000, special_tokens=SPECIALS,
                                                            unk_token="<unk>"))
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", pair="<s> $A </s> </s> $B </s>",
        special_tokens=[("<s>", tok.token_to_id("<s>")), ("</s>", tok.token_to_id("</s>"))])
    fast = XLMRobertaTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", sep_token="</s>",
                                   cls_token="<s>", unk_token="<unk>", pad_token="<pad>", mask_token="<mask>",
                                   model_max_length=8192)
    fast.save_pretrained(out)
    torch.manual_seed(0)
    cfg = XLMRobertaConfig(**config)
    with torch.device(device):  # random init on the GPU: seconds, not a minute of CPU normal_()
        model = XLMRobertaModel(cfg)
    model.to(getattr(torch, dtype)).save_pretrained(out)
    hidden = config["hidden_size"]
    torch.save(torch.nn.Linear(hidden, 1).state_dict(), out / "sparse_linear.pt")
    torch.save(torch.nn.Linear(hidden, hidden).state_dict(), out / "colbert_linear.pt")
    del model
    gc.collect()
    if device.startswith("cuda"):
        torch.cuda.empty_cache()  # the saved copy is reloaded through the project's path
    return out


def make_texts(n: int, length: int, seed: int) -> list[str]:
    """``n`` texts of ``length`` words or more: each tokenizes to more than ``length`` tokens."""
    import numpy as np

    vocab = words(4000)
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(vocab, size=length + 8)) for _ in range(n)]


def sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def reset_peak(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()


def peak_gib(device: str) -> float | None:
    import torch

    return torch.cuda.max_memory_allocated() / 2**30 if device.startswith("cuda") else None


def time_embed(enc, texts: list[str], batch: int, device: str) -> dict:
    import numpy as np

    enc.encode(texts[:batch], batch_size=batch)  # warm-up: kernels, allocator
    sync(device)
    reset_peak(device)
    t = time.perf_counter()
    out = enc.encode(texts, batch_size=batch)
    sync(device)
    secs = time.perf_counter() - t
    norms = np.linalg.norm(out.dense, axis=1)
    return {"seconds": secs, "docs_per_s": len(texts) / secs, "peak_gib": peak_gib(device),
            "dense_shape": list(out.dense.shape), "dense_unit_norm": bool(np.allclose(norms, 1.0, atol=1e-3)),
            "sparse_returned": len(out.sparse or []),  # one {token: weight} dict per text
            # random weights may leave a text with no positive lexical weight: reported, not checked
            "sparse_nonempty": sum(1 for s in (out.sparse or []) if s)}


def time_raw(trunk, batches: list[dict], n: int, device: str) -> dict:
    import torch

    with torch.inference_mode():
        trunk(**batches[0])  # warm-up
        sync(device)
        reset_peak(device)
        t = time.perf_counter()
        for inputs in batches:
            trunk(**inputs)
        sync(device)
    secs = time.perf_counter() - t
    return {"seconds": secs, "docs_per_s": n / secs, "peak_gib": peak_gib(device)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="folder for embed.json")
    parser.add_argument("--cpu-smoke", action="store_true")
    parser.add_argument("--model-dir", type=Path, default=None, help="where the random model is written")
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "true")

    import torch

    smoke = args.cpu_smoke
    res = Results(args.out / "embed.json", "embed", smoke)
    d = res.data
    device = "cpu" if smoke else "cuda"
    if not smoke and not torch.cuda.is_available():
        d["error"] = "torch.cuda.is_available() is false: no GPU figures"
        res.finish("failed")
        log(f"embed: {d['error']}")
        return 1
    config = SMOKE_CONFIG if smoke else BGE_M3_CONFIG
    batches = [8] if smoke else [32, 128]
    n_docs = {L: 16 for L in LENGTHS} if smoke else {128: 4096, 256: 2048, 512: 1024}
    dtype = "float32" if smoke else "float16"
    d["params"] = {"config": config, "dtype": dtype, "device": device, "lengths": LENGTHS, "batches": batches,
                   "docs": n_docs, "repeat": args.repeat, "ratio_target": RATIO_TARGET, "docs_target_256": DOCS_TARGET}
    model_dir = args.model_dir or (args.out / "bge-m3-random" if smoke else Path("/tmp/bge-m3-random"))
    t = time.perf_counter()
    build_model(model_dir, config, dtype, device)
    d["build_seconds"] = time.perf_counter() - t
    log(f"embed: random BGE-M3 ({config['num_hidden_layers']} layers, hidden {config['hidden_size']}, vocab "
        f"{config['vocab_size']:,}, {dtype}) built in {d['build_seconds']:.1f} s at {model_dir}")
    res.save()

    enc, tokenizer, trunk = None, None, None
    try:
        from musicrec.embeddings.encoder import load_encoder

        t = time.perf_counter()
        enc = load_encoder(f"bge-m3:{model_dir}", device, max(LENGTHS))
        d["load_seconds"] = time.perf_counter() - t
        tokenizer, trunk = enc.tokenizer, enc.model.model
        d["encoder"] = enc.info() | {"model_dtype": str(next(trunk.parameters()).dtype),
                                     "params_m": round(sum(p.numel() for p in trunk.parameters()) / 1e6, 1)}
        log(f"embed: the project's encoder loaded in {d['load_seconds']:.1f} s: {d['encoder']}")
    except Exception as exc:  # noqa: BLE001 - the raw forward still runs; the embed figures say why not
        d["embed_error"] = f"{type(exc).__name__}: {exc}"
        d["embed_traceback"] = traceback.format_exc(limit=8)
        log(f"embed: the project's path failed to load: {d['embed_error']}; measuring the raw forward only")
        from transformers import AutoModel, AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(model_dir)
        trunk = AutoModel.from_pretrained(model_dir, dtype=getattr(torch, dtype)).to(device).eval()
    res.save()

    d["rows"] = []
    for length in LENGTHS:
        texts = make_texts(n_docs[length], length, seed=length)
        if enc is not None:
            enc.max_length = length  # one loaded model for the three lengths (load_encoder caches per length)
        for batch in batches:
            row: dict = {"length": length, "batch": batch, "docs": len(texts)}
            t = time.perf_counter()
            pre = [tokenizer(texts[i:i + batch], padding=True, truncation=True, max_length=length,
                             return_tensors="pt").to(device) for i in range(0, len(texts), batch)]
            sync(device)
            # the embed path tokenizes in its loop, the raw forward does not: how much of a gap this explains
            row["tokenize_seconds"] = time.perf_counter() - t
            row["tokens_per_doc"] = int(pre[0]["input_ids"].shape[1])
            embed_runs, raw_runs = [], []
            try:
                for _ in range(args.repeat):  # interleaved, best of each
                    if enc is not None:
                        embed_runs.append(time_embed(enc, texts, batch, device))
                    raw_runs.append(time_raw(trunk, pre, len(texts), device))
            except Exception as exc:  # noqa: BLE001 - an OOM at one size still leaves the others
                row["error"] = f"{type(exc).__name__}: {exc}"
                log(f"embed {length} tokens, batch {batch}: FAILED {row['error']}")
            if embed_runs:
                row["embed"] = max(embed_runs, key=lambda r: r["docs_per_s"])
            if raw_runs:
                row["raw"] = max(raw_runs, key=lambda r: r["docs_per_s"])
            if "embed" in row and "raw" in row:
                row["ratio"] = row["embed"]["docs_per_s"] / row["raw"]["docs_per_s"]
            d["rows"].append(row)
            res.save()
            log(f"embed {length} tokens, batch {batch}: "
                + (f"embed {row['embed']['docs_per_s']:,.0f} docs/s, " if "embed" in row else "embed -, ")
                + (f"raw {row['raw']['docs_per_s']:,.0f} docs/s" if "raw" in row else "raw -")
                + (f", ratio {row['ratio']:.3f}" if "ratio" in row else "")
                + (f", peak {row['raw']['peak_gib']:.1f} GiB" if row.get("raw", {}).get("peak_gib") else ""))
            del pre
    if device.startswith("cuda"):
        d["peak_gib_process"] = torch.cuda.max_memory_reserved() / 2**30

    d["checks"] = checks(d)
    res.finish("done" if "embed_error" not in d else "partial")
    return 0


def checks(d: dict) -> list[dict]:
    rows = [r for r in d.get("rows", []) if "embed" in r]
    out: list[dict] = []
    if not rows:
        return [{"check": "embed path works", "ok": None if "embed_error" not in d else False,
                 "detail": d.get("embed_error", "no embed figures"), "kind": "correctness"}]
    bad = [f"{r['length']}/{r['batch']}" for r in rows
           if not (r["embed"]["dense_unit_norm"] and r["embed"]["dense_shape"][1] == d["params"]["config"]["hidden_size"]
                   and r["embed"]["sparse_returned"] == r["docs"])]
    out.append({"check": "embed path returns a unit dense vector + sparse weights for every text", "ok": not bad,
                "detail": f"bad at length/batch {', '.join(bad)}" if bad else f"{len(rows)} measurements",
                "kind": "correctness"})
    ratios = [(r["ratio"], r["length"], r["batch"]) for r in rows if "ratio" in r]
    if ratios:
        worst = min(ratios)
        out.append({"check": f"embed path >= {RATIO_TARGET}x the raw forward (every length and batch)",
                    "ok": worst[0] >= RATIO_TARGET,
                    "detail": f"lowest {worst[0]:.3f} at {worst[1]} tokens, batch {worst[2]}", "kind": "target"})
    at256 = [r["embed"]["docs_per_s"] for r in rows if r["length"] == 256]
    if at256:
        out.append({"check": f"embed path >= {DOCS_TARGET:,.0f} docs/s at 256 tokens (best batch)",
                    "ok": max(at256) >= DOCS_TARGET, "detail": f"{max(at256):,.0f} docs/s", "kind": "target"})
    return out


if __name__ == "__main__":
    sys.exit(main())
