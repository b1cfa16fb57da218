# The C extension; everything else is in pyproject.toml.
from setuptools import Extension, setup

setup(ext_modules=[Extension("greet._native", ["greet/_native.c"])])
