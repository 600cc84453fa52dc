#!/usr/bin/env node
// Sluice is TypeScript run directly by Node's type stripping (Node >= 22.18, developed on Node 24).
const [major, minor] = process.versions.node.split('.').map(Number);
if (major < 22 || (major === 22 && minor < 18)) {
  console.error(`sluice: needs Node.js 22.18 or newer (Node 24 LTS recommended); this is ${process.version}`);
  process.exit(1);
}
await import('../src/cli/main.ts');
