#!/usr/bin/env bash
# The page's screenshot in docs (docs/rag-scores/page.png): `headrank serve` with the default ranker on a free
# port, headless Chromium on the page with a query and three passages in the URL fragment (the page submits it on
# load), then the server is stopped. Needs chromium (apt-get install chromium).
# usage: scripts/page_screenshot.sh [OUT.png]   (from the repository root, with PYTHON=.venv/bin/python by default)
set -euo pipefail
out=${1:-docs/rag-scores/page.png}
python=${PYTHON:-.venv/bin/python}
port=$("$python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"$python" -m headrank.cli serve --port "$port" >/dev/null 2>&1 &
server=$!
trap 'kill "$server" 2>/dev/null || true' EXIT
for _ in $(seq 300); do
  curl -sf "http://127.0.0.1:$port/health" >/dev/null && break
  sleep 1
done
fragment=$("$python" - <<'PY'
import urllib.parse
query = "how long do fleas live"
passages = [
    "Wi-Fi and Bluetooth are wireless technologies. Their range depends on the antenna and on walls.",
    "Cats groom themselves often. Adult fleas live for two to three months on a host; without one, they die "
    "within a week or two. Flea eggs hatch in one to ten days.",
    "Goldfish grow with the size of their tank. A goldfish can live for more than ten years.",
]
print(urllib.parse.urlencode([("q", query), *(("p", p) for p in passages)]))
PY
)
profile=$(mktemp -d)
mkdir -p "$(dirname "$out")"
chromium --headless --no-sandbox --disable-gpu --disable-background-networking --disable-component-update \
  --disable-sync --no-first-run --user-data-dir="$profile" --hide-scrollbars --window-size=1000,860 \
  --virtual-time-budget=120000 --screenshot="$out" "http://127.0.0.1:$port/#$fragment" 2>/dev/null
rm -rf "$profile"
echo "wrote $out"
