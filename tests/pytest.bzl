"""py_pytest: a py_test target that runs one test module of tests/ under pytest."""

load("@rules_python//python:defs.bzl", "py_test")

def py_pytest(name, size, helpers = [], data = [], deps = []):
    """<name>.py of tests/ run by pytest_main.py.

    Args:
      name: the test module's name (<name>.py).
      size: Bazel's test size.
      helpers: other files of tests/ it runs (scripts started in a subprocess).
      data: the stage binaries it starts.
      deps: libraries beyond the pipelines and the test helpers.
    """
    py_test(
        name = name,
        size = size,
        srcs = ["%s.py" % name, "pytest_main.py"] + helpers,
        main = "pytest_main.py",
        args = ["$(location %s.py)" % name],
        data = data,
        deps = ["//:pipelines_common", ":test_support"] + deps,
    )
