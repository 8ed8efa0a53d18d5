#!/usr/bin/env bash
# Check weft as an installed package, the way a program outside the tree uses
# it:
#
#   tests/consumer/check.sh [BUILD_DIR]     (default: build, already built)
#
#   1. cmake --install BUILD_DIR into a temporary prefix; the expected files
#      are there.
#   2. libweft.so exports exactly the weft_* API: no weft__ internals, nothing
#      without the prefix, and every WEFT_API function of the installed
#      headers; libweft.a defines no global symbol outside weft_.
#   3. pkg-config: weft.pc points into the prefix; main.c builds with
#      -std=c11 -Wpedantic -Werror against the shared library (run with
#      LD_LIBRARY_PATH) and, with `pkg-config --static`, against libweft.a.
#   4. CMake: tests/consumer configures with find_package(weft) and
#      CMAKE_PREFIX_PATH, links weft::weft and weft::weft_static; both run.
#
# Environment: CC (default cc), KEEP_TMP=1 keeps the temporary directory.
# Exit status 0 if every check passed; 1 otherwise.  The last line says which.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
build=${1:-$root/build}
CC=${CC:-cc}

fail=0
say() { printf 'consumer: %s\n' "$*"; }
bad() { printf 'consumer: FAILED: %s\n' "$*" >&2; fail=1; }
die() { printf 'consumer: FAILED: %s\n' "$*" >&2; echo "consumer: FAILED" >&2; exit 1; }
section() { printf '\n--- %s\n' "$*"; }

[ -f "$build/CMakeCache.txt" ] || die "$build is not a configured build directory (run: make build)"
build=$(cd "$build" && pwd)
grep -q '^WEFT_SANITIZE:STRING=.\+' "$build/CMakeCache.txt" &&
    die "$build is a sanitizer build; check a plain one"
libdir_rel=$(sed -n 's/^CMAKE_INSTALL_LIBDIR:PATH=//p' "$build/CMakeCache.txt")
libdir_rel=${libdir_rel:-lib}
incdir_rel=$(sed -n 's/^CMAKE_INSTALL_INCLUDEDIR:PATH=//p' "$build/CMakeCache.txt")
incdir_rel=${incdir_rel:-include}

tmp=$(mktemp -d "${TMPDIR:-/tmp}/weft-consumer.XXXXXX")
if [ "${KEEP_TMP:-0}" = 1 ]; then
    say "keeping $tmp"
else
    trap 'rm -rf "$tmp"' EXIT
fi
prefix=$tmp/prefix
libdir=$prefix/$libdir_rel
incdir=$prefix/$incdir_rel

# run NAME PROGRAM [ENV...]: run it, expect "consumer ok" on stdout
run() {
    local name=$1 prog=$2 out
    shift 2
    if out=$(env "$@" "$prog" 2>&1) && grep -q '^consumer ok' <<<"$out"; then
        say "$name: $out"
    else
        bad "$name: $prog printed:"
        printf '%s\n' "$out" | sed 's/^/    | /' >&2
    fi
}

# ---------------------------------------------------------------------------
section "install into $prefix"
cmake --build "$build" -j"$(nproc)" --target weft weft_static >/dev/null ||
    die "building $build failed"
cmake --install "$build" --prefix "$prefix" >"$tmp/install.log" ||
    { cat "$tmp/install.log" >&2; die "cmake --install failed"; }
for f in "$incdir/weft.h" "$libdir/libweft.so" "$libdir/libweft.a" \
    "$libdir/pkgconfig/weft.pc" "$libdir/cmake/weft/weftConfig.cmake" \
    "$libdir/cmake/weft/weftConfigVersion.cmake" \
    "$libdir/cmake/weft/weftTargets.cmake"; do
    [ -e "$f" ] || bad "not installed: ${f#"$prefix"/}"
done
so=$(readlink -f "$libdir/libweft.so")
soname=$(readelf -d "$so" | sed -n 's/.*(SONAME).*\[\(.*\)\]/\1/p')
if [ -z "$soname" ] || [ ! -e "$libdir/$soname" ]; then
    bad "SONAME '$soname' not installed next to libweft.so"
fi
say "installed $(cd "$prefix" && find . -type f -o -type l | sort | tr '\n' ' ')"
# nothing of the build tree may leak into the installed package
if grep -rl -- "$root" "$libdir/pkgconfig" "$libdir/cmake" >/dev/null 2>&1; then
    bad "the installed package names the source or build tree:"
    grep -rn -- "$root" "$libdir/pkgconfig" "$libdir/cmake" | sed 's/^/    | /' >&2
fi

# ---------------------------------------------------------------------------
section "exported symbols of libweft.so"
nm -D --defined-only "$so" | awk '{ print $NF }' | sort -u >"$tmp/exports"
say "$(wc -l <"$tmp/exports") symbols exported"
if grep -v '^weft_[^_]' "$tmp/exports" >"$tmp/foreign"; then
    bad "libweft.so exports symbols outside the weft_* API:"
    sed 's/^/    | /' "$tmp/foreign" >&2
