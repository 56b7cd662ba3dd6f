# make demo  - set up a virtualenv, write a synthetic ISLES 2018 twin, train the CPU demo
# make test  - run the whole test suite (CPU only: the CUDA tests are skipped)
# make test-gpu - the CUDA tests (tests/cuda) on a machine with a CUDA GPU, after installing a
#                CUDA build of torch as below:  make test-gpu CONSTRAINTS=
# make demo-atlas - the D-UNet CPU demo on a synthetic ATLAS R2.0 twin
# make demo-vcanet - a narrow VCA-Net (seed 000) CPU demo on the same ATLAS R2.0 twin
# make cv-demo - all five folds of the demo, the report beside the paper, an ensemble of TESTING
# make demo-3d - a narrow modified 3D U-Net (seed 001) on the synthetic ISLES 2018 twin, then
#                its masks of the TESTING cases
# make demo-isles22 - a narrow U-Net (seed 002, stage 1) on a synthetic ISLES 2022 twin (DWI, ADC,
#                and FLAIR resampled onto the DWI grid)
# make demo-gan - a narrow CTP->DWI GAN with its segmentator (seed 002, stage 4) on the twin
# make lint  - ruff (lint + format) and mypy over the packages
# make bench - the performance ratios P1-P6 (docs/performance.md), printed as a table
# make bench-startup - wall time of each command's --help and argument errors (median of 5),
#                and the import split of `lightning fit --help` (benchmarks/startup.py)
# make bench-gpu - the GPU benchmark of D-UNet, PSPNet-101 and the 3D U-Net: the data paths,
#                bf16, channels_last, memory, GPU busy share (sized for under 5 min on one GPU,
#                not yet run on one; without a GPU, benchmarks/gpu.py --tiny checks it runs)
#
# make wheelhouse - wheels of the suite's non-torch packages for an offline GPU node, where
#                .ci/gpu-node runs make test-gpu's tests and make bench-gpu's benchmark
#
# On a GPU cluster, install the torch build you want into the venv first and pass
# CONSTRAINTS= so the CPU pin is not applied:  make install CONSTRAINTS=

PYTHON      ?= python3
VENV        ?= .venv
CONSTRAINTS ?= constraints-cpu.txt
TWIN        ?= data/isles2018_twin
DEMO_CASES  ?= 30
ATLAS_TWIN  ?= data/atlas_twin
ATLAS_SUBJECTS ?= 16
ISLES22_TWIN ?= data/isles2022_twin
ISLES22_CASES ?= 40
BIN         := $(VENV)/bin
# make wheelhouse: the suite's packages that a CUDA PyTorch image usually lacks, as wheels for
# an offline GPU node's Python (.ci/gpu-node installs them there). WHEEL_EXTRA="SimpleITK wandb"
# adds the two the GPU checks do not need.
WHEEL_PYTHON ?= 3.12
WHEEL_PACKAGES ?= monai nibabel nilearn jsonargparse docstring-parser typeshed-client submitit \
                  highdicom pydicom pyjpegls
WHEEL_EXTRA ?=

.PHONY: install demo demo-3d demo-gan twin demo-atlas demo-vcanet atlas-twin cv-demo test \
        isles22-twin demo-isles22 \
        test-gpu lint bench bench-startup bench-gpu wheelhouse clean-runs

$(BIN)/lightning: pyproject.toml $(CONSTRAINTS)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet $(if $(CONSTRAINTS),-c $(CONSTRAINTS)) -e '.[dev]'
	touch $@

install: $(BIN)/lightning

$(TWIN)/SYNTHETIC_TWIN.json: | $(BIN)/lightning
	$(BIN)/lightning-data synth isles2018 $(TWIN) --cases $(DEMO_CASES) --seed 0

twin: $(TWIN)/SYNTHETIC_TWIN.json

demo: install twin
	@start=$$(date +%s); \
	$(BIN)/lightning fit --config experiments/pspnet_focal.yaml --config experiments/demo.yaml \
	  --data.init_args.data_dir $(TWIN) --overwrite && \
	echo "Demo wall time (training, incl. cache build): $$(( $$(date +%s) - start )) s"

