// Node's `fs`, plus `globSync` (added to `fs` in Node 22) from npm's `glob`.
import fs from 'node:fs';
import { globSync as glob } from 'glob';

export * from 'node:fs';
export default fs;
export function globSync(pattern, options) {
  return glob(pattern, options);
}
