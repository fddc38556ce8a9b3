#!/usr/bin/env bash
# Builds the artefacts used by the booted-guest tests of jvhost's test-vm module:
#   vmlinux            uncompressed, PVH-bootable ELF cut out of Debian's bzImage
#   initramfs.cpio.gz  busybox-static + virtio/ext4 modules + /init (guest/init) + /pattern.bin
#   pattern.bin        deterministic test pattern (also shipped in the initramfs)
#   guest.env          KEY=VALUE lines describing the above (also printed on stdout)
#
# Usage: build-guest.sh [CACHE_DIR]
#   CACHE_DIR defaults to $JVHOST_GUEST_CACHE, else ~/.cache/jvhost-guest.
#   Optional environment: JVHOST_GUEST_KERNEL_PKG=linux-image-6.1.0-NN-amd64 pins the kernel package.
#
# Idempotent: artefacts live in CACHE_DIR/guest-<stamp>/, where <stamp> hashes this script and
# guest/init; when that directory is complete the script only prints guest.env (no apt calls).
# The kernel .deb is kept in CACHE_DIR/debs/ and reused. Never installs anything: the .deb is
# unpacked with dpkg-deb -x into a scratch directory that is removed afterwards.
#
# Needs (Debian packages): busybox-static cpio xz-utils gzip perl(-base) dpkg apt util-linux(flock)
# Only stdout carries KEY=VALUE lines; progress goes to stderr.
set -euo pipefail
export LC_ALL=C

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
CACHE_DIR=${1:-${JVHOST_GUEST_CACHE:-$HOME/.cache/jvhost-guest}}
INIT_SRC="$HERE/init"
FORMAT=1                        # bump to force a rebuild without changing anything else
PATTERN_MIB=8                   # size of /pattern.bin; must be even (the guest writes two halves)
# insmod order (dependencies first); each must exist as a .ko or be built in. Checked below
# against the depends= field of each module's .modinfo.
MODULES=(virtio_ring virtio_pci_modern_dev virtio_pci_legacy_dev virtio virtio_pci virtio_blk
         crc32c_generic jbd2 mbcache crc16 ext4)

log() { printf 'build-guest: %s\n' "$*" >&2; }
die() { printf 'build-guest: ERROR: %s\n' "$*" >&2; exit 1; }

[[ -f $INIT_SRC ]] || die "missing $INIT_SRC"
STAMP=$( { echo "format=$FORMAT pattern=$PATTERN_MIB modules=${MODULES[*]} pin=${JVHOST_GUEST_KERNEL_PKG:-}"
           cat "${BASH_SOURCE[0]}" "$INIT_SRC"; } | sha256sum | cut -c1-16)
OUT="$CACHE_DIR/guest-$STAMP"

if [[ -f $OUT/complete ]]; then      # fast path: nothing to do
    touch "$OUT/complete" 2>/dev/null || true     # marks the build as in use (see pruning below)
    cat "$OUT/guest.env"
    exit 0
fi

mkdir -p "$CACHE_DIR"
exec 9>"$CACHE_DIR/.lock"
flock -w 1800 9 || die "could not lock $CACHE_DIR/.lock"
if [[ -f $OUT/complete ]]; then      # another process built it while we waited
    cat "$OUT/guest.env"
    exit 0
fi

for tool in cpio xz gzip perl dpkg-deb apt-get apt-cache sha256sum; do
    command -v "$tool" >/dev/null || die "'$tool' not found (apt-get install busybox-static cpio xz-utils qemu-system-x86 qemu-utils e2fsprogs)"
done
BUSYBOX=/bin/busybox
if ! dpkg-query -W -f='${Status}\n' busybox-static 2>/dev/null | grep -q 'install ok installed'; then
    die "busybox-static is not installed (apt-get install busybox-static); a dynamically linked busybox cannot run in the initramfs"
fi
[[ -x $BUSYBOX ]] || die "$BUSYBOX missing although busybox-static is installed"

WORK=$(mktemp -d "$CACHE_DIR/.work.XXXXXX")
trap 'rm -rf "$WORK"' EXIT

# ---------------------------------------------------------------- kernel package
apt_updated=0
apt_update() {
    [[ $apt_updated == 0 ]] || return 0
    apt_updated=1
    log "running apt-get update"
    if [[ $(id -u) != 0 ]]; then die "apt-get update needed but not running as root"; fi
    apt-get update -qq >&2 || die "apt-get update failed"
}
find_kernel_pkg() {
    if [[ -n ${JVHOST_GUEST_KERNEL_PKG:-} ]]; then echo "$JVHOST_GUEST_KERNEL_PKG"; return 0; fi
    apt-cache depends linux-image-amd64 2>/dev/null \
        | awk '!found && $1 == "Depends:" && $2 ~ /^linux-image-[0-9].*-amd64$/ { print $2; found = 1 }'
}
pkg_has_candidate() {
    local cand
    cand=$(apt-cache policy "$1" 2>/dev/null | sed -n 's/^ *Candidate: //p')
    [[ -n $cand && $cand != "(none)" ]]
}

