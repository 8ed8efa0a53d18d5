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
#   3. Every installed header compiles on its own (a file including only
#      it) as C11 and as C++17, -Wall -Wextra -Wpedantic -Werror, with CC
#      and CXX and with clang/clang++ if installed; WEFT_VERSION_* match
#      the package's version.
#   4. pkg-config: weft.pc points into the prefix; main.c builds with
#      -std=c11 -Wpedantic -Werror against the shared library (run with
#      LD_LIBRARY_PATH) and, with `pkg-config --static`, against libweft.a;
#      main.cpp (C++17: extern "C" linkage, the macros) likewise.
#   5. CMake: tests/consumer configures with find_package(weft) and
#      CMAKE_PREFIX_PATH, links weft::weft and weft::weft_static (and
#      main.cpp with weft::weft_static); they run.
#   6. `make help` runs and names every target of the Makefile, and the
#      README's make-target table lists every one of them.
#
# Environment: CC (default cc), CXX (default c++), KEEP_TMP=1 keeps the
# temporary directory.
# Exit status 0 if every check passed; 1 otherwise.  The last line says which.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
build=${1:-$root/build}
CC=${CC:-cc}
CXX=${CXX:-c++}

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
# a NEEDED libjemalloc of libweft.so would be searched after libc: loaded
# (with libstdc++) and never used
dyn=$(readelf -d "$so")
! grep -q 'NEEDED.*libjemalloc' <<<"$dyn" ||
    bad "libweft.so needs libjemalloc, which cannot replace malloc from there"
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
section "public headers on their own, as C11 and as C++17"
strict=(-std=c11 -Wall -Wextra -Wpedantic -Werror)
strict_cxx=(-std=c++17 -Wall -Wextra -Wpedantic -Werror)
ccs=("$CC") cxxs=("$CXX")
command -v clang >/dev/null && [ "$CC" != clang ] && ccs+=(clang)
command -v clang++ >/dev/null && [ "$CXX" != clang++ ] && cxxs+=(clang++)
nhdr=0
for h in "$incdir"/weft.h "$incdir"/weft/*.h; do
    rel=${h#"$incdir"/}
    printf '#include <%s>\n' "$rel" >"$tmp/hdr.c"
    cp "$tmp/hdr.c" "$tmp/hdr.cpp"
    for c in "${ccs[@]}"; do
        "$c" "${strict[@]}" -I"$incdir" -c "$tmp/hdr.c" -o /dev/null 2>"$tmp/hdr.log" ||
            { bad "<$rel> alone does not compile as C11 with $c:"; sed 's/^/    | /' "$tmp/hdr.log" >&2; }
    done
    for c in "${cxxs[@]}"; do
        "$c" "${strict_cxx[@]}" -I"$incdir" -c "$tmp/hdr.cpp" -o /dev/null 2>"$tmp/hdr.log" ||
            { bad "<$rel> alone does not compile as C++17 with $c:"; sed 's/^/    | /' "$tmp/hdr.log" >&2; }
    done
    nhdr=$((nhdr + 1))
done
say "$nhdr headers compiled with ${ccs[*]} and ${cxxs[*]}"
# the version macros of the headers are the package's version
printf '#include <weft.h>\nWEFT_VERSION_MAJOR.WEFT_VERSION_MINOR.WEFT_VERSION_PATCH\n' >"$tmp/ver.c"
hver=$("$CC" -E -P -I"$incdir" "$tmp/ver.c" | tail -n 1 | tr -d ' ')
pver=$(PKG_CONFIG_PATH=$libdir/pkgconfig pkg-config --modversion weft 2>/dev/null || echo '?')
[ "$hver" = "$pver" ] ||
    bad "weft/common.h says version $hver, the package (project() in CMakeLists.txt) $pver"

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
    # WEFT_ALLOCATOR=jemalloc: the program's malloc is jemalloc's
    if grep -qw -- -ljemalloc <<<"$slibs"; then
        binds=$(LD_DEBUG=bindings "$tmp/consumer_pc_static" 2>&1 >/dev/null || true)
        grep -q "consumer_pc_static .*libjemalloc.* symbol \`malloc'" <<<"$binds" ||
            bad "consumer_pc_static links -ljemalloc but its malloc is not jemalloc's"
    fi
else
    bad "pkg-config static build: $CC ${strict[*]} main.c $cflags $slibs_a"
fi

# C++: the same two links from main.cpp (extern "C" in the headers)
# shellcheck disable=SC2086
if "$CXX" "${strict_cxx[@]}" "$here/main.cpp" $cflags $libs -o "$tmp/consumer_cxx" 2>"$tmp/cxx.log"; then
    run "pkg-config, C++, shared" "$tmp/consumer_cxx" LD_LIBRARY_PATH="$libdir"
else
    bad "pkg-config C++ build: $CXX ${strict_cxx[*]} main.cpp $cflags $libs"
    sed 's/^/    | /' "$tmp/cxx.log" >&2
fi
# shellcheck disable=SC2086
if "$CXX" "${strict_cxx[@]}" "$here/main.cpp" $cflags $slibs_a -o "$tmp/consumer_cxx_static" 2>"$tmp/cxx.log"; then
    run "pkg-config, C++, static" "$tmp/consumer_cxx_static"
else
    bad "pkg-config C++ static build: $CXX ${strict_cxx[*]} main.cpp $cflags $slibs_a"
    sed 's/^/    | /' "$tmp/cxx.log" >&2
fi

# C++: every WEFT_API function has C linkage (a header without extern "C"
# leaves C++ a mangled name that libweft does not define)
{
    echo '#include <weft.h>'
    echo 'typedef void (*fp)(void);'
    echo 'extern const fp all[];'
    echo 'const fp all[] = {'
    sed 's/.*/\treinterpret_cast<fp>(\&&),/' "$tmp/declared"
    echo '};'
    echo 'int main() { return all[0] == nullptr; }'
} >"$tmp/linkage.cpp"
# shellcheck disable=SC2086
"$CXX" "${strict_cxx[@]}" "$tmp/linkage.cpp" $cflags $libs -o "$tmp/linkage" 2>"$tmp/cxx.log" ||
    { bad "C++ cannot link every WEFT_API function (C linkage):"; sed 's/^/    | /' "$tmp/cxx.log" | head -n 20 >&2; }

