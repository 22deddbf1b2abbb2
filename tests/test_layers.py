"""The house's three layers, service -> worker -> model, with imports pointing down only
(docs/architecture.md): every import of every module is read from its source (ast), lazy imports
inside functions included, and the processes at the top are checked for what they load."""
import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LAYERS = ("model", "worker", "service")               # lowest first
# what each layer may import of the layers above it: nothing
FORBIDDEN = {"model": ("worker", "service"), "worker": ("service",), "service": ()}
# the service reaches the job runtime through its public interface (worker/__init__.py) and mounts
# `tunesmith worker` (worker/cli.py); never the tasks, nor the jobs that load the model
SERVICE_MAY_USE = ("worker", "worker.cli")
# and of the model, only the modules that import no torch (model/cli.py imports it inside its commands;
# the subpackages' faces import nothing)
SERVICE_MAY_USE_OF_MODEL = ("model", "model.generation", "model.training", "model.generation.params", "model.representation.keys", "model.representation.styles",
                            "model.representation.chords",
                            "model.training.config",
                            "model.training.recipe",
                            "model.cli")


def imports_of(path: Path) -> list[tuple[str, int]]:
    """(module, line) of every import in a module, at any depth, relative ones resolved."""
    package = ".".join(path.relative_to(ROOT).with_suffix("").parts[:-1])
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([base] if base else []))
            found.append((base, node.lineno))
            found += [(f"{base}.{alias.name}", node.lineno) for alias in node.names
                      if (ROOT / Path(*base.split("."), alias.name + ".py")).is_file()]   # a submodule
    return found


def modules(layer: str) -> list[Path]:
    return sorted((ROOT / layer).rglob("*.py"))


def test_every_layer_is_read():
    seen = {layer: {name.split(".")[0] for path in modules(layer) for name, _ in imports_of(path)}
            for layer in LAYERS}
    assert "model" in seen["worker"] and "worker" in seen["service"] and "model" in seen["service"]
    assert all(modules(layer) for layer in LAYERS)


@pytest.mark.parametrize("layer", LAYERS)
def test_imports_point_down_only(layer):
    wrong = [f"{path.relative_to(ROOT)}:{line} imports {name}" for path in modules(layer)
             for name, line in imports_of(path) if name.split(".")[0] in FORBIDDEN[layer]]
    assert wrong == []


def test_the_service_uses_only_the_workers_interface_and_the_torch_free_model():
    allowed = {"worker": SERVICE_MAY_USE, "model": SERVICE_MAY_USE_OF_MODEL}
    wrong = [f"{path.relative_to(ROOT)}:{line} imports {name}" for path in modules("service")
             for name, line in imports_of(path)
             if name.split(".")[0] in allowed and name not in allowed[name.split(".")[0]]]
    assert wrong == []


def _python(code: str, env: dict) -> dict:
    out = subprocess.run([sys.executable, "-c", code], env={**os.environ, **env}, capture_output=True,
                         text=True, timeout=180, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_serving_a_melody_request_loads_neither_torch_nor_the_tasks(service_env):
    """A fresh API process: build the app, answer /healthz, take a melody job and show it."""
    code = ("import json, sys\n"
            "from service import create_app\n"
            "client = create_app().test_client()\n"
            "codes = [client.get('/healthz').status_code]\n"
            "job = client.post('/api/v1/melodies', json={'bars': 4, 'count': 2})\n"
            "codes += [job.status_code, client.get(job.get_json()['status_url']).status_code]\n"
            "heavy = sorted(m for m in sys.modules if m.split('.')[0] == 'torch' or m in\n"
            "               ('worker.tasks', 'worker.generation', 'worker.training', 'model.generation.sampling'))\n"
            "print(json.dumps({'codes': codes, 'heavy': heavy}))\n")
    result = _python(code, service_env)
    assert result == {"codes": [200, 202, 200], "heavy": []}


def test_the_worker_process_builds_no_flask_app():
    """The worker's entry module: a Celery app with the tasks registered; no Flask, no torch."""
    code = ("import json, sys\n"
            "from worker.celery_worker import celery_app\n"
            "tasks = sorted(t for t in celery_app.tasks if t.startswith('worker.'))\n"
            "print(json.dumps({'tasks': tasks, 'flask': 'flask' in sys.modules, 'torch': 'torch' in sys.modules}))\n")
    assert _python(code, {}) == {"tasks": ["worker.tasks.echo", "worker.tasks.generate_melodies",
                                           "worker.tasks.train_model"], "flask": False, "torch": False}


# model/ by role, lowest floor first: a module imports from its own floor or the floors below it
MODEL_FLOORS = ("representation", "network", "training", "generation", "evaluation")


def _floor(module: str) -> int | None:
    """The floor of a model module (None for model/__init__.py); model/cli.py stands above them all."""
    parts = module.split(".")
    if parts[0] != "model" or len(parts) == 1:
        return None
    if parts[1] == "cli":
        return len(MODEL_FLOORS)
    return MODEL_FLOORS.index(parts[1]) if parts[1] in MODEL_FLOORS else None


def test_model_is_laid_out_by_role():
    loose = sorted(p.name for p in (ROOT / "model").glob("*.py") if p.name not in ("__init__.py", "cli.py"))
    assert loose == [] and all((ROOT / "model" / floor / "__init__.py").is_file() for floor in MODEL_FLOORS)


def test_model_floors_import_down_only():
    wrong = []
    for path in modules("model"):
        here = _floor(".".join(path.relative_to(ROOT).with_suffix("").parts))
        for name, line in imports_of(path):
            there = _floor(name)
            if here is not None and there is not None and there > here:
                wrong.append(f"{path.relative_to(ROOT)}:{line} imports {name}")
            if here is None and there is not None and path.name == "__init__.py":
                wrong.append(f"{path.relative_to(ROOT)}:{line} imports {name} (a package's face stays light)")
    assert wrong == []


def _defined(module: str) -> set[str] | None:
    """Top-level names a module defines itself (functions, classes, assignments); None if not a module."""
    path = ROOT / Path(*module.split("."))
    path = path / "__init__.py" if path.is_dir() else path.with_suffix(".py")
    if not path.is_file():
        return None
    names = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names |= {n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name)}
    return names


def test_every_model_name_has_one_address():
    """A name is imported from the module that defines it, never through another that re-exports it."""
    wrong = []
    for layer in LAYERS + ("tests", "bench"):
        for path in sorted((ROOT / layer).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text())):
                if not (isinstance(node, ast.ImportFrom) and not node.level and node.module
                        and node.module.split(".")[0] == "model"):
                    continue
                defined = _defined(node.module)
                for alias in node.names:
                    if _defined(f"{node.module}.{alias.name}") is None and alias.name not in (defined or ()):
                        wrong.append(f"{path.relative_to(ROOT)}:{node.lineno} takes {alias.name} from {node.module}")
    assert wrong == []
