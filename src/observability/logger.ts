/** Operational log (startup, shutdown, config, alerts): JSON lines on stderr, apart from the access log. */
import pino from 'pino';

export type Logger = pino.Logger;

export function createLogger(level = process.env.SLUICE_LOG_LEVEL ?? 'info'): Logger {
  return pino(
    { level, base: undefined, timestamp: pino.stdTimeFunctions.isoTime },
    pino.destination({ dest: 2, sync: true }),
  );
}

export const silentLogger: Logger = pino({ level: 'silent' });
