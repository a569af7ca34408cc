#!/usr/bin/env bash
# The HTML report as an auditor sees it: runs the demo (scripts/demo.sh) with each
# case's report drawn by `mmaudit-verify report --html`, opens every page in headless
# Chromium (Debian's package, installed when missing and run as root), and checks the
# DOM Chromium parsed and the screenshot it took (scripts/check-html-report.py): the
# banner says the expected verdict in its colour, the charts were drawn, nothing runs or
# fetches. Each page is also checked against the opposite verdict, and an honest page
# spoiled three ways (an element that fetches, an event handler, a timeline without
# bars) is checked too: those checks must fail.
#
# usage: scripts/report-browser-test.sh [--screenshots DIR]
#   --screenshots DIR  keep the screenshots (DIR/report-CASE.png), e.g. for docs/
set -euo pipefail
shots=
case ${1:-} in
--screenshots)
    [[ $# -eq 2 ]] || { echo "usage: $0 [--screenshots DIR]" >&2; exit 2; }
    mkdir -p "$2"
    shots=$(cd "$2" && pwd)
    ;;
"") ;;
*)
    echo "usage: $0 [--screenshots DIR]" >&2
    exit 2
    ;;
esac
cd "$(dirname "$0")/.."

if ! command -v chromium >/dev/null 2>&1; then
    if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
        echo "installing Debian's chromium (headless browser for the report test)"
        export DEBIAN_FRONTEND=noninteractive
        apt-get install -y -q --no-install-recommends chromium >/dev/null 2>&1 ||
            { apt-get update -q >/dev/null && apt-get install -y -q --no-install-recommends chromium >/dev/null; }
    else
        echo "report test: needs chromium (Debian: apt-get install chromium)" >&2
        exit 1
    fi
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/mmaudit-html.XXXXXX")
trap 'rm -rf "$work"' EXIT
bash scripts/demo.sh --html "$work/pages"

# browser OUT ARGS...: runs headless chromium with ARGS, its standard output to OUT. A
# browser that dies of a signal (it has segfaulted on CI machines) says nothing about the
# page: it is run again, up to three times.
browser() {
    local out=$1 rc=0 try
    shift
    for try in 1 2 3; do
        chromium --headless --no-sandbox --disable-gpu --hide-scrollbars \
            --user-data-dir="$work/profile" "$@" >"$out" 2>>"$work/chromium.log" && return 0
        rc=$?
        ((rc > 128)) || return "$rc"
        echo "report test: chromium died (exit status $rc, try $try of 3)" >&2
    done
    return "$rc"
}

failed=0
for page in "$work"/pages/*.html; do
    name=$(basename "$page" .html)
    expect=fail
    [[ $name == honest || $name == commit ]] && expect=pass
    opposite=pass
    [[ $expect == pass ]] && opposite=fail
    if ! browser "$work/$name.dom" --dump-dom "file://$page" ||
        ! browser /dev/null --window-size=1200,2400 --screenshot="$work/$name.png" "file://$page"; then
        echo "report test: chromium could not draw $name.html" >&2
        tail -20 "$work/chromium.log" >&2
        failed=$((failed + 1))
        continue
    fi
    if ! python3 scripts/check-html-report.py "$work/$name.dom" "$work/$name.png" "$expect"; then
        failed=$((failed + 1))
    fi
    if python3 scripts/check-html-report.py "$work/$name.dom" "$work/$name.png" "$opposite" 2>/dev/null >&2; then
        echo "report test: $name.html also passes as $opposite: the check cannot tell" >&2
        failed=$((failed + 1))
    fi
    [[ -n $shots ]] && cp "$work/$name.png" "$shots/report-$name.png"
done
# The check itself must fail on pages that are wrong in ways a reader would not see at
# a glance: a passive element that fetches, an event handler, a timeline with no bars.
honest=$work/pages/honest.html
if [[ -f $honest ]]; then
    sed 's|</main>|<img src="http://example.invalid/x.png" alt=""></main>|' "$honest" >"$work/fetches.html"
    sed 's|<body>|<body onload="void 0">|' "$honest" >"$work/handler.html"
    python3 - "$honest" "$work/no-bars.html" <<'PY'
import re, sys
page = open(sys.argv[1], encoding="utf-8").read()
start = page.index('<svg class="timeline calls"')
end = page.index("</svg>", start)
bars = re.sub(r'height="[0-9.]+"', 'height="0"', page[start:end])
open(sys.argv[2], "w", encoding="utf-8").write(page[:start] + bars + page[end:])
PY
    for bad in fetches handler no-bars; do
        browser "$work/$bad.dom" --dump-dom "file://$work/$bad.html"
        browser /dev/null --window-size=1200,2400 --screenshot="$work/$bad.png" "file://$work/$bad.html"
        if python3 scripts/check-html-report.py "$work/$bad.dom" "$work/$bad.png" pass 2>/dev/null >&2; then
            echo "report test: the check passes a page with a fault ($bad)" >&2
            failed=$((failed + 1))
        fi
    done
else
    echo "report test: the demo drew no honest page" >&2
    failed=$((failed + 1))
fi
if ((failed > 0)); then
    echo "report test: $failed page check(s) failed" >&2
    exit 1
fi
echo "report test: every page drawn by Chromium shows its verdict, charts and failures"
