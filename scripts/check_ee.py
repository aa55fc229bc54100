"""Check the collection's execution-environment files with ansible-builder, without building an image.

1. ``ansible-builder create -f execution-environment.yml --context build/ee``: the definition turns into a build
   context; the Containerfile installs ansible-core as requirements.txt bounds it, the context's galaxy
   requirements install this collection and its bindep.txt holds the definition's system packages.
2. The collection as Galaxy gets it (``ansible-galaxy collection build``) is installed offline under build/ee-check
   and ``ansible-builder introspect`` runs on it as the Containerfile's builder stage does (with the context's
   bindep.txt): the artifact's meta/execution-environment.yml must resolve, and the requirements it yields must be
   every Python requirement of requirements.txt an execution environment needs (all but ansible-core, which the
   definition installs, and ansible-core's own dependencies) and every line of meta/ee-bindep.txt.
3. bindep's rules, evaluated for an EL 9 image: the builder stage (profile ``compile``) gets a C and C++ compiler,
   make, cmake, the OpenSSL headers and the headers of the definition's Python (what building uamqp from source
   needs where it has no wheel, such as aarch64); the final image gets none of them.

Usage: .venv/bin/python scripts/check_ee.py [REPO_ROOT]   (make ee)
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import yaml
from bindep.depends import Depends
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

DEFINITION = "execution-environment.yml"
COLLECTION_META = "meta/execution-environment.yml"
# requirements.txt entries an execution environment does not take from the collection, and why.
NOT_IN_EE = {
    "ansible-core": "the execution environment definition installs it (dependencies.ansible_core)",
    "jinja2": "a dependency of ansible-core",
    "pyyaml": "a dependency of ansible-core (ansible-builder drops it from collection requirements)",
}
# What building uamqp from source needs in the builder stage of an EL image (see meta/ee-bindep.txt).
EL_BUILD_PACKAGES = {"gcc", "gcc-c++", "make", "cmake", "openssl-devel"}
EL9_PLATFORM = ["platform:rpm", "platform:redhat", "platform:centos", "platform:centos-9"]

problems: list[str] = []


def problem(text: str) -> None:
    problems.append(text)
    print(f"  FAIL {text}")


def ok(text: str) -> None:
    print(f"  ok   {text}")


def tool(name: str) -> str:
    """The tool next to this Python (the .venv), else from PATH."""
    beside = Path(sys.executable).parent / name
    found = str(beside) if beside.exists() else shutil.which(name)
    if not found:
        sys.exit(f"check_ee: {name} not found (run `make setup`; it comes from requirements-dev.txt)")
    return found


def run(*cmd: str) -> str:
    print("  $ " + " ".join(cmd))
    result = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        sys.stdout.write(result.stdout)
        sys.stderr.write(result.stderr)
        sys.exit(f"check_ee: exit {result.returncode}: {' '.join(cmd)}")
    return result.stdout


def requirement_lines(path: Path) -> list[str]:
    lines = []
    for raw in path.read_text().splitlines():
        line = re.sub(r"(^|\s)#.*$", "", raw).strip()
        if line:
            lines.append(line)
    return lines


def requirements(path: Path) -> dict[str, Requirement]:
    """Name -> requirement of a pip requirements file (no -r/-c/options expected in these files)."""
    found: dict[str, Requirement] = {}
    for line in requirement_lines(path):
        if line.startswith("-"):
            problem(f"{path}: pip option lines are not expected here: {line!r}")
            continue
        req = Requirement(line)
        found[canonicalize_name(req.name)] = req
    return found


def same(a: Requirement, b: Requirement) -> bool:
    return (a.specifier, a.extras, str(a.marker or ""), a.url) == (b.specifier, b.extras, str(b.marker or ""), b.url)


def packages(rules: list) -> set[str]:
    return {rule[0] for rule in rules}


def main() -> int:
    root = Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).resolve().parent.parent).resolve()
    context = root / "build" / "ee"
    work = root / "build" / "ee-check"
    galaxy = yaml.safe_load((root / "galaxy.yml").read_text())
    fqcn = f"{galaxy['namespace']}.{galaxy['name']}"
    definition = yaml.safe_load((root / DEFINITION).read_text())
    deps = definition.get("dependencies", {})
    controller = requirements(root / "requirements.txt")

    print(f"== {DEFINITION}: ansible-builder create")
    shutil.rmtree(context, ignore_errors=True)
    run(tool("ansible-builder"), "create", "-f", str(root / DEFINITION), "--context", str(context))
    containerfile = (context / "Containerfile").read_text()
    core = Requirement(deps.get("ansible_core", {}).get("package_pip", "ansible-core"))
    if definition.get("version") != 3:
        problem(f"{DEFINITION}: version is {definition.get('version')!r}, not 3 (ansible-builder 3 schema)")
    if canonicalize_name(core.name) != "ansible-core" or not same(core, controller["ansible-core"]):
        problem(f"{DEFINITION}: ansible_core {core} differs from requirements.txt's {controller['ansible-core']}")
    refs = re.search(r'^ARG ANSIBLE_INSTALL_REFS="([^"]*)"', containerfile, re.MULTILINE)
    if not refs or str(deps["ansible_core"]["package_pip"]) not in refs.group(1).split():
        problem(f"Containerfile does not install {deps['ansible_core']['package_pip']}")
    else:
        ok(f"Containerfile installs {refs.group(1)}")
    for step in ("introspect.py introspect", "/output/scripts/assemble", "/output/scripts/install-from-bindep"):
        if step not in containerfile:
            problem(f"Containerfile has no `{step}` step")
    galaxy_reqs = yaml.safe_load((context / "_build" / "requirements.yml").read_text()) or {}
    names = [c["name"] if isinstance(c, dict) else c for c in galaxy_reqs.get("collections", [])]
    if fqcn in names:
        ok(f"_build/requirements.yml installs {fqcn}")
    else:
        problem(f"_build/requirements.yml does not install {fqcn}: {names}")
    user_bindep = context / "_build" / "bindep.txt"
    if not user_bindep.exists():
        problem("the context has no _build/bindep.txt (the definition's system packages)")

    print(f"== the built collection's {COLLECTION_META}: ansible-builder introspect")
    shutil.rmtree(work, ignore_errors=True)
    (work / "collections").mkdir(parents=True)
    galaxy_cli = tool("ansible-galaxy")
    run(galaxy_cli, "collection", "build", str(root), "--output-path", str(work))
    tarball = next(work.glob(f"{galaxy['namespace']}-{galaxy['name']}-*.tar.gz"))
    # --force: ansible.cfg's collections path has this checkout, which ansible-galaxy would take as installed.
    install = ["collection", "install", "--offline", "--no-deps", "--force", "-p", str(work / "collections")]
    run(galaxy_cli, *install, str(tarball))
    installed = work / "collections" / "ansible_collections" / galaxy["namespace"] / galaxy["name"]
    if not (installed / "MANIFEST.json").exists():
        sys.exit(f"check_ee: {tarball.name} did not install into {installed}")
    # What the README tells users to take from an installed copy.
    for shipped in (DEFINITION, COLLECTION_META, "requirements.txt"):
        if (installed / shipped).exists():
            ok(f"the artifact ships {shipped}")
        else:
            problem(f"the artifact does not ship {shipped} (galaxy.yml build_ignore?)")
    pip_out, bindep_out = work / "requirements.txt", work / "bindep.txt"
    introspect = [tool("ansible-builder"), "introspect", str(work / "collections")]
    if user_bindep.exists():
        introspect.append(f"--user-bindep={user_bindep}")
    run(*introspect, f"--write-pip={pip_out}", f"--write-bindep={bindep_out}")
    ee_python = requirements(pip_out) if pip_out.exists() else {}
    for name, req in sorted(controller.items()):
        if name in NOT_IN_EE:
            ok(f"{req} not in the EE requirements: {NOT_IN_EE[name]}")
        elif name not in ee_python:
            problem(f"requirements.txt's {req} is missing from meta/ee-requirements.txt")
        elif not same(req, ee_python[name]):
            problem(f"meta/ee-requirements.txt has {ee_python[name]}, requirements.txt {req}")
        else:
            ok(f"{ee_python[name]}")
    for name, req in sorted(ee_python.items()):
        if name not in controller:
            problem(f"meta/ee-requirements.txt's {req} is not in requirements.txt (the controller's requirements)")
    collection_bindep = requirement_lines(root / "meta" / "ee-bindep.txt")
    introspected_bindep = requirement_lines(bindep_out) if bindep_out.exists() else []
    missing = [line for line in collection_bindep if line not in introspected_bindep]
    if missing:
        problem(f"meta/ee-bindep.txt lines missing from the introspected bindep.txt: {missing}")
    else:
        ok(f"bindep.txt has meta/ee-bindep.txt's {len(collection_bindep)} lines")

    print("== bindep rules for an EL 9 image")
    rules = Depends("\n".join(introspected_bindep) + "\n")
    builder = packages(rules.active_rules([*EL9_PLATFORM, "compile"]))
    final = packages(rules.active_rules([*EL9_PLATFORM, "default"]))
    python_path = deps.get("python_interpreter", {}).get("python_path", "/usr/bin/python3")
    version = re.search(r"python(3\.\d+)?$", python_path)
    headers = f"python{version.group(1)}-devel" if version and version.group(1) else "python3-devel"
    needed = EL_BUILD_PACKAGES | {headers}
    if needed <= builder:
        ok(f"builder stage (compile): {' '.join(sorted(builder))}")
    else:
        problem(f"builder stage lacks {sorted(needed - builder)} (has {sorted(builder)})")
    if final & needed:
        problem(f"the final image would get build-only packages: {sorted(final & needed)}")
    else:
        ok(f"final image: {' '.join(sorted(final)) or 'no system packages'}")
    dpkg = packages(rules.active_rules(["platform:dpkg", "platform:debian", "compile"]))
    if {"build-essential", "cmake", "libssl-dev", "python3-dev"} <= dpkg:
        ok(f"dpkg (compile): {' '.join(sorted(dpkg))}")
    else:
        problem(f"dpkg compile packages incomplete: {sorted(dpkg)}")

    if problems:
        print(f"check_ee: {len(problems)} problem(s)", file=sys.stderr)
        return 1
    print(f"check_ee: ok (build context in {context.relative_to(root)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
