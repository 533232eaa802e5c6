"""scripts/check-imports.py: an import its target does not list is named; listed ones, the
toolchain's, a product's other modules and code inside a multi-line string are not."""

import importlib.util
import pathlib
import tempfile
import unittest

SCRIPT = pathlib.Path(__file__).resolve().parents[2] / "scripts" / "check-imports.py"
spec = importlib.util.spec_from_file_location("check_imports", SCRIPT)
check_imports = importlib.util.module_from_spec(spec)
spec.loader.exec_module(check_imports)


class CheckImportsTests(unittest.TestCase):
    def run_check(self, sources):
        package = {
            "targets": [
                {"name": "Low", "type": "regular", "dependencies": []},
                {"name": "High", "type": "regular", "dependencies": [{"byName": ["Low", None]}, {"product": ["Metrics", "swift-metrics", None, None]}]},
            ]
        }
        with tempfile.TemporaryDirectory() as directory:
            root = pathlib.Path(directory)
            for path, text in sources.items():
                (root / path).parent.mkdir(parents=True, exist_ok=True)
                (root / path).write_text(text)
            return check_imports.check(package, root)

    def test_an_unlisted_import_is_named_with_its_place(self):
        problems = self.run_check({"Sources/Low/A.swift": "import Foundation\nimport High\n", "Sources/High/B.swift": "import Low\n"})
        self.assertEqual(problems, ["Sources/Low/A.swift:2: Low imports High, which Package.swift does not list for it"])

    def test_listed_toolchain_and_product_modules_pass(self):
        text = "@testable import Low\ninternal import CoreMetrics\nimport struct Foundation.URL\nimport Synchronization\n"
        self.assertEqual(self.run_check({"Sources/High/B.swift": text}), [])

    def test_code_inside_a_multi_line_string_is_not_an_import(self):
        text = 'import Low\nlet script = """\nimport ctypes\n"""\nimport Nowhere\n'
        self.assertEqual(self.run_check({"Sources/High/B.swift": text}), ["Sources/High/B.swift:5: High imports Nowhere, which Package.swift does not list for it"])


if __name__ == "__main__":
    unittest.main()
