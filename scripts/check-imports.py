#!/usr/bin/env python3
"""Checks that each Swift target imports only the modules Package.swift lists for it.

SwiftPM builds every module into one search path, so a target can import a module it does not
list when another target happens to bring it in, and the layering in docs/architecture.md would
then erode without a compiler error. `make lint` runs this: it reads the targets from
`swift package dump-package` and every `import` in their sources, and names each import that its
target does not list.
"""

import json
import os
import pathlib
import re
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent

# Modules of the toolchain and the system, which no target lists.
TOOLCHAIN = {"Foundation", "FoundationEssentials", "Glibc", "Dispatch", "Synchronization", "Testing", "XCTest", "RegexBuilder", "_Concurrency"}
# A product whose modules differ from its name.
PRODUCT_MODULES = {"Metrics": {"Metrics", "CoreMetrics"}}

IMPORT = re.compile(r"^\s*(?:@testable\s+|@_exported\s+|(?:public|package|internal|private|fileprivate)\s+)*import\s+(?:(?:struct|class|enum|protocol|func|var|let|typealias)\s+)?([A-Za-z_][A-Za-z0-9_]*)", re.M)


def listed_modules(target):
    modules = set()
    for dependency in target["dependencies"]:
        (kind, value), = dependency.items()
        name = value[0]
        modules |= PRODUCT_MODULES.get(name, {name}) if kind == "product" else {name}
    return modules


def check(package, root):
    """The imports of `package`'s targets (a `swift package dump-package` document) under `root`
    that their targets do not list, one line each."""
    problems = []
    for target in package["targets"]:
        default = "Tests" if target["type"] == "test" else "Sources"
        directory = root / (target.get("path") or f"{default}/{target['name']}")
        allowed = listed_modules(target) | TOOLCHAIN | {target["name"]}
        for source in sorted(directory.rglob("*.swift")):
            in_string = False  # inside a multi-line string literal (a test's Python or Java source)
            for number, line in enumerate(source.read_text().splitlines(), 1):
                match = None if in_string else IMPORT.match(line)
                if line.count('"""') % 2 == 1:
                    in_string = not in_string
                if match and match.group(1) not in allowed:
                    problems.append(f"{source.relative_to(root)}:{number}: {target['name']} imports {match.group(1)}, which Package.swift does not list for it")
    return problems


def main():
    swift = os.environ.get("SWIFT", "swift")
    package = json.loads(subprocess.run([swift, "package", "dump-package"], cwd=ROOT, capture_output=True, text=True, check=True).stdout)
    problems = check(package, ROOT)
    for problem in problems:
        print(problem, file=sys.stderr)
    if problems:
        print("add the module to the target's dependencies in Package.swift (a layer above it only: docs/architecture.md)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
