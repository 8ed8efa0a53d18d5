#!/usr/bin/env bash
# tests/arch/aarch64.sh — test the context switch (runtime/arch) on both ISAs.
#
# Builds tests/arch/switch_test.c with runtime/arch/ctx.c and the switch
# for the host (natively), then cross-compiles it for aarch64 (static) and
# runs it under qemu-user. Installs gcc-aarch64-linux-gnu and qemu-user(-static)
# with apt-get when missing and running as root.
# Flags as the project build (gnu11, _GNU_SOURCE); no fma contraction so
# the double mirrors in the test compute bit-identically.
# Exit: 0 pass, 1 failure, 77 skip (the aarch64 half cannot run here).
set -u
cd "$(dirname "$0")/../.."
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

CFLAGS="-std=gnu11 -D_GNU_SOURCE -ffp-contract=off -Wall -Wextra -Wno-unused-parameter -Werror -g"
SRCS="tests/arch/switch_test.c runtime/arch/ctx.c"
fail=0

# build_run NAME CC SWITCH_S RUNNER...: -O0 and -O2, run each
build_run() {
	local name=$1 cc=$2 sw=$3
	shift 3
	local defs=""
	# ctx.c includes ../internal.h -> <liburing.h>; cross sysroots lack it
	echo '#include <liburing.h>' | "$cc" -E -x c - >/dev/null 2>&1 ||
		defs=-DWEFT_ARCH_STANDALONE
	for opt in -O0 -O2; do
		local bin="$out/switch_test.$name$opt"
		echo "== $name $opt ${defs:-(internal.h)}"
		if ! "$cc" $CFLAGS $opt $defs -I runtime -I include $SRCS "$sw" \
			$LDFLAGS_EXTRA -o "$bin"; then
			echo "FAIL: build $name $opt"
			fail=1
			continue
		fi
		"$@" "$bin" || { echo "FAIL: run $name $opt"; fail=1; }
	done
}

host=$(uname -m)
LDFLAGS_EXTRA=""
build_run "$host" "${CC:-cc}" "runtime/arch/switch_$host.S"

if [ "$host" != aarch64 ]; then
	xcc=aarch64-linux-gnu-gcc
	qemu() { command -v qemu-aarch64-static || command -v qemu-aarch64; }
	if ! command -v $xcc >/dev/null || ! qemu >/dev/null; then
		if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
			export DEBIAN_FRONTEND=noninteractive
			apt-get update -qq >/dev/null 2>&1
			apt-get install -y -qq --no-install-recommends \
				gcc-aarch64-linux-gnu libc6-dev-arm64-cross \
				>/dev/null 2>&1
			qemu >/dev/null ||
				apt-get install -y -qq --no-install-recommends \
					qemu-user-static >/dev/null 2>&1 ||
				apt-get install -y -qq --no-install-recommends \
					qemu-user >/dev/null 2>&1
		fi
	fi
	if ! command -v $xcc >/dev/null || ! qemu >/dev/null; then
		echo "SKIP: no aarch64 cross toolchain / qemu-user"
		[ $fail = 0 ] && exit 77
		exit 1
	fi
	LDFLAGS_EXTRA=-static
	build_run aarch64 $xcc runtime/arch/switch_aarch64.S "$(qemu)"
fi

[ $fail = 0 ] && echo "arch switch tests: all passed"
exit $fail
