"""The repository's text names only what it has, and its package imports only what it depends on."""

import re

import selfcheck


def test_text_names_only_files_the_repository_has():
    """Every repository path and relative link in the text (docs, comments, configs) names a file or directory here."""
    assert selfcheck.dangling_paths(selfcheck.tree()) == []


def test_j_commands_in_the_text_name_exported_drivers():
    """Each `j <name>` in the text (tests aside: they may run configs of their own) names an exported driver."""
    files = selfcheck.tree()
    used = {
        name
        for path, text in files.items()
        if not path.endswith("_test.py")
        for name in re.findall(r"\bj ([a-z][a-z0-9_-]*)\b", text)
    }
    assert selfcheck.unused_export_uses(files, used) == []


def test_package_imports_only_what_it_depends_on():
    """Each module of the package imports only distributions pyproject.toml depends on (not one that comes along)."""
    assert selfcheck.undeclared_imports(selfcheck.tree()) == []


def test_an_import_for_another_python_is_not_this_ones():
    """Of an `if sys.version_info` choice, only the branch this Python runs counts as an import."""
    module = (
        "import sys\n"
        "if sys.version_info >= (3, 1):\n    import yaml\nelse:\n    import no_such_distribution\n"
        "if sys.version_info < (3, 1):\n    import another_missing_one\n"
    )
    found = selfcheck.imported_distributions({"src/pkg/mod.py": module}, "src/")
    assert found == {"src/pkg/mod.py": {"pyyaml"}}
