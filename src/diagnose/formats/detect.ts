/** The parsers by name, and format detection from the first lines of a file. */
import { albParser } from './alb.ts';
import { apigwParser, kongParser, sluiceParser } from './json-formats.ts';
import { nginxParser } from './nginx.ts';
import { type LogFormat, type LogParser, newRecord } from './record.ts';

export const PARSERS: Record<LogFormat, LogParser> = {
  nginx: nginxParser,
  kong: kongParser,
  sluice: sluiceParser,
  alb: albParser,
  apigw: apigwParser,
};

/** How many leading non-blank lines detection looks at. */
export const DETECT_LINES = 20;

/**
 * The format that parses the most of `sample` (ties go to the more specific format: Sluice, Kong,
 * API Gateway, ALB, then nginx); null when no format parses any line.
 */
export function detectFormat(sample: readonly Buffer[]): LogParser | null {
  const rec = newRecord();
  let best: LogParser | null = null;
  let bestCount = 0;
  for (const parser of [sluiceParser, kongParser, apigwParser, albParser, nginxParser]) {
    let n = 0;
    for (const line of sample) if (parser.parse(line, 0, line.length, rec)) n++;
    if (n > bestCount) {
      best = parser;
      bestCount = n;
    }
  }
  return best;
}
