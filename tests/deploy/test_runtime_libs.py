"""The runtime image provides every shared library the binaries link.

ldd build/bin/logpipe-* lists the libraries (direct and indirect); dpkg -S
maps each to its Debian package.  A package providing a library a binary
names directly (DT_NEEDED) must be on the runtime stage's apt-get line;
every other one must come in with those packages' dependencies (their
Depends/Pre-Depends closure, read from dpkg's database), as apt installs
them.  debian:bookworm-slim's own libc6 is in that closure too."""
import functools
import re
import subprocess
from pathlib import Path

from deploylib import REPO, apt_packages, dockerfile_stages, need_binaries
from harness import Skip, check, fail_list


def _ldd(binary):
    r = subprocess.run(["ldd", str(binary)], capture_output=True, text=True, timeout=30)
    check(r.returncode == 0, f"ldd {binary.name} failed: {r.stderr}")
    libs, missing = {}, []
    for line in r.stdout.splitlines():
        m = re.match(r"\s*(\S+) => (not found|(\S+))", line)
        if m:
            if m.group(2) == "not found":
                missing.append(m.group(1))
            else:
                libs[m.group(1)] = m.group(3)
        else:
            m = re.match(r"\s*(/\S+) \(0x", line)  # the dynamic loader
            if m:
                libs[Path(m.group(1)).name] = m.group(1)
    check(not missing, f"{binary.name}: libraries not found: {missing}")
    return libs


def _needed(binary):
    r = subprocess.run(["readelf", "-d", str(binary)], capture_output=True, text=True,
                       timeout=30)
    return set(re.findall(r"\(NEEDED\)\s+Shared library: \[(.+?)\]", r.stdout))


def _owners(paths):
    """{path: package} for every path dpkg knows, in one dpkg -S call (each
    call reads dpkg's whole file list, so one per library is slow).  Both
    /usr-merged spellings of a path are asked."""
    spellings = {}
    for path in paths:
        for p in {path, str(Path(path).resolve())}:
            spellings[p] = path
            spellings[p[4:] if p.startswith("/usr/") else "/usr" + p] = path
    r = subprocess.run(["dpkg", "-S", *sorted(spellings)], capture_output=True, text=True)
    found = {}
    for line in r.stdout.splitlines():
        pkgs, _, f = line.partition(": ")
        if f in spellings:
            found[spellings[f]] = pkgs.split(",")[0].split(":")[0].strip()
    return found


@functools.lru_cache(maxsize=1)
def _depends_table():
    """{package: [dependency names]} of every installed package (one call)."""
    r = subprocess.run(["dpkg-query", "-W", "-f",
                        "${Package}\t${Status}\t${Depends}, ${Pre-Depends}\n"],
                       capture_output=True, text=True, check=True)
    table = {}
    for line in r.stdout.splitlines():
        pkg, status, deps = (line.split("\t") + ["", ""])[:3]
        if not status.endswith(" installed"):
            continue
        names = []
        for alt_group in deps.split(","):
            for alt in alt_group.split("|"):
                name = re.sub(r"\(.*?\)", "", alt).strip().split(":")[0]
                if name:
                    names.append(name)
        table[pkg] = names
    return table


def _closure(pkgs):
    table, seen, todo = _depends_table(), set(), list(pkgs)
    while todo:
        p = todo.pop()
        if p in seen:
            continue
        seen.add(p)
        todo += [d for d in table.get(p, ()) if d not in seen]
    return seen


def _runtime_packages():
    stages = dockerfile_stages()
    check("runtime" in stages, "the Dockerfile has no stage named runtime")
    pkgs = apt_packages(stages["runtime"])
    check(pkgs, "the runtime stage installs no packages")
    return pkgs


def test_every_linked_library_comes_from_a_runtime_package():
    binaries = need_binaries()
    runtime = set(_runtime_packages())
    closure = _closure(runtime | {"libc6", "libgcc-s1"})
    linked = {b: _ldd(b) for b in binaries}
    owners = _owners({p for libs in linked.values() for p in libs.values()})
    problems = []
    for b, libs in linked.items():
        needed = _needed(b)
        for soname, path in libs.items():
            pkg = owners.get(path)
            if pkg is None:
                problems.append(f"{b.name}: {path} belongs to no Debian package")
            elif soname in needed and pkg not in runtime and pkg != "libc6":
                problems.append(f"{b.name} links {soname} directly: add {pkg} to the "
                                f"runtime stage's apt-get install")
            elif pkg not in closure:
                problems.append(f"{b.name}: {soname} ({pkg}) is not pulled in by the "
                                f"runtime packages")
    fail_list(sorted(set(problems)), "libraries the runtime image would lack")


def test_every_make_library_has_a_runtime_package():
    """Each -lNAME of LP_LIBS (mk/common.mk) maps to a package on the
    runtime line, so a library linked --as-needed today and needed tomorrow
    is already there."""
    text = (REPO / "mk" / "common.mk").read_text()
    m = re.search(r"^LP_LIBS\s*:?=\s*(.+)$", text, re.M)
    check(m, "mk/common.mk has no LP_LIBS line")
    runtime = set(_runtime_packages())
    cache = subprocess.run(["ldconfig", "-p"], capture_output=True, text=True).stdout
    problems, first = [], {}
    for lib in re.findall(r"-l(\S+)", m.group(1)):
        paths = re.findall(rf"\slib{re.escape(lib)}\.so\.\S* \(.*?\) => (\S+)", cache)
        if not paths:
            problems.append(f"-l{lib}: no shared library lib{lib}.so.* on this machine")
        else:
            first[lib] = paths[0]
    owners = _owners(set(first.values()))
    for lib, path in first.items():
        pkg = owners.get(path)
        if pkg != "libc6" and pkg not in runtime:
            problems.append(f"-l{lib} ({path}) comes from {pkg}, not on the runtime line")
    fail_list(problems, "make libraries without a runtime package")


def test_runtime_packages_exist_in_debian():
    pkgs = _runtime_packages()
    r = subprocess.run(["apt-cache", "policy", *pkgs], capture_output=True, text=True)
    cands = dict(re.findall(r"^(\S+):\n\s+Installed:.*\n\s+Candidate:\s*(\S+)", r.stdout, re.M))
    installed = _depends_table()
    problems = [f"{p}: neither installable nor installed here" for p in pkgs
                if cands.get(p, "(none)") == "(none)" and p not in installed]
    if problems and not any(Path("/var/lib/apt/lists").glob("*Packages*")):
        raise Skip("apt lists are empty (apt-get update not run)")
    fail_list(problems, "unknown runtime packages")
