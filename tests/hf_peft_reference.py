"""Hugging Face peft (PyTorch) side of the parity tests; run as a script with PYTHONPATH=.hf-peft.

Reads a JSON list of jobs from argv[1], prints one JSON list of their results. Jobs:
  {"job": "logits", "adapter": DIR, "ids": [[...]], "mask": [[...]]}: AutoPeftModel… logits.
  {"job": "make", "base": DIR, "out": DIR, "method": {...}, "ids": …, "mask": …}: a random
    (non-identity) adapter saved to `out`, and its logits.
  {"job": "grads", "adapter": DIR, "ids": …, "mask": …}: gradients of sum(logits * [1, -2, …])
    for every trainable tensor, under the adapter file's names.
  {"job": "count", "family": "bert"|"roberta", "method": {...}}: (trainable, all) parameters
    of get_peft_model on a base-sized model built on the meta device.
"""

import json
import sys

import torch
import transformers

import peft

assert "hf-peft" in peft.__file__, f"expected Hugging Face peft, got {peft.__file__}"

BASE = dict(
    hidden_size=768,
    num_hidden_layers=12,
    num_attention_heads=12,
    intermediate_size=3072,
    num_labels=2,
)


def peft_config(method: dict):
    method = dict(method)
    kind = method.pop("kind")
    if kind == "ia3":
        return peft.IA3Config(task_type="SEQ_CLS", init_ia3_weights=False, **method)
    return peft.LoraConfig(task_type="SEQ_CLS", init_lora_weights=False, **method)


def logits(model, job) -> list:
    model.eval()
    ids, mask = torch.tensor(job["ids"]), torch.tensor(job["mask"])
    with torch.no_grad():
        return model(input_ids=ids, attention_mask=mask).logits.tolist()


def main(job: dict) -> dict:
    torch.manual_seed(job.get("seed", 0))
    if job["job"] == "logits":
        model = peft.AutoPeftModelForSequenceClassification.from_pretrained(job["adapter"])
        return dict(logits=logits(model, job))
    if job["job"] == "grads":
        model = peft.AutoPeftModelForSequenceClassification.from_pretrained(
            job["adapter"], is_trainable=True
        )
        model.eval()  # no dropout; gradients still flow
        out = model(input_ids=torch.tensor(job["ids"]), attention_mask=torch.tensor(job["mask"]))
        weights = torch.tensor([1.0, -2.0, 0.5])[: out.logits.shape[-1]]
        (out.logits * weights).sum().backward()
        by_storage = {t.data_ptr(): k for k, t in peft.get_peft_model_state_dict(model).items()}
        return {
            by_storage[p.data_ptr()]: p.grad.tolist() for p in model.parameters() if p.requires_grad
        }
    if job["job"] == "make":
        base = transformers.AutoModelForSequenceClassification.from_pretrained(job["base"])
        model = peft.get_peft_model(base, peft_config(job["method"]))
        with torch.no_grad():  # a head unlike the base's, so loading it is tested too
            for name, p in model.named_parameters():
                if "modules_to_save" in name:
                    p.add_(0.1 * torch.randn_like(p))
        model.save_pretrained(job["out"])
        return dict(logits=logits(model, job))
    if job["job"] == "count":
        family = job["family"]
        config_cls = transformers.AutoConfig.for_model(family).__class__
        extra = (
            dict(vocab_size=50265, max_position_embeddings=514, type_vocab_size=1, pad_token_id=1)
            if family == "roberta"
            else {}
        )
        with torch.device("meta"):
            base = transformers.AutoModelForSequenceClassification.from_config(
                config_cls(**BASE, **extra)
            )
            model = peft.get_peft_model(base, peft_config(job["method"]))
        trainable, total = model.get_nb_trainable_parameters()
        return dict(trainable=trainable, total=total)
    raise ValueError(f"unknown job {job['job']!r}")


if __name__ == "__main__":
    print(json.dumps([main(job) for job in json.loads(sys.argv[1])]))
