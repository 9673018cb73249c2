#!/usr/bin/env bash
# Refresh the GraphiQL browser build served on /graphql in development
# (src/datadiver_graph/api/graphiql/static/vendor/), so the page needs no CDN. This script owns that
# directory: it replaces it whole.
#
# The exact versions live in scripts/graphiql/package.json and its package-lock.json. To move
# to new versions: edit package.json, run `npm install --package-lock-only` in scripts/graphiql,
# then run this script and commit package.json, package-lock.json and the static directory.
#
# It installs the lock with `npm ci` (integrity-checked, no install scripts) in a temporary
# directory, copies the minified single-file (UMD) builds and each package's licence, writes
# VERSIONS.txt, and prints what changed.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
spec="$root/scripts/graphiql"
dest="$root/src/datadiver_graph/api/graphiql/static/vendor"

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cp "$spec/package.json" "$spec/package-lock.json" "$spec/.npmrc" "$work/"
(cd "$work" && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error >/dev/null)
nm="$work/node_modules"

before="$work/before.txt"
if [ -d "$dest" ]; then
  (cd "$dest" && find . -type f | sort | xargs -r sha256sum) >"$before"
else
  : >"$before"
fi

staged="$work/static"
mkdir -p "$staged/licenses"
# GraphiQL's UMD build bundles its own dependencies (graphql-js, graphql-ws, CodeMirror 5, ...);
# it expects React and ReactDOM as globals.
cp "$nm/graphiql/graphiql.min.js" "$nm/graphiql/graphiql.min.css" "$staged/"
cp "$nm/react/umd/react.production.min.js" "$staged/"
cp "$nm/react-dom/umd/react-dom.production.min.js" "$staged/"
cp "$nm/@graphiql/plugin-explorer/dist/index.umd.js" "$staged/plugin-explorer.umd.js"
cp "$nm/@graphiql/plugin-explorer/dist/style.css" "$staged/plugin-explorer.css"

cp "$nm/graphiql/LICENSE" "$staged/licenses/graphiql.LICENSE"
cp "$nm/react/LICENSE" "$staged/licenses/react.LICENSE"
cp "$nm/react-dom/LICENSE" "$staged/licenses/react-dom.LICENSE"
# The explorer plugin bundles graphiql-explorer (OneGraph, MIT). The plugin itself ships no
# LICENSE file: it is MIT (its package.json) under the GraphiQL monorepo's LICENSE.
cp "$nm/graphiql-explorer/LICENSE" "$staged/licenses/graphiql-explorer.LICENSE"
{
  echo "@graphiql/plugin-explorer is published without a LICENSE file; its package.json declares"
  echo "\"license\": \"MIT\" and it is part of https://github.com/graphql/graphiql, whose LICENSE follows."
  echo
  cat "$nm/graphiql/LICENSE"
} >"$staged/licenses/graphiql-plugin-explorer.LICENSE"

version() { node -p "require('$nm/$1/package.json').version"; }
license() { node -p "require('$nm/$1/package.json').license"; }
{
  echo "Vendored by scripts/vendor-graphiql.sh from scripts/graphiql/package-lock.json; do not edit."
  echo
  for pkg in graphiql react react-dom @graphiql/plugin-explorer graphiql-explorer; do
    echo "$pkg@$(version "$pkg") ($(license "$pkg"))"
  done
} >"$staged/VERSIONS.txt"

rm -rf "$dest"
mkdir -p "$(dirname "$dest")"
cp -r "$staged" "$dest"

after="$work/after.txt"
(cd "$dest" && find . -type f | sort | xargs -r sha256sum) >"$after"
if cmp -s "$before" "$after"; then
  echo "GraphiQL assets unchanged ($dest)"
else
  echo "GraphiQL assets changed in $dest:"
  diff <(awk '{print $2, $1}' "$before") <(awk '{print $2, $1}' "$after") \
    | sed -n 's/^< \([^ ]*\) .*/  - \1 (old)/p; s/^> \([^ ]*\) .*/  + \1 (new)/p' || true
fi
cat "$dest/VERSIONS.txt"
du -ch "$dest"/*.js "$dest"/*.css | tail -1 | sed 's/^/total size of js+css: /'
