#!/usr/bin/python3
"""Offline: every shared library the binaries of each image load (ldd, so
transitively, as built here) belongs to a Debian package that image's
runtime stage installs (docker/<image>.packages) or that those depend on, or
to the base every Debian image has; or, for the worker image, to the torch
wheel's libraries (site-packages/torch/lib and site-packages/nvidia of
Topiary's Python environment), which docker/Dockerfile copies into it at the
same path. An image then never starts with a missing library. It also checks
that no binary loads a second copy of a library libtorch carries (Debian's
libgloo or libgomp beside the wheel's): one copy of each in a process.
Usage: check_libraries.py BUILD_DIR
"""
import os
import re
import subprocess
import sys

SRC = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
BUILD = os.path.abspath(sys.argv[1])
IMAGES = {  # what docker/Dockerfile copies into each
    "coordinator": ["bin/topiary-coordinator", "bin/topiary"],
    "worker": ["bin/topiary-worker", "bin/topiary-rank", "bin/topiary-compute", "bin/topiary",
               "lib/libtopiary_spm_shim.so"],
}
WHEEL_IMAGES = {"worker"}  # the images docker/Dockerfile copies the wheel's libraries into
BASE = ["apt"]  # debootstrap --variant=minbase and debian:bookworm-slim hold apt and what it needs


def owners(paths):
    """path -> the packages owning it (dpkg -S, in one call per spelling of the paths)."""
    found = {}
    for spell in (lambda p: p, os.path.realpath, lambda p: re.sub(r"^/usr", "", p), lambda p: "/usr" + p):
        todo = {spell(p): p for p in paths if p not in found}
        if not todo:
            break
        r = subprocess.run(["dpkg", "-S"] + sorted(todo), capture_output=True, text=True)
        for line in r.stdout.splitlines():
            pkgs, _, path = line.partition(": ")
            if path in todo:
                found[todo[path]] = {p.split(":")[0] for p in pkgs.split(", ")}
    return found


def closure(roots):
    r = subprocess.run(["apt-cache", "depends", "--recurse", "--no-recommends", "--no-suggests", "--no-conflicts",
                        "--no-breaks", "--no-replaces", "--no-enhances", "--installed"] + roots,
                       capture_output=True, text=True)
    return {line.strip() for line in r.stdout.splitlines() if line and not line.startswith(" ")} | set(roots)


def wheel_dirs():
    venv = subprocess.run([os.path.join(SRC, "scripts/venv")], capture_output=True, text=True).stdout.strip()
    r = subprocess.run([os.path.join(venv, "bin/python"), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                       capture_output=True, text=True)
    site = r.stdout.strip()
    return [os.path.join(site, "torch", "lib") + "/", os.path.join(site, "nvidia") + "/"] if site else []


def main():
    failures = 0
    wheel = wheel_dirs()
    with open(os.path.join(SRC, "docker", "Dockerfile")) as f:
        dockerfile = f.read()
    copies_wheel = '"$site/torch/lib" "$site/nvidia"' in dockerfile
    for image, binaries in IMAGES.items():
        with open(os.path.join(SRC, "docker", image + ".packages")) as f:
            listed = [l.strip() for l in f if l.strip() and not l.startswith("#")]
        provided = closure(listed + BASE)
        needed = {}
        libs = {}
        for b in binaries:
            path = os.path.join(BUILD, b)
            if not os.path.exists(path):
                print(f"{image}: {b} is not built")
                failures += 1
                continue
            out = subprocess.run(["ldd", path], capture_output=True, text=True).stdout
            loaded = re.findall(r"=> (/\S+)", out)
            # One copy of each library libtorch carries: the loader takes one
            # file per soname, so the check is which file. Gloo lives inside
            # libtorch_cpu, so no libgloo at all; OpenMP and NCCL are the
            # wheel's where libtorch is loaded.
            for lib in loaded:
                name = os.path.basename(lib)
                if name.startswith("libgloo.so"):
                    print(f"{image}: {b} loads {lib} beside libtorch's own Gloo")
                    failures += 1
                if name.startswith(("libgomp.so", "libnccl.so")) and wheel and not any(lib.startswith(d) for d in wheel):
                    print(f"{image}: {b} loads {lib}, not the torch wheel's copy of {name}")
                    failures += 1
            for lib in loaded:
                if lib.startswith(BUILD):  # ours are copied into the image
                    continue
                if any(lib.startswith(d) for d in wheel):
                    if image not in WHEEL_IMAGES or not copies_wheel:
                        print(f"{image}: {b} loads {lib} from the torch wheel, which the image does not carry")
                        failures += 1
                    continue
                libs.setdefault(lib, b)
        owned = owners(libs)
        for lib, b in sorted(libs.items()):
            if lib not in owned:
                print(f"{image}: {b} loads {lib}, which no package provides")
                failures += 1
            for p in owned.get(lib, ()):
                needed.setdefault(p, set()).add(os.path.basename(lib))
        missing = {p: libs for p, libs in needed.items() if p not in provided}
        for p, libs in sorted(missing.items()):
            print(f"{image}: needs {p} (for {', '.join(sorted(libs))}), which docker/{image}.packages does not bring")
        failures += len(missing)
        print(f"{image}: {len(needed)} packages needed by {len(binaries)} binaries, all installed by "
              f"{len(listed)} listed" if not missing else f"{image}: {len(missing)} packages missing")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