demo-3d: install twin
	@start=$$(date +%s); \
	$(BIN)/lightning fit --config experiments/unet3d_omarov.yaml --config experiments/demo_3d.yaml \
	  --data.init_args.data_dir $(TWIN) --overwrite && \
	$(BIN)/lightning predict --config runs/unet3d_omarov_demo/fold0/config.yaml --ckpt_path best \
	  --data.init_args.data_dir $(TWIN) && \
	echo "3D demo wall time (training incl. cache build, then TESTING masks): $$(( $$(date +%s) - start )) s"

demo-gan: install twin
	@start=$$(date +%s); \
	$(BIN)/lightning fit --config experiments/liu_stage3.yaml --config experiments/liu_stage4.yaml \
	  --config experiments/demo_gan.yaml --data.init_args.data_dir $(TWIN) --overwrite && \
	echo "GAN demo wall time (training incl. cache build): $$(( $$(date +%s) - start )) s"

$(ATLAS_TWIN)/SYNTHETIC_TWIN.json: | $(BIN)/lightning
	$(BIN)/lightning-data synth atlas $(ATLAS_TWIN) --release R2.0 --subjects $(ATLAS_SUBJECTS) --seed 0

atlas-twin: $(ATLAS_TWIN)/SYNTHETIC_TWIN.json

demo-atlas: install atlas-twin
	@start=$$(date +%s); \
	$(BIN)/lightning fit --config experiments/dunet.yaml --config experiments/dunet_demo.yaml \
	  --data.init_args.data_dir $(ATLAS_TWIN) --overwrite && \
	echo "Demo wall time (training, incl. cache build): $$(( $$(date +%s) - start )) s"

demo-vcanet: install atlas-twin
	@start=$$(date +%s); \
	$(BIN)/lightning fit --config experiments/vcanet.yaml --config experiments/vcanet_demo.yaml \
	  --data.init_args.data_dir $(ATLAS_TWIN) --overwrite && \
	echo "VCA-Net demo wall time (training, incl. cache build): $$(( $$(date +%s) - start )) s"

$(ISLES22_TWIN)/SYNTHETIC_TWIN.json: | $(BIN)/lightning
	$(BIN)/lightning-data synth isles2022 $(ISLES22_TWIN) --cases $(ISLES22_CASES) --seed 0

isles22-twin: $(ISLES22_TWIN)/SYNTHETIC_TWIN.json

demo-isles22: install isles22-twin
	@start=$$(date +%s); \
	$(BIN)/lightning fit --config experiments/liu_stage1.yaml --config experiments/isles22/liu_stage1.yaml \
	  --config experiments/isles22/demo.yaml --data.init_args.data_dir $(ISLES22_TWIN) --overwrite && \
	echo "ISLES 2022 demo wall time (training, incl. cache build): $$(( $$(date +%s) - start )) s"

cv-demo: install twin
	@start=$$(date +%s); \
	$(BIN)/lightning-cv fit --config experiments/pspnet_focal.yaml --config experiments/demo.yaml \
	  --config experiments/cv_demo.yaml --data.init_args.data_dir $(TWIN) --overwrite && \
	$(BIN)/lightning-cv predict runs/pspnet_focal_cv_demo --split TESTING && \
	echo "CV demo wall time (5 folds, report, ensemble): $$(( $$(date +%s) - start )) s"

# One pytest-xdist worker per core (at most 4: each holds its trained fixtures in memory); a
# test file stays on one worker, so the fixtures it trains are trained once (tests/conftest.py
# gives each worker its share of the cores).
test: install
	$(BIN)/python -m pytest -q -n auto --maxprocesses 4 --dist loadfile --durations=10

# The tests marked cuda (tests/cuda), on the first GPU; skipped, saying why, without one.
# STROKESEG_CUDA_TESTS_ON_CPU=1 runs the same tests on the CPU (to work on them without a GPU).
test-gpu: install
	$(BIN)/python -m pytest -q -m cuda tests/cuda

lint: install
	$(BIN)/ruff check . && $(BIN)/ruff format --check . && $(BIN)/mypy

bench: install
	$(BIN)/python benchmarks/run.py

bench-startup: install
	$(BIN)/python benchmarks/startup.py

bench-gpu: install
	$(BIN)/python benchmarks/gpu.py

wheelhouse:
	$(PYTHON) -m pip download --quiet --no-deps --only-binary=:all: --python-version $(WHEEL_PYTHON) \
	  --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
	  --platform manylinux2014_x86_64 -d wheelhouse $(WHEEL_PACKAGES) $(WHEEL_EXTRA)

clean-runs:
	rm -rf runs
