# Sourced by scripts/test: the playground's browser tests need Chromium (Debian's; Playwright's own
# download is not used). Install it when missing and we are root with apt-get; otherwise those tests
# skip with the reason. Set OYEZ_NO_BROWSER_INSTALL=1 to never install.
OYEZ_CHROMIUM="${OYEZ_CHROMIUM:-/usr/bin/chromium}"
if [ ! -x "$OYEZ_CHROMIUM" ] && [ -z "${OYEZ_NO_BROWSER_INSTALL:-}" ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "[oyez] installing chromium for the playground's browser tests" >&2
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } \
      || echo "[oyez] could not install chromium; the browser tests will skip" >&2
  else
    echo "[oyez] $OYEZ_CHROMIUM not found and cannot apt-get install it; the browser tests will skip" >&2
  fi
fi
export OYEZ_CHROMIUM
