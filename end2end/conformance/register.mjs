// `node --import ./conformance/register.mjs`: lets `@modelcontextprotocol/conformance` (written for
// Node 22, which has `fs.globSync`) run on the machine's Node 20. Only that package's imports of
// `fs` are redirected, to `fs-with-glob.mjs`: Node's own `fs` plus `globSync` from npm's `glob`.
import { register } from 'node:module';

register('./hooks.mjs', import.meta.url);
