"""Build and install openmm-nnp.

The C++ plugin and its SWIG module are built with CMake against the OpenMM and torch installed in the
running Python environment, so install with --no-build-isolation:

    pip install --no-build-isolation .        (or -e . for development)

Build outputs go to build/ (reused by later builds) and are installed into openmm_nnp/.
"""

import os
import subprocess
import sys

from setuptools import Command, find_packages, setup
from setuptools.command.build_py import build_py

ROOT = os.path.dirname(os.path.abspath(__file__))


def build_cmake():
    """Configure, build and install the C++ plugin and its SWIG module into openmm_nnp/ (build dir: build/)."""
    build_dir = os.environ.get('OPENMM_NNP_BUILD_DIR', os.path.join(ROOT, 'build'))
    os.makedirs(build_dir, exist_ok=True)
    jobs = os.environ.get('CMAKE_BUILD_PARALLEL_LEVEL', str(os.cpu_count() or 1))
    configure = ['cmake', ROOT, f'-DPython3_EXECUTABLE={sys.executable}',
                 f'-DNNP_PACKAGE_DIR={os.path.join(ROOT, "openmm_nnp")}']
    swig = os.path.join(os.path.dirname(sys.executable), 'swig')
    if os.path.exists(swig):
        configure.append(f'-DSWIG_EXECUTABLE={swig}')
    subprocess.check_call(configure, cwd=build_dir)
    subprocess.check_call(['cmake', '--build', '.', '--parallel', jobs], cwd=build_dir)
    subprocess.check_call(['cmake', '--install', '.'], cwd=build_dir)


class BuildCMake(Command):
    """`python setup.py build_cmake`: only the C++ build, failing loudly (editable installs hide build errors)."""
    user_options = []

    def initialize_options(self):
        pass

    def finalize_options(self):
        pass

    def run(self):
        build_cmake()


class BuildWithCMake(build_py):
    """Build the C++ plugin before packaging (skipped when OPENMM_NNP_SKIP_CMAKE=1: the Makefile has just built it)."""

    def run(self):
        if os.environ.get('OPENMM_NNP_SKIP_CMAKE') != '1':
            build_cmake()
        super().run()


setup(
    name='openmm-nnp',
    version='0.1.0',
    description='Hybrid NNP/MM molecular dynamics in OpenMM: a compiled TorchScript force with Python builders',
    packages=find_packages(include=['openmm_nnp', 'openmm_nnp.*']),
    package_data={'openmm_nnp': ['*.so', 'nnp_swig.py', 'nnp_swig.i']},
    python_requires='>=3.10',
    install_requires=['openmm>=8.1', 'torch', 'numpy'],
    # openmm_nnp_openmmml: the openmm-ml plugin, outside the package so that `import openmmml` stays cheap.
    py_modules=['openmm_nnp_openmmml'],
    entry_points={
        'console_scripts': ['openmm-nnp = openmm_nnp.cli:main'],
        'openmmml.potentials': [f'{name} = openmm_nnp_openmmml:NNPPotentialImplFactory'
                                for name in ('nnp', 'nnp-ani1x', 'nnp-ani1ccx', 'nnp-ani2x')],
    },
    cmdclass={'build_py': BuildWithCMake, 'build_cmake': BuildCMake},
    zip_safe=False,
)
