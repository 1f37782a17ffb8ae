"""export.py: a trained run as a merged transformers folder (pipeline gives eval.py --predict's
probabilities) or as a Hugging Face peft adapter (AutoPeftModel gives our logits), and the
adapter folder as the model of a new run."""

import json
from pathlib import Path

import numpy as np
import pytest

import bertjax
import peft
from bertjax.hub import export, hf_peft
from bertjax.train import inference
from bertjax.train import loop as training
from tests.conftest import run_config
from tests.conftest import run_script as _cli
from tests.hf_reference import reference

REPO = Path(__file__).resolve().parents[1]
TEXTS = ["a gripping, funny and moving film", "dull and far too long", "it is a movie"]


@pytest.fixture(scope="module")
def dora_run(tmp_path_factory, tiny_bert_vocab_dir, shared_data):
    run = tmp_path_factory.mktemp("export") / "run"
    config = run_config(
        run,
        tiny_bert_vocab_dir,
        shared_data / "sst2",
        # float32: the exports are compared with this run's own logits to 1e-6
        **{"peft.method": "dora", "peft.lora.rank": 2, "dtype": "float32"},
    )
    training.train(config)
    return run


def test_merged_export_pipeline_gives_predict_probabilities(
    dora_run, tmp_path, tiny_bert_vocab_dir
):
    out = _cli("export.py", "--ckpt", str(dora_run), "--out", str(tmp_path / "merged"))
    assert out.returncode == 0, out.stderr[-2000:]
    assert "libtpu" not in out.stderr and " INFO " not in out.stderr, out.stderr  # quiet logs
    texts = tmp_path / "texts.txt"
    texts.write_text("\n".join(TEXTS) + "\n")
    written, _ = inference.predict_file(dora_run, texts, tmp_path / "p.tsv")
    table = written.read_text().splitlines()
    header = table[0].split("\t")
    want = np.array([[float(x) for x in row.split("\t")[2:]] for row in table[1:]])
    names = header[2:]
    assert [n.removeprefix("p_") for n in names] == json.loads(
        (dora_run / "labels.json").read_text()
    )

    from transformers import AutoTokenizer, pipeline

    classify = pipeline("text-classification", model=str(tmp_path / "merged"), top_k=None)
    got = np.array(
        [
            [{d["label"]: d["score"] for d in row}[n.removeprefix("p_")] for n in names]
            for row in classify(TEXTS)
        ]
    )
    # 1e-5, below the texts' spread on this tiny random model (4e-5; the TSV has 6 decimals)
    np.testing.assert_allclose(got, want, atol=1e-5)
    assert np.ptp(want[:, 0]) > 2e-5
    # the bug: without tokenizer files transformers built an empty-vocabulary one
    exported = AutoTokenizer.from_pretrained(str(tmp_path / "merged"))
    ids = bertjax.load_tokenizer(tiny_bert_vocab_dir)(TEXTS)["input_ids"]
    assert exported(TEXTS)["input_ids"] == ids and max(map(max, ids)) > 1000


def test_peft_export_loads_in_hf_peft_and_trains_on(dora_run, tmp_path, shared_data):
    out = tmp_path / "adapter"
    export.export(dora_run, out, "peft")
    assert json.loads((out / hf_peft.CONFIG_FILE).read_text())["use_dora"] is True
    model, params, _, _ = export.load_trained(dora_run)
    ids = [[101, 2009, 2003, 2204, 102, 0], [101, 6659, 102, 0, 0, 0]]
    mask = [[1 if t else 0 for t in row] for row in ids]
    ours = np.asarray(model.apply({"params": params}, np.array(ids), np.array(mask)).logits)
    (hf,) = reference([dict(job="logits", adapter=str(out), ids=ids, mask=mask)])
    np.testing.assert_allclose(hf["logits"], ours, atol=1e-4)

    loaded, loaded_params = bertjax.from_pretrained(out)
    again = loaded.apply({"params": loaded_params}, np.array(ids), np.array(mask)).logits
    np.testing.assert_allclose(again, ours, atol=1e-6)
    config = run_config(
        tmp_path / "more",
        out,
        shared_data / "sst2",
        **{"peft.method": "dora", "peft.lora.rank": 2, "train.max_steps": 2},
    )
    summary = training.train(config)
    assert summary["trainable_params"] == peft.count(
        params, peft.trainable_mask(params, model.peft)
    )


def test_adapters_are_refused_with_one_line(tiny_bert_dir, tmp_path):
    model, params = bertjax.from_config(
        json.loads((tiny_bert_dir / "config.json").read_text()), 3, peft.AdapterConfig()
    )
    for fmt in export.FORMATS:
        with pytest.raises(ValueError, match=r"^bottleneck adapters \(houlsby\) exist neither"):
            export.write(model, params, tmp_path, fmt, label_names=None, base=str(tiny_bert_dir))
    full, full_params = bertjax.from_pretrained(tiny_bert_dir)
    with pytest.raises(ValueError, match="no adapter to export in the peft format"):
        export.write(full, full_params, tmp_path, "peft", label_names=None, base="x")
    out = _cli("export.py", "--ckpt", str(tmp_path / "nothing"), "--out", str(tmp_path / "o"))
    assert out.returncode == 1
    assert out.stderr.strip().splitlines() == [
        f"error: {tmp_path / 'nothing'}: not a run folder (no config.json)"
    ]


def test_tokenizer_of_an_adapter_folder_without_one_is_its_base(tiny_bert_vocab_dir, tmp_path):
    (tmp_path / hf_peft.CONFIG_FILE).write_text(
        json.dumps(dict(peft_type="LORA", base_model_name_or_path=str(tiny_bert_vocab_dir)))
    )
    tokenizer = bertjax.load_tokenizer(tmp_path)
    assert tokenizer("a film")["input_ids"] == [101, 1037, 2143, 102]
