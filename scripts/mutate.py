#!/usr/bin/env python3
"""A small mutation tester: flip one comparison, constant or boolean at a time in a rule module,
run the tests that guard it, and list the mutants that survive (no test failed).

    .venv/bin/python scripts/mutate.py sim/tasks/success.py tests/unit/test_success.py tests/unit/test_findingdory_exact.py

It edits the file in place and always restores it. mutmut (on PyPI) does the same more
thoroughly; this one exists because mutmut's copied tree does not see this repository's
package-dir mapping (sim/ installs as embodied_mem.sim).
"""

from __future__ import annotations

import ast
import subprocess
import sys
import time
from pathlib import Path

SWAPS = {ast.Lt: ast.LtE, ast.LtE: ast.Lt, ast.Gt: ast.GtE, ast.GtE: ast.Gt, ast.Eq: ast.NotEq, ast.NotEq: ast.Eq, ast.In: ast.NotIn, ast.NotIn: ast.In}


def sites(tree: ast.AST):
    """(node, description, apply, undo) for every mutation we make."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare):
            for index, op in enumerate(node.ops):
                swap = SWAPS.get(type(op))
                if swap is not None:
                    yield node, f"{type(op).__name__} -> {swap.__name__}", ("ops", index, swap())
        elif isinstance(node, ast.BoolOp):
            yield node, f"{type(node.op).__name__} -> {'Or' if isinstance(node.op, ast.And) else 'And'}", ("boolop", None, ast.Or() if isinstance(node.op, ast.And) else ast.And())
        elif isinstance(node, ast.Constant) and isinstance(node.value, (int, float)) and not isinstance(node.value, bool):
            yield node, f"{node.value!r} -> {node.value + 1!r}", ("const", None, node.value + 1)
        elif isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
            yield node, "not x -> x", ("not", None, None)


def mutate(source: str, number: int) -> tuple[str, str, int] | None:
    tree = ast.parse(source)
    found = list(sites(tree))
    if number >= len(found):
        return None
    node, description, (kind, index, value) = found[number]
    line = node.lineno
    if kind == "ops":
        node.ops[index] = value
    elif kind == "boolop":
        node.op = value
    elif kind == "const":
        node.value = value
    elif kind == "not":
        node.op = ast.UAdd()  # +x keeps the truthiness of x: "not" removed
        node.operand = ast.Call(ast.Name("bool", ast.Load()), [node.operand], [])
    return ast.unparse(tree), description, line


def main(argv: list[str]) -> int:
    target, tests = Path(argv[0]), argv[1:]
    original = target.read_text()
    total = len(list(sites(ast.parse(original))))
    survivors, killed = [], 0
    started = time.time()
    try:
        for number in range(total):
            mutated = mutate(original, number)
            if mutated is None:
                break
            text, description, line = mutated
            target.write_text(text)
            run = subprocess.run([sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *tests], capture_output=True, text=True)
            if run.returncode == 0:
                survivors.append((line, description))
                print(f"SURVIVED line {line}: {description}", flush=True)
            else:
                killed += 1
    finally:
        target.write_text(original)
    print(f"\n{target}: {total} mutants, {killed} killed, {len(survivors)} survived ({time.time() - started:.0f} s)")
    for line, description in survivors:
        print(f"  line {line}: {description}   {original.splitlines()[line - 1].strip()[:90]}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
