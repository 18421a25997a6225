"""Which modules of ``eyecatcher`` a registered model ships: the served boundary, computed.

The served model is built by one entry module (``model_code.py``). Every ``eyecatcher`` module
it imports, directly or through others, at module level or inside a function, is shipped with
the model as ``code_paths``, together with the ``__init__.py`` of each package on the way; no
other module is. Imports are read from the source (``ast``), not by importing it, so nothing
outside the boundary is loaded to find the boundary. A name imported from a package
(``from eyecatcher.explain import gradcam``) counts as its submodule when one exists.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = "eyecatcher"


def _module_file(name: str, package_root: Path) -> Path | None:
    """The source file of module ``name`` under ``package_root`` (the ``eyecatcher`` folder)."""
    path = package_root.joinpath(*name.split(".")[1:])
    if (path / "__init__.py").is_file():
        return path / "__init__.py"
    if path.with_suffix(".py").is_file():
        return path.with_suffix(".py")
    return None


def _imported_names(source: Path, module: str) -> set[str]:
    """Every ``eyecatcher`` module (or module.name) that ``source`` imports, relative ones too."""
    package = module if source.name == "__init__.py" else module.rsplit(".", 1)[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(source.read_text(encoding="utf-8"), str(source))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == PACKAGE)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                base = parts[: len(parts) - node.level + 1]
                target = ".".join([*base, *([node.module] if node.module else [])])
            else:
                target = node.module or ""
            if target.split(".")[0] == PACKAGE:
                found.add(target)
                found.update(f"{target}.{a.name}" for a in node.names)
    return found


def served_modules(entry: str, package_root: Path) -> dict[str, Path]:
    """Module name -> source file, for ``entry`` and everything it imports from ``eyecatcher``.

    Args:
        entry: The dotted entry module (``eyecatcher.serving_model.model_code``).
        package_root: The ``eyecatcher`` package folder to read.

    Returns:
        The closure, parent packages included.

    Raises:
        ValueError: If ``entry`` is not a module under ``package_root``.
    """
    if _module_file(entry, package_root) is None:
        raise ValueError(f"{entry} is not a module of {package_root}")
    closure: dict[str, Path] = {}
    pending = [entry]
    while pending:
        name = pending.pop()
        if name in closure:
            continue
        source = _module_file(name, package_root)
        if source is None:  # ``module.attribute``: the attribute is not a module
            continue
        closure[name] = source
        parts = name.split(".")
        pending.extend(".".join(parts[:i]) for i in range(1, len(parts)))
        pending.extend(_imported_names(source, name))
    return closure


def served_files(entry: str, package_root: Path) -> list[Path]:
    """The shipped files, relative to ``package_root``, sorted."""
    return sorted(p.relative_to(package_root) for p in served_modules(entry, package_root).values())
