#!/usr/bin/env python3
"""Regenerates every golden fixture under tests/golden/ from PyTorch / transformers.

    bash scripts/setup-golden            # torch (Debian python3-torch) + transformers==4.31.0
    /usr/bin/python3 tests/tools/make_golden.py [recipe ...]

Each recipe is a function named like the test that reads its output. Tests and CI never run this.
"""
import importlib
import pkgutil
import sys

import torch

sys.path.insert(0, __import__("os").path.dirname(__import__("os").path.abspath(__file__)))
import golden  # noqa: E402


def recipes():
    found = {}
    for mod in pkgutil.iter_modules(golden.__path__):
        if mod.name == "common":
            continue
        m = importlib.import_module("golden." + mod.name)
        for name in dir(m):
            if name.startswith("golden_"):
                found[name[len("golden_"):]] = getattr(m, name)
    return found


def main(argv):
    torch.manual_seed(0)
    torch.use_deterministic_algorithms(True)
    all_recipes = recipes()
    chosen = argv or sorted(all_recipes)
    for name in chosen:
        if name not in all_recipes:
            sys.exit(f"unknown recipe {name!r}; known: {', '.join(sorted(all_recipes))}")
        print(f"[make_golden] {name}: {all_recipes[name]()}")


if __name__ == "__main__":
    main(sys.argv[1:])
