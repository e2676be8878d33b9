#!/usr/bin/env node
// Compile the Ethereum Attestation Service's SchemaRegistry and EAS from the npm package
// @ethereum-attestation-service/eas-contracts (pinned in package.json) with EAS's own compiler
// settings, for scripts/bench_gas_vs_eas.py. Prints one JSON object on stdout:
//   {"compiler": "...", "settings": {...}, "contracts": {"EAS": {"abi", "bytecode",
//    "matchesPackageArtifact"}, "SchemaRegistry": {...}}}
//
// EAS's settings: the sources pin `pragma solidity 0.8.29`, EAS's package.json pins solc 0.8.29
// and @openzeppelin/contracts 5.3.0 (both installed here under aliases: `solc-0.8.29`,
// `@openzeppelin/contracts-5.3.0`), and its deployments' metadata record the optimizer at
// 1,000,000 runs, evmVersion paris and bytecodeHash none. `matchesPackageArtifact` says whether
// the creation bytecode equals the one EAS ships in the package's hardhat artifacts, which is
// what shows these are the settings EAS itself compiled with.
'use strict';

const fs = require('fs');
const path = require('path');

const NODE_MODULES = path.resolve(__dirname, '..', 'node_modules');
const EAS_ROOT = path.join(NODE_MODULES, '@ethereum-attestation-service', 'eas-contracts');
const OZ_ROOT = path.join(NODE_MODULES, '@openzeppelin', 'contracts-5.3.0');
const OZ_PREFIX = '@openzeppelin/contracts/';

const SETTINGS = {
  optimizer: { enabled: true, runs: 1000000 },
  evmVersion: 'paris',
  metadata: { bytecodeHash: 'none' },
  outputSelection: { '*': { '*': ['abi', 'evm.bytecode.object'] } },
};

const ENTRY = {
  'contracts/EAS.sol': 'EAS',
  'contracts/SchemaRegistry.sol': 'SchemaRegistry',
};

function resolveImport(importPath) {
  let file;
  if (importPath.startsWith(OZ_PREFIX)) {
    file = path.join(OZ_ROOT, importPath.slice(OZ_PREFIX.length));
  } else {
    file = path.join(EAS_ROOT, importPath);
  }
  try {
    return { contents: fs.readFileSync(file, 'utf8') };
  } catch (err) {
    return { error: `File not found: ${importPath} (${err.message})` };
  }
}

function main() {
  const solc = require(path.join(NODE_MODULES, 'solc-0.8.29'));
  const sources = {};
  for (const source of Object.keys(ENTRY)) {
    sources[source] = { content: fs.readFileSync(path.join(EAS_ROOT, source), 'utf8') };
  }
  const input = { language: 'Solidity', sources, settings: SETTINGS };
  const output = JSON.parse(solc.compile(JSON.stringify(input), { import: resolveImport }));
  const errors = (output.errors || []).filter((e) => e.severity === 'error');
  if (errors.length > 0) {
    process.stderr.write(errors.map((e) => e.formattedMessage).join('\n'));
    process.exitCode = 1;
    return;
  }
  const contracts = {};
  for (const [source, name] of Object.entries(ENTRY)) {
    const compiled = output.contracts[source][name];
    const artifactFile = path.join(EAS_ROOT, 'artifacts', source, `${name}.json`);
    const shipped = JSON.parse(fs.readFileSync(artifactFile, 'utf8')).bytecode.replace(/^0x/, '');
    contracts[name] = {
      abi: compiled.abi,
      bytecode: `0x${compiled.evm.bytecode.object}`,
      matchesPackageArtifact: shipped === compiled.evm.bytecode.object,
    };
  }
  const easVersion = JSON.parse(fs.readFileSync(path.join(EAS_ROOT, 'package.json'), 'utf8')).version;
  const settings = { ...SETTINGS };
  delete settings.outputSelection;
  process.stdout.write(
    `${JSON.stringify({ compiler: solc.version(), easVersion, settings, contracts })}\n`,
  );
}

main();
