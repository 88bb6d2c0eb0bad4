#!/bin/sh
# The browser test of the HTML board drives Debian's chromium through playwright (playwright's own browser
# download cannot work offline). Install chromium when it is absent and we are root; otherwise say how,
# and the test skips itself (CI sets CLEARBENCH_REQUIRE_BROWSER=1, which turns that skip into a failure).
if command -v chromium >/dev/null 2>&1; then
    exit 0
fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "chromium not found: installing it with apt-get (for the browser test of the HTML board)"
    if DEBIAN_FRONTEND=noninteractive apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; then
        exit 0
    fi
    echo "warning: apt-get could not install chromium; the browser test will be skipped" >&2
else
    echo "note: chromium not found; the browser test will be skipped. Install it with: sudo apt-get install -y chromium" >&2
fi
exit 0
