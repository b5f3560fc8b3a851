"""The Dockerfiles: hadolint (the real binary) plus the properties the chart and the operator
rely on — non-root uid 1000, exact base tags, the right extra, constraints, the entrypoint."""

from __future__ import annotations

import fnmatch
import re
from pathlib import Path

import pytest

from tests.deploy.support import REPO_ROOT, run_tool

DOCKERFILES = {
    "operator/Dockerfile": ("operator", ["kubepeft", "operator"]),
    "trainer_image/Dockerfile": ("trainer", ["kubepeft", "train"]),
    "trainer_image/Dockerfile.cpu": ("trainer", ["kubepeft", "train"]),
}


def _instructions(path: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with line continuations joined and comments dropped."""
    text = (REPO_ROOT / path).read_text(encoding="utf-8")
    joined = re.sub(r"\\\n", " ", text)
    out = []
    for line in joined.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        word, _, rest = line.partition(" ")
        out.append((word.upper(), rest.strip()))
    return out


def _final_stage(path: str) -> list[tuple[str, str]]:
    instructions = _instructions(path)
    last_from = max(i for i, (word, _) in enumerate(instructions) if word == "FROM")
    return instructions[last_from:]


def _resolve_args(path: str, value: str) -> str:
    defaults = {}
    for word, rest in _instructions(path):
        if word == "ARG" and "=" in rest:
            name, _, default = rest.partition("=")
            defaults[name] = default
    return re.sub(r"\$\{?(\w+)\}?", lambda m: defaults.get(m.group(1), m.group(0)), value)


def test_dockerfiles_pass_hadolint() -> None:
    result = run_tool("hadolint", *DOCKERFILES)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("path", sorted(DOCKERFILES))
def test_base_images_are_pinned_to_exact_versions(path: str) -> None:
    froms = [rest.split()[0] for word, rest in _instructions(path) if word == "FROM"]
    assert len(froms) >= 2, f"{path}: expected a multi-stage build"
    for image in froms:
        image = _resolve_args(path, image)
        assert ":" in image and not image.endswith(":latest"), f"{path}: {image} is not pinned"
        tag = image.rsplit(":", 1)[1]
        assert re.search(r"\d+\.\d+\.\d+", tag), f"{path}: {image} needs an exact (x.y.z) version tag"


@pytest.mark.parametrize("path", sorted(DOCKERFILES))
def test_runtime_stage_is_non_root_with_the_right_entrypoint(path: str) -> None:
    _extra, entrypoint = DOCKERFILES[path]
    final = _final_stage(path)
    users = [rest for word, rest in final if word == "USER"]
    assert users and users[-1].split(":")[0] == "1000", f"{path}: final USER must be uid 1000"
    entrypoints = [rest for word, rest in final if word == "ENTRYPOINT"]
    assert entrypoints and entrypoints[-1] == '["' + '", "'.join(entrypoint) + '"]'
    # The venv comes from the builder stage; nothing is pip-installed in the runtime stage.
    assert any(word == "COPY" and rest.startswith("--from=builder") for word, rest in final)
    assert not any(word == "RUN" and "pip install" in rest for word, rest in final)


@pytest.mark.parametrize("path", sorted(DOCKERFILES))
def test_package_is_installed_with_its_extra_and_the_constraints(path: str) -> None:
    extra, _ = DOCKERFILES[path]
    runs = " ".join(rest for word, rest in _instructions(path) if word == "RUN")
    installs = re.findall(r'pip install [^&]*"\.\[([a-z,]+)\]"', runs)
    assert installs == [extra], f"{path}: installs {installs}, expected only [{extra}]"
    assert re.search(r'pip install --no-cache-dir -c constraints\.txt "\.\[', runs), f"{path}: -c constraints.txt"
    text = (REPO_ROOT / path).read_text(encoding="utf-8")
    assert not re.search(r"ARG \w*(TOKEN|SECRET|PASSWORD|KEY)", text), "no secrets in build args"
    if extra == "operator":
        assert "torch" not in runs, "the operator image has no torch"


@pytest.mark.parametrize("path", ["trainer_image/Dockerfile", "trainer_image/Dockerfile.cpu"])
def test_trainer_images_pin_torch_and_keep_caches_under_cache(path: str) -> None:
    text = (REPO_ROOT / path).read_text(encoding="utf-8")
    assert "ARG TORCH_VERSION=2.13.0" in text
    runs = " ".join(rest for word, rest in _instructions(path) if word == "RUN")
    assert re.search(r'--index-url \S+ +"torch==\$\{TORCH_VERSION\}"', runs), f"{path}: torch from the PyTorch index"
    envs = " ".join(rest for word, rest in _final_stage(path) if word == "ENV")
    assert "HF_HOME=/cache/huggingface" in envs
    assert "TORCH_EXTENSIONS_DIR=/cache/torch_extensions" in envs
    if path.endswith(".cpu"):
        assert "download.pytorch.org/whl/cpu" in text
    else:
        cuda_image = _resolve_args(path, "${CUDA_IMAGE}")
        index = _resolve_args(path, "${TORCH_INDEX_URL}")
        cuda = re.search(r"cuda:(\d+)\.(\d+)", cuda_image)
        assert cuda, cuda_image
        assert index.endswith(f"/cu{cuda.group(1)}{cuda.group(2)}"), f"{index} does not match {cuda_image}"


def test_build_context_keeps_what_the_images_copy_and_drops_the_rest() -> None:
    patterns = [
        line.strip()
        for line in (REPO_ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    ]
    for required in (".git", ".venv", ".pytest_cache", ".mypy_cache", "tests"):
        assert required in patterns, f".dockerignore must exclude {required}"

    def ignored(path: str) -> bool:
        parts = Path(path).parts
        return any(fnmatch.fnmatch("/".join(parts[: i + 1]), p) for p in patterns for i in range(len(parts)))

    for dockerfile in DOCKERFILES:
        for word, rest in _instructions(dockerfile):
            if word != "COPY" or rest.startswith("--from"):
                continue
            *sources, _dest = rest.split()
            for source in sources:
                assert (REPO_ROOT / source).exists(), f"{dockerfile}: COPY {source} does not exist"
                assert not ignored(source), f"{dockerfile}: COPY {source} is excluded by .dockerignore"
