/**
 * Writes schema/sluice.schema.json from the config schema (src/config/schema.ts). With --check, fails
 * when the file in the repository is stale, so editors never autocomplete an old config.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { configJsonSchema } from '../src/config/schema.ts';

const file = new URL('../schema/sluice.schema.json', import.meta.url);
const text = `${JSON.stringify(configJsonSchema(), null, 2)}\n`;
if (process.argv.includes('--check')) {
  let current = '';
  try {
    current = readFileSync(file, 'utf8');
  } catch {}
  if (current !== text) {
    console.error('schema/sluice.schema.json is stale: run `npm run schema` and commit it');
    process.exit(1);
  }
  console.log('schema/sluice.schema.json is up to date');
} else {
  writeFileSync(file, text);
  console.log('wrote schema/sluice.schema.json');
}
