import { startDemoUpstream } from '../../demo/demo-upstream.ts';
import { parseFlags, UsageError } from '../args.ts';

const HELP = `Usage: sluice demo-upstream [--port 9000] [--host 127.0.0.1]

A deliberately unreliable HTTP server for demos and tests. Endpoints:
  /fast                       200 at once
  /slow?ms=N                  answers after N ms
  /hang                       never answers
  /drip?chunks=N&every=ms     body trickles in N chunks
  /stall?after=N              headers and N bytes, then silence
  /reset                      connection reset (?after_headers=1: after the headers)
  /status/{code}              that status
  /size/{bytes}               a body of that size
  /echo                       the request as JSON (method, path, headers, body size and sha256)
  /timing                     a response with its own Server-Timing
  /healthz                    200, or 503 after POST /_demo/health/down (POST /_demo/health/up)

Options:
  --port N      port (default 9000)
  --host ADDR   address (default 127.0.0.1)
  -h, --help    this help`;

export async function run(argv: string[]): Promise<number> {
  const { values } = parseFlags('demo-upstream', argv, {
    port: { type: 'string', default: '9000' },
    host: { type: 'string', default: '127.0.0.1' },
  });
  if (values.help) {
    console.log(HELP);
    return 0;
  }
  const port = Number(values.port);
  if (!Number.isInteger(port) || port < 0 || port > 65535)
    throw new UsageError(`demo-upstream: --port must be a port number, got '${values.port}'`);
  const demo = await startDemoUpstream({ port, host: values.host as string });
  process.stderr.write(`demo upstream listening on ${demo.url}\n`);
  await new Promise<void>((resolve) => {
    process.once('SIGTERM', resolve);
    process.once('SIGINT', resolve);
  });
  await demo.close();
  return 0;
}
