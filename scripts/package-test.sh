#!/usr/bin/env bash
# make package-test: installs bin/salvo_$PKG_VERSION_<arch>.deb into a scratch root with dpkg, checks what
# it installed (files, modes, owners, conffiles, the key and users file it makes, that the gateway accepts
# them as its user), verifies the units with systemd-analyze, runs the installed salvo version, purges the
# package and checks that nothing but the salvo account is left. The scratch root goes in every case.
#
# Why a scratch root: the host stays untouched (other work on this machine, a salvo installed here). The
# root has only a dpkg database and a user database, no shell or tools, so dpkg cannot chroot into it to
# run the maintainer scripts: --force-script-chrootless runs them on the host with DPKG_ROOT set, and they
# put every path under $DPKG_ROOT (useradd --prefix for the account). Nothing else is forced.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH=$PATH:/usr/local/go/bin:/usr/sbin:/sbin
: "${PKG_VERSION:?set PKG_VERSION (scripts/package-version.sh)}"
deb="bin/salvo_${PKG_VERSION}_$(dpkg --print-architecture).deb"
[ -f "$deb" ] || { echo "package-test: no $deb (make package)" >&2; exit 1; }
if ! command -v systemd-analyze >/dev/null; then
  echo "== installing systemd (systemd-analyze)"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq systemd >/dev/null
fi

root=$(mktemp -d /tmp/salvo-package-test.XXXXXX)
work=$(mktemp -d /tmp/salvo-package-units.XXXXXX)
trap 'rm -rf "$root" "$work"' EXIT
chmod 755 "$root" # the gateway's account reads its configuration in there
fail() { echo "package-test: $*" >&2; exit 1; }
dpkg_root() { dpkg --root="$root" --force-script-chrootless "$@"; }

mkdir -p "$root"/var/lib/dpkg/{info,updates,triggers} "$root"/var/log "$root"/etc "$root"/run
touch "$root"/var/lib/dpkg/status
echo 'root:x:0:0:root:/root:/bin/sh' >"$root/etc/passwd"
echo 'root:x:0:' >"$root/etc/group"
echo 'root:*:19000:0:99999:7:::' >"$root/etc/shadow"
echo 'root:*::' >"$root/etc/gshadow"
chmod 600 "$root"/etc/shadow "$root"/etc/gshadow
# What may differ after the purge: dpkg's own records, and the account (kept, see packaging/scripts/postrm)
# in the user database and its backups.
ignore='^\./(var/lib/dpkg|var/log)(/|$)|^\./etc/(passwd|group|shadow|gshadow)-?$'
listing() { (cd "$root" && find . | grep -Ev "$ignore" | sort); }
before=$(listing)

echo "== dpkg -i $deb into $root"
dpkg_root -i "$deb"
uid=$(awk -F: '$1 == "salvo" { print $3 }' "$root/etc/passwd")
gid=$(awk -F: '$1 == "salvo" { print $4 }' "$root/etc/passwd")
[ -n "$uid" ] && [ "$uid" != 0 ] || fail "postinst made no salvo account"
grep -q "^salvo:x:$gid:" "$root/etc/group" || fail "no salvo group $gid"

# path, type, mode, owner (uid:gid)
while read -r path type mode owner; do
  p="$root$path"
  owner=${owner//salvo/$uid}
  owner=${owner/#0:$uid/0:$gid}
  [ -e "$p" ] || fail "$path is missing"
  case $type in
  f) [ -f "$p" ] || fail "$path is not a file" ;;
  d) [ -d "$p" ] || fail "$path is not a directory" ;;
  esac
  got=$(stat -c '%a %u:%g' "$p")
  [ "$got" = "$mode $owner" ] || fail "$path is $got, want $mode $owner"
done <<'LIST'
/usr/bin/salvo f 755 0:0
/usr/lib/systemd/system/salvo-server.service f 644 0:0
/usr/lib/systemd/system/salvo-client@.service f 644 0:0
/usr/lib/tmpfiles.d/salvo.conf f 644 0:0
/usr/share/man/man1/salvo.1.gz f 644 0:0
/usr/share/bash-completion/completions/salvo f 644 0:0
/usr/share/zsh/vendor-completions/_salvo f 644 0:0
/usr/share/doc/salvo/copyright f 644 0:0
/etc/salvo d 755 0:0
/etc/salvo/server.toml f 644 0:0
/etc/salvo/client.toml f 644 0:0
/etc/salvo/server.key f 600 salvo:salvo
/etc/salvo/users f 600 salvo:salvo
/var/lib/salvo d 700 salvo:salvo
/run/salvo d 755 0:0
/run/salvo/claims d 770 0:salvo
LIST
conffiles=$(dpkg-query --admindir="$root/var/lib/dpkg" -s salvo | sed -n '/^Conffiles:/,/^[^ ]/p')
for c in /etc/salvo/server.toml /etc/salvo/client.toml; do
  grep -q "^ $c " <<<"$conffiles" || fail "$c is not a conffile"
done
zcat "$root/usr/share/man/man1/salvo.1.gz" | grep -q '^\.SS "salvo server"' || fail "the man page lacks salvo server"

echo "== installed salvo version"
got=$("$root/usr/bin/salvo" version)
case "$got" in
"salvo $PKG_VERSION "*) echo "$got" ;;
*) fail "installed salvo version says \"$got\", want salvo $PKG_VERSION" ;;
esac

# The gateway, as its account, accepts the example configuration with the key and users file postinst made.
echo "== salvo server --check as uid $uid"
setpriv --reuid="$uid" --regid="$gid" --clear-groups \
  "$root/usr/bin/salvo" server --check --config "$root/etc/salvo/server.toml"

# systemd-analyze verify on copies of the installed units whose salvo is the installed binary: with --root
# it would look for /usr/bin/systemd-tmpfiles, /bin/kill and sysinit.target in the scratch root, which has
# none. MANPATH lets it find Documentation=man:salvo(1) in the root. It exits 0 even on unknown keys and
# bad values, which it only prints, so any output fails too; none is known to be harmless, so nothing is
# filtered.
echo "== systemd-analyze verify"
for u in salvo-server.service salvo-client@.service; do
  sed "s#/usr/bin/salvo #$root/usr/bin/salvo #" "$root/usr/lib/systemd/system/$u" >"$work/$u"
done
mv "$work/salvo-client@.service" "$work/salvo-client@office.service"
if ! out=$(MANPATH="$root/usr/share/man" systemd-analyze verify "$work/salvo-server.service" "$work/salvo-client@office.service" 2>&1) || [ -n "$out" ]; then
  fail "systemd-analyze verify: ${out:-failed}"
fi

echo "== dpkg --purge salvo"
dpkg_root --purge salvo
left=$(diff <(echo "$before") <(listing) | grep '^[<>]' || true)
[ -z "$left" ] || fail "left after the purge:"$'\n'"$left"
grep -q '^salvo:' "$root/etc/passwd" && echo "(the salvo account stays after a purge, as Debian keeps system accounts)"
echo "package-test: ok"
