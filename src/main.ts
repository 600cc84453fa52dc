/**
 * Wiring only: builds a running Sluice (gateway + admin listener + access log) from an effective
 * config, and takes it down again in reverse order.
 */
import { AdminServer } from './admin/admin-server.ts';
import type { EffectiveConfig } from './config/resolve.ts';
import { type AccessLog, createAccessLog } from './observability/access-log.ts';
import { type Logger, silentLogger } from './observability/logger.ts';
import { Gateway } from './server/gateway.ts';

export interface SluiceOptions {
  accessLog?: AccessLog;
  logger?: Logger;
  /** Start the admin listener (default true). */
  admin?: boolean;
}

export interface Sluice {
  readonly gateway: Gateway;
  readonly admin: AdminServer | undefined;
  /** Actual ports (useful with port 0). */
  readonly port: number;
  readonly adminPort: number | undefined;
  reload(config: EffectiveConfig): void;
  close(graceMs?: number): Promise<void>;
}

export async function startSluice(config: EffectiveConfig, options: SluiceOptions = {}): Promise<Sluice> {
  const logger = options.logger ?? silentLogger;
  const accessLog = options.accessLog ?? createAccessLog(config.accessLog);
  const gateway = new Gateway(config, { accessLog, logger });
  let draining = false;
  const admin =
    options.admin === false
      ? undefined
      : new AdminServer({
          listen: config.admin.listen,
          token: config.admin.token,
          ready: () => !draining && gateway.server.listening,
        });
  const { port } = await gateway.listen();
  let adminPort: number | undefined;
  try {
    adminPort = admin ? (await admin.listen()).port : undefined;
  } catch (err) {
    await gateway.close(0);
    throw err;
  }
  return {
    gateway,
    admin,
    port,
    adminPort,
    reload(next) {
      gateway.reload(next);
    },
    async close(graceMs) {
      draining = true;
      await gateway.close(graceMs);
      await admin?.close();
    },
  };
}