fi
# every function a public header marks WEFT_API must be exported
sed -n 's/^WEFT_API[^(]*[ *]\(weft_[A-Za-z0-9_]*\)(.*/\1/p' "$incdir"/weft.h "$incdir"/weft/*.h |
    sort -u >"$tmp/declared"
missing=$(comm -23 "$tmp/declared" "$tmp/exports" | tr '\n' ' ')
if [ -n "$missing" ]; then
    bad "declared WEFT_API in the headers but not exported: $missing"
else
    say "$(wc -l <"$tmp/declared") WEFT_API functions declared in the headers, all exported"
fi
# libweft.a: internals are global there; they must still carry the prefix
nm -g --defined-only "$libdir/libweft.a" 2>/dev/null | awk 'NF == 3 { print $3 }' |
    sort -u | grep -v '^weft_' >"$tmp/static_foreign" || true
if [ -s "$tmp/static_foreign" ]; then
    bad "libweft.a defines global symbols without the weft_ prefix (clash with users' names):"
    sed 's/^/    | /' "$tmp/static_foreign" >&2
fi

# ---------------------------------------------------------------------------
section "pkg-config"
export PKG_CONFIG_PATH=$libdir/pkgconfig
command -v pkg-config >/dev/null || die "pkg-config is not installed"
pc_prefix=$(pkg-config --variable=prefix weft) || die "pkg-config cannot read weft.pc"
say "weft.pc: version $(pkg-config --modversion weft), prefix=$pc_prefix"
say "  --cflags --libs:        $(pkg-config --cflags --libs weft)"
say "  --static --libs:        $(pkg-config --static --libs weft)"
if [ "$(readlink -f "$pc_prefix")" != "$(readlink -f "$prefix")" ]; then
    bad "weft.pc has prefix=$pc_prefix, not the prefix it was installed into ($prefix)." \
        "Relocate it: prefix=\${pcfiledir}/<relative path> (see the report)"
    # go on with the right prefix, to check the rest of the file
    pc_fix=(--define-variable=prefix="$prefix")
else
    pc_fix=()
fi
cflags=$(pkg-config "${pc_fix[@]}" --cflags weft)
libs=$(pkg-config "${pc_fix[@]}" --libs weft)
slibs=$(pkg-config "${pc_fix[@]}" --static --libs weft)
strict=(-std=c11 -Wall -Wextra -Wpedantic -Werror)

# shared: -lweft finds libweft.so
# shellcheck disable=SC2086
if "$CC" "${strict[@]}" "$here/main.c" $cflags $libs -o "$tmp/consumer_pc"; then
    # ldd's output is taken whole before matching: `ldd | grep -q` under
    # pipefail fails at random (grep exits at the match, ldd gets SIGPIPE)
    deps=$(LD_LIBRARY_PATH=$libdir ldd "$tmp/consumer_pc")
    grep -q "libweft\.so.* => $libdir/" <<<"$deps" ||
        bad "consumer_pc does not load libweft.so from $libdir:" \
            "$(grep weft <<<"$deps")"
    run "pkg-config, shared" "$tmp/consumer_pc" LD_LIBRARY_PATH="$libdir"
else
    bad "pkg-config shared build: $CC ${strict[*]} main.c $cflags $libs"
fi

# static: libweft.a in place of -lweft, with Libs.private and Requires.private
# shellcheck disable=SC2086
slibs_a=$(printf '%s\n' $slibs | sed "s|^-lweft\$|$libdir/libweft.a|" | tr '\n' ' ')
# shellcheck disable=SC2086
if "$CC" "${strict[@]}" "$here/main.c" $cflags $slibs_a -o "$tmp/consumer_pc_static"; then
    deps=$(ldd "$tmp/consumer_pc_static")
    ! grep -q libweft <<<"$deps" ||
        bad "consumer_pc_static still needs libweft.so"
    run "pkg-config, static" "$tmp/consumer_pc_static"
else
    bad "pkg-config static build: $CC ${strict[*]} main.c $cflags $slibs_a"
fi

# ---------------------------------------------------------------------------
section "CMake find_package(weft)"
if cmake -S "$here" -B "$tmp/cmake-build" -DCMAKE_PREFIX_PATH="$prefix" \
    -DCMAKE_C_COMPILER="$CC" -DCMAKE_BUILD_TYPE=RelWithDebInfo >"$tmp/cmake.log" 2>&1 &&
    cmake --build "$tmp/cmake-build" -j"$(nproc)" >>"$tmp/cmake.log" 2>&1; then
    run "cmake, weft::weft" "$tmp/cmake-build/consumer"
    deps=$(ldd "$tmp/cmake-build/consumer_static")
    ! grep -q libweft <<<"$deps" ||
        bad "consumer_static (weft::weft_static) still needs libweft.so"
    run "cmake, weft::weft_static" "$tmp/cmake-build/consumer_static"
else
    bad "CMake consumer build:"
    sed 's/^/    | /' "$tmp/cmake.log" >&2
fi

echo
if [ "$fail" = 0 ]; then
    say "all checks passed"
else
    echo "consumer: FAILED" >&2
fi
exit "$fail"