KPKG=$(find_kernel_pkg || true)
if [[ -z $KPKG ]] || ! pkg_has_candidate "$KPKG"; then
    apt_update
    KPKG=$(find_kernel_pkg || true)
fi
[[ -n $KPKG ]] || die "cannot find the kernel package linux-image-amd64 depends on"
log "kernel package: $KPKG"

mkdir -p "$CACHE_DIR/debs"
newest_deb() { ls -1 "$CACHE_DIR/debs/${KPKG}"_*_amd64.deb 2>/dev/null | sort -V | tail -n1; }
DEB=$(newest_deb || true)
if [[ -z $DEB ]]; then
    if ! (cd "$WORK" && apt-get download "$KPKG" >&2); then
        apt_update
        (cd "$WORK" && apt-get download "$KPKG" >&2) || die "apt-get download $KPKG failed"
    fi
    mv "$WORK"/"${KPKG}"_*_amd64.deb "$CACHE_DIR/debs/"
    DEB=$(newest_deb)
fi
[[ -f $DEB ]] || die "no .deb for $KPKG"
log "unpacking $(basename "$DEB")"
dpkg-deb -x "$DEB" "$WORK/root"

KVERS=("$WORK"/root/lib/modules/*/)
[[ ${#KVERS[@]} == 1 && -d ${KVERS[0]} ]] || die "expected exactly one lib/modules/<version> in $DEB"
KVER=$(basename "${KVERS[0]}")
KMOD="$WORK/root/lib/modules/$KVER"
BZIMAGE="$WORK/root/boot/vmlinuz-$KVER"
KCONFIG="$WORK/root/boot/config-$KVER"
[[ -f $BZIMAGE ]] || die "no $BZIMAGE"
grep -q '^CONFIG_PVH=y' "$KCONFIG" || log "warning: CONFIG_PVH is not y; vmlinux may not boot with -kernel"

STAGE="$WORK/out"
mkdir -p "$STAGE"

# ---------------------------------------------------------------- vmlinux (PVH ELF)
# The bzImage carries the kernel as an xz stream; find each xz magic (FD 37 7A 58 5A 00) and
# decompress the first candidate that yields an ELF image (this is what scripts/extract-vmlinux does).
extract_vmlinux() {
    local - off
    set +o pipefail     # xz --single-stream stops reading early, so tail may die of SIGPIPE
    for off in $(grep -obUaP '\xfd\x37\x7a\x58\x5a\x00' "$BZIMAGE" | cut -d: -f1); do
        if tail -c "+$((off + 1))" "$BZIMAGE" | xz -dc --single-stream > "$STAGE/vmlinux" 2>/dev/null \
           && [[ $(head -c 4 "$STAGE/vmlinux" | od -An -tx1 | tr -d ' \n') == 7f454c46 ]]; then
            log "vmlinux: xz payload at offset $off, $(stat -c %s "$STAGE/vmlinux") bytes"
            return 0
        fi
    done
    return 1
}
if extract_vmlinux; then
    KERNEL_FILE=vmlinux
else
    log "warning: could not cut an ELF vmlinux out of $BZIMAGE; falling back to the bzImage (slower boot)"
    rm -f "$STAGE/vmlinux"
    cp "$BZIMAGE" "$STAGE/bzImage"
    KERNEL_FILE=bzImage
fi

# ---------------------------------------------------------------- initramfs tree
ROOT="$WORK/initramfs"
mkdir -p "$ROOT"/{bin,sbin,usr/bin,usr/sbin,dev,proc,sys,tmp,mnt,etc,root,lib/modules}
cp "$BUSYBOX" "$ROOT/bin/busybox"
chmod 0755 "$ROOT/bin/busybox"
ln -s busybox "$ROOT/bin/sh"
install -m 0755 "$INIT_SRC" "$ROOT/init"

modinfo_field() {   # modinfo_field FILE FIELD -> value of FIELD= in the .modinfo strings
    local v
    v=$(tr '\0' '\n' < "$1" | sed -n "s/^$2=//p")
    printf '%s\n' "${v%%$'\n'*}"
}
declare -A LOADED=()
: > "$ROOT/lib/modules/order"
for m in "${MODULES[@]}"; do
    ko=$(find "$KMOD/kernel" -name "$m.ko" -print -quit)
    if [[ -z $ko ]]; then
        if [[ -n $(find "$KMOD/kernel" -name "$m.ko.*" -print -quit) ]]; then
            die "module $m is compressed; this script expects uncompressed .ko files"
        fi
        if grep -q "/$m\.ko\$" "$KMOD/modules.builtin" 2>/dev/null; then
            log "module $m is built in"
            LOADED[$m]=builtin
            continue
        fi
        die "module $m is neither in $KMOD/kernel nor built in"
    fi
    deps=$(modinfo_field "$ko" depends)
    for d in ${deps//,/ }; do
        [[ -n ${LOADED[$d]:-} ]] || die "module $m depends on $d, which is not earlier in MODULES"
    done
    cp "$ko" "$ROOT/lib/modules/$m.ko"
    echo "$m" >> "$ROOT/lib/modules/order"
    LOADED[$m]=module
done
log "modules: $(tr '\n' ' ' < "$ROOT/lib/modules/order")"

# ---------------------------------------------------------------- pattern
# Each 4 KiB block: a 64-byte text header naming the block, then 4032 bytes of xorshift32 output.
# Deterministic (fixed seed), so every build produces the same bytes.
perl -e '
    use strict; use warnings;
    my $blocks = $ARGV[0] * 256; my $x = 0x2545F491;
    binmode STDOUT;
    for my $b (0 .. $blocks - 1) {
        my $h = sprintf("JVHOST-PATTERN v1 block %08d of %08d\n", $b, $blocks);
        $h .= "\n" x (64 - length $h);
        my @w;
        for (1 .. 1008) {
            $x ^= ($x << 13) & 0xffffffff; $x ^= $x >> 17; $x ^= ($x << 5) & 0xffffffff;
            push @w, $x;
        }
        print $h, pack("V*", @w);
    }' "$PATTERN_MIB" > "$STAGE/pattern.bin"
[[ $(stat -c %s "$STAGE/pattern.bin") == $((PATTERN_MIB * 1048576)) ]] || die "pattern has the wrong size"
PATTERN_SHA=$(sha256sum "$STAGE/pattern.bin" | cut -d' ' -f1)
cp "$STAGE/pattern.bin" "$ROOT/pattern.bin"
echo "$PATTERN_SHA" > "$ROOT/pattern.sha256"
echo "$STAMP $KPKG $KVER" > "$ROOT/etc/jvhost-guest-version"

find "$ROOT" -exec touch -h -d @1 {} +      # fixed mtimes: the same inputs give the same bytes
(cd "$ROOT" && find . -mindepth 1 | sort | cpio -o -H newc -R 0:0 --reproducible --quiet) \
    | gzip -n -6 > "$STAGE/initramfs.cpio.gz"
log "initramfs: $(stat -c %s "$STAGE/initramfs.cpio.gz") bytes"

cat > "$STAGE/guest.env" <<ENV
JVHOST_GUEST_STAMP=$STAMP
JVHOST_GUEST_DIR=$OUT
JVHOST_GUEST_KERNEL=$OUT/$KERNEL_FILE
JVHOST_GUEST_KERNEL_FORMAT=$([[ $KERNEL_FILE == vmlinux ]] && echo pvh-elf || echo bzimage)
JVHOST_GUEST_INITRD=$OUT/initramfs.cpio.gz
JVHOST_GUEST_PATTERN=$OUT/pattern.bin
JVHOST_GUEST_PATTERN_SHA256=$PATTERN_SHA
JVHOST_GUEST_PATTERN_BYTES=$((PATTERN_MIB * 1048576))
JVHOST_GUEST_KERNEL_PKG=$KPKG
JVHOST_GUEST_KERNEL_DEB=$(basename "$DEB")
JVHOST_GUEST_KERNEL_VERSION=$KVER
ENV
touch "$STAGE/complete"

rm -rf "$OUT"
mv "$STAGE" "$OUT"
# Prune builds of other stamps unused for 14 days (another checkout may still use recent ones) and
# kernel .debs other than the one just used.
for old in "$CACHE_DIR"/guest-*; do
    [[ $old != "$OUT" && -d $old ]] || continue
    if [[ ! -f $old/complete ]] || [[ -n $(find "$old/complete" -mtime +14) ]]; then
        log "pruning $old"
        rm -rf "$old"
    fi
done
for old in "$CACHE_DIR"/debs/*.deb; do
    [[ $old == "$DEB" || ! -f $old ]] || rm -f "$old"
done
log "built $OUT"
cat "$OUT/guest.env"
