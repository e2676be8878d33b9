#!/usr/bin/env node
// A `solc`-compatible command line over solc-js (the npm package `solc`), for the tools that
// expect a native compiler binary: py-solc-x and ape-solidity. No native solc can be downloaded on
// this project's machines, so scripts/install_solc.sh puts a shim that execs this file at
// $SOLCX_BINARY_PATH/solc-v<version>.
//
// Answers the subset those tools use:
//   solc --version
//   solc --help
//   solc --standard-json [--base-path P] [--include-path P]... [--allow-paths P1,P2]  (JSON on stdin)
// Anything else exits 1 with "unrecognised option '<flag>'" on stderr, the way solc does, so
// py-solc-x raises UnknownOption.
//
// Imports are resolved like solc's file loader: relative to --base-path, then each --include-path,
// then the repository's node_modules (for `@openzeppelin/...`); only files under one of those
// roots or an --allow-paths entry are read.
//
// Output is written with a callback and the process ends on its own once stdout has drained:
// calling process.exit() right after a large write to a pipe truncates the output at 64 KiB.
'use strict';

const fs = require('fs');
const path = require('path');

const REPO_ROOT = path.resolve(__dirname, '..');
const NODE_MODULES = path.join(REPO_ROOT, 'node_modules');

function loadSolc() {
  // Prefer the repository's node_modules even when this file is executed through a shim elsewhere.
  try {
    return require(require.resolve('solc', { paths: [REPO_ROOT, __dirname] }));
  } catch (err) {
    process.stderr.write(
      `solc-wrapper: cannot load the npm package 'solc' from ${NODE_MODULES} (run make install): ${err.message}\n`,
    );
    process.exitCode = 2;
    return null;
  }
}

function versionString(solc) {
  // solc-js reports e.g. 0.8.28+commit.7893614a.Emscripten.clang
  return solc.version();
}

const HELP = `solc, the solidity compiler commandline interface (solc-js wrapper)
Usage: solc --standard-json [--base-path <path>] [--include-path <path>] [--allow-paths <paths>]
       solc --version
       solc --help

Options:
  --version           Show version and exit.
  --help              Show help message and exit.
  --standard-json     Switch to Standard JSON input / output mode (reads JSON from stdin).
  --base-path <path>  Use the given path as the root of the source tree.
  --include-path <p>  Make an additional source directory available to the default import callback.
  --allow-paths <ps>  Allow a given path for imports. A list of paths can be supplied by
                      separating them with a comma.
`;

function parseArgs(argv) {
  const opts = { mode: null, basePath: null, includePaths: [], allowPaths: [], files: [] };
  for (let i = 0; i < argv.length; i += 1) {
    const arg = argv[i];
    const takeValue = () => {
      if (i + 1 >= argv.length) {
        throw new Error(`option '${arg}' requires an argument`);
      }
      i += 1;
      return argv[i];
    };
    if (arg === '--version') opts.mode = opts.mode || 'version';
    else if (arg === '--help') opts.mode = opts.mode || 'help';
    else if (arg === '--standard-json') opts.mode = 'standard-json';
    else if (arg === '--base-path') opts.basePath = takeValue();
    else if (arg.startsWith('--base-path=')) opts.basePath = arg.slice('--base-path='.length);
    else if (arg === '--include-path') opts.includePaths.push(takeValue());
    else if (arg.startsWith('--include-path=')) opts.includePaths.push(arg.slice(15));
    else if (arg === '--allow-paths') opts.allowPaths.push(...takeValue().split(','));
    else if (arg.startsWith('--allow-paths=')) opts.allowPaths.push(...arg.slice(14).split(','));
    else if (arg === '-') opts.files.push(arg);
    else if (arg.startsWith('-')) throw new Error(`unrecognised option '${arg}'`);
    else opts.files.push(arg);
  }
  return opts;
}

function isUnder(file, root) {
  const rel = path.relative(root, file);
  return rel === '' || (!rel.startsWith('..') && !path.isAbsolute(rel));
}

function makeImportCallback(opts) {
  const base = path.resolve(opts.basePath || process.cwd());
  const searchRoots = [base, ...opts.includePaths.map((p) => path.resolve(p)), NODE_MODULES];
  const allowedRoots = [...searchRoots, ...opts.allowPaths.filter(Boolean).map((p) => path.resolve(p))];
  return function findImports(importPath) {
    const candidates = path.isAbsolute(importPath)
      ? [importPath]
      : searchRoots.map((root) => path.join(root, importPath));
    for (const candidate of candidates) {
      const resolved = path.resolve(candidate);
      if (!allowedRoots.some((root) => isUnder(resolved, root))) continue;
      try {
        if (fs.statSync(resolved).isFile()) {
          return { contents: fs.readFileSync(resolved, 'utf8') };
        }
      } catch (err) {
        // not here; try the next root
      }
    }
    return { error: `File not found: ${importPath} (searched ${searchRoots.join(', ')})` };
  };
}

function readStdin(callback) {
  const chunks = [];
  process.stdin.on('data', (chunk) => chunks.push(chunk));
  process.stdin.on('end', () => callback(Buffer.concat(chunks).toString('utf8')));
  process.stdin.on('error', (err) => {
    process.stderr.write(`solc-wrapper: cannot read stdin: ${err.message}\n`);
    process.exitCode = 1;
  });
}

function writeOut(text, exitCode) {
  process.exitCode = exitCode;
  // No process.exit(): let the event loop drain stdout so pipes get every byte.
  process.stdout.write(text);
}

function main() {
  let opts;
  try {
    opts = parseArgs(process.argv.slice(2));
  } catch (err) {
    process.stderr.write(`${err.message}\n`);
    process.exitCode = 1;
    return;
  }
  if (opts.mode === 'help' || opts.mode === null) {
    writeOut(HELP, opts.mode === 'help' ? 0 : 1);
    return;
  }
  const solc = loadSolc();
  if (solc === null) return;
  if (opts.mode === 'version') {
    writeOut(
      `solc, the solidity compiler commandline interface\nVersion: ${versionString(solc)}\n`,
      0,
    );
    return;
  }
  // standard-json
  readStdin((input) => {
    let output;
    try {
      JSON.parse(input);
      output = solc.compile(input, { import: makeImportCallback(opts) });
    } catch (err) {
      output = JSON.stringify({
        errors: [
          {
            component: 'general',
            formattedMessage: `solc-wrapper: ${err.message}`,
            message: `solc-wrapper: ${err.message}`,
            severity: 'error',
            type: 'JSONError',
          },
        ],
      });
    }
    // solc answers standard JSON with exit code 0 even when the JSON carries errors.
    writeOut(`${output}\n`, 0);
  });
}

main();
