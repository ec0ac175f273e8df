"""A 2-layer Llama from its Hugging Face config (inference, float32) compiled with
``dynamic=True`` and run on three sequence lengths, then statically on the first: per compiled
graph the kernels generated and the ops left to ATen that are not views or GEMMs. Run from
another folder than the repository root::

    TRITON_INTERPRET=1 AIT_INTERPRET_MAX_XBLOCK=64 python dynamic_llama.py
"""

from __future__ import annotations

import collections

import torch
import transformers
import triton
from transformers import LlamaConfig, LlamaForCausalLM

from ait_dynamo import metrics


def _report(label: str) -> None:
    for graph in metrics.compiled_graphs:
        reasons = collections.Counter(graph.refused.values())
        other = {r: n for r, n in reasons.items() if "view" not in r and "GEMM" not in r and "get_attr" not in r}
        print(f"{label}, {graph.name}: {len(graph.kernels)} kernels; refused other than views and GEMMs: {other}")


def main() -> None:
    print("torch", torch.__version__, "transformers", transformers.__version__, "triton", triton.__version__)
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=128, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256)
    model = LlamaForCausalLM(config).eval()
    compiled = torch.compile(model, backend="ait", dynamic=True)
    with torch.no_grad():
        for tokens in (9, 13, 20):
            ids = torch.randint(0, 128, (2, tokens))
            got, want = compiled(ids, use_cache=False).logits, model(ids, use_cache=False).logits
            print(f"{tokens} tokens: ait against eager {(got - want).abs().max().item():.2e}")
    _report("dynamic")
    torch._dynamo.reset()
    metrics.reset()
    with torch.no_grad():
        torch.compile(model, backend="ait", dynamic=False)(torch.randint(0, 128, (2, 9)), use_cache=False)
    _report("static 9 tokens")


if __name__ == "__main__":
    main()
