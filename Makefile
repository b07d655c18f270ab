# openmm-nnp developer entry points. Everything runs in the virtual environment .venv at the
# repository root, created on first use; later runs reuse it and the CMake build in build/.
PYTHON ?= python3
VENV := .venv
VPY := $(VENV)/bin/python
SHARED := $(abspath ../shared)
# Model weights cached in ../shared (offline); elsewhere TorchANI downloads them on first use.
ifneq ($(wildcard $(SHARED)/models/torchani),)
export TORCHANI_DATA_DIR ?= $(SHARED)/models/torchani
endif

.PHONY: all venv build test example clean opencl-runtime

# Debian packages for the OpenCL platform on the CPU (PoCL) and the OpenCL headers the OpenCL kernels
# build against. Installed when running as root with apt-get (CI, fresh machines); elsewhere the OpenCL
# kernels are skipped at build time and the OpenCL tests skip with a reason.
OPENCL_PACKAGES := pocl-opencl-icd ocl-icd-libopencl1 opencl-c-headers

all: build

# The venv is (re)provisioned when requirements.txt changes. torch is pinned in requirements.txt and
# used as a constraint, so no package can pull another torch build.
$(VENV)/.requirements-installed: requirements.txt
	test -x $(VPY) || $(PYTHON) -m venv $(VENV)
	$(VPY) -m pip install --upgrade pip setuptools wheel
	$(VPY) -m pip install -c requirements.txt -r requirements.txt
	# OpenMM's CUDA platform library, to compile the CUDA kernels where the CUDA toolkit (nvcc) is present.
	# Without its CUDA runtime dependencies: a GPU machine installs openmm-cuda-13 with them.
	if command -v nvcc >/dev/null || test -x /usr/local/cuda/bin/nvcc; then \
		$(VPY) -m pip install --no-deps openmm-cuda-13==$$($(VPY) -c 'import openmm; print(openmm.__version__)'); fi
	touch $@

opencl-runtime:
	@if dpkg -s $(OPENCL_PACKAGES) >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		(apt-get install -y -qq $(OPENCL_PACKAGES) || (apt-get update -qq && apt-get install -y -qq $(OPENCL_PACKAGES))) >/dev/null; \
	else echo "note: OpenCL packages ($(OPENCL_PACKAGES)) missing and not root: OpenCL kernels and tests are skipped"; fi

venv: $(VENV)/.requirements-installed

# Build the C++ plugin against the venv's OpenMM and torch and install the package (editable).
# The CMake step runs on its own first: an editable pip install would hide a failed build.
build: venv opencl-runtime
	PATH=$(abspath $(VENV))/bin:$$PATH $(VPY) setup.py -q build_cmake
	OPENMM_NNP_SKIP_CMAKE=1 $(VPY) -m pip install -q --no-build-isolation --no-deps -e .

test: build
	$(VPY) -m pytest tests -v -rs

example: build
	$(VPY) examples/toluene_water.py

clean:
	rm -rf build openmm_nnp/*.so openmm_nnp/nnp_swig.py
