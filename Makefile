# The two set-up commands of README.md. Each installs what is missing first (scripts/setup.sh).
.PHONY: setup train test bench

setup:
	bash scripts/setup.sh

train: setup
	.venv/bin/python train.py $(ARGS)

test: setup
	bash scripts/test.sh $(ARGS)

bench: setup
	.venv/bin/python scripts/bench.py $(ARGS)
