#!/usr/bin/env bash
# vmtest/kernel/build.sh: build (once) the real-kernel tier's second kernel, Linux 7.3 from
# Debian's own linux-source-7.3 (trixie-backports), with IOMMUFD and VFIO_DEVICE_CDEV, and
# print the path of its bzImage as the last line on stdout (everything else goes to stderr).
#
# Why a build: Debian builds every kernel with "# CONFIG_IOMMUFD is not set", so no Debian
# kernel has /dev/iommu or the vfio cdev (/dev/vfio/devices/vfioN) that the tier tests.
#
# Cache: ${VFIOCTL_CACHE:-$HOME/.cache/vfioctl-vmtest}/kernel/
#   debs/                       the downloaded .debs (kept: a rebuild needs no network)
#   apt/                        the private apt configuration and lists for trixie-backports
#   <version>-<hash12>/         one build: bzImage, config, release, build.log,
#                               mods/lib/modules/<release>/modules.builtin*
# <version> is the source package's Debian version (~ and + written as _), <hash12> the first
# 12 hex digits of the sha256 over this script, tier.config and the base flavour's name.
# A complete build directory is reused at once; nothing is fetched or built.
#
# Environment: VFIOCTL_CACHE (cache root), VFIOCTL_KERNEL_REFRESH=1 (ask the archive for a
# newer source version even when one is cached), VFIOCTL_KERNEL_NICE (niceness of the build,
# default 10), VFIOCTL_KERNEL_JOBS (default: nproc), VFIOCTL_DEBIAN_MIRROR.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
pkg=linux-source-7.3
config_pkg=linux-config-7.3
suite=trixie-backports
# Debian's own configuration for virtual machines: it already leaves out most hardware
# drivers, DRM and sound (about 1,900 built-in options instead of 2,800 + 4,000 modules in
# the generic amd64 one), which keeps the build within a CI budget on 2 cores; tier.config
# adds what the tier's machine needs, and every module left over is turned off.
flavour=amd64_none_cloud-amd64
mirror=${VFIOCTL_DEBIAN_MIRROR:-http://deb.debian.org/debian}
keyring=/usr/share/keyrings/debian-archive-keyring.gpg
cache=${VFIOCTL_CACHE:-$HOME/.cache/vfioctl-vmtest}/kernel
fragment=$here/tier.config

log() { printf 'kernel: %s\n' "$*" >&2; }
die() { printf 'kernel: error: %s\n' "$*" >&2; exit 1; }

mkdir -p "$cache/debs"
# One build at a time per cache (a second caller waits, then finds the cache complete).
exec 9>"$cache/.lock"
flock 9

hash=$( { cat "${BASH_SOURCE[0]}" "$fragment"; echo "$flavour"; } | sha256sum | cut -c1-12)

# -- The source version: the newest one cached, or the archive's (private apt config). ----
newest_cached() {
  local best='' v f
  for f in "$cache/debs/${pkg}_"*_all.deb; do
    [[ -e $f ]] || continue
    v=$(dpkg-deb -f "$f" Version)
    [[ -e $cache/debs/${config_pkg}_${v//:/%3a}_amd64.deb ]] || continue
    if [[ -z $best ]] || dpkg --compare-versions "$v" gt "$best"; then best=$v; fi
  done
  printf '%s' "$best"
}

apt_private() {
  # Only trixie-backports, only for these two packages; this machine's apt sources, lists
  # and status are never read or written. apt checks the suite's InRelease signature
  # against Debian's archive keyring and each .deb's hash against the signed lists.
  local a=$cache/apt
  mkdir -p "$a/etc/preferences.d" "$a/etc/apt.conf.d" "$a/state/lists/partial" \
    "$a/cache/archives/partial"
  printf 'deb [signed-by=%s] %s %s main\n' "$keyring" "$mirror" "$suite" > "$a/etc/sources.list"
  : > "$a/state/status"
  apt-get -q \
    -o Dir::Etc::SourceList="$a/etc/sources.list" -o Dir::Etc::SourceParts=- \
    -o Dir::Etc::PreferencesParts="$a/etc/preferences.d" -o Dir::Etc::Parts="$a/etc/apt.conf.d" \
    -o Dir::State="$a/state" -o Dir::State::status="$a/state/status" \
    -o Dir::Cache="$a/cache" -o APT::Architecture=amd64 -o APT::Architectures::=amd64 \
    -o APT::Sandbox::User=root "$@"
}

version=''
[[ ${VFIOCTL_KERNEL_REFRESH:-0} == 1 ]] || version=$(newest_cached)
if [[ -z $version ]]; then
  [[ -r $keyring ]] || die "no $keyring; install debian-archive-keyring"
  log "asking $suite for $pkg and $config_pkg"
  apt_private update >&2 || die "apt-get update of $suite failed; check the network to $mirror"
  (cd "$cache/debs" && apt_private download "$pkg" "$config_pkg") >&2 \
    || die "cannot download $pkg/$config_pkg from $suite"
  version=$(newest_cached)
  [[ -n $version ]] || die "no $pkg with a matching $config_pkg in $cache/debs"
fi
src_deb=$cache/debs/${pkg}_${version//:/%3a}_all.deb
cfg_deb=$cache/debs/${config_pkg}_${version//:/%3a}_amd64.deb
safe_version=$(printf '%s' "$version" | tr '~+:' '___')
out=$cache/$safe_version-$hash

complete() {
  [[ -s $out/bzImage && -s $out/config && -s $out/release ]] || return 1
  [[ -e $out/mods/lib/modules/$(cat "$out/release")/modules.builtin ]]
}
if complete; then
  log "cached: $pkg $version, release $(cat "$out/release")"
  printf '%s\n' "$out/bzImage"
  exit 0
fi

# -- Build dependencies (Debian 12 packages, from this machine's normal sources). ---------
need_pkgs=()
for pair in gcc:gcc make:make bc:bc bison:bison flex:flex perl:perl cpio:cpio xz:xz-utils \
    depmod:kmod; do
  command -v "${pair%%:*}" >/dev/null || need_pkgs+=("${pair#*:}")
done
[[ -e /usr/include/gelf.h ]] || need_pkgs+=(libelf-dev)          # objtool
[[ -e /usr/include/openssl/opensslv.h ]] || need_pkgs+=(libssl-dev)  # certs/, scripts/
if ((${#need_pkgs[@]})); then
  ((EUID == 0)) || die "missing build dependencies: ${need_pkgs[*]}; as root: apt-get install ${need_pkgs[*]}"
  log "installing build dependencies: ${need_pkgs[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -q --no-install-recommends "${need_pkgs[@]}" >&2 \
    || { apt-get update -q >&2 && apt-get install -y -q --no-install-recommends "${need_pkgs[@]}" >&2; } \
    || die "cannot install ${need_pkgs[*]}"
fi

# -- Unpack (the tarball inside the .deb, streamed: no 160 MB copy on disk). ---------------
# A build that failed or was killed leaves a source tree (about 1.5 GB) and no release
# file: drop every such directory, this one included, before starting afresh.
for d in "$cache"/*-[0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f]; do
  [[ -d $d && ! -e $d/release ]] && rm -rf "$d"
done
rm -rf "$out"
mkdir -p "$out/src"
buildlog=$out/build.log
log "unpacking $pkg $version into $out/src"
dpkg-deb --fsys-tarfile "$src_deb" | tar -xO "./usr/src/$pkg.tar.xz" \
  | tar -xJ -C "$out/src" --strip-components=1
dpkg-deb --fsys-tarfile "$cfg_deb" | tar -xO "./usr/src/$config_pkg/config.$flavour.xz" \
  | xz -dc > "$out/base.config"

# -- Configure: Debian's flavour + tier.config, then every module off. --------------------
cd "$out/src"
jobs=${VFIOCTL_KERNEL_JOBS:-$(nproc)}
mk() { nice -n "${VFIOCTL_KERNEL_NICE:-10}" make -j"$jobs" KBUILD_BUILD_HOST=vfioctl "$@"; }
{
  echo "# $pkg $version, $flavour + tier.config, hash $hash"
  cp "$out/base.config" .config
  scripts/kconfig/merge_config.sh -m .config "$fragment"
  mk olddefconfig
  for _ in 1 2 3 4 5; do
    grep -q '=m$' .config || break
    sed -i 's/^\(CONFIG_[A-Za-z0-9_]*\)=m$/# \1 is not set/' .config
    mk olddefconfig
  done
} >> "$buildlog" 2>&1 || die "configuration failed; see $buildlog"
grep -q '=m$' .config && die "modules remain after trimming: $(grep '=m$' .config | head -3 | tr '\n' ' ')"
bad=()
while IFS= read -r line; do
  case $line in
    '# CONFIG_'*' is not set')
      sym=${line#\# }; sym=${sym%% *}
      grep -qE "^$sym=[ym]$" .config && bad+=("$line") ;;
    CONFIG_*'=""') ;;  # an empty string: absent when its menu is off, which is as good
    CONFIG_*) grep -qxF "$line" .config || bad+=("$line") ;;
  esac
done < "$fragment"
((${#bad[@]} == 0)) || die "tier.config does not hold in the final .config: ${bad[*]}"

# -- Build. ---------------------------------------------------------------------------------
log "building $(grep -c '=y$' .config) built-in options with -j$jobs (log: $buildlog)"
start=$SECONDS
mk bzImage modules >> "$buildlog" 2>&1 || { tail -n 30 "$buildlog" >&2; die "build failed; see $buildlog"; }
release=$(make -s kernelrelease)
mk modules_install INSTALL_MOD_PATH="$out/mods" >> "$buildlog" 2>&1 \
  || die "modules_install failed; see $buildlog"
rm -f "$out/mods/lib/modules/$release/build" "$out/mods/lib/modules/$release/source"
echo "# build took $((SECONDS - start)) s with -j$jobs on $(nproc) CPUs" >> "$buildlog"
cp arch/x86/boot/bzImage "$out/bzImage"
cp .config "$out/config"
cd "$out"
rm -rf "$out/src" "$out/base.config"
printf '%s\n' "$release" > "$out/release"   # last: marks the build complete
complete || die "the build in $out is incomplete"
log "built $release in $((SECONDS - start)) s"
printf '%s\n' "$out/bzImage"
