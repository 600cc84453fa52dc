/**
 * @fastify/http-proxy (undici under the hood) proxying everything to one upstream, logger off.
 * Usage: node bench/macro/contenders/fastify-proxy.ts --port P --upstream URL [--timeout-ms N] [--connections N]
 * (--timeout-ms: undici headersTimeout/bodyTimeout, a timeout answers 504; --connections: most upstream
 * connections of the undici pool, @fastify/reply-from's default is 128).
 */
import { parseArgs } from 'node:util';
import proxy from '@fastify/http-proxy';
import Fastify from 'fastify';

const { values } = parseArgs({
  options: {
    port: { type: 'string' },
    upstream: { type: 'string' },
    'timeout-ms': { type: 'string' },
    connections: { type: 'string' },
  },
});
const undici: Record<string, number> = {};
if (values['timeout-ms'] !== undefined) {
  undici['headersTimeout'] = Number(values['timeout-ms']);
  undici['bodyTimeout'] = Number(values['timeout-ms']);
}
if (values.connections !== undefined) undici['connections'] = Number(values.connections);

const app = Fastify({ logger: false });
await app.register(proxy, { upstream: values.upstream!, undici });
await app.listen({ port: Number(values.port), host: '127.0.0.1' });
for (const sig of ['SIGTERM', 'SIGINT'] as const) {
  process.on(sig, () => process.exit(0));
}
