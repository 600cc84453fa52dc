import { parseDuration } from '../../config/units.ts';
import { PARSERS } from '../../diagnose/formats/detect.ts';
import { LOG_FORMATS, type LogFormat } from '../../diagnose/formats/record.ts';
import { type FileResult, openLog, readLog } from '../../diagnose/log-reader.ts';
import { LogAggregator, type LogsReport } from '../../diagnose/log-summary.ts';
import { endpointTable, fileLines, notes, sparklines } from '../../diagnose/logs-text.ts';
import { parseFlags, UsageError } from '../args.ts';

const HELP = `Usage: sluice logs FILE… [--format auto|nginx|kong|sluice|alb|apigw] [--cap 29s] [--json]

504 and timeout hot spots per endpoint from access logs: requests, 504s, 502s, timeouts by phase
(where the log says), latency percentiles, the share of requests near the cap, and when the 504s
happened (first, last, peak minute; per minute on a terminal). Sorted by 504s.

FILE is a log file, plain or gzip-compressed, or - for stdin. Formats, detected per file from its
first lines: nginx (combined or common, with or without $request_time / $upstream_response_time /
$upstream_status after it), Kong's JSON log, Sluice's access log, AWS ALB, API Gateway JSON access logs.
Paths are folded into endpoints: numbers, UUIDs, hex ids, ULIDs and long tokens become :id.

Options:
  --format F    the format of every file (default auto: detected per file)
  --cap D       the timeout the latencies are compared with (default: the route's budget in Sluice
                logs, else what the 504s' latency shows, else 29s)
  --json        one JSON document on stdout
  -h, --help    this help

Example:
  sluice logs /var/log/nginx/access.log /var/log/nginx/access.log.2.gz`;

export async function run(argv: string[]): Promise<number> {
  const { values, positionals } = parseFlags(
    'logs',
    argv,
    {
      format: { type: 'string', default: 'auto' },
      cap: { type: 'string' },
      json: { type: 'boolean', default: false },
    },
    true,
  );
  if (values.help) {
    console.log(HELP);
    return 0;
  }
  if (positionals.length === 0)
    throw new UsageError("logs: give at least one log file, or - for stdin (see 'sluice logs --help')");
  const format = values.format as string;
  if (format !== 'auto' && !LOG_FORMATS.includes(format as LogFormat))
    throw new UsageError(`logs: --format must be one of auto, ${LOG_FORMATS.join(', ')}; got '${format}'`);
  let capMs: number | undefined;
  if (values.cap !== undefined) {
    capMs = parseDuration(values.cap);
    if (capMs === undefined || capMs <= 0)
      throw new UsageError(`logs: --cap must be a duration such as 29s or 500ms, got '${values.cap}'`);
  }
  if (positionals.filter((p) => p === '-').length > 1)
    throw new UsageError('logs: stdin (-) can be read only once');
  // Open every file first: a typo in the last name should not cost a read of the first ones.
  const sources = positionals.map((path) => {
    try {
      return openLog(path);
    } catch (err) {
      const e = err as NodeJS.ErrnoException;
      const why =
        e.code === 'ENOENT'
          ? 'no such file'
          : e.code === 'EACCES'
            ? 'permission denied'
            : e.code === 'EISDIR'
              ? 'is a directory'
              : e.message;
      throw new UsageError(`logs: cannot read ${path}: ${why}`);
    }
  });
  const forced = format === 'auto' ? undefined : PARSERS[format as LogFormat];
  const agg = new LogAggregator({ capMs });
  const files: FileResult[] = [];
  for (const source of sources) files.push(await readLog(source, agg, forced));
  const { endpoints, details } = agg.finish();

  if (values.json) {
    const report: LogsReport = {
      files: files.map((f) => ({ path: f.path, format: f.format, lines: f.lines, unparsed: f.unparsed })),
      endpoints,
    };
    process.stdout.write(`${JSON.stringify(report, null, 2)}\n`);
    for (const f of files) if (f.warning) process.stderr.write(`sluice logs: ${f.path}: ${f.warning}\n`);
    return 0;
  }
  const out = [...fileLines(files), ''];
  if (endpoints.length === 0) out.push('No requests found.');
  else {
    out.push(endpointTable(endpoints, details), '', ...notes(endpoints));
    if (process.stdout.isTTY) {
      const spark = sparklines(endpoints, details);
      if (spark.length > 0) out.push('', ...spark);
    }
  }
  process.stdout.write(`${out.join('\n')}\n`);
  return 0;
}
