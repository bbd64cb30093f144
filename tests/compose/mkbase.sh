#!/bin/sh
# mkbase.sh - a Debian 12 base image for a Docker engine that reaches no
# image registry, made from Debian's own packages.
#
#   tests/compose/mkbase.sh TARBALL
#
# Writes TARBALL (the root filesystem of `debootstrap --variant=minbase
# bookworm`, made like the official bookworm-slim image: the dpkg path
# excludes for docs, man pages, info and locales, with those already
# removed, apt's caches off and the lists emptied).  `make test-compose`
# (tests/compose/run.py) keeps it under .cache/docker/ and imports it as
# debian:bookworm-slim and debian:bookworm when the engine has neither.
#
# The apt sources are the host's Debian ones (/etc/apt/sources.list.d/
# debian.sources or /etc/apt/sources.list) when it has them, so images get
# the same updates and security fixes as the host; else debootstrap's own.
set -eu

out=${1:?usage: mkbase.sh TARBALL}
command -v debootstrap >/dev/null || { echo "mkbase: debootstrap is not installed" >&2; exit 1; }

root=$(mktemp -d "${TMPDIR:-/tmp}/logpipe-base.XXXXXX")
# debootstrap mounts /proc (and may mount /sys) inside the target while it
# works: unmount whatever is still there before removing the folder, and
# never cross into another filesystem.
cleanup() {
	awk -v r="$root/" 'index($2, r) == 1 { print $2 }' /proc/mounts | sort -r |
		while read -r m; do umount -l "$m" || true; done
	rm -rf --one-file-system "$root" "$root.log"
}
trap cleanup EXIT
trap 'exit 1' INT TERM HUP

echo "mkbase: debootstrap --variant=minbase bookworm (about a minute)" >&2
if ! debootstrap --variant=minbase bookworm "$root" >"$root.log" 2>&1; then
	tail -20 "$root.log" >&2
	echo "mkbase: debootstrap failed" >&2
	exit 1
fi

# As the official slim images (debuerreotype): keep docs, man pages and
# locales out of every later `apt-get install` too.
mkdir -p "$root/etc/dpkg/dpkg.cfg.d"
cat > "$root/etc/dpkg/dpkg.cfg.d/docker" <<'EOF'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/groff/*
path-exclude /usr/share/info/*
path-exclude /usr/share/linda/*
path-exclude /usr/share/lintian/overrides/*
path-exclude /usr/share/locale/*
path-exclude /usr/share/man/*
EOF
find "$root/usr/share/doc" -mindepth 1 -not -name copyright -not -type d -delete 2>/dev/null || true
find "$root/usr/share/doc" -mindepth 1 -type d -empty -delete 2>/dev/null || true
rm -rf "$root"/usr/share/groff/* "$root"/usr/share/info/* "$root"/usr/share/linda/* \
	"$root"/usr/share/lintian/overrides/* "$root"/usr/share/locale/* "$root"/usr/share/man/*

cat > "$root/etc/apt/apt.conf.d/docker-clean" <<'EOF'
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
EOF
echo 'Acquire::Languages "none";' > "$root/etc/apt/apt.conf.d/docker-no-languages"
echo 'APT::Install-Recommends "false";' > "$root/etc/apt/apt.conf.d/docker-no-recommends"

if [ -f /etc/apt/sources.list.d/debian.sources ]; then
	cp /etc/apt/sources.list.d/debian.sources "$root/etc/apt/sources.list.d/debian.sources"
	rm -f "$root/etc/apt/sources.list"
elif grep -qs '^deb .*debian' /etc/apt/sources.list; then
	grep '^deb .*debian' /etc/apt/sources.list > "$root/etc/apt/sources.list"
fi

rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/var/cache/apt/archives/*.deb \
	"$root"/var/log/*.log "$root"/var/log/apt/* "$root"/tmp/* "$root"/root/.bash_history
: > "$root/etc/machine-id" 2>/dev/null || true
printf 'nameserver 127.0.0.1\n' > "$root/etc/resolv.conf"   # the engine mounts its own

mkdir -p "$(dirname "$out")"
tar --numeric-owner -C "$root" -cf "$out.tmp" .
mv "$out.tmp" "$out"
echo "mkbase: wrote $out ($(du -m "$out" | cut -f1) MB)" >&2
