"""deploy/docker/Dockerfile: the stages, their bases, the build CI runs,
a non-root runtime with a HEALTHCHECK on /health/ready, one image per
SERVICE with the right port, and the -dev package of every library."""
import re
import subprocess

from deploylib import (DEPLOY, DOCKERFILE, REPO, SERVICES, apt_packages, dockerfile_instructions,
                       dockerfile_stages)
from harness import check, fail_list


def _args():
    return dict(re.findall(r"^(\w+)=(\S+)$", "\n".join(
        a for i, a in dockerfile_instructions() if i == "ARG"), re.M))


def _base(stage):
    ins, arg = stage[0]
    image = arg.split()[0]
    return re.sub(r"\$\{(\w+)\}", lambda m: _args().get(m.group(1), m.group(0)), image)


def test_stages_and_bases():
    st = dockerfile_stages()
    check(list(st) == ["build", "migrate", "runtime"], f"stages: {list(st)}")
    check(_base(st["build"]) == "debian:bookworm", _base(st["build"]))
    check(_base(st["runtime"]) == "debian:bookworm-slim", _base(st["runtime"]))
    check(_base(st["migrate"]) == "debian:bookworm-slim", _base(st["migrate"]))
    check(list(st)[-1] == "runtime", "runtime must be the last stage (the default target)")


def test_build_runs_the_ci_build():
    runs = " ".join(a for i, a in dockerfile_stages()["build"] if i == "RUN")
    check(re.search(r"\bmake\b[^&;]*\ball\b", runs), "the build stage must run `make ... all`")
    ci = (REPO / "Makefile").read_text()
    check(re.search(r"^test:.*\n(\t.*\n)*\t.*\ball\b", ci, re.M),
          "`make test` no longer builds `all`: keep the image's build the same as CI's")


def test_build_copies_every_source_folder_of_the_makefile():
    mk = (REPO / "Makefile").read_text()
    services = re.search(r"^SERVICES\s*:=\s*(.+)$", mk, re.M).group(1).split()
    copies = " ".join(a for i, a in dockerfile_stages()["build"] if i == "COPY")
    need = services + ["common", "mk", "tools", "Makefile"]
    fail_list([d for d in need if not re.search(rf"(^|\s){re.escape(d)}/?\s", copies + " ")],
              "source folders the build does not copy")
    ignore = (DEPLOY / "docker" / "Dockerfile.dockerignore").read_text()
    fail_list([d for d in need if f"!{d}" not in ignore], "folders the .dockerignore drops")


def test_build_has_the_dev_package_of_every_library():
    mk = (REPO / "mk" / "common.mk").read_text()
    libs = re.findall(r"-l(\S+)", re.search(r"^LP_LIBS\s*:?=\s*(.+)$", mk, re.M).group(1))
    build = set(apt_packages(dockerfile_stages()["build"]))
    libs = [lib for lib in libs if lib not in ("m", "dl", "pthread", "rt")]  # libc6-dev
    # One dpkg -S for all: each call reads dpkg's whole file list.
    r = subprocess.run(["dpkg", "-S", *[f"*/lib{lib}.so" for lib in libs]],
                       capture_output=True, text=True)
    owner = {}
    for line in r.stdout.splitlines():
        pkg, _, path = line.partition(": ")
        m = re.search(r"/lib([^/]+)\.so$", path)
        if m:
            owner.setdefault(m.group(1), pkg.split(":")[0].split(",")[0].strip())
    problems = []
    for lib in libs:
        pkg = owner.get(lib)
        if not pkg:
            problems.append(f"-l{lib}: no -dev package on this machine to compare with")
        elif pkg not in build:
            problems.append(f"-l{lib}: {pkg} is not installed by the build stage")
    fail_list(problems, "libraries the build stage cannot link")


def test_runtime_is_non_root_with_a_healthcheck():
    rt = dockerfile_stages()["runtime"]
    users = [a for i, a in rt if i == "USER"]
    check(users and re.fullmatch(r"[1-9]\d*(:[1-9]\d*)?", users[-1]),
          f"runtime must end as a numeric non-root user, not {users}")
    hc = [a for i, a in rt if i == "HEALTHCHECK"]
    check(len(hc) == 1 and "/health/ready" in hc[0], f"HEALTHCHECK on /health/ready: {hc}")
    tool = re.search(r"CMD\s+(\S+)", hc[0]).group(1)
    check(tool in apt_packages(rt), f"the HEALTHCHECK's {tool} is not installed in the runtime")
    ep = [a for i, a in rt if i == "ENTRYPOINT"]
    check(ep and ep[-1].startswith("["), "ENTRYPOINT must be exec form (signals reach the service)")


def test_service_argument_maps_each_service_to_its_port():
    rt = dockerfile_stages()["runtime"]
    check(any(i == "ARG" and a.startswith("SERVICE") for i, a in rt), "no ARG SERVICE")
    text = " ".join(a for i, a in rt if i == "RUN")
    ports = dict(re.findall(r"(\w+)\)\s*port=(\d+)", text))
    fail_list([f"{s}: port {ports.get(s)} (want {p})" for s, (_, p) in SERVICES.items()
               if ports.get(s) != str(p)], "SERVICE to port mapping")
    copy = " ".join(a for i, a in rt if i == "COPY")
    check("logpipe-${SERVICE}" in copy, "the runtime must copy build/bin/logpipe-${SERVICE}")


def test_producer_spool_dir_is_writable_by_the_user():
    text = DOCKERFILE.read_text()
    check("/var/lib/logpipe/spool" in text and "chown -R 10001:10001 /var/lib/logpipe" in text,
          "the spool directory must exist and belong to the runtime user")
