#!/usr/bin/env -S node --max-semi-space-size=4
// --max-semi-space-size=4: a small young generation keeps GC pauses short while thousands of
// requests are in flight (504 lateness p99 ~70 ms → ~23 ms, docs/benchmarks.md).
// Sluice is TypeScript run directly by Node's type stripping (Node >= 22.18, developed on Node 24).
const [major, minor] = process.versions.node.split('.').map(Number);
if (major < 22 || (major === 22 && minor < 18)) {
  console.error(`sluice: needs Node.js 22.18 or newer (Node 24 LTS recommended); this is ${process.version}`);
  process.exit(1);
}
await import('../src/cli/main.ts');
