# Two entry points (see README): `make course` and `make test`.
# Everything else here is a building block of those two.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
BENCH_STAMP := $(VENV)/.bench-installed
TEST_STAMP := $(VENV)/.test-installed
PROFILE ?= ci
export KERAS_BACKEND ?= tensorflow

.PHONY: setup setup-bench setup-test course test lint doctest unit unit-jax course-check bench-smoke clean \
	assignments-release assignments-collect assignments-grade dry-run

setup: $(STAMP)

# The PyTorch reference network of the benchmarks (and their tests) needs torch.
setup-bench: $(BENCH_STAMP)
$(BENCH_STAMP): $(STAMP) requirements-bench.lock
	$(PY) -m pip install -q -r requirements-bench.lock
	touch $(BENCH_STAMP)

# The official BraTS evaluation that tests/test_metrics.py compares lesion scores with. --no-deps: its
# declared ranges conflict with requirements.lock, which it must not change (requirements-test.lock says why).
setup-test: $(TEST_STAMP)
$(TEST_STAMP): $(STAMP) requirements-test.lock
	$(PY) -m pip install -q --no-deps -r requirements-test.lock
	touch $(TEST_STAMP)

# Re-run set-up only when the pinned dependencies change.
$(STAMP): requirements.lock pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.lock
	$(PY) -m pip install -q --no-deps --no-build-isolation -e .
	# The kernel's environment carries TensorFlow's switches (tutorial_lib/_kernel.py).
	$(PY) -m tutorial_lib._kernel --sys-prefix
	touch $(STAMP)

# Generate synthetic data, execute every notebook with papermill, build the book.
course: setup
	$(PY) scripts/build_course.py --profile $(PROFILE)

# Lint and import order (config in pyproject.toml), notebooks included.
lint: setup
	$(VENV)/bin/ruff check .

# Every Examples section of the library runs as written.
doctest: setup
	$(PY) -m pytest -q --doctest-modules tutorial_lib

unit: setup-bench setup-test
	$(PY) -m pytest -q -m "not course" tests

# Test modules whose code never reaches Keras (NumPy, SciPy, files, the notebooks' structure, the build's
# tooling) give the same result on any backend: the JAX pass leaves them to the TensorFlow one. A new
# module runs on both until it is named here.
BACKEND_FREE_TESTS := assignments baseline build_course calibration config course_data data experiments files ingest metrics \
	notebooks postprocess selfcheck set_repository sources synthetic verdicts

unit-jax: setup-bench
	KERAS_BACKEND=jax $(PY) -m pytest -q -m "not course" tests \
		$(foreach name,$(BACKEND_FREE_TESTS),--ignore=tests/test_$(name).py)

course-check: setup
	$(PY) -m pytest -q -m course tests

bench-smoke: setup-bench
	$(PY) benchmarks/run_all.py --smoke

test: lint doctest unit unit-jax course-check

# The gpu profile's full-size path on this CPU (the dry-run profile of tutorial_lib.config):
# six synthetic 192x192x160 cases, one epoch, narrow filters, bfloat16 forced.
# make dry-run DRY_RUN_CHAPTERS="01 03" runs some chapters only.
DRY_RUN_CHAPTERS ?= 01 02 03 04 05 06 07
dry-run: setup
	$(PY) scripts/build_course.py --profile dry-run --notebooks $(DRY_RUN_CHAPTERS) --out _build/dry-run

# Classroom assignments with nbgrader (book/instructor.md):
#   make assignments-release CHAPTERS="01 06" PROFILE=ci
#   make assignments-collect SUBMISSIONS=path/to/submissions
#   make assignments-grade
assignments-release: setup
	$(PY) scripts/assignments.py release --profile $(PROFILE) $(if $(CHAPTERS),--chapters $(CHAPTERS))

assignments-collect: setup
	$(PY) scripts/assignments.py collect --submissions $(SUBMISSIONS)

assignments-grade: setup
	$(PY) scripts/assignments.py grade

clean:
	rm -rf _build data/synthetic data/cache
