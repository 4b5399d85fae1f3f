"""The house rules that can be checked: dependency direction, Qt-free core, one thread owner."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
QT = ("PySide6", "shiboken6", "pyqtgraph")
HEAVY = ("torch", "transformers", "ultralytics", "faster_whisper", "onnxruntime", "rapidocr")


def _imports(path: Path) -> list[tuple[str, int, bool]]:
    """(module, line, at_module_level) for every import in a file."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    top = {id(n) for n in tree.body}
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(a.name, node.lineno, id(node) in top) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.append((node.module, node.lineno, id(node) in top))
    return out


def _py(folder: str) -> list[Path]:
    return sorted((ROOT / folder).rglob("*.py"))


def test_core_and_models_never_import_qt():
    bad = [f"{p.relative_to(ROOT)}:{line} {m}" for folder in ("core", "models") for p in _py(folder)
           for m, line, _top in _imports(p) if m.split(".")[0] in QT]
    assert not bad, bad


def test_dependencies_point_one_way():
    bad = [f"{p.relative_to(ROOT)}:{line} {m}" for p in _py("core") for m, line, _ in _imports(p)
           if m.split(".")[0] == "gui"]
    bad += [f"{p.relative_to(ROOT)}:{line} {m}" for p in _py("models") for m, line, _ in _imports(p)
            if m.split(".")[0] in ("gui", "core")]
    assert not bad, bad


def test_heavy_libraries_are_imported_only_when_a_model_loads():
    bad = [f"{p.relative_to(ROOT)}:{line} {m}" for folder in ("core", "models", "gui") for p in _py(folder)
           for m, line, top in _imports(p) if top and m.split(".")[0] in HEAVY]
    assert not bad, bad
    code = ("import sys, core.media.decode, core.store.project, core.perception.ops, models.catalogue, gui.main_window; "
            f"bad = [m for m in {HEAVY!r} if m in sys.modules]; assert not bad, bad")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                       env={"QT_QPA_PLATFORM": "offscreen", "PATH": "/usr/bin:/bin"})
    assert r.returncode == 0, r.stderr


def test_only_gui_tasks_creates_threads():
    makers = ("ThreadPoolExecutor", "QThread", "QThreadPool", "Thread", "ProcessPoolExecutor")
    bad = []
    for folder in ("gui", "core", "models"):
        for p in _py(folder):
            if p == ROOT / "gui" / "tasks.py":
                continue
            for node in ast.walk(ast.parse(p.read_text(encoding="utf-8"))):
                if isinstance(node, ast.Call):
                    f = node.func
                    name = f.attr if isinstance(f, ast.Attribute) else getattr(f, "id", "")
                    if name in makers:
                        bad.append(f"{p.relative_to(ROOT)}:{node.lineno} {name}")
    assert not bad, bad


def test_files_stay_small():
    big = [f"{p.relative_to(ROOT)} ({n})" for folder in ("core", "models", "gui", "tests", "bench")
           for p in _py(folder) if (n := len(p.read_text(encoding="utf-8").splitlines())) > 800]
    assert not big, big


def test_no_pickle_anywhere():
    bad = [f"{p.relative_to(ROOT)}:{line}" for folder in ("core", "models", "gui") for p in _py(folder)
           for m, line, _ in _imports(p) if m in ("pickle", "dill", "cloudpickle", "joblib")]
    assert not bad, bad


def test_signal_emit_keeps_refcounts():
    """PySide6 6.12.0 decrements True's refcount on every emit (then aborts at exit on 3.11)."""
    code = (
        "import sys\n"
        "from PySide6.QtCore import QCoreApplication, QObject, Signal\n"
        "app = QCoreApplication([])\n"
        "class B(QObject):\n    s = Signal(int, float, str)\n"
        "b = B(); b.s.connect(lambda *a: None)\n"
        "before = sys.getrefcount(True), sys.getrefcount(False)\n"
        "for _ in range(200): b.s.emit(1, 0.5, 'x')\n"
        "after = sys.getrefcount(True), sys.getrefcount(False)\n"
        "assert after == before, (before, after)\n")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-500:]
