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


# ---------------------------------------------------------------- the house (issue #16)
CAPABILITIES = ("focus", "anomaly", "chat", "tagging")


def _module_of(p: Path) -> str:
    parts = p.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_of(p): p for folder in ("core", "models", "gui") for p in _py(folder)}


def _edges(mods: dict[str, Path]) -> dict[str, set[str]]:
    """module -> the Kestrel modules it imports (anywhere in the file, lazily or not)."""
    out: dict[str, set[str]] = {}
    for name, p in mods.items():
        deps: set[str] = set()
        for node in ast.walk(ast.parse(p.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets = [f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in mods else node.module
                           for a in node.names]
            else:
                continue
            deps.update(t for t in targets if t in mods and t != name)
        out[name] = deps
    return out


def test_no_import_cycles():
    mods = _modules()
    graph = _edges(mods)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    cycles: list[list[str]] = []

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                cycles.append(sorted(comp))

    sys.setrecursionlimit(10000)
    for v in graph:
        if v not in index:
            visit(v)
    assert not cycles, cycles


def test_capabilities_use_shared_modules_not_each_others():
    bad = []
    for cap in CAPABILITIES:
        for p in _py(f"core/{cap}"):
            for m, line, _ in _imports(p):
                parts = m.split(".")
                if len(parts) >= 2 and parts[0] == "core" and parts[1] in CAPABILITIES and parts[1] != cap:
                    bad.append(f"{p.relative_to(ROOT)}:{line} {m}")
    assert not bad, bad


def _gui_defined(tree: ast.Module) -> set[str]:
    return {n.name for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))}


def test_gui_holds_no_job_logic():
    """Every function the window hands to a worker (tasks.run / tasks.call / the window's _db) is
    defined in core/ (or is a method of a core object): never a lambda or a function written in gui/."""
    bad = []
    for p in _py("gui"):
        if p.name == "tasks.py":
            continue
        tree = ast.parse(p.read_text(encoding="utf-8"))
        local = _gui_defined(tree)
        for node in ast.walk(tree):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.args):
                continue
            f = node.func
            owner = f.value.attr if isinstance(f.value, ast.Attribute) else getattr(f.value, "id", "")
            if not ((f.attr in ("run", "call") and owner == "tasks") or f.attr == "_db"):
                continue
            fn = node.args[0]
            if isinstance(fn, ast.Lambda):
                bad.append(f"{p.relative_to(ROOT)}:{node.lineno} lambda")
            elif isinstance(fn, ast.Name) and fn.id in local:
                bad.append(f"{p.relative_to(ROOT)}:{node.lineno} {fn.id} (defined in gui/)")
            elif (isinstance(fn, ast.Attribute) and isinstance(fn.value, ast.Name) and fn.value.id == "self"
                  and fn.attr in local):
                bad.append(f"{p.relative_to(ROOT)}:{node.lineno} self.{fn.attr} (a gui method)")
    assert not bad, bad


def test_one_holder_of_loaded_models():
    """Loaded models are held in models/loaded.py only: no other per-thread store, no shared()
    singletons, no cached loader. (core/store/project.py's thread-local holds a transaction.)"""
    allowed = {ROOT / "models" / "loaded.py", ROOT / "core" / "store" / "project.py"}
    bad = []
    for folder in ("core", "models", "gui"):
        for p in _py(folder):
            if p in allowed:
                continue
            tree = ast.parse(p.read_text(encoding="utf-8"))
            for node in ast.walk(tree):
                if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                        and node.func.attr == "local" and getattr(node.func.value, "id", "") == "threading"):
                    bad.append(f"{p.relative_to(ROOT)}:{node.lineno} threading.local")
                if isinstance(node, ast.FunctionDef) and node.name == "shared" and any(
                        getattr(d, "id", "") == "classmethod" for d in node.decorator_list):
                    bad.append(f"{p.relative_to(ROOT)}:{node.lineno} {node.name}()")
                if isinstance(node, ast.FunctionDef) and any(
                        "cache" in ast.unparse(d) for d in node.decorator_list) and "load_model" in ast.unparse(node):
                    bad.append(f"{p.relative_to(ROOT)}:{node.lineno} cached loader {node.name}")
    assert not bad, bad


def test_one_thread_limiter():
    """Torch and OpenCV thread counts change in models/loaded.limit_threads, or where a backend
    configures the model it loads (models/backends, models/llm): nowhere in core/ or gui/, and no
    second limiter in models/nn."""
    bad = [f"{p.relative_to(ROOT)}" for folder in ("core", "gui", "models/nn") for p in _py(folder)
           if "set_num_threads(" in (t := p.read_text(encoding="utf-8")) or "setNumThreads(" in t]
    assert not bad, bad


def test_processes_and_ray_start_where_the_rule_says():
    """Ray workers start only in the one cluster path (core/cluster.py: tag, analyze, anomalies);
    child processes only where samples are fetched with pip. Threads: test_only_gui_tasks_creates_threads."""
    rules = {"ray": {ROOT / "core" / "cluster.py"},
             "subprocess": {ROOT / "core" / "media" / "samples.py"},
             "multiprocessing": set(), "concurrent.futures.process": set()}
    bad = [f"{p.relative_to(ROOT)}:{line} {m}" for folder in ("core", "models", "gui") for p in _py(folder)
           for m, line, _ in _imports(p) for mod, where in rules.items()
           if (m == mod or m.startswith(mod + ".")) and p not in where]
    assert not bad, bad


def test_one_root_error():
    """Every exception class Kestrel defines derives from models.errors.KestrelError (through
    its own bases), and only core/errors.py prints an error line. ``core.jobs.Cancelled`` is the
    one exception that is not an error: a stop the analyst asked for (like KeyboardInterrupt),
    which no error handler may catch as a failure."""
    mods = _modules()
    classes: dict[str, list[str]] = {}
    for p in mods.values():
        for node in ast.walk(ast.parse(p.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ClassDef):
                classes.setdefault(node.name, []).extend(
                    b.attr if isinstance(b, ast.Attribute) else getattr(b, "id", "") for b in node.bases)

    def root(name: str, seen: frozenset = frozenset()) -> bool:
        if name == "KestrelError":
            return True
        if name in seen or name not in classes:
            return False
        return any(root(b, seen | {name}) for b in classes[name])

    import builtins

    excs = {n for n in dir(builtins) if isinstance(getattr(builtins, n), type)
            and issubclass(getattr(builtins, n), BaseException)}

    def is_exception(name: str, seen: frozenset = frozenset()) -> bool:
        if name in excs:
            return True
        if name in seen or name not in classes:
            return False
        return any(is_exception(b, seen | {name}) for b in classes[name])

    bad = sorted(n for n in classes if n not in ("KestrelError", "Cancelled") and is_exception(n) and not root(n))
    assert not bad, bad
    printers = [f"{p.relative_to(ROOT)}" for p in [*mods.values(), ROOT / "main.py"]
                if p != ROOT / "core" / "errors.py" and '"kestrel: ' in p.read_text(encoding="utf-8")
                or "f\"kestrel: {" in p.read_text(encoding="utf-8") and p != ROOT / "core" / "errors.py"]
    assert not printers, printers
