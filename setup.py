"""The one C extension; everything else about the package is in pyproject.toml.

pipeline/storage/_listing.c lists a seeds folder: readdir and one lstat per file, the plain files
returned as Arrow buffers. Every run lists and stats every seed file (an edit in place changes no
folder's time), and in Python the loop around the system calls cost as much again as the calls:
0.33 s against 0.20 s for 100k files. No library does this: os.scandir makes a Python object per
entry, and pyarrow's local filesystem follows links. It is optional: where it cannot be compiled (no
C compiler), the install still succeeds and pipeline/read/discover.py lists the same entries with
its Python loop.

pipeline/read/_frontmatter_yaml.c builds the strict YAML loader's answer straight from libyaml's parse
events, calling the libyaml inside PyYAML's own extension (the code CSafeLoader runs), without PyYAML's
Node and Mark objects and Python calls per value: see pipeline/read/fast_yaml.py. It needs libyaml's
header to build (Debian: libyaml-dev, which .ci/run installs when it is missing); without it the
install still succeeds and the fast path falls back to rapidyaml.

(Here rather than in pyproject.toml: setuptools calls ext-modules there experimental.)
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension("pipeline.storage._listing", ["pipeline/storage/_listing.c"], optional=True),
        Extension(
            "pipeline.read._frontmatter_yaml",
            ["pipeline/read/_frontmatter_yaml.c"],
            optional=True,
        ),
    ]
)
