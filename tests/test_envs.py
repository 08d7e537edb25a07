"""Installing: pip (requirements.txt) and conda (envs/*.yaml) pin the same versions, pyproject.toml ships every
package, and every rule that runs code has a pinned env."""

from __future__ import annotations

import re

import yaml

from tests.conftest import ROOT

# pip name -> conda-forge name, where they differ.
CONDA_NAME = {
    "torch": "pytorch",
    "opencv-python-headless": "py-opencv",
    "openslide-bin": "openslide",  # the wheel bundles the OpenSlide library of this version
    "SimpleITK": "simpleitk",
    "matplotlib": "matplotlib-base",
    "PyYAML": "pyyaml",
}
# Runner-only packages: Snakemake itself runs outside the rule envs.
NOT_IN_RULE_ENVS = {"snakemake", "pygments"}


def pip_pins() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "requirements.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, version = line.split("==")
            pins[name] = version
    return pins


def conda_pins() -> dict[str, dict[str, str]]:
    envs = {}
    for path in sorted((ROOT / "envs").glob("*.yaml")):
        spec = yaml.safe_load(path.read_text())
        assert spec["channels"] == ["conda-forge", "nodefaults"], path.name
        deps = {}
        for dep in spec["dependencies"]:
            assert isinstance(dep, str) and re.fullmatch(r"[\w.-]+=[\w.]+", dep), (
                f"{path.name}: {dep!r} is not pinned as name=version"
            )
            name, version = dep.split("=")
            deps[name] = version
        envs[path.name] = deps
    return envs


def release(version: str, parts: int) -> str:
    return ".".join(version.split(".")[:parts])


def test_every_env_pins_python_311():
    for name, deps in conda_pins().items():
        assert deps.get("python") == "3.11", name


def test_conda_versions_agree_with_pip():
    pins = pip_pins()
    seen = set()
    for env, deps in conda_pins().items():
        for pip_name, version in pins.items():
            conda = CONDA_NAME.get(pip_name, pip_name.lower())
            if conda in deps:
                seen.add(pip_name)
                # A pip version may carry an extra wheel build number (opencv 5.0.0.93, openslide-bin 4.0.1.2).
                want = release(version, len(deps[conda].split(".")))
                assert deps[conda] == want, (
                    f"{env}: {conda}={deps[conda]} but requirements.txt has {pip_name}=={version}"
                )
    missing = set(pins) - seen - NOT_IN_RULE_ENVS
    assert not missing, f"pinned in requirements.txt but in no conda env: {sorted(missing)}"


def test_every_conda_package_is_pinned_for_pip_too():
    known = {CONDA_NAME.get(n, n.lower()) for n in pip_pins()} | {"python"}
    for env, deps in conda_pins().items():
        assert set(deps) <= known, f"{env}: not in requirements.txt: {sorted(set(deps) - known)}"


def test_pip_install_ships_every_library_package():
    """pyproject.toml's packages, as setuptools reads them, are every folder of workflow/ and model/ with an __init__.py."""
    from setuptools.config.pyprojecttoml import read_configuration

    packages = read_configuration(ROOT / "pyproject.toml")["tool"]["setuptools"]["packages"]
    folders = {
        ".".join(init.parent.relative_to(ROOT).parts)
        for library in ("workflow", "model")
        for init in (ROOT / library).rglob("__init__.py")
    }
    assert sorted(packages) == sorted(folders)


RULE_FILES = [ROOT / "Snakefile", *sorted((ROOT / "rules").glob("*.smk"))]
RULE = re.compile(r"^( *)rule (\w+):", re.M)
ENV = re.compile(r'^\s*conda:\s*\n\s*"\.\./envs/([\w.-]+)"', re.M)


def rule_bodies(text: str) -> dict[str, str]:
    """Rule name -> its indented body, for rules at any indentation (those under if/else too)."""
    bodies = {}
    for head in RULE.finditer(text):
        body = []
        for line in text[head.end() :].splitlines()[1:]:
            if line.strip() and len(line) - len(line.lstrip()) <= len(head.group(1)):
                break
            body.append(line)
        bodies[head.group(2)] = "\n".join(body)
    return bodies


def rules_without_env(text: str) -> list[str]:
    """The rules that run code (script: or shell:) without a conda: env file."""
    return [
        name
        for name, body in rule_bodies(text).items()
        if re.search(r"^\s*(script|shell):", body, re.M) and not ENV.search(body)
    ]


def test_every_rule_that_runs_code_has_a_pinned_env():
    for path in RULE_FILES:
        text = path.read_text()
        assert rules_without_env(text) == [], f"{path.name}: these rules run code without conda:"
        for name, body in rule_bodies(text).items():
            env = ENV.search(body)
            assert not env or (ROOT / "envs" / env.group(1)).is_file(), f"rule {name}: no envs/{env.group(1)}"


def test_a_rule_nested_in_an_if_block_without_env_is_caught():
    """Each rule under an if/else block, its conda: removed, fails the check above."""
    nested = [(path, head) for path in RULE_FILES for head in RULE.finditer(path.read_text()) if head.group(1)]
    assert nested, "no rule under an if/else block left: this test checks nothing"
    for path, head in nested:
        text = path.read_text()
        env = ENV.search(text, head.end())
        stripped = text[: env.start()] + text[env.end() :]
        assert rules_without_env(stripped) == [head.group(2)], f"{path.name}: {head.group(2)}"


# Import name -> conda-forge package, for the libraries whose absence from a rule's env would break it.
CHECKED_IMPORTS = {
    "torch": "pytorch",
    "torchvision": "torchvision",
    "timm": "timm",
    "safetensors": "safetensors",
    "openslide": "openslide-python",
    "cv2": "py-opencv",
    "h5py": "h5py",
    "nibabel": "nibabel",
    "SimpleITK": "simpleitk",
    "sklearn": "scikit-learn",
    "sksurv": "scikit-survival",
    "lifelines": "lifelines",
    "matplotlib": "matplotlib-base",
    "yaml": "pyyaml",
}


def test_rule_scripts_import_only_what_their_env_has():
    """Import each script's modules in a fresh interpreter; the libraries they load must be in the rule's env."""
    import subprocess
    import sys

    envs = conda_pins()
    loaded_by: dict[tuple[str, ...], set[str]] = {}
    for smk in sorted((ROOT / "rules").glob("*.smk")):
        for block in rule_bodies(smk.read_text()).values():
            env = ENV.search(block)
            script = re.search(r'script:\s*\n\s*"\.\./(scripts/[\w.]+)"', block)
            if not (env and script):
                continue
            text = (ROOT / script.group(1)).read_text()
            imports = tuple(sorted(set(re.findall(r"^(?:from|import) ([\w.]+)", text, re.M)) - {"__future__"}))
            if imports not in loaded_by:
                probe = f"import sys; import {', '.join(imports)}; print(' '.join(sys.modules))"
                done = subprocess.run(
                    [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True
                )
                loaded_by[imports] = set(done.stdout.split())
            needed = {CHECKED_IMPORTS[m] for m in loaded_by[imports] if m in CHECKED_IMPORTS}
            missing = needed - set(envs[env.group(1)])
            assert not missing, f"{script.group(1)} runs in {env.group(1)} but imports {sorted(missing)}"