# ---------------------------------------------------------------------------
section "CMake find_package(weft)"
if cmake -S "$here" -B "$tmp/cmake-build" -DCMAKE_PREFIX_PATH="$prefix" \
    -DCMAKE_C_COMPILER="$CC" -DCMAKE_CXX_COMPILER="$CXX" -DCMAKE_BUILD_TYPE=RelWithDebInfo >"$tmp/cmake.log" 2>&1 &&
    cmake --build "$tmp/cmake-build" -j"$(nproc)" >>"$tmp/cmake.log" 2>&1; then
    run "cmake, weft::weft" "$tmp/cmake-build/consumer"
    deps=$(ldd "$tmp/cmake-build/consumer_static")
    ! grep -q libweft <<<"$deps" ||
        bad "consumer_static (weft::weft_static) still needs libweft.so"
    run "cmake, weft::weft_static" "$tmp/cmake-build/consumer_static"
    run "cmake, C++, weft::weft_static" "$tmp/cmake-build/consumer_cxx"
else
    bad "CMake consumer build:"
    sed 's/^/    | /' "$tmp/cmake.log" >&2
fi

# ---------------------------------------------------------------------------
section "make help and the README's make targets"
targets=$(sed -n 's/^\.PHONY://p' "$root/Makefile" | tr ' ' '\n' | sed '/^$/d' | sort -u)
if help=$(make -s -C "$root" --no-print-directory help 2>&1); then
    for t in $targets; do
        [ "$t" = help ] && continue
        grep -q "^  $t " <<<"$help" || bad "make help does not list '$t'"
    done
else
    bad "make help failed:"
    printf '%s\n' "$help" | sed 's/^/    | /' >&2
fi
for t in $targets; do
    grep -q "^| \`make $t[ \`]" "$root/README.md" ||
        bad "README.md's make-target table has no row for 'make $t'"
done
say "$(wc -w <<<"$targets") make targets: $(tr '\n' ' ' <<<"$targets")"

echo
if [ "$fail" = 0 ]; then
    say "all checks passed"
else
    echo "consumer: FAILED" >&2
fi
exit "$fail"
